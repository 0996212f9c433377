#!/bin/sh
# Hang watchdog: a worker that stops (SIGSTOP: its event loop no longer
# beats) is killed and replaced within 2x the watchdog timeout, and readers
# that were waiting on it see no error; the hang is counted.
. /lib/vmtest.sh

WATCHDOG_MS=2000
VT_CONFIG_EXTRA="\"watchdog_timeout_ms\": $WATCHDOG_MS"
vt_start_supervisor || exit 0
vt_wait_state running 30 || { vt_fail hang "worker never ran"; exit 0; }

vt_mount_fscache basic /mnt/basic || { vt_fail hang "mount failed"; exit 0; }
( vt_verify_tree /mnt/basic "$VT_MANIFEST_DIR/basic.manifest" > /tmp/reader.out 2>&1
  echo $? > /tmp/reader.rc ) &
reader=$!
sleep 0.3
victim=$(vt_worker_pid)
kill -STOP "$victim"
stopped_at=$(vt_now)
# Wait for the supervisor to replace it (bounded well above the limit).
while [ "$(vt_worker_pid)" = "$victim" ]; do
    if awk -v t="$(vt_elapsed "$stopped_at")" 'BEGIN { exit !(t > 20) }'; then break; fi
    sleep 0.05
done
took=$(vt_elapsed "$stopped_at")
wait "$reader"
limit=$(awk -v ms="$WATCHDOG_MS" 'BEGIN { printf "%.2f", 2 * ms / 1000 }')
if [ "$(vt_worker_pid)" = "$victim" ]; then
    vt_fail hang-replaced "stopped worker $victim not replaced after ${took}s"
elif awk -v t="$took" -v l="$limit" 'BEGIN { exit !(t <= l) }'; then
    vt_pass hang-replaced "stopped worker $victim replaced by $(vt_worker_pid) after ${took}s (limit ${limit}s)"
else
    vt_fail hang-replaced "replaced only after ${took}s (limit ${limit}s)"
fi
if [ "$(cat /tmp/reader.rc)" = 0 ]; then
    vt_pass hang-readers "$(cat /tmp/reader.out)"
else
    vt_fail hang-readers "$(cat /tmp/reader.out)"
fi
status=$(vt_ctl status --json)
hangs=$(vt_json_num "$status" hangs_detected)
if [ "$hangs" = 1 ]; then
    vt_pass hang-counted "hangs_detected=1"
else
    vt_fail hang-counted "hangs_detected=$hangs: $status"
fi
grep -E "heartbeat stale|killing worker" "$VT_SUPERVISOR_LOG" | head -n 3 | sed 's/^/log| /'
vt_stop_supervisor
exit 0
