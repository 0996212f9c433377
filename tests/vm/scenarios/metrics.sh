#!/bin/sh
# Prometheus metrics (issue 13), scraped with curl the way Prometheus would:
#   - GET /metrics on <state_dir>/metrics.sock and on metrics_listen
#     (127.0.0.1:9464, the VM's own loopback), and `ondemandctl metrics`,
#     all the same families;
#   - after reading a whole image: READ results, bytes served, one latency
#     observation per completed READ, open objects;
#   - kill -9 of the worker METRICS_KILLS times while a reader verifies the
#     tree: the "killed" restarts, the failover recovery histogram's _count
#     and the worker_start restores each moved by exactly that many, no
#     crash was counted, and no counter went backwards (the supervisor, which
#     outlives every worker, serves them from shared memory);
#   - one `ondemandctl upgrade`: one "upgrade" restart, one stall
#     observation, no failover;
#   - the last scrape is printed as "scrape| " lines for the host, which runs
#     `promtool check metrics` on it (tests/vm/run-vm-promtool.sh).
. /lib/vmtest.sh

: "${METRICS_KILLS:=5}"
SOCK=$VT_STATE_DIR/metrics.sock
TCP_URL=http://127.0.0.1:9464/metrics

if ! command -v curl >/dev/null 2>&1; then
    vt_fail metrics-setup "curl is not in the VM (run-vm.sh --add /usr/bin/curl)"
    exit 0
fi
# The loopback interface (127.0.0.1 comes with it) for metrics_listen.
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up

VT_CONFIG_EXTRA='"metrics_listen": "127.0.0.1:9464"'
vt_start_supervisor || exit 0
vt_wait_state running 30 || { vt_fail metrics "worker never ran"; exit 0; }

# scrape FILE: GET /metrics over the Unix socket into FILE (body only).
scrape() {
    curl -sS --fail --max-time 5 --unix-socket "$SOCK" -o "$1" http://localhost/metrics
}
# metric FILE SERIES: the value of one series (name plus labels, as printed).
metric() {
    awk -v s="$2" '$1 == s { print $2; found = 1; exit } END { if (!found) exit 1 }' "$1"
}
# delta SERIES: value in /tmp/after minus value in /tmp/before.
delta() {
    awk -v a="$(metric /tmp/after "$1")" -v b="$(metric /tmp/before "$1")" 'BEGIN { printf "%d", a - b }'
}
families() {
    grep '^# TYPE ' "$1" | sort
}

# ---- the three ways in serve the same thing ----
if scrape /tmp/m0 && metric /tmp/m0 ondemand_worker_pid >/dev/null; then
    vt_pass metrics-unix "GET /metrics on $SOCK: $(grep -c '^# TYPE' /tmp/m0) families"
else
    vt_fail metrics-unix "no usable scrape from $SOCK: $(head -c 300 /tmp/m0 2>/dev/null)"
fi
if curl -sS --fail --max-time 5 -o /tmp/m_tcp "$TCP_URL" && [ "$(families /tmp/m_tcp)" = "$(families /tmp/m0)" ]; then
    vt_pass metrics-tcp "GET $TCP_URL serves the same families"
else
    vt_fail metrics-tcp "GET $TCP_URL failed or differs: $(head -c 300 /tmp/m_tcp 2>/dev/null)"
fi
if vt_ctl metrics > /tmp/m_ctl && [ "$(families /tmp/m_ctl)" = "$(families /tmp/m0)" ]; then
    vt_pass metrics-ctl "ondemandctl metrics prints the same families"
else
    vt_fail metrics-ctl "ondemandctl metrics failed or differs: $(head -c 300 /tmp/m_ctl 2>/dev/null)"
fi
ctype=$(curl -sS --max-time 5 --unix-socket "$SOCK" -o /dev/null -w '%{content_type}' http://localhost/metrics)
case $ctype in
    "text/plain; version=0.0.4"*) vt_pass metrics-content-type "$ctype" ;;
    *) vt_fail metrics-content-type "Content-Type '$ctype'" ;;
