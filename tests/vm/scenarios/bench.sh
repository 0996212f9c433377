#!/bin/sh
# Read benchmark (not a pass/fail test; driven by tests/bench/run-bench.sh,
# which parses the BENCH-RESULT lines). For every daemon configuration and
# case, BENCH_REPS rounds of: the image loop-mounted directly, then the same
# image through the daemon, both cold:
#   direct: drop_caches, fresh loop device and mount
#   daemon: drop_caches, a fresh fsid (the blob hard-linked under a new name,
#           so fscache has nothing cached for it), mount
# and each reads every file of the case once with vt-readbench (read(2),
# 1 MiB buffer, timed inside the process; mount and umount are not timed).
# After each daemon round the volume's cache files are deleted so the cache
# ramdisk does not fill up.
# With BENCH_REGISTRY=1 each round also reads the case a third time, cold,
# through the registry backend ("registry" mode): docker-registry on the
# VM's loopback with the case's blob pushed to it, a fresh id bound to it
# with `ondemandctl bind`. Its result lines add "http_requests": the GET and
# HEAD lines the registry's access log gained during the round (mount
# included).
#
# Cases (image NAME = case name, from run-vm.sh --image):
#   seq    bench-seq tree: one 256 MiB file
#   small  bench-small tree: 2,000 files of ~32 KiB
#   rand   the seq image, read by BENCH_RANDOM_READS pread()s of 4 KiB at
#          random offsets (vt-readbench --random, the same offsets every
#          round): the workload that shows read amplification
#   lz4    bench-lz4 tree under mkfs.erofs -zlz4 (~383 MiB of files in a
#          ~257 MiB blob): the mount time of a compressed image. The
#          daemon fills a compressed image whole at its first READ (the
#          superblock's, during mount; frontends/cachefiles fill_whole_blob),
#          so its mount is the whole fill. Both mounts are timed by
#          vt-mounts (the mount(2) call alone, RDTSC), cold as above; then
#          every file is read once ("mode":"mount-direct"|"mount-daemon",
#          with "mount_s" and the read's own fields; the daemon's adds
#          "bytes_written" and "blob_bytes")
# Env (run-vm.sh --env):
#   BENCH_CASES    default "seq small rand lz4"
#   BENCH_RANDOM_READS  for rand, default 2048 (8 MiB of 256 MiB)
#   BENCH_REPS     rounds per case and configuration, default 3
#   BENCH_CONFIGS  space-separated LABEL[:KEY=VALUE,...] daemon configurations,
#                  default "default" (the built-in defaults); KEY=VALUE pairs
#                  become config members, e.g. "w256k:fill_window=262144"
#   BENCH_PROBES   1 (default) to time the copies the daemon path is made
#                  of first (BENCH-PROBE lines; see probe below)
#   BENCH_REGISTRY 1 to add the registry mode (needs docker-registry and curl
#                  in the VM), default 0
# The physical limit ("limit" mode, seq case only, every round): a daemon
# cannot do less than write every byte of the blob once into the cache
# file system. vt-writebench writes the seq blob, held in RAM, with O_DIRECT
# into a new file on the cache ramdisk, by as many threads as the
# configuration's io_threads, in fill_window pieces of 1 MiB pwrites (the
# engine's pattern); its "bytes" are the blob's. The same with one writer
# ("limit1" mode): what a single fill stream could reach.
# The kernel's own read path ("warm" mode, seq and small, every daemon
# round): the same fsid mounted again once the daemon round has filled its
# cache files, read cold from them (run_warm below).
# Output, one line per measurement:
#   BENCH-RESULT {"case":..,"mode":"direct"|"daemon"|"warm"|"registry"|"limit"
#                 |"mount-direct"|"mount-daemon",
#                 "config":LABEL,"rep":N,["mount_s":..,]"bytes":..,"seconds":..,"mb_per_s":..
#                 [,"reads":..,"bytes_written":..,"opens":..
#                  [,"read_latency_count":..,"read_latency_sum_ns":..]
#                 [,"http_requests":..]] [,"writers":..,"window":..]
#                 [,"mount_bytes_written":..,"blob_bytes":..]}
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. /lib/vmtest.sh

