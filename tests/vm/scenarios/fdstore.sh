#!/bin/sh
# systemd's fd store on the real kernel. The VM has no systemd, so
# /bin/fake-systemd (tests/systemd/fake_systemd.cc) plays its part for
# ondemand.service: notify socket, NotifyAccess=main, FileDescriptorStoreMax,
# Restart=always, KillMode=process, LISTEN_FDS on every start.
#  1. READY=1 arrives only after a worker served (the first worker is made
#     to take 2 s to start), and the supervisor stored /dev/cachefiles.
#  2. A mount is partly read, then the supervisor AND the worker are
#     kill -9'd: for RestartSec fake-systemd's fd store is the only reference
#     to the device, and a reader started then waits. The restarted
#     supervisor takes the device from LISTEN_FDS ("cache still bound"), its
#     worker restores, and the reader verifies the whole tree's SHA-256 with
#     0 errors on the same, never unmounted, mount.
#  3. Supervisor alone kill -9'd: the restarted one adopts the worker and
#     holds exactly one /dev/cachefiles fd (the stored copy is not kept).
#  4. SIGHUP (`systemctl restart`): the supervisor stops its worker and
#     exits 0; the next one gets the device from the store and serves a new
#     mount.
#  5. SIGTERM (`systemctl stop`): the store is released, nothing holds the
#     device any more (it can be opened again).
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. /lib/vmtest.sh

FAKE=/bin/fake-systemd
FS_STATE=/tmp/fake-systemd.state
FS_NOTIFY=/run/fake-systemd/notify
SLOW_FLAG=/tmp/slow-worker
SLOW_SECONDS=2
# RestartSec: long enough to look at the system while only the store holds
# the device; readers wait that long.
RESTART_MS=1500
MANIFEST=$VT_MANIFEST_DIR/basic.manifest

if [ ! -x "$FAKE" ]; then
    vt_fail fdstore-setup "$FAKE missing (run-vm.sh --add BUILD/tests/systemd/fake-systemd)"
    exit 0
fi

# fs_get KEY: one value from fake-systemd's state file.
fs_get() {
    sed -n "s/^$1=//p" "$FS_STATE" 2>/dev/null
}

# fs_wait KEY VALUE SECONDS: until the state says KEY=VALUE.
fs_wait() {
    _fs_deadline=$(awk -v n="$(vt_now)" -v s="$3" 'BEGIN { print n + s }')
    until [ "$(fs_get "$1")" = "$2" ]; do
        if awk -v n="$(vt_now)" -v d="$_fs_deadline" 'BEGIN { exit !(n >= d) }'; then
            echo "fs_wait: $1 is \"$(fs_get "$1")\", not \"$2\", after ${3}s" >&2
            return 1
        fi
        sleep 0.05
    done
}

# cachefiles_holders: pids with /dev/cachefiles open, one line each. (One
# ls per process, not one readlink per fd: forks are slow under TCG.)
cachefiles_holders() {
    for _p in /proc/[0-9]*; do
        # shellcheck disable=SC2010  # fd names are numbers
        ls -l "$_p/fd" 2>/dev/null | grep -q ' -> /dev/cachefiles$' && echo "${_p#/proc/}"
    done
}

# cachefiles_fds PID: how many fds PID has open on /dev/cachefiles.
cachefiles_fds() {
    # shellcheck disable=SC2010  # fd names are numbers
    ls -l "/proc/$1/fd" 2>/dev/null | grep -c ' -> /dev/cachefiles$'
}

# mount_id MOUNTPOINT: the kernel's mount id (first mountinfo field); a new
# mount, even of the same image at the same place, gets a new one.
mount_id() {
    awk -v m="$1" '$5 == m { print $1 }' /proc/self/mountinfo
}

# log_from LINE: the shared log (fake-systemd, supervisors, workers) after
# line LINE.
log_from() {
    tail -n "+$(($1 + 1))" "$VT_SUPERVISOR_LOG"
}

