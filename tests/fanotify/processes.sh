#!/bin/bash
# The fanotify front end with the real processes, natively (root, Linux
# 6.14+, /tmp on ext4/xfs/btrfs): ondemand-supervisor with config frontend
# "fanotify", its sandboxed ondemand-worker, and `ondemandctl mount`.
#
# Properties, each a failure when it does not hold:
#   serve     a multi-device EROFS image (mkfs.erofs --blobdev) mounted by
#             ondemandctl reads back with every file's SHA-256 right;
#   mmap      a fresh image read only through mmap page faults (forward,
#             then another one backwards page by page) hashes right: the
#             pre-content hook sits on EROFS's read of the cache file, not
#             on the reader's fault;
#   sandbox   the serving worker has CapEff 0, NoNewPrivs 1, Seccomp 2;
#   chaos     KILLS random kill -9s of the serving worker while 3 readers
#             SHA-256 every file of a fresh image (new blob ids, so every
#             read is a miss) round after round: 0 read errors, 0
#             mismatches, and every kill followed by a new worker serving
#             (supervisor log); the supervisor's fd count is unchanged;
#   upgrade   UPGRADES `ondemandctl upgrade`s under the same readers: each
#             one returns 0, 0 read errors, 0 mismatches;
#   adopt     ADOPTIONS kill -9s of the supervisor under the same readers,
#             each followed by a new supervisor that adopts the running
#             worker (same pid, the group, record and cache files handed
#             back): 0 read errors, 0 mismatches; then the adopted worker
#             is kill -9ed and its successor serves, and a new image
#             mounts and reads right through the new supervisor;
#   restart   with an image mounted and barely read, supervisor and every
#             worker are kill -9ed (nothing holds the group: the kernel
#             drops its marks); a new supervisor finds the cache files and
#             marks the incomplete ones again before its worker runs, so
#             the rest of the image reads right instead of as zeros;
#   hang      a SIGSTOPped worker is seen by the watchdog (stale heartbeat),
#             killed and replaced while a reader waits: it reads right;
#   bad input a mount naming a missing blob is refused naming it, and the
#             supervisor serves on;
#   seccomp   the serving worker, upgraded to the test-only trigger build,
#             makes a system call its filter forbids (SIGUSR2: ptrace)
#             while 3 readers SHA-256 a fresh image: the supervisor
#             reports "killed by seccomp", a new worker serves, 0 bad
#             reads;
#   stop      ondemandctl stop is refused while an image is mounted from
#             the cache (naming the mount point: its readers would read
#             zeros once the group closes) and the image still reads
#             right; after umount it stops.
# Usage: processes.sh BUILD_DIR
#   (env: FANOTIFY_KILLS=300, FANOTIFY_UPGRADES=10, FANOTIFY_ADOPTIONS=10)
set -u
BUILD=$(cd "${1:?usage: processes.sh BUILD_DIR}" && pwd)
KILLS=${FANOTIFY_KILLS:-300}
UPGRADES=${FANOTIFY_UPGRADES:-10}
ADOPTIONS=${FANOTIFY_ADOPTIONS:-10}
SUP=$BUILD/supervisor/ondemand-supervisor
WORKER=$BUILD/worker/ondemand-worker
CTL=$BUILD/tools/ctl/ondemandctl
MMAP=$BUILD/tests/vm/tools/mmap-sha256
TRIGGER=$BUILD/worker/ondemand-worker-trigger
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
pass() { echo "PASS $*"; }
die() { echo "FAIL $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (fanotify pre-content groups and mount need CAP_SYS_ADMIN)"
command -v mkfs.erofs >/dev/null || die "mkfs.erofs (erofs-utils) is not installed"
for b in "$SUP" "$WORKER" "$CTL" "$MMAP" "$TRIGGER"; do [ -x "$b" ] || die "$b not built"; done

T=$(mktemp -d /tmp/ondemand-fanotify-proc-XXXXXX)
fstype=$(stat -f -c %T "$T")
case $fstype in ext2/ext3|ext4|xfs|btrfs) ;; *) die "$T is on $fstype: pre-content marks need ext4, xfs or btrfs" ;; esac
chmod 755 "$T"
mkdir -p "$T/src/dir/sub" "$T/blobs" "$T/cache" "$T/state"
SUP_PID=
cleanup() {
    for m in "$T"/mnt/*; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
    [ -n "$SUP_PID" ] && kill "$SUP_PID" 2>/dev/null && sleep 0.5
    [ -n "$SUP_PID" ] && kill -9 "$SUP_PID" 2>/dev/null
    pkill -9 -f "$T/state/config.json" 2>/dev/null
    [ -n "${KEEP_T:-}" ] || rm -rf "$T"
}
trap cleanup EXIT

# About 5 MiB of data chunks in files of awkward sizes.
i=0
for spec in a:3145728 b:1048581 dir/c:524288 dir/d:200000 dir/sub/e:4096 dir/sub/f:10 g:0 h:65537; do
    i=$((i + 1))
    head -c "${spec#*:}" /dev/urandom > "$T/src/${spec%%:*}"
done
mkfs.erofs --quiet --blobdev="$T/blob.img" --chunksize=4096 "$T/meta.img" "$T/src" || die "mkfs.erofs failed"
(cd "$T/src" && find . -type f | sort | xargs sha256sum) > "$T/expected"
chmod 755 "$T/blobs"

cat > "$T/config.json" <<JSON
{"frontend": "fanotify", "cache_dir": "$T/cache", "tag": "fzproc$$", "blob_dir": "$T/blobs",
 "state_dir": "$T/state", "worker_binary": "$WORKER", "fill_window": 65536,
 "watchdog_timeout_ms": 1000, "crash_loop_limit": 100000}
JSON
# Starts a supervisor (appending to its log) and waits for a serving worker.
start_supervisor() {
    "$SUP" --config "$T/config.json" >> "$T/supervisor.log" 2>&1 &
    SUP_PID=$!
    for _ in $(seq 100); do
        "$CTL" --config "$T/config.json" status --json 2>/dev/null | grep -q '"serving":true' && return 0
        sleep 0.1
    done
    return 1
}
start_supervisor || die "no serving worker 10 s after the supervisor started"
worker_pid() { cat "$T/state/worker.pid" 2>/dev/null; }

round=0
# A fresh image: new blob ids (hard links of the same blobs: the cache files
# are new, so every read is a miss), mounted by ondemandctl.
new_mount() {
    round=$((round + 1))
    ln -f "$T/meta.img" "$T/blobs/meta$round"
    ln -f "$T/blob.img" "$T/blobs/data$round"
    mkdir -p "$T/mnt/$round"
    "$CTL" --config "$T/config.json" mount "$T/mnt/$round" "meta$round" "data$round" > "$T/mount.out" 2>&1 ||
        { cat "$T/mount.out"; return 1; }
}
# N readers, each SHA-256s every file of mount $1; a reader's line in
# $T/readers: "ok" or what went wrong.
read_all() {
    local m=$1 n=$2
    : > "$T/readers"
    reader_pids=()
    for r in $(seq "$n"); do
        ( cd "$T/mnt/$m" && if out=$(find . -type f | sort | xargs sha256sum 2>&1); then
              if [ "$out" = "$(cat "$T/expected")" ]; then echo ok; else echo "mismatch"; fi
          else echo "read error: $out" | head -c 300; echo; fi ) >> "$T/readers" &
        reader_pids+=($!)
    done
    wait_readers=$!
}
check_readers() {
    wait "${reader_pids[@]}"   # not a bare wait: the supervisor is a child too
    local bad
    bad=$(grep -vc '^ok$' "$T/readers")
    reads=$((reads + $(grep -c '^ok$' "$T/readers")))
    [ "$bad" = 0 ] || { errors=$((errors + bad)); grep -v '^ok$' "$T/readers" | head -3; }
}

# ---- serve and sandbox ----
reads=0 errors=0
new_mount || die "serve: ondemandctl mount failed"
read_all "$round" 1; check_readers
[ "$errors" = 0 ] && pass "serve: every file of a mounted image reads right" || fail "serve: $errors bad reads"
umount "$T/mnt/$round"
for order in forward reverse; do
    new_mount || die "mmap: ondemandctl mount failed"
    flag=; [ "$order" = reverse ] && flag=--reverse
    got=$(cd "$T/mnt/$round" && find . -type f | sort | xargs "$MMAP" $flag 2>&1)
    if [ "$got" = "$(cat "$T/expected")" ]; then
        pass "mmap ($order): every file of a fresh image read through page faults hashes right"
    else
        fail "mmap ($order): $(diff <(echo "$got") "$T/expected" | head -5)"
    fi
    umount "$T/mnt/$round"
done
wp=$(worker_pid)
st=$(grep -E '^(CapEff|NoNewPrivs|Seccomp):' "/proc/$wp/status" | tr -s '\t ' ' ' | tr '\n' ' ')
case $st in
    *"CapEff: 0000000000000000"*"NoNewPrivs: 1"*"Seccomp: 2"*) pass "sandbox: worker pid $wp: $st" ;;
    *) fail "sandbox: worker pid $wp: $st" ;;
esac

# ---- bad input ----
if out=$("$CTL" --config "$T/config.json" mount "$T/mnt/1" "no-such-blob" 2>&1); then
    fail "bad input: a mount of a missing blob succeeded"
elif echo "$out" | grep -q "no-such-blob"; then
    pass "bad input: refused, naming the blob: $out"
else
    fail "bad input: the refusal does not name the blob: $out"
fi

# ---- chaos ----
# The supervisor's fds other than cache files' writers (it holds one per
# cache file, by design: a new mount adds two).
other_fds() { find "/proc/$SUP_PID/fd" -mindepth 1 -printf '%l\n' | grep -vc "^$T/cache/fanotify/"; }
fd_before=$(other_fds)
kills=0 reads=0 errors=0
deaths_before=$(grep -c "after the previous worker died" "$T/supervisor.log")
start=$(date +%s)
while [ "$kills" -lt "$KILLS" ] && [ $(( $(date +%s) - start )) -lt 600 ]; do
    new_mount || { fail "chaos: mount $round failed"; break; }
    read_all "$round" 3
    # Kill while these readers run: 3-30 ms after a worker serves.
    while kill -0 $wait_readers 2>/dev/null && [ "$kills" -lt "$KILLS" ]; do
        sleep "0.0$(( RANDOM % 27 + 3 ))"
        wp=$(worker_pid)
        if [ -n "$wp" ] && kill -9 "$wp" 2>/dev/null; then
            kills=$((kills + 1))
            # The next kill only once a successor serves (a new pid file).
            for _ in $(seq 200); do [ "$(worker_pid)" != "$wp" ] && break; sleep 0.005; done
        fi
    done
    check_readers
    umount "$T/mnt/$round"
done
sleep 0.5
deaths=$(( $(grep -c "after the previous worker died" "$T/supervisor.log") - deaths_before ))
recovered=$(grep -o "recovered [0-9]* events" "$T/supervisor.log" | awk '{s += $2} END {print s + 0}')
lat=$(grep -o "serving, [0-9.]* ms after the previous worker died" "$T/supervisor.log" | tail -n "$deaths" |
      awk '{print $2}' | sort -n | awk '{a[NR] = $1} END {if (NR) printf "p50 %s ms, p99 %s ms, max %s ms", a[int((NR + 1) / 2)], a[int(NR * 0.99 + 0.999)], a[NR]}')
summary="$kills kills over $((round - 1)) rounds, $reads whole-image reads, $errors bad, $deaths failovers, $recovered events recovered; kill to serving $lat"
if [ "$kills" -ge "$KILLS" ] && [ "$errors" = 0 ] && [ "$deaths" -ge "$kills" ]; then
    pass "chaos: $summary"
else
    fail "chaos: $summary (want $KILLS kills, 0 bad, a failover per kill)"
fi
for _ in $(seq 50); do "$CTL" --config "$T/config.json" status 2>/dev/null | grep -q "^state *running" && break; sleep 0.1; done
sleep 0.3
fd_after=$(other_fds)
[ "$fd_before" = "$fd_after" ] && pass "supervisor fds: $fd_before (besides cache files) before and after the kills" ||
    fail "supervisor fds: $fd_before before the kills, $fd_after after"

# ---- upgrade ----
reads=0 errors=0 upgraded=0
for u in $(seq "$UPGRADES"); do
    new_mount || { fail "upgrade: mount failed"; break; }
    read_all "$round" 3
    sleep "0.0$(( RANDOM % 40 + 5 ))"
    if "$CTL" --config "$T/config.json" upgrade > "$T/upgrade.out" 2>&1; then upgraded=$((upgraded + 1)); else cat "$T/upgrade.out"; fi
    check_readers
    umount "$T/mnt/$round"
done
in_flight=$(grep -c "handing over: reading stopped, [1-9]" "$T/supervisor.log")
if [ "$upgraded" = "$UPGRADES" ] && [ "$errors" = 0 ]; then
    pass "upgrade: $upgraded of $UPGRADES upgrades under $reads whole-image reads, $in_flight with events in flight, 0 bad"
else
    fail "upgrade: $upgraded of $UPGRADES upgrades, $errors bad reads"
fi

# ---- adopt ----
reads=0 errors=0 adopted=0
adopted_before=$(grep -c "adopted running worker" "$T/supervisor.log")
wp=$(worker_pid)
new_mount || fail "adopt: mount failed"
adopt_mount=$round
for a in $(seq "$ADOPTIONS"); do
    # Each round a fresh image is read while the supervisor dies: its
    # events are served by the orphaned worker, then under the adopter.
    [ "$a" -gt 1 ] && { new_mount || { fail "adopt: mount failed"; break; }; }
    read_all "$round" 3
    sleep "0.0$(( RANDOM % 40 + 5 ))"
    kill -9 "$SUP_PID"
    wait "$SUP_PID" 2>/dev/null
    start_supervisor || { fail "adopt: no serving worker after supervisor restart $a"; break; }
    check_readers
done
adopted=$(( $(grep -c "adopted running worker" "$T/supervisor.log") - adopted_before ))
if [ "$adopted" = "$ADOPTIONS" ] && [ "$errors" = 0 ] && [ "$(worker_pid)" = "$wp" ]; then
    pass "adopt: $adopted supervisor kill -9s, each adopted worker pid $wp, under $reads whole-image reads, 0 bad"
else
    fail "adopt: $adopted of $ADOPTIONS adoptions (worker pid $wp -> $(worker_pid)), $errors bad reads"
fi
# The adopter holds what it got back: the adopted worker's death is an
# ordinary failover, and a new mount goes through it.
reads=0 errors=0
read_all "$adopt_mount" 2
sleep 0.02
kill -9 "$wp"
check_readers
for _ in $(seq 200); do [ "$(worker_pid)" != "$wp" ] && break; sleep 0.01; done
new_mount || fail "adopt: a mount after adoption failed"
read_all "$round" 2
check_readers
if [ "$errors" = 0 ] && [ "$(worker_pid)" != "$wp" ] && [ "$reads" = 4 ]; then
    pass "adopt: after adoption, a worker kill -9 failed over and a new mount read right"
else
    fail "adopt: after adoption: $errors bad reads of $((reads + errors)), worker $wp -> $(worker_pid)"
fi
for m in $(seq $((adopt_mount)) "$round"); do umount "$T/mnt/$m" 2>/dev/null; done

# ---- restart: every holder of the group dies, a fresh supervisor ----
new_mount || fail "restart: mount failed"
head -c 4096 "$T/mnt/$round/a" > /dev/null
kill -9 "$SUP_PID"; pkill -9 -f "$T/state/" ; wait "$SUP_PID" 2>/dev/null
for _ in $(seq 100); do pgrep -f "$T/state/" >/dev/null || break; sleep 0.05; done
found_before=$(grep -c "incomplete data blobs marked again" "$T/supervisor.log")
start_supervisor || fail "restart: no serving worker after a fresh start"
reads=0 errors=0
read_all "$round" 2; check_readers
if [ "$errors" = 0 ] && [ "$(grep -c "incomplete data blobs marked again" "$T/supervisor.log")" -gt "$found_before" ]; then
    pass "restart: $(grep -o "[0-9]* cache files found.*" "$T/supervisor.log" | tail -1); the mounted image read right"
else
    fail "restart: $errors bad reads of an image mounted before every holder died"
fi
umount "$T/mnt/$round"

# ---- hang ----
reads=0 errors=0
hangs_before=$(grep -c "heartbeat stale" "$T/supervisor.log")
new_mount || fail "hang: mount failed"
wp=$(worker_pid)
kill -STOP "$wp"
read_all "$round" 1
check_readers
hangs=$(( $(grep -c "heartbeat stale" "$T/supervisor.log") - hangs_before ))
if [ "$hangs" -ge 1 ] && [ "$errors" = 0 ] && [ "$(worker_pid)" != "$wp" ]; then
    pass "hang: a stopped worker was killed by the watchdog and its reader read right"
else
    fail "hang: $hangs watchdog kills, $errors bad reads"
fi
umount "$T/mnt/$round"

# ---- seccomp ----
seccomp_before=$(grep -c "killed by seccomp" "$T/supervisor.log")
if "$CTL" --config "$T/config.json" upgrade --binary "$TRIGGER" > "$T/upgrade.out" 2>&1; then
    reads=0 errors=0
    wp=$(worker_pid)
    new_mount || fail "seccomp: mount failed"
    read_all "$round" 3
    sleep 0.02
    kill -USR2 "$wp"
    check_readers
    for _ in $(seq 100); do [ "$(worker_pid)" != "$wp" ] && break; sleep 0.05; done
    line=$(grep "worker pid=$wp .*killed by seccomp" "$T/supervisor.log" | head -1)
    if [ -n "$line" ] && [ "$errors" = 0 ] && [ "$reads" = 3 ] && [ "$(worker_pid)" != "$wp" ]; then
        pass "seccomp: ${line#* supervisor\[*\] }; replaced by pid $(worker_pid); 3 readers right"
    else
        fail "seccomp: log '$line', $errors bad reads of $((reads + errors)), worker $wp -> $(worker_pid)"
    fi
    umount "$T/mnt/$round"
    "$CTL" --config "$T/config.json" upgrade --binary "$WORKER" > "$T/upgrade.out" 2>&1 ||
        fail "seccomp: upgrade back to $WORKER: $(cat "$T/upgrade.out")"
else
    fail "seccomp: upgrade to the trigger build: $(cat "$T/upgrade.out")"
fi
seccomp_kills=$(( $(grep -c "killed by seccomp" "$T/supervisor.log") - seccomp_before ))

# ---- stop ----
new_mount || fail "stop: mount failed"
if out=$("$CTL" --config "$T/config.json" stop 2>&1); then
    fail "stop: ondemandctl stop succeeded with $T/mnt/$round mounted"
    SUP_PID=
else
    reads=0 errors=0
    read_all "$round" 1; check_readers
    if echo "$out" | grep -q "$T/mnt/$round" && [ "$errors" = 0 ] && kill -0 "$SUP_PID" 2>/dev/null; then
        pass "stop: refused while mounted, naming it, and the image still reads right: $out"
    else
        fail "stop: refusal '$out', $errors bad reads"
    fi
fi
umount "$T/mnt/$round"
"$CTL" --config "$T/config.json" stop >/dev/null 2>&1
for _ in $(seq 100); do kill -0 "$SUP_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$SUP_PID" 2>/dev/null; then fail "stop: the supervisor still runs 10 s after ondemandctl stop"; else SUP_PID=; fi
# The only seccomp kill is the one the trigger asked for.
if [ "$(grep -c "killed by seccomp" "$T/supervisor.log")" != "$seccomp_kills" ] || [ "$seccomp_kills" -gt 1 ]; then
    fail "log: an unexpected seccomp kill: $(grep -m1 "killed by seccomp" "$T/supervisor.log")"
fi
if grep -qE "AddressSanitizer|runtime error" "$T/supervisor.log"; then
    fail "log: $(grep -m1 -E "AddressSanitizer|runtime error" "$T/supervisor.log")"
fi
if [ "$fails" != 0 ]; then
    echo "--- last lines of the supervisor log ---"; tail -n 40 "$T/supervisor.log"
    exit 1
fi
exit 0