: "${BENCH_CASES:=seq small rand lz4}"
: "${BENCH_RANDOM_READS:=2048}"

# The image a case reads, and how vt-readbench reads it.
case_image() { if [ "$1" = rand ]; then echo seq; else echo "$1"; fi; }
case_read_args() { if [ "$1" = rand ]; then echo "--bs 4096 --random $BENCH_RANDOM_READS"; fi; }
: "${BENCH_REPS:=3}"
: "${BENCH_CONFIGS:=default}"
: "${BENCH_REGISTRY:=0}"

need_tools="vt-readbench vt-counters vt-writebench"
case " $BENCH_CASES " in *" lz4 "*) need_tools="$need_tools vt-mounts" ;; esac
for tool in $need_tools; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        vt_fail bench-setup "$tool is not in the VM (run-vm.sh --add BUILD/tests/vm/tools/$tool)"
        exit 0
    fi
done
if [ ! -w /proc/sys/vm/drop_caches ]; then
    vt_fail bench-setup "/proc/sys/vm/drop_caches is not writable (kernel without PROC_SYSCTL?)"
    exit 0
fi
for c in $BENCH_CASES; do
    img=$(case_image "$c")
    if [ ! -s "$VT_BLOB_DIR/$img" ] || [ ! -s "$VT_MANIFEST_DIR/$img.manifest" ]; then
        vt_fail bench-setup "image $img missing (run-vm.sh --image $img=bench-$img$([ "$img" = lz4 ] && echo :-zlz4))"
        exit 0
    fi
    # Regular files of the case in manifest order, relative paths.
    awk '$1 != "dir" && $1 != "symlink" { print $2 }' "$VT_MANIFEST_DIR/$img.manifest" > "/tmp/bench-$c.files"
done
mkdir -p /mnt/bench-direct /mnt/bench-daemon

drop_caches() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
}

# readbench CASE MNT: prints vt-readbench's JSON (without the closing brace)
readbench() {
    sed "s|^|$2/|" "/tmp/bench-$1.files" > /tmp/bench-list
    # shellcheck disable=SC2046  # the case's options, one word each
    _out=$(vt-readbench $(case_read_args "$1") --list /tmp/bench-list) || {
        vt_fail "bench-$1" "vt-readbench failed on $2: $_out"
        return 1
    }
    echo "${_out%\}}"
}

# The image loop-mounted directly; MODE mount-direct (the lz4 case) adds
# the mount(2) call's seconds (timed_mount).
run_direct() { # CASE CONFIG REP [MODE]
    mode=${4:-direct}
    drop_caches
    dev=$(losetup -f) || { vt_fail "bench-$mode" "no free loop device"; return 1; }
    losetup -r "$dev" "$VT_BLOB_DIR/$(case_image "$1")" || { vt_fail "bench-$mode" "losetup $dev $1 failed"; return 1; }
    if ! secs=$(timed_mount "$dev" /mnt/bench-direct ro); then
        vt_fail "bench-$mode" "mount $dev failed: $secs"
        losetup -d "$dev"
        return 1
    fi
    timed=
    [ "$mode" = direct ] || timed="\"mount_s\":$secs,"
    if r=$(readbench "$1" /mnt/bench-direct); then
        echo "BENCH-RESULT {\"case\":\"$1\",\"mode\":\"$mode\",\"config\":\"$2\",\"rep\":$3,$timed${r#\{}}"
    fi
    umount /mnt/bench-direct
    losetup -d "$dev"
}