# The worker as the supervisor runs it: slow to start while $SLOW_FLAG exists.
cat > /bin/slow-worker <<EOF
#!/bin/sh
[ -e $SLOW_FLAG ] && sleep $SLOW_SECONDS
exec /bin/ondemand-worker "\$@"
EOF
chmod +x /bin/slow-worker
# shellcheck disable=SC2034  # read by vt_write_config in lib.sh
VT_CONFIG_EXTRA='"worker_binary": "/bin/slow-worker"'
vt_write_config

# ---- 1. start: READY=1 only once a worker serves ----
touch "$SLOW_FLAG"
t0=$(vt_now)
echo "==== $t0 $FAKE ... -- /bin/ondemand-supervisor --config $VT_CONFIG" >> "$VT_SUPERVISOR_LOG"
"$FAKE" --notify-socket "$FS_NOTIFY" --state-file "$FS_STATE" --restart-sec-ms "$RESTART_MS" \
    -- /bin/ondemand-supervisor --config "$VT_CONFIG" >> "$VT_SUPERVISOR_LOG" 2>&1 &
FAKE_PID=$!
if ! fs_wait ready_count 1 60; then
    vt_fail fdstore-ready "no READY=1 within 60 s (state: $(tr '\n' ' ' < "$FS_STATE" 2>/dev/null))"
    exit 0
fi
took=$(vt_elapsed "$t0")
rm -f "$SLOW_FLAG"
sup=$(fs_get main_pid)
# Line numbers in the shared log: the supervisor logs "serving" before it
# sends READY=1, fake-systemd logs READY=1 after receiving it.
served_line=$(grep -n 'supervisor\[[0-9]*\] worker pid=[0-9]* generation=[0-9]* serving' "$VT_SUPERVISOR_LOG" |
    head -n 1 | cut -d: -f1)
ready_line=$(grep -n 'fake-systemd: READY=1' "$VT_SUPERVISOR_LOG" | head -n 1 | cut -d: -f1)
if [ -z "$served_line" ] || [ -z "$ready_line" ] || [ "$ready_line" -le "$served_line" ]; then
    vt_fail fdstore-ready "READY=1 (log line ${ready_line:-none}) not after the first serving worker (line ${served_line:-none})"
elif ! awk -v t="$took" -v s="$SLOW_SECONDS" 'BEGIN { exit !(t >= s) }'; then
    vt_fail fdstore-ready "READY=1 after ${took}s, before the ${SLOW_SECONDS}s the worker takes to start"
elif [ "$(fs_get ready_pid)" != "$sup" ]; then
    vt_fail fdstore-ready "READY=1 came from pid $(fs_get ready_pid), the main pid is $sup"
else
    vt_pass fdstore-ready "READY=1 from supervisor $sup ${took}s after start, after its worker served (log line $ready_line > $served_line)"
fi
if [ "$(fs_get fdstore)" = cachefiles ] && [ "$(cachefiles_fds "$FAKE_PID")" -eq 1 ]; then
    vt_pass fdstore-stored "fake-systemd holds the supervisor's /dev/cachefiles as \"cachefiles\""
else
    vt_fail fdstore-stored "fd store: \"$(fs_get fdstore)\", fake-systemd has $(cachefiles_fds "$FAKE_PID") /dev/cachefiles fd(s)"
fi

# ---- 2. supervisor and worker kill -9'd under a reader ----
if ! err=$(vt_mount_fscache basic /mnt/basic 2>&1); then
    vt_fail fdstore-mount "mount -o fsid=basic failed: $err"
    kill -TERM "$FAKE_PID"
    exit 0