esac
code=$(curl -sS --max-time 5 --unix-socket "$SOCK" -o /dev/null -w '%{http_code}' http://localhost/other)
[ "$code" = 404 ] && vt_pass metrics-404 "GET /other: 404" || vt_fail metrics-404 "GET /other: $code"

# ---- serving moves the request metrics ----
vt_mount_fscache basic /mnt/basic || { vt_fail metrics "mount failed"; exit 0; }
if out=$(vt_verify_tree /mnt/basic "$VT_MANIFEST_DIR/basic.manifest"); then
    vt_pass metrics-read "$out"
else
    vt_fail metrics-read "$out"
fi
sleep 0.3  # open_objects is published with the worker's heartbeat (100 ms)
scrape /tmp/m1
reads_ok=$(metric /tmp/m1 'ondemand_requests_total{type="read",result="ok"}')
reads_err=$(metric /tmp/m1 'ondemand_requests_total{type="read",result="error"}')
opens_ok=$(metric /tmp/m1 'ondemand_requests_total{type="open",result="ok"}')
latency_n=$(metric /tmp/m1 ondemand_read_latency_seconds_count)
served=$(metric /tmp/m1 ondemand_served_bytes_total)
objects=$(metric /tmp/m1 ondemand_open_objects)
detail="reads ok=$reads_ok error=$reads_err, opens ok=$opens_ok, latency count=$latency_n, served=$served bytes, open objects=$objects"
if [ "${reads_ok:-0}" -gt 0 ] && [ "$reads_err" = 0 ] && [ "${opens_ok:-0}" -ge 1 ] && \
   [ "$latency_n" = "$((reads_ok + reads_err))" ] && [ "${served:-0}" -gt 0 ] && [ "${objects:-0}" -ge 1 ]; then
    vt_pass metrics-requests "$detail"
else
    vt_fail metrics-requests "$detail"
fi

# ---- failovers: exact deltas, nothing reset ----
# A fresh fsid (a hard link of the blob): every read is a cache miss, so the
# kills land on a worker with requests in flight.
ln "$VT_BLOB_DIR/basic" "$VT_BLOB_DIR/basic-again"
vt_mount_fscache basic-again /mnt/again || { vt_fail metrics "mount of basic-again failed"; exit 0; }
scrape /tmp/before
# ondemandctl top, off a terminal: one line per interval, through the kills.
# It starts before the reader: the worker fills fill_window (4 MiB) per READ,
# so the whole image is a dozen requests, most of them in the reader's first
# seconds; a top started after the reader can miss every one of them.
( vt_ctl top --interval-ms 500 -n 6 > /tmp/top.out 2> /tmp/top.err; echo $? > /tmp/top.rc ) &
top_pid=$!
sleep 0.3  # top has taken its first scrape
( vt_verify_tree /mnt/again "$VT_MANIFEST_DIR/basic.manifest" > /tmp/reader.out 2>&1
  echo $? > /tmp/reader.rc ) &
reader=$!
( sleep 0.5; vt_ctl top --screen --interval-ms 1000 -n 1 > /tmp/top.screen 2>&1 ) &
screen_pid=$!
i=0
while [ "$i" -lt "$METRICS_KILLS" ]; do
    i=$((i + 1))
    victim=$(vt_worker_pid)
    kill -KILL "$victim"
    # Replaced and serving: a new pid and state running (the supervisor
    # records the recovery before it sets running).
    t0=$(vt_now)
    while :; do
        scrape /tmp/now 2>/dev/null
        pid=$(metric /tmp/now ondemand_worker_pid 2>/dev/null)
        running=$(metric /tmp/now 'ondemand_worker_state{state="running"}' 2>/dev/null)
        [ -n "$pid" ] && [ "$pid" != "$victim" ] && [ "$running" = 1 ] && break
        if awk -v t="$(vt_elapsed "$t0")" 'BEGIN { exit !(t > 30) }'; then
            vt_fail metrics-failover "kill $i: worker $victim not replaced by a serving one within 30 s"
            break 2
        fi
        sleep 0.05
    done
    sleep 0.3  # let the reader get some requests through the new worker
done
wait "$reader"
wait "$top_pid" "$screen_pid"
scrape /tmp/after
# Six lines, no escape codes, and the kills show up in them.
top_lines=$(grep -c 'requests_per_s=' /tmp/top.out)
top_busy=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^requests_per_s=/) { split($i, kv, "="); if (kv[2] > 0) n++ } } END { print n + 0 }' /tmp/top.out)
top_failovers=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^failovers_now=/) { split($i, kv, "="); n += kv[2] } } END { print n + 0 }' /tmp/top.out)
vt_info "ondemandctl top: $(tr '\n' '|' < /tmp/top.out)"
# The screen a terminal gets (forced, captured without its escape codes).
sed "s/$(printf '\033')\[[0-9;]*[A-Za-z]//g" /tmp/top.screen | while IFS= read -r l; do
    vt_info "top screen: $l"