run_daemon() { # CASE CONFIG REP
    fsid=bench-$1-$2-$3
    ln "$VT_BLOB_DIR/$(case_image "$1")" "$VT_BLOB_DIR/$fsid" || { vt_fail bench-daemon "ln $fsid failed"; return 1; }
    drop_caches
    # Counted from before the mount: the mount's OPEN and metadata READs too.
    set -- "$1" "$2" "$3" "$(vt_counter reads)" "$(vt_counter bytes_written)" "$(vt_counter opens)" \
        "$(vt_counter read_latency_count)" "$(vt_counter read_latency_sum_ns)"
    if ! err=$(vt_mount_fscache "$fsid" /mnt/bench-daemon 2>&1); then
        vt_fail bench-daemon "mount -o fsid=$fsid failed: $err"
        rm -f "$VT_BLOB_DIR/$fsid"
        return 1
    fi
    if r=$(readbench "$1" /mnt/bench-daemon); then
        echo "BENCH-RESULT {\"case\":\"$1\",\"mode\":\"daemon\",\"config\":\"$2\",\"rep\":$3,${r#\{},\"reads\":$(( $(vt_counter reads) - $4 )),\"bytes_written\":$(( $(vt_counter bytes_written) - $5 )),\"opens\":$(( $(vt_counter opens) - $6 )),\"read_latency_count\":$(( $(vt_counter read_latency_count) - $7 )),\"read_latency_sum_ns\":$(( $(vt_counter read_latency_sum_ns) - $8 ))}"
    fi
    umount /mnt/bench-daemon
    [ "$1" = rand ] || run_warm "$@"
    rm -f "$VT_BLOB_DIR/$fsid"
    # The volume is relinquished at umount; its cache files can go.
    rm -rf "$VT_CACHE_DIR/cache/Ierofs,$fsid"
}

# The kernel's own path ("warm" mode): the daemon round's cache files are
# complete, so the same fsid mounted again, cold page cache, reads every byte
# from the cache file through fscache and asks the daemon nothing but the
# OPEN. No daemon can read faster than this; what the daemon round took
# beyond it is the fill. "reads" counts the READs it still sent (0 when the
# cache is whole).
run_warm() { # CASE CONFIG REP
    drop_caches
    set -- "$1" "$2" "$3" "$(vt_counter reads)"
    if ! err=$(vt_mount_fscache "$fsid" /mnt/bench-daemon 2>&1); then
        vt_fail bench-warm "mount -o fsid=$fsid (again) failed: $err"
        return 1
    fi
    if r=$(readbench "$1" /mnt/bench-daemon); then
        echo "BENCH-RESULT {\"case\":\"$1\",\"mode\":\"warm\",\"config\":\"$2\",\"rep\":$3,${r#\{},\"reads\":$(( $(vt_counter reads) - $4 ))}"
    fi
    umount /mnt/bench-daemon
}

# timed_mount SOURCE TARGET OPTIONS: prints the seconds of the mount(2)
# call (vt-mounts: RDTSC, the VM's CLOCK_MONOTONIC moves in 4 ms steps).
timed_mount() {
    echo "$1 erofs $2 $3" > /tmp/bench-mount
    _m=$(vt-mounts mount /tmp/bench-mount.lat < /tmp/bench-mount 2>&1) || { echo "$_m"; return 1; }
    awk '{ print $1 / 1e6 }' /tmp/bench-mount.lat
}