fi
mid=$(mount_id /mnt/basic)
# Read part of it; the rest is read only once nothing serves any more.
find /mnt/basic -type f | head -n 40 | xargs cat > /dev/null
restores0=$(vt_json_num "$(vt_ctl status --json)" restores)
worker=$(vt_worker_pid)
lines=$(wc -l < "$VT_SUPERVISOR_LOG")
# Supervisor first: once it is dead it cannot start another worker.
kill -9 "$sup" "$worker"
t_kill=$(vt_now)
if vt_wait_gone "$sup" 5 && vt_wait_gone "$worker" 5; then
    # A reader started now finds nobody serving (RestartSec): its first cache
    # miss waits in the kernel until the next worker restores.
    vt_verify_tree /mnt/basic "$MANIFEST" > /tmp/verify-gap.out 2>&1 &
    verifier=$!
    [ "$(fs_get main_pid)" = 0 ] && gap_reader=yes || gap_reader="no (restarted already)"
    # Meanwhile only the store holds the device (a standby spare worker, if
    # the supervisor had one, exits by itself once its supervisor is gone).
    n=0
    while :; do
        holders=$(cachefiles_holders | tr '\n' ' ')
        if [ "$(fs_get main_pid)" != 0 ]; then
            vt_info "fdstore-only-holder not checked: the supervisor was restarted first (holders: $holders)"
            break
        elif [ "$holders" = "$FAKE_PID " ]; then
            vt_pass fdstore-only-holder "supervisor $sup and worker $worker dead; only fake-systemd ($FAKE_PID) holds /dev/cachefiles"
            break
        elif [ "$n" -ge 10 ]; then
            vt_fail fdstore-only-holder "/dev/cachefiles holders: $holders(fake-systemd is $FAKE_PID)"
            break
        fi
        n=$((n + 1))
        sleep 0.1
    done
else
    vt_fail fdstore-kill "supervisor $sup or worker $worker still alive 5 s after kill -9"
    kill -TERM "$FAKE_PID"
    exit 0
fi
if fs_wait starts 2 30 && fs_wait ready_count 2 60; then
    new_sup=$(fs_get main_pid)
    new_worker=$(vt_worker_pid)
    restores1=$(vt_json_num "$(vt_ctl status --json)" restores)
    if ! log_from "$lines" | grep -q 'cache still bound'; then
        vt_fail fdstore-restart "the new supervisor did not take the device from LISTEN_FDS: $(log_from "$lines" | grep "supervisor\[$new_sup\]" | head -n 3)"
    elif log_from "$lines" | grep -q 'adopted running worker'; then
        vt_fail fdstore-restart "the new supervisor adopted a worker that should be dead"
    elif [ "$new_worker" = "$worker" ] || [ "${restores1:-0}" -le "${restores0:-0}" ]; then
        vt_fail fdstore-restart "worker $worker -> $new_worker, restores $restores0 -> $restores1"
    else
        vt_pass fdstore-restart "supervisor $new_sup took /dev/cachefiles from the fd store, worker $new_worker restored (restores $restores0 -> $restores1) $(vt_elapsed "$t_kill")s after the kill"
    fi
else
    vt_fail fdstore-restart "no restarted, ready supervisor (state: $(tr '\n' ' ' < "$FS_STATE"))"
fi
wait "$verifier"
rc=$?
out=$(cat /tmp/verify-gap.out)
if [ "$rc" -eq 0 ]; then
    vt_pass fdstore-verify "reader started while nothing served: $gap_reader; $out"
else
    vt_fail fdstore-verify "$out"
fi
if [ -n "$mid" ] && [ "$(mount_id /mnt/basic)" = "$mid" ]; then
    vt_pass fdstore-same-mount "/mnt/basic is still mount id $mid: never unmounted"
else
    vt_fail fdstore-same-mount "/mnt/basic mount id was $mid, now \"$(mount_id /mnt/basic)\""
fi

