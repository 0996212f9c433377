#!/bin/sh
# The sandbox's kill path on the real kernel (issue 11): the serving worker,
# upgraded to the test-only trigger build (worker/main.cc,
# ONDEMAND_TEST_TRIGGER), makes a system call its seccomp filter forbids
# (SIGUSR2: ptrace) while two readers verify an image through fscache. The
# supervisor must report the kill naming seccomp, the next worker must serve
# (sandboxed again), the readers must see no error, and every kernel
# request must get exactly one reply.
. /lib/vmtest.sh

vt_start_supervisor || exit 0
vt_wait_state running 30 || { vt_fail seccomp "worker never ran"; exit 0; }
vt_mount_fscache basic /mnt/basic || { vt_fail seccomp "mount failed"; exit 0; }
if ! vt_ctl upgrade --binary /bin/ondemand-worker-trigger > /tmp/upgrade.out 2>&1; then
    vt_fail seccomp-upgrade "$(cat /tmp/upgrade.out)"
    exit 0
fi
vt_check_sandboxed
readers=
for r in 1 2; do
    ( vt_verify_tree /mnt/basic "$VT_MANIFEST_DIR/basic.manifest" > /tmp/reader$r.out 2>&1
      echo $? > /tmp/reader$r.rc ) &
    readers="$readers $!"
done
sleep 0.5
victim=$(vt_worker_pid)
kill -USR2 "$victim"
t0=$(vt_now)
while [ "$(vt_worker_pid)" = "$victim" ]; do
    awk -v t="$(vt_elapsed "$t0")" 'BEGIN { exit !(t > 20) }' && break
    sleep 0.05
done
# shellcheck disable=SC2086
wait $readers  # not a bare wait: the supervisor is our child too
line=$(grep "worker pid=$victim .*killed by seccomp" "$VT_SUPERVISOR_LOG" | head -n 1)
if [ -n "$line" ] && [ "$(vt_worker_pid)" != "$victim" ]; then
    vt_pass seccomp-reported "${line#*supervisor\[*\] }; replaced by pid $(vt_worker_pid)"
else
    vt_fail seccomp-reported "worker $victim -> $(vt_worker_pid), log: ${line:-no seccomp line}"
fi
vt_wait_state running 30 || vt_fail seccomp "no worker running after the kill"
vt_check_sandboxed
for r in 1 2; do
    if [ "$(cat /tmp/reader$r.rc)" = 0 ]; then
        vt_pass seccomp-reader$r "$(cat /tmp/reader$r.out)"
    else
        vt_fail seccomp-reader$r "$(cat /tmp/reader$r.out)"
    fi
done
vt_check_replies
vt_stop_supervisor
exit 0
