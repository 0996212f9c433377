#!/bin/bash
# Fuzzes the kernel message parser with libFuzzer (+ASan, +UBSan).
#
#   tests/fuzz/run-fuzz.sh [SECONDS]      default 60
#   tests/fuzz/run-fuzz.sh SECONDS fanotify_msg
#                                          the fanotify event parser instead
#                                          (no seed generator: starts empty)
#
# Builds in its own directory (FUZZ_BUILD_DIR, default build/fuzz) with
# clang, seeds the corpus from the encode_* helpers, runs for SECONDS and
# exits non-zero if the fuzzer found a crash, leak or broken invariant (the
# input is saved under $FUZZ_BUILD_DIR/artifacts/). The corpus grows across
# runs in $FUZZ_BUILD_DIR/corpus/.
set -euo pipefail
seconds=${1:-60}
target=${2:-kernel_msg}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build/fuzz}

CC=${CC:-clang} CXX=${CXX:-clang++} cmake -S "$root" -B "$build" \
  -DONDEMAND_FUZZ=ON -DONDEMAND_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
if [[ $target == fanotify_msg ]]; then
  cmake --build "$build" --target fanotify_msg_fuzz -j"$(nproc)"
  corpus=$build/corpus/fanotify_msg
  artifacts=$build/artifacts/fanotify_msg
  mkdir -p "$corpus" "$artifacts"
  status=0
  "$build/tests/fuzz/fanotify_msg_fuzz" -max_total_time="$seconds" -max_len=4096 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus" || status=$?
  if [[ $status -ne 0 ]]; then
    echo "run-fuzz.sh: fanotify_msg_fuzz failed (exit $status); reproducer(s) in $artifacts:" >&2
    ls -l "$artifacts" >&2 || true
    exit "$status"
  fi
  echo "run-fuzz.sh: fanotify_msg_fuzz ran ${seconds}s without a finding"
  exit 0
fi
cmake --build "$build" --target kernel_msg_fuzz kernel_msg_seeds -j"$(nproc)"

seeds=$build/seeds/kernel_msg
corpus=$build/corpus/kernel_msg
artifacts=$build/artifacts/kernel_msg
rm -rf "$seeds"
mkdir -p "$seeds" "$corpus" "$artifacts"
"$build/tests/fuzz/kernel_msg_seeds" "$seeds"

# New inputs go to the first directory; max_len above the 1024-byte message
# limit so TOO_LARGE is reachable.
status=0
"$build/tests/fuzz/kernel_msg_fuzz" -max_total_time="$seconds" -max_len=1100 \
  -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus" "$seeds" || status=$?
if [[ $status -ne 0 ]]; then
  echo "run-fuzz.sh: kernel_msg_fuzz failed (exit $status); reproducer(s) in $artifacts:" >&2
  ls -l "$artifacts" >&2 || true
  exit "$status"
fi
echo "run-fuzz.sh: kernel_msg_fuzz ran ${seconds}s without a finding"