# ---- 3. supervisor alone kill -9'd: adoption, one device fd ----
sup=$(fs_get main_pid)
worker=$(vt_worker_pid)
lines=$(wc -l < "$VT_SUPERVISOR_LOG")
kill -9 "$sup"
if fs_wait starts 3 30 && fs_wait ready_count 3 30; then
    new_sup=$(fs_get main_pid)
    # Adoption is logged before READY=1.
    nfds=$(cachefiles_fds "$new_sup")
    if ! log_from "$lines" | grep -q "adopted running worker pid=$worker"; then
        vt_fail fdstore-adopt "supervisor $new_sup did not adopt worker $worker"
    elif [ "$(vt_worker_pid)" != "$worker" ]; then
        vt_fail fdstore-adopt "worker pid changed: $worker -> $(vt_worker_pid)"
    elif [ "$nfds" -ne 1 ] || [ "$(fs_get fdstore_count)" != 1 ]; then
        vt_fail fdstore-adopt "supervisor $new_sup has $nfds /dev/cachefiles fds (want 1), store has $(fs_get fdstore_count) entries (want 1)"
    else
        vt_pass fdstore-adopt "supervisor $new_sup adopted worker $worker, holds 1 /dev/cachefiles fd, store still 1 entry"
    fi
else
    vt_fail fdstore-adopt "no restarted, ready supervisor (state: $(tr '\n' ' ' < "$FS_STATE"))"
fi

# ---- 4. SIGHUP: a restart like `systemctl restart` ----
sup=$(fs_get main_pid)
worker=$(vt_worker_pid)
lines=$(wc -l < "$VT_SUPERVISOR_LOG")
t0=$(vt_now)
kill -HUP "$FAKE_PID"
if fs_wait starts 4 30 && fs_wait ready_count 4 60; then
    new_worker=$(vt_worker_pid)
    if ! log_from "$lines" | grep -q "main pid $sup exited with status 0"; then
        vt_fail fdstore-sighup "supervisor $sup did not exit 0 on SIGTERM: $(log_from "$lines" | grep "main pid $sup")"
    elif ! log_from "$lines" | grep -q 'cache still bound'; then
        vt_fail fdstore-sighup "the new supervisor did not take the device from the store"
    elif vt_proc_alive "$worker" || [ "$new_worker" = "$worker" ]; then
        vt_fail fdstore-sighup "worker $worker was not replaced ($new_worker)"
    elif ! err=$(vt_mount_fscache second /mnt/second 2>&1); then
        vt_fail fdstore-sighup "mount of a new image failed: $err"
    elif ! out=$(vt_verify_tree /mnt/second "$VT_MANIFEST_DIR/second.manifest"); then
        vt_fail fdstore-sighup "$out"
    else
        vt_pass fdstore-sighup "supervisor $sup stopped worker $worker and exited 0; the next one got the device from the store, worker $new_worker serves a new mount ($out) $(vt_elapsed "$t0")s after SIGHUP"
    fi
else
    vt_fail fdstore-sighup "no restarted, ready supervisor (state: $(tr '\n' ' ' < "$FS_STATE"))"
fi
if [ "$(mount_id /mnt/basic)" = "$mid" ] && out=$(vt_verify_tree /mnt/basic "$MANIFEST"); then
    vt_pass fdstore-sighup-mount "/mnt/basic (mount id $mid) still reads back: $out"
else
    vt_fail fdstore-sighup-mount "/mnt/basic mount id $mid -> \"$(mount_id /mnt/basic)\": ${out:-}"
fi

# ---- 5. SIGTERM: a stop like `systemctl stop` releases the store ----
umount /mnt/second /mnt/basic
kill -TERM "$FAKE_PID"
if vt_wait_gone "$FAKE_PID" 30; then
    wait "$FAKE_PID"
    rc=$?
    holders=$(cachefiles_holders | tr '\n' ' ')
    if [ "$rc" -ne 0 ] || [ -n "$holders" ]; then
        vt_fail fdstore-stop "fake-systemd exited $rc; /dev/cachefiles still held by: $holders"
    elif ! (exec 9<> /dev/cachefiles) 2> /tmp/reopen.err; then
        vt_fail fdstore-stop "/dev/cachefiles cannot be opened after the stop: $(cat /tmp/reopen.err)"
    else
        vt_pass fdstore-stop "stopped; fd store released, /dev/cachefiles free again"
    fi
else
    vt_fail fdstore-stop "fake-systemd still running 30 s after SIGTERM"
    kill -9 "$FAKE_PID"
fi
exit 0
