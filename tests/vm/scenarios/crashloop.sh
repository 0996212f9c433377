#!/bin/sh
# Crash loop: a worker binary that exits at start makes the supervisor back
# off and park, keeping /dev/cachefiles (an existing mount survives) without
# spinning the CPU; once a good binary is back it recovers by itself (park
# retry) and serves again.
. /lib/vmtest.sh

cp /bin/ondemand-worker /tmp/worker
VT_CONFIG_EXTRA='"worker_binary": "/tmp/worker", "restart_backoff_ms": 100, "restart_backoff_max_ms": 400, "crash_loop_limit": 5, "crash_loop_window_ms": 20000, "park_retry_ms": 4000'
vt_start_supervisor || exit 0
vt_wait_state running 30 || { vt_fail crashloop "worker never ran"; exit 0; }
vt_mount_fscache basic /mnt/basic || { vt_fail crashloop "mount failed"; exit 0; }
vt_verify_tree /mnt/basic "$VT_MANIFEST_DIR/basic.manifest" > /dev/null ||
    vt_fail crashloop "first read of the mount failed"

# Break the binary: every new worker now dies before serving (exit 70).
printf '#!/bin/sh\nexit 70\n' > /tmp/worker.bad
chmod +x /tmp/worker.bad
mv /tmp/worker.bad /tmp/worker
# The warm spare (started from the good binary) absorbs the first kill;
# kill whatever serves until no good worker is left.
for attempt in 1 2 3 4; do
    vt_wait_state parked 1 2>/dev/null && break
    kill -9 "$(vt_worker_pid)" 2>/dev/null
    sleep 1
done
if vt_wait_state parked 30; then
    vt_pass crashloop-parked "$(grep -c 'never served' "$VT_SUPERVISOR_LOG") start failures, then parked"
else
    vt_fail crashloop-parked "supervisor did not park"
fi

# Parked must be idle: supervisor CPU time (utime+stime, clock ticks) over 2 s.
ticks() { awk '{ print $14 + $15 }' "/proc/$VT_SUPERVISOR_PID/stat"; }
t0=$(ticks); sleep 2; t1=$(ticks)
if [ $((t1 - t0)) -le 10 ]; then
    vt_pass crashloop-idle "supervisor used $((t1 - t0)) ticks in 2 s while parked"
else
    vt_fail crashloop-idle "supervisor used $((t1 - t0)) ticks in 2 s while parked (spinning?)"
fi
if grep -q " /mnt/basic " /proc/mounts; then
    vt_pass crashloop-mount-kept "the mount is still there while parked"
else
    vt_fail crashloop-mount-kept "the mount disappeared"
fi

# A good binary again: the park retry picks it up without operator action.
cp /bin/ondemand-worker /tmp/worker.good && mv /tmp/worker.good /tmp/worker
if vt_wait_state running 20; then
    vt_pass crashloop-recovered "serving again after the binary was fixed"
else
    vt_fail crashloop-recovered "still not running 20 s after the fix"
fi
vt_mount_fscache second /mnt/second || vt_fail crashloop "mount after recovery failed"
if out=$(vt_verify_tree /mnt/second "$VT_MANIFEST_DIR/second.manifest"); then
    vt_pass crashloop-serves "$out"
else
    vt_fail crashloop-serves "$out"
fi
vt_stop_supervisor
exit 0
