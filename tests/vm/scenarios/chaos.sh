#!/bin/sh
# Crash failover under fire: ondemand-chaos mounts the images under fresh
# fsids round after round, 4 readers verify every file's SHA-256, and the
# worker is kill -9'd 5-200 ms after each time it starts serving. Passes only
# with 0 read errors, 0 mismatches and a proven failover (new pid, exactly
# one more restore) for every kill, and with some of the kills landing while
# the worker writes fill-ahead that no READ waits for (READs are answered
# once their own pages are in; the windows such a kill leaves half written
# are asked for again).
# Env (from run-vm.sh --env): CHAOS_ROUNDS, CHAOS_MIN_KILLS, CHAOS_KILL_MS
# (the kill interval, default 5-200; one longer than a worker's start
# measures failovers that find the spare ready).
. /lib/vmtest.sh

vt_start_supervisor || exit 0
vt_check_sandboxed
# fds are compared between two moments when a worker is serving: while one
# is starting the supervisor briefly holds a few more.
vt_wait_state running 30 || vt_fail chaos "worker not running before the kills"
fd_before=$(vt_fd_count "$VT_SUPERVISOR_PID")

images=
for m in "$VT_MANIFEST_DIR"/*.manifest; do
    n=${m##*/}; n=${n%.manifest}
    images="$images --image $n=$m"
done
# shellcheck disable=SC2086
/bin/ondemand-chaos --config "$VT_CONFIG" $images \
    --rounds "${CHAOS_ROUNDS:-20}" --min-kills "${CHAOS_MIN_KILLS:-300}" \
    --readers 4 --kill-interval-ms "${CHAOS_KILL_MS:-5-200}" --missing-blob --max-seconds 1500 --summary \
    > /tmp/chaos.out 2> /tmp/chaos.log
rc=$?
report=$(tail -n 1 /tmp/chaos.out)
echo "CHAOS-REPORT $report"
# The summary's table of timings by the spare's state at the kill.
sed -n '/^  after a kill/,/^$/p' /tmp/chaos.out | sed 's/^/chaos-summary| /'
# What a failover without a ready spare waits for: a worker's process
# start to its handshake (supervisor log, "ms after its spawn").
starts=$(sed -n 's/.* \([0-9][0-9.]*\) ms after its spawn.*/\1/p' "$VT_SUPERVISOR_LOG" | sort -n |
    awk '{ v[NR] = $1 } END { if (NR) printf "%d starts, p50 %s p99 %s max %s", NR, v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1 > NR ? NR : int(NR * 0.99) + 1], v[NR] }')
vt_info "worker spawn to handshake ms: ${starts:-none logged}"
tail -n 5 /tmp/chaos.log | sed 's/^/chaos| /'
if [ "$rc" -eq 0 ]; then
    vt_pass chaos "$report"
else
    vt_fail chaos "exit $rc: $report"
fi

ahead=$(vt_json_num "$report" kills_during_fill_ahead)
if [ "${ahead:-0}" -gt 0 ]; then
    vt_pass chaos-fill-ahead "$ahead kills came while the worker was filling ahead"
else
    vt_fail chaos-fill-ahead "no kill came while the worker was filling ahead (kills_during_fill_ahead=${ahead:-missing})"
fi

# Every restart must leave the supervisor with the fds it had.
vt_wait_state running 30 || vt_fail chaos "worker not running after the kills"
fd_after=$(vt_fd_count "$VT_SUPERVISOR_PID")
if [ "$fd_before" = "$fd_after" ]; then
    vt_pass supervisor-fds "open fds $fd_before before and $fd_after after the kills"
else
    vt_fail supervisor-fds "open fds went from $fd_before to $fd_after over the kills"
fi
vt_check_replies
vt_stop_supervisor
exit 0