# The lz4 case: mount time first, then every file read once.
run_mount_daemon() { # CASE CONFIG REP
    fsid=bench-$1-$2-$3
    ln "$VT_BLOB_DIR/$1" "$VT_BLOB_DIR/$fsid" || { vt_fail bench-mount-daemon "ln $fsid failed"; return 1; }
    drop_caches
    set -- "$1" "$2" "$3" "$(vt_counter bytes_written)" "$(vt_counter reads)"
    if ! secs=$(timed_mount none /mnt/bench-daemon "fsid=$fsid"); then
        vt_fail bench-mount-daemon "mount -o fsid=$fsid failed: $secs"
        rm -f "$VT_BLOB_DIR/$fsid"
        return 1
    fi
    # What the mount alone wrote: the whole blob, if the fill rule holds.
    written=$(( $(vt_counter bytes_written) - $4 ))
    if r=$(readbench "$1" /mnt/bench-daemon); then
        echo "BENCH-RESULT {\"case\":\"$1\",\"mode\":\"mount-daemon\",\"config\":\"$2\",\"rep\":$3,\"mount_s\":$secs,${r#\{},\"mount_bytes_written\":$written,\"bytes_written\":$(( $(vt_counter bytes_written) - $4 )),\"reads\":$(( $(vt_counter reads) - $5 )),\"blob_bytes\":$(stat -c %s "$VT_BLOB_DIR/$1")}"
    fi
    umount /mnt/bench-daemon
    rm -f "$VT_BLOB_DIR/$fsid"
    rm -rf "$VT_CACHE_DIR/cache/Ierofs,$fsid"
}

run_limit() { # CASE CONFIG REP WRITERS WINDOW
    [ "$1" = seq ] || return 0
    limit_write "$1" "$2" "$3" limit "$4" "$5" || return 1
    # One writer: what a single fill stream could reach (the same run when
    # the configuration has one thread).
    [ "$4" = 1 ] || limit_write "$1" "$2" "$3" limit1 1 "$5"
}
limit_write() { # CASE CONFIG REP MODE WRITERS WINDOW
    drop_caches
    if ! r=$(vt-writebench --writers "$5" --window "$6" "$VT_BLOB_DIR/seq" "$VT_CACHE_DIR/limit.bin" 2>&1); then
        vt_fail bench-limit "vt-writebench failed: $r"
        rm -f "$VT_CACHE_DIR/limit.bin"
        return 1
    fi
    rm -f "$VT_CACHE_DIR/limit.bin"
    echo "BENCH-RESULT {\"case\":\"$1\",\"mode\":\"$4\",\"config\":\"$2\",\"rep\":$3,${r#\{}"
}

# The registry mode's server: anonymous; its log has one access line per
# request (vt_registry_start).
REG=127.0.0.1:5000
REG_LOG=/var/lib/registry-bench/log
if [ "$BENCH_REGISTRY" = 1 ]; then
    for tool in docker-registry curl; do
        command -v "$tool" > /dev/null || { vt_fail bench-setup "$tool is not in the VM (run-vm.sh --add)"; exit 0; }
    done
    ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
    if ! err=$(vt_registry_start bench "$REG"); then vt_fail bench-setup "$err"; exit 0; fi
    for c in $BENCH_CASES; do
        [ "$c" = lz4 ] && continue  # not read through the registry
        c=$(case_image "$c")
        eval "pushed=\${DIGEST_$c:-}"
        [ -z "$pushed" ] || continue  # one push per image
        if ! digest=$(vt_registry_push "$REG" "bench/$c" "$VT_BLOB_DIR/$c"); then
            vt_fail bench-setup "push of $c: $digest"
            exit 0
        fi
        eval "DIGEST_$c=\$digest"
    done
    # What the registry itself serves: the seq blob in one GET by curl, the
    # ceiling of the registry mode in this VM.
    if [ -n "${DIGEST_seq:-}" ]; then
        t0=$(cut -d' ' -f1 /proc/uptime)
        bytes=$(curl -sS -o /dev/null -w '%{size_download}' "http://$REG/v2/bench/seq/blobs/$DIGEST_seq")
        t1=$(cut -d' ' -f1 /proc/uptime)
        awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN {
            s = z - a
            printf "BENCH-PROBE {\"probe\":\"registry-curl-get\",\"bytes\":%d,\"seconds\":%.3f,\"mb_per_s\":%.1f}\n", b, s, (s > 0 ? b / 1e6 / s : 0)
        }'
    fi
    # And in the daemon's pattern: 16 ranged GETs of 4 MiB (the fill
    # window) on one connection.
    if [ -n "${DIGEST_seq:-}" ]; then
        urls=
        for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do urls="$urls http://$REG/v2/bench/seq/blobs/$DIGEST_seq"; done
        t0=$(cut -d' ' -f1 /proc/uptime)
        # shellcheck disable=SC2086  # one word per URL
        curl -sS -r 0-4194303 $urls > /dev/null
        t1=$(cut -d' ' -f1 /proc/uptime)
        awk -v a="$t0" -v z="$t1" 'BEGIN {
            s = z - a; b = 16 * 4194304
            printf "BENCH-PROBE {\"probe\":\"registry-curl-16x4MiB\",\"bytes\":%d,\"seconds\":%.3f,\"mb_per_s\":%.1f}\n", b, s, (s > 0 ? b / 1e6 / s : 0)
        }'
    fi
    # The registry path also hashes every byte it fetches (the binding's
    # digest): OpenSSL's SHA-256 over the seq blob, the worker's code path.
    if [ -n "${DIGEST_seq:-}" ] && command -v openssl > /dev/null; then
        t0=$(cut -d' ' -f1 /proc/uptime)
        openssl dgst -sha256 "$VT_BLOB_DIR/seq" > /dev/null
        t1=$(cut -d' ' -f1 /proc/uptime)
        bytes=$(stat -c %s "$VT_BLOB_DIR/seq")
        awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN {
            s = z - a
            printf "BENCH-PROBE {\"probe\":\"sha256-openssl\",\"bytes\":%d,\"seconds\":%.3f,\"mb_per_s\":%.1f}\n", b, s, (s > 0 ? b / 1e6 / s : 0)
        }'
    fi
    REG_CONFIG="\"data_dir\": \"/var/lib/ondemand\", \"registries\": {\"$REG\": {\"insecure_http\": true}}"