done
if [ "$(cat /tmp/top.rc)" = 0 ] && [ "$top_lines" = 6 ] && ! grep -q "$(printf '\033')" /tmp/top.out && \
   [ "$top_busy" -ge 1 ] && [ "$top_failovers" -ge 1 ]; then
    vt_pass metrics-top "6 lines, $top_busy with requests, $top_failovers failovers seen"
else
    vt_fail metrics-top "rc $(cat /tmp/top.rc), $top_lines lines, $top_busy busy, $top_failovers failovers: $(head -c 300 /tmp/top.err)"
fi
if [ "$(cat /tmp/reader.rc)" = 0 ]; then
    vt_pass metrics-reader "during $METRICS_KILLS kills: $(cat /tmp/reader.out)"
else
    vt_fail metrics-reader "$(cat /tmp/reader.out)"
fi
killed=$(delta 'ondemand_worker_restarts_total{cause="killed"}')
crashed=$(delta 'ondemand_worker_restarts_total{cause="crash"}')
recoveries=$(delta ondemand_failover_recovery_seconds_count)
restores=$(delta 'ondemand_restores_total{reason="worker_start"}')
generations=$(delta ondemand_worker_generation)
detail="killed +$killed, crash +$crashed, recovery _count +$recoveries, restores +$restores, generation +$generations"
if [ "$killed" = "$METRICS_KILLS" ] && [ "$recoveries" = "$METRICS_KILLS" ] && [ "$crashed" = 0 ] && \
   [ "$restores" = "$METRICS_KILLS" ] && [ "$generations" -ge "$METRICS_KILLS" ]; then
    vt_pass metrics-failover "$METRICS_KILLS kills: $detail"
else
    vt_fail metrics-failover "$METRICS_KILLS kills: $detail"
fi
# Counters never went back across the failovers.
backwards=$(awk 'NR == FNR { if ($1 !~ /^#/) before[$1] = $2; next }
    $1 ~ /_total(\{|$)|_count$|_sum$|_bucket\{/ && ($1 in before) && $2 + 0 < before[$1] + 0 { print $1 " " before[$1] " -> " $2 }' \
    /tmp/before /tmp/after)
if [ -z "$backwards" ]; then
    vt_pass metrics-monotonic "no counter, histogram sum, count or bucket decreased across $METRICS_KILLS failovers"
else
    vt_fail metrics-monotonic "went backwards: $(echo "$backwards" | head -n 3 | tr '\n' ';')"
fi
rec_sum=$(metric /tmp/after ondemand_failover_recovery_seconds_sum)
vt_info "failover recovery: $recoveries observations, sum ${rec_sum}s in all"

# ---- a rolling upgrade: one "upgrade" restart and one stall observation ----
cp /tmp/after /tmp/before
if out=$(vt_ctl upgrade 2>&1); then
    scrape /tmp/after
    upgrades=$(delta 'ondemand_worker_restarts_total{cause="upgrade"}')
    stalls=$(delta ondemand_upgrade_stall_seconds_count)
    recoveries=$(delta ondemand_failover_recovery_seconds_count)
    detail="upgrade +$upgrades, upgrade stall _count +$stalls (sum $(metric /tmp/after ondemand_upgrade_stall_seconds_sum)s), recovery _count +$recoveries"
    if [ "$upgrades" = 1 ] && [ "$stalls" = 1 ] && [ "$recoveries" = 0 ]; then
        vt_pass metrics-upgrade "$detail"
    else
        vt_fail metrics-upgrade "$detail"
    fi
else
    vt_fail metrics-upgrade "ondemandctl upgrade failed: $out"
fi

# ---- the last scrape, for promtool on the host ----
echo "VMTEST-SCRAPE-BEGIN"
sed 's/^/scrape| /' /tmp/after
echo "VMTEST-SCRAPE-END"

umount /mnt/again
umount /mnt/basic
vt_stop_supervisor
exit 0
