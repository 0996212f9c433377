#!/bin/bash
# The main job on a machine whose kernel lacks cachefiles on-demand mode:
# boots our 6.12 test kernel in qemu, starts ondemand-supervisor, mounts a
# sample EROFS image through fscache, reads and checksums every file, then
# kill -9s the worker under load and prints the failover summary.
# Installs what it needs; builds the kernel once (about 4 minutes) and caches it.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build/demo}
deploy/install-deps.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target ondemand-supervisor ondemand-worker ondemandctl ondemand-chaos
tests/vm/build-kernel.sh >/dev/null   # first run only: builds and caches the kernel
log=$(mktemp /tmp/ondemand-demo.XXXXXX.log)
rc=0
tests/vm/run-vm.sh --build-dir "$build" --scenario tests/vm/scenarios/demo.sh \
    --image basic=basic --add "$build/tools/chaos/ondemand-chaos" --mem 2048 --cache-mb 1024 \
    --timeout 600 --log "$log" > "$log.runner" 2>&1 || rc=$?
echo
echo "==== cachefiles-ondemand demo (Linux 6.12 in qemu) ===="
grep -a '^demo| ' "$log" | sed 's/^demo| //'
echo "========================================================"
tail -n 1 "$log.runner"
if ((rc != 0)); then
    echo "demo FAILED; console log: $log, runner output: $log.runner" >&2
    exit "$rc"
fi
rm -f "$log" "$log.runner"