fi
registry_requests() {
    grep -cE '"(GET|HEAD) /v2/bench/' "$REG_LOG"
}

run_registry() { # CASE CONFIG REP
    id=breg-$1-$2-$3
    img=$(case_image "$1")
    eval "digest=\$DIGEST_$img"
    if ! err=$(vt_ctl bind "$id" --registry "$REG" --repository "bench/$img" --digest "$digest" 2>&1); then
        vt_fail bench-registry "bind $id: $err"
        return 1
    fi
    drop_caches
    set -- "$1" "$2" "$3" "$(vt_counter reads)" "$(vt_counter bytes_written)" "$(vt_counter opens)" "$(registry_requests)"
    if ! err=$(vt_mount_fscache "$id" /mnt/bench-daemon 2>&1); then
        vt_fail bench-registry "mount -o fsid=$id failed: $err"
        vt_ctl unbind "$id" > /dev/null
        return 1
    fi
    if r=$(readbench "$1" /mnt/bench-daemon); then
        echo "BENCH-RESULT {\"case\":\"$1\",\"mode\":\"registry\",\"config\":\"$2\",\"rep\":$3,${r#\{},\"reads\":$(( $(vt_counter reads) - $4 )),\"bytes_written\":$(( $(vt_counter bytes_written) - $5 )),\"opens\":$(( $(vt_counter opens) - $6 )),\"http_requests\":$(( $(registry_requests) - $7 ))}"
    fi
    umount /mnt/bench-daemon
    vt_ctl unbind "$id" > /dev/null
    rm -rf "$VT_CACHE_DIR/cache/Ierofs,$id"
}

