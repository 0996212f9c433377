#!/bin/bash
# Runs one libFuzzer target (+ASan, +UBSan) for a bounded time.
#
#   tests/fuzz/run-fuzz.sh [SECONDS [TARGET]]   default 60 s, kernel_msg
#
# TARGET: kernel_msg (what /dev/cachefiles read() returns; seeded from the
# encode_* helpers), fanotify_msg (fanotify pre-content events),
# channel_msg (the supervisor <-> worker channel), control_msg (control.sock
# requests and replies), config (the config file), bindings (the blob
# bindings file).
# Seeds also come from tests/fuzz/seeds/TARGET/ and a dictionary of the
# format's tokens from tests/fuzz/dict/TARGET.dict, when they exist.
#
# Builds in its own directory (FUZZ_BUILD_DIR, default build/fuzz) with
# clang, runs for SECONDS and exits non-zero if the fuzzer found a crash,
# leak, exception or broken invariant (the input is saved under
# $FUZZ_BUILD_DIR/artifacts/TARGET/). The corpus grows across runs in
# $FUZZ_BUILD_DIR/corpus/TARGET/.
set -euo pipefail
seconds=${1:-60}
target=${2:-kernel_msg}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build/fuzz}

case $target in
  kernel_msg)   max_len=1100 ;;   # above the 1024-byte message limit: TOO_LARGE is reachable
  fanotify_msg) max_len=4096 ;;
  channel_msg)  max_len=4096 ;;
  control_msg)  max_len=4096 ;;
  config)       max_len=8192 ;;
  bindings)     max_len=8192 ;;
  *) echo "run-fuzz.sh: unknown target '$target' (kernel_msg, fanotify_msg, channel_msg, control_msg, config, bindings)" >&2; exit 64 ;;
esac

CC=${CC:-clang} CXX=${CXX:-clang++} cmake -S "$root" -B "$build" \
  -DONDEMAND_FUZZ=ON -DONDEMAND_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=("${target}_fuzz")
[[ $target == kernel_msg ]] && targets+=(kernel_msg_seeds)
cmake --build "$build" --target "${targets[@]}" -j"$(nproc)"

corpus=$build/corpus/$target
artifacts=$build/artifacts/$target
seeds=$build/seeds/$target
rm -rf "$seeds"
mkdir -p "$corpus" "$artifacts" "$seeds"
[[ $target == kernel_msg ]] && "$build/tests/fuzz/kernel_msg_seeds" "$seeds"
if [[ -d $root/tests/fuzz/seeds/$target ]]; then
  cp "$root/tests/fuzz/seeds/$target"/* "$seeds/"
fi

dict=()
[[ -f $root/tests/fuzz/dict/$target.dict ]] && dict=(-dict="$root/tests/fuzz/dict/$target.dict")

# New inputs go to the first directory.
status=0
"$build/tests/fuzz/${target}_fuzz" "${dict[@]}" -max_total_time="$seconds" -max_len="$max_len" \
  -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus" "$seeds" || status=$?
if [[ $status -ne 0 ]]; then
  echo "run-fuzz.sh: ${target}_fuzz failed (exit $status); reproducer(s) in $artifacts:" >&2
  ls -l "$artifacts" >&2 || true
  exit "$status"
fi
echo "run-fuzz.sh: ${target}_fuzz ran ${seconds}s without a finding"
