#!/bin/sh
# Runs /scenario.sh with its time limit, reports how it ended, prints
# VMTEST-DONE and reboots (qemu runs with -no-reboot, so that ends the VM).
# Sourced by init.sh as PID 1, or run by vmtest.service under systemd
# (run-vm.sh --systemd), where the limit comes from /etc/vmtest.timeout.
[ -n "${timeout_s:-}" ] || timeout_s=$(cat /etc/vmtest.timeout 2>/dev/null || echo 240)
echo
echo "VMTEST-SCENARIO-START uptime=$(cut -d' ' -f1 /proc/uptime)"
cd /
timeout "$timeout_s" sh /scenario.sh < /dev/null
rc=$?
echo "VMTEST-SCENARIO-END uptime=$(cut -d' ' -f1 /proc/uptime) status=$rc"

if [ "$rc" -eq 143 ]; then
    echo "VMTEST FAIL scenario-timeout /scenario.sh did not finish within ${timeout_s}s (vmtest.timeout)"
    echo "---- blocked tasks (sysrq w) ----"
    echo w > /proc/sysrq-trigger 2>/dev/null
    : > /tmp/vmtest.failed
elif [ "$rc" -ne 0 ]; then
    echo "VMTEST FAIL scenario-exit /scenario.sh exited with status $rc"
    : > /tmp/vmtest.failed
fi
if [ -e /tmp/vmtest.failed ]; then
    # shellcheck source-path=SCRIPTDIR source=lib.sh
    . /lib/vmtest.sh
    vt_dump_logs
fi

echo "VMTEST-DONE"
# -n: no sync. A mount still waiting for a daemon holds its superblock's
# s_umount, and sync(2) would block on it forever.
reboot -n -f
sleep 60