# Probes: the copies the daemon path is made of, each over the seq blob with
# 1 MiB blocks, timed by busybox dd. Printed as
#   BENCH-PROBE {"probe":NAME,"bytes":..,"seconds":..,"mb_per_s":..}
probe() { # NAME DD-ARGS...
    _name=$1
    shift
    _t0=$(cut -d' ' -f1 /proc/uptime)
    _secs=$(dd "$@" bs=1M 2>&1 | awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^seconds/) print $(i - 1) }')
    _t1=$(cut -d' ' -f1 /proc/uptime)
    _bytes=$(stat -c %s "$VT_BLOB_DIR/seq")
    # dd prints seconds with little precision; fall back on /proc/uptime.
    awk -v n="$_name" -v b="$_bytes" -v s="$_secs" -v a="$_t0" -v z="$_t1" 'BEGIN {
        if (s + 0 <= 0) s = z - a
        printf "BENCH-PROBE {\"probe\":\"%s\",\"bytes\":%d,\"seconds\":%.3f,\"mb_per_s\":%.1f}\n", n, b, s, (s > 0 ? b / 1e6 / s : 0)
    }'
}
if [ "${BENCH_PROBES:-1}" = 1 ] && [ -s "$VT_BLOB_DIR/seq" ]; then
    p=$VT_CACHE_DIR/probe.bin
    drop_caches
    probe blob-read if="$VT_BLOB_DIR/seq" of=/dev/null
    probe blob-read-direct-write if="$VT_BLOB_DIR/seq" of="$p" oflag=direct
    drop_caches
    probe cache-direct-read if="$p" iflag=direct of=/dev/null
    drop_caches
    probe cache-buffered-read if="$p" of=/dev/null
    rm -f "$p"
fi

failed_before=0
for spec in $BENCH_CONFIGS; do
    label=${spec%%:*}
    members=
    if [ "$spec" != "$label" ]; then
        members=$(echo "${spec#*:}" | sed 's/\([A-Za-z_]*\)=\([^,]*\)/"\1": \2/g; s/,/, /g')
    fi
    # shellcheck disable=SC2034  # read by vt_write_config in lib.sh
    VT_CONFIG_EXTRA=$members
    if [ "$BENCH_REGISTRY" = 1 ]; then VT_CONFIG_EXTRA="${members:+$members, }$REG_CONFIG"; fi
    vt_start_supervisor || exit 0
    # The worker logs the values it runs with ("serving with ... max_inflight=
    # N, io_threads=N, fill_window=N"), defaults included.
    effective=
    tries=0
    while [ -z "$effective" ] && [ "$tries" -lt 50 ]; do
        effective=$(grep -o 'max_inflight=[0-9]*, io_threads=[0-9]*, fill_window=[0-9]*' "$VT_SUPERVISOR_LOG" |
            tail -n 1 | sed 's/\([a-z_]*\)=\([0-9]*\)/"\1": \2/g')
        [ -n "$effective" ] || sleep 0.1
        tries=$((tries + 1))
    done
    vt_info "bench config $label: {$members}, effective {$effective}"
    echo "BENCH-CONFIG {\"label\":\"$label\",\"members\":{$members},\"effective\":{$effective}}"
    # The limit's writers and pieces: what this configuration's worker uses.
    io_threads=$(echo "$effective" | sed -n 's/.*"io_threads": \([0-9]*\).*/\1/p')
    window=$(echo "$effective" | sed -n 's/.*"fill_window": \([0-9]*\).*/\1/p')
    for c in $BENCH_CASES; do
        rep=1
        while [ "$rep" -le "$BENCH_REPS" ]; do
            if [ "$c" = lz4 ]; then
                run_direct "$c" "$label" "$rep" mount-direct
                run_mount_daemon "$c" "$label" "$rep"
                rep=$((rep + 1))
                continue
            fi
            run_direct "$c" "$label" "$rep"
            run_daemon "$c" "$label" "$rep"
            run_limit "$c" "$label" "$rep" "${io_threads:-4}" "${window:-4194304}"
            [ "$BENCH_REGISTRY" = 1 ] && run_registry "$c" "$label" "$rep"
            rep=$((rep + 1))
        done
    done
    failed=$(vt_counter read_failed)
    if [ "$failed" != "$failed_before" ]; then
        vt_fail bench-read-failed "config $label: read_failed went from $failed_before to $failed"
    fi
    vt_stop_supervisor
    failed_before=$failed
done
vt_pass bench "done: configs [$BENCH_CONFIGS], cases [$BENCH_CASES], $BENCH_REPS rounds each"
exit 0
