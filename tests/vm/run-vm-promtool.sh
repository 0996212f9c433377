#!/bin/bash
# run-vm-promtool.sh: run-vm.sh, then `promtool check metrics` on the scrape
# the scenario printed between VMTEST-SCRAPE-BEGIN and VMTEST-SCRAPE-END as
# "scrape| " lines. promtool (Debian package prometheus) runs here on the
# host rather than in the VM: it is a 48 MB Go binary.
#
# Usage: tests/vm/run-vm-promtool.sh RUN-VM-ARGS... (must include --log FILE)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log_file=
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    [[ ${args[$i]} == --log ]] && log_file=${args[$((i + 1))]:-}
done
[[ -n $log_file ]] || { echo "run-vm-promtool: --log FILE is required" >&2; exit 2; }
command -v promtool >/dev/null || { echo "run-vm-promtool: promtool not found (deploy/install-deps.sh installs prometheus)" >&2; exit 2; }

"$here/run-vm.sh" "$@"

scrape=$(mktemp)
trap 'rm -f "$scrape"' EXIT
sed -n '/^VMTEST-SCRAPE-BEGIN$/,/^VMTEST-SCRAPE-END$/{s/^scrape| //p}' "$log_file" >"$scrape"
if [[ ! -s $scrape ]]; then
    echo "run-vm-promtool: RESULT: FAIL: no scrape in $log_file"
    exit 1
fi
if ! out=$(promtool check metrics <"$scrape" 2>&1); then
    echo "$out"
    echo "run-vm-promtool: RESULT: FAIL: promtool check metrics rejected the VM's scrape ($(wc -l <"$scrape") lines)"
    exit 1
fi
echo "run-vm-promtool: RESULT: PASS: promtool check metrics accepts the VM's scrape ($(wc -l <"$scrape") lines)"
