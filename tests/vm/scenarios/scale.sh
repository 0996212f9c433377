#!/bin/sh
# shellcheck disable=SC2002  # cat FILE | xargs on purpose (the note above the first one)
# Thousands of images on one node (issue 12): SCALE_IMAGES (default 2000)
# small EROFS images built in the guest, all mounted at once through the
# daemon, every file of every image read and its SHA-256 checked against its
# source, then all unmounted. Two passes of reads: the first over files a
# and b of every image, the second (page cache dropped) over every file, so
# that it verifies again what the first read and also asks the daemon for
# file c of every image, which nobody read yet. The config's fill_window is
# 4096 (SCALE_FILL_WINDOW): with the default 4 MiB window an image of a few
# KiB is filled whole at the mount's first READ and no later read would
# reach the daemon; with 4 KiB each file's first read is a READ of its own.
# Prints, for a human and for grep:
#   scale-figures: worker RSS before/after and per object, fds held, objects
#   scale-open-latency: p50/p90/p99/max of the mount(2) calls, each of which
#     returns only once the daemon answered its OPEN (and the READ of the
#     superblock that follows it): the daemon has no per-OPEN timer of its own
# Fails on any mount, read or hash error, a failed READ, a reply the kernel
# refused (vt_check_replies), or a worker still holding more fds after the
# umounts than before the mounts.
#
# Images: each has three files of distinct content (a 1-2 KiB, b 4 KiB and
# c 4.5-8 KiB, so that b and c have whole blocks of their own; text naming
# the image, file and line), written by one awk for all images, then one
# mkfs.erofs per image (SCALE_MKFS_JOBS lanes, default 2 =
# the VM's CPUs; mkfs.erofs 1.5 makes one image per run). Each image is its
# own blob, mounted with its own fsid in one shared domain:
#   -o fsid=sI,domain_id=scale        (SCALE_DOMAIN, default "scale")
# so that all of them live in one fscache volume: one object (one OPEN, one
# anonymous fd) per image. Without a domain (SCALE_DOMAIN= empty) every
# mount is a volume of its own, for which cachefiles makes a directory and
# its 256 fan-out subdirectories in the cache: 257 inodes and about 600 KiB
# of guest memory per image, and the cache ramdisk's ext4 (32768 inodes at
# 512 MiB) refuses the 128th volume with ENOBUFS ("CacheFiles: mkdir
# Ierofs,sI failed with error -105").
#
# The fd budget (SCALE_BUDGET, 0 or unset = none): with SCALE_BUDGET=B the
# config gets "max_open_objects": B, with which the worker closes the least
# recently used objects' anonymous fds (and blob fds) beyond B and the
# kernel reopens an object with a fresh OPEN at its next READ. Then also:
# after the mounts and the first pass of reads the worker holds at most B
# anonymous fds and at most B + its fds before the mounts + 16 others; the
# second pass, whose READs of file c reach objects the budget closed (the
# kernel reopens them), verifies every file; and the worker counted more
# OPENs than images when B < SCALE_IMAGES.
#
# The worker's fd limit: no systemd here, so the scenario raises
# RLIMIT_NOFILE to 65536 for the supervisor and worker, as the unit does
# (deploy/systemd: LimitNOFILE=65536); the kernel's default of 1024 would
# stop an unbudgeted worker at about 500 objects (two fds each: the
# anonymous fd and the blob).
#   run-vm.sh --scenario scale.sh --mem 2048 --cache-mb 512 \
#     --add /usr/bin/mkfs.erofs --add BUILD/tests/vm/tools/vt-mounts \
#     --add BUILD/tests/vm/tools/vt-counters [--env SCALE_IMAGES=N] [--env SCALE_BUDGET=B]
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. /lib/vmtest.sh

N=${SCALE_IMAGES:-2000}
BUDGET=${SCALE_BUDGET:-0}
JOBS=${SCALE_MKFS_JOBS:-2}
DOMAIN=${SCALE_DOMAIN-scale}
FILL_WINDOW=${SCALE_FILL_WINDOW:-4096}
SRC=/scale/src
MNT=/scale/mnt
W=/scale/work
t_scenario=$(vt_now)
mkdir -p "$SRC" "$MNT" "$W" "$VT_BLOB_DIR"

for tool in mkfs.erofs vt-mounts vt-counters; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        vt_fail scale-setup "$tool is not in the VM (see the usage line above)"
        exit 0
    fi
done

# ---- images ------------------------------------------------------------------

t0=$(vt_now)
seq 1 "$N" > "$W/ids"
# xargs reads a pipe, never a file, throughout: busybox runs an applet it
# starts (mkdir, sha256sum) as a fork of itself, whose exit() puts the
# offset of a seekable stdin it shares back to where its copy of xargs's
# buffer stood, so xargs reads parts of a file twice: 4000 paths gave 4260
# sha256sum lines and a path "./94a" spliced from two.
(cd "$SRC" && cat "$W/ids" | xargs mkdir) || { vt_fail scale-setup "mkdir of $N source dirs failed"; exit 0; }
# 64-byte lines; sizes: a 1-2 KiB, b 4 KiB, c 4.5-8 KiB (by image number).
awk -v n="$N" -v src="$SRC" 'BEGIN {
    chars = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
    split("a b c", names, " ")
    for (i = 1; i <= n; i++) {
        lines[1] = 16 + i % 17; lines[2] = 64; lines[3] = 72 + (i * 7) % 57
        for (f = 1; f <= 3; f++) {
            p = src "/" i "/" names[f]
            for (k = 0; k < lines[f]; k++)
                printf "img %06d file %s line %04d %s\n", i, names[f], k,
                    substr(chars, 1 + (i * 3 + k) % 29, 35) > p
            close(p)
        }
    }
}' || { vt_fail scale-setup "writing the source trees failed"; exit 0; }
t_gen=$(vt_elapsed "$t0")

t0=$(vt_now)
lane=0
lanes=
while [ "$lane" -lt "$JOBS" ]; do
    (
        i=$((lane + 1))
        while [ "$i" -le "$N" ]; do
            mkfs.erofs --quiet -T1700000000 --all-root "$VT_BLOB_DIR/s$i" "$SRC/$i" \
                > /dev/null 2>> "$W/mkfs.err" || echo "s$i" >> "$W/mkfs.failed"
            i=$((i + JOBS))
        done
    ) &
    lanes="$lanes $!"
    lane=$((lane + 1))
done
# shellcheck disable=SC2086
wait $lanes
t_mkfs=$(vt_elapsed "$t0")
if [ -s "$W/mkfs.failed" ]; then
    vt_fail scale-setup "mkfs.erofs failed for $(wc -l < "$W/mkfs.failed") images, first $(head -n 1 "$W/mkfs.failed"): $(head -n 1 "$W/mkfs.err")"
    exit 0
fi
# The expected hashes, from the sources (sha256sum lines "HASH  ./I/F").
(cd "$SRC" && find . -type f | sort) > "$W/files"
grep -v '/c$' "$W/files" > "$W/files.ab"
(cd "$SRC" && cat "$W/files" | xargs sha256sum) > "$W/src.sums"
if [ "$(wc -l < "$W/src.sums")" -ne "$(wc -l < "$W/files")" ]; then
    vt_fail scale-setup "$(wc -l < "$W/src.sums") hashes of $(wc -l < "$W/files") source files"
    exit 0
fi
nfiles=$(wc -l < "$W/files")
src_kib=$(du -sk "$SRC" | cut -f1)
blob_kib=$(du -sk "$VT_BLOB_DIR" | cut -f1)
vt_info "scale-images: $N images, $nfiles files ($src_kib KiB of sources, $blob_kib KiB of images): sources ${t_gen}s, mkfs.erofs ${t_mkfs}s in $JOBS lanes"

# ---- daemon ------------------------------------------------------------------

# shellcheck disable=SC3045  # busybox ash has ulimit -n
ulimit -n 65536 || vt_info "ulimit -n 65536 refused: the worker keeps $(ulimit -n) fds"
VT_CONFIG_EXTRA="\"fill_window\": $FILL_WINDOW${VT_CONFIG_EXTRA:+, $VT_CONFIG_EXTRA}"
if [ "$BUDGET" -gt 0 ]; then
    VT_CONFIG_EXTRA="\"max_open_objects\": $BUDGET, $VT_CONFIG_EXTRA"
fi
# shellcheck disable=SC2119  # no extra supervisor arguments
vt_start_supervisor || exit 0
vt_check_sandboxed
w=$(vt_worker_pid)

# rss_kib PID: VmRSS in KiB.
rss_kib() {
    awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"
}
# fd_kinds PID: "total anon blob other" counts of PID's open fds: anon the
# objects' anonymous fds (anon_inode:[cachefiles]), blob the blob files.
fd_kinds() {
    ls -l "/proc/$1/fd" 2>/dev/null | awk -v blobs="$VT_BLOB_DIR/" '
        / -> / { n++; t = $NF
                 if (t == "anon_inode:[cachefiles]") a++
                 else if (index(t, blobs) == 1) b++
                 else o++ }
        END { printf "%d %d %d %d\n", n, a, b, o }'
}
# fd_snapshot PID: sets FD_ALL FD_ANON FD_BLOB FD_OTHER from fd_kinds.
fd_snapshot() {
    # shellcheck disable=SC2046  # four numbers
    set -- $(fd_kinds "$1")
    FD_ALL=$1 FD_ANON=$2 FD_BLOB=$3 FD_OTHER=$4
}
# fd_detail PID: the other fds' targets, counted (for the record).
fd_detail() {
    ls -l "/proc/$1/fd" 2>/dev/null | awk -v blobs="$VT_BLOB_DIR/" '
        / -> / { t = $NF
                 if (t != "anon_inode:[cachefiles]" && index(t, blobs) != 1) { sub(/:\[[0-9]+\]$/, "", t); c[t]++ } }
        END { for (t in c) { printf "%s%s x%d", sep, t, c[t]; sep = ", " } }'
}
# mem_avail_kib: MemAvailable of the guest.
mem_avail_kib() {
    awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo
}
# objects_settled: the worker's object table gauge once two heartbeats
# (100 ms each) agree.
objects_settled() {
    _prev=
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        _cur=$(vt_counter open_objects)
        [ -n "$_prev" ] && [ "$_cur" = "$_prev" ] && break
        _prev=$_cur
        sleep 0.25
    done
    echo "$_cur"
}

rss0=$(rss_kib "$w")
fd_snapshot "$w"
fds0=$FD_ALL
avail0=$(mem_avail_kib)
opens0=$(vt_counter opens)
reads_start=$(vt_counter reads)
vt_info "scale-before: worker pid $w RSS ${rss0} KiB, $fds0 fds ($(fd_detail "$w")), guest MemAvailable ${avail0} KiB"

# ---- mount all ---------------------------------------------------------------

awk -v mnt="$MNT" '{ print mnt "/" $1 }' "$W/ids" > "$W/targets"
cat "$W/targets" | xargs mkdir -p
awk -v mnt="$MNT" -v dom="${DOMAIN:+,domain_id=$DOMAIN}" '{ print "none erofs " mnt "/" $1 " fsid=s" $1 dom }' \
    "$W/ids" > "$W/mounts"
t0=$(vt_now)
summary=$(vt-mounts mount "$W/mount.lat" < "$W/mounts" 2> "$W/mount.err")
mount_rc=$?
t_mount=$(vt_elapsed "$t0")
mounted=$(wc -l < "$W/mount.lat")
if [ "$mount_rc" -ne 0 ]; then
    vt_fail scale-mount "$((N - mounted)) of $N mounts failed ($summary); first: $(head -n 1 "$W/mount.err"); kernel: $(dmesg | tail -n 3 | tr '\n' ' ')"
fi
vt_info "scale-open-latency: $summary (mount(2) of each image: OPEN + superblock READ round trips)"

rss1=$(rss_kib "$w")
fd_snapshot "$w"
fds1=$FD_ALL anon1=$FD_ANON blob1=$FD_BLOB other1=$FD_OTHER
objects1=$(objects_settled)
opens1=$(( $(vt_counter opens) - opens0 ))
reads_m=$(( $(vt_counter reads) - reads_start ))
avail1=$(mem_avail_kib)
per_obj=$(awk -v a="$rss0" -v b="$rss1" -v n="$objects1" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "n/a" }')
kern_per_mount=$(awk -v a="$avail0" -v b="$avail1" -v n="$mounted" 'BEGIN { if (n > 0) printf "%.1f", (a - b) / n; else print "n/a" }')
vt_info "scale-after-mount: $mounted mounts in ${t_mount}s, $opens1 OPENs and $reads_m READs (the superblock's), worker objects $objects1, RSS ${rss1} KiB (+$((rss1 - rss0)) KiB, $per_obj KiB/object), fds $fds1 (anon $anon1, blob $blob1, other $other1), guest MemAvailable -$((avail0 - avail1)) KiB ($kern_per_mount KiB/mount)"

# ---- read everything ---------------------------------------------------------

# verify_pass NAME LIST: the files of LIST (paths under every mount) hashed
# and compared with their sources; one PASS or FAIL line NAME with the
# READs and OPENs the pass made. Also fails on a failed READ.
verify_pass() {
    _t0=$(vt_now)
    _rf0=$(vt_counter read_failed)
    _r0=$(vt_counter reads)
    _o0=$(vt_counter opens)
    (cd "$MNT" && cat "$2" | xargs sha256sum) > "$W/mnt.sums" 2> "$W/read.err"
    _rc=$?
    _took=$(vt_elapsed "$_t0")
    _rf=$(( $(vt_counter read_failed) - _rf0 ))
    PASS_READS=$(( $(vt_counter reads) - _r0 ))
    PASS_OPENS=$(( $(vt_counter opens) - _o0 ))
    _n=$(wc -l < "$2")
    _bad=$(awk 'FILENAME == ARGV[1] { want[$1] = 1; next }
                FILENAME == ARGV[2] { if ($2 in want) hash[$2] = $1; next }
                { got[$2] = $1 }
                END { for (p in hash) if (got[p] != hash[p]) { n++; if (!first || p < first) first = p }
                      printf "%d %s\n", n + 0, first }' "$2" "$W/src.sums" "$W/mnt.sums")
    _nbad=${_bad%% *}
    _nout=$(wc -l < "$W/mnt.sums")
    if [ "$_rc" -eq 0 ] && [ ! -s "$W/read.err" ] && [ "$_nbad" -eq 0 ] && [ "$_rf" -eq 0 ] && [ "$_nout" -eq "$_n" ]; then
        vt_pass "$1" "$_n files of $mounted images verified in ${_took}s: $PASS_READS READs, $PASS_OPENS OPENs"
        return 0
    fi
    vt_fail "$1" "status $_rc, $_nbad of $_n files wrong or missing (first: ${_bad#* }), $_nout hashes for $_n files, read_failed +$_rf; first read error: $(head -n 1 "$W/read.err")"
    return 1
}

# First pass: files a and b of every image.
verify_pass scale-read-ab "$W/files.ab"
reads1=$PASS_READS
rss2=$(rss_kib "$w")
fd_snapshot "$w"
fds2=$FD_ALL anon2=$FD_ANON blob2=$FD_BLOB other2=$FD_OTHER
objects2=$(objects_settled)
per_obj2=$(awk -v a="$rss0" -v b="$rss2" -v n="$objects2" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "n/a" }')
vt_info "scale-after-read: $reads1 READs in the first pass, worker objects $objects2, RSS ${rss2} KiB (+$((rss2 - rss0)) KiB, $per_obj2 KiB/object), fds $fds2 (anon $anon2, blob $blob2, other $other2: $(fd_detail "$w"))"

if [ "$BUDGET" -gt 0 ]; then
    if [ "$anon2" -le "$BUDGET" ] && [ $((fds2 - anon2)) -le $((BUDGET + fds0 + 16)) ]; then
        vt_pass scale-budget-fds "budget $BUDGET: $anon2 anonymous fds, $((fds2 - anon2)) others ($fds0 before the mounts) with $mounted images mounted"
    else
        vt_fail scale-budget-fds "budget $BUDGET: $anon2 anonymous fds (at most $BUDGET), $((fds2 - anon2)) others (at most $((BUDGET + fds0 + 16))) with $mounted images mounted"
    fi
fi

# Second pass: every file, the page cache dropped first. a and b come back
# from the cache files; c's blocks are new, so every image gets READs, and
# with a budget most of them land on objects it closed (reopened first).
sync
echo 3 > /proc/sys/vm/drop_caches
verify_pass scale-read-all "$W/files"
reads2=$PASS_READS
opens2=$PASS_OPENS
opens_all=$(( $(vt_counter opens) - opens0 ))
rss3=$(rss_kib "$w")
fd_snapshot "$w"
fds3=$FD_ALL anon3=$FD_ANON blob3=$FD_BLOB
objects3=$(objects_settled)
vt_info "scale-after-read-all: $reads2 READs and $opens2 OPENs in the second pass, $opens_all OPENs in all; worker objects $objects3, RSS ${rss3} KiB, fds $fds3 (anon $anon3, blob $blob3)"
if [ "$BUDGET" -gt 0 ]; then
    if [ "$BUDGET" -lt "$N" ] && [ "$opens_all" -le "$N" ]; then
        vt_fail scale-budget-reopen "budget $BUDGET < $N images, yet only $opens_all OPENs (second pass: $opens2)"
    elif [ "$anon3" -gt "$BUDGET" ]; then
        vt_fail scale-budget-reopen "$anon3 anonymous fds after the second pass, budget $BUDGET"
    else
        vt_pass scale-budget-reopen "$opens_all OPENs for $N images (second pass: $opens2); fds now $fds3 (anon $anon3, budget $BUDGET)"
    fi
fi
per_obj3=$(awk -v a="$rss0" -v b="$rss3" -v n="$objects3" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "n/a" }')
vt_info "scale-figures: images=$N mounted=$mounted objects=$objects3 rss_before_kib=$rss0 rss_after_kib=$rss3 rss_per_object_kib=$per_obj3 fds_before=$fds0 fds_after=$fds3 anon_fds=$anon3 blob_fds=$blob3 budget=$BUDGET opens=$opens_all"

# ---- unmount all -------------------------------------------------------------

closes0=$(vt_counter closes)
opens_total=$(( $(vt_counter opens) - opens0 ))
t0=$(vt_now)
usummary=$(vt-mounts umount "$W/umount.lat" < "$W/targets" 2> "$W/umount.err")
umount_rc=$?
t_umount=$(vt_elapsed "$t0")  # the umount calls alone
if [ "$umount_rc" -ne 0 ]; then
    vt_fail scale-umount "umount: $usummary; first: $(head -n 1 "$W/umount.err")"
fi
# Every object still open (the worker's table) gets its CLOSE; fscache sends them once
# the volumes' cookies leave its LRU, some seconds after the umount.
vt_wait_counter closes $((closes0 + objects3)) 120
t_close=$(vt_elapsed "$t0")
i=0
while [ "$i" -lt 100 ]; do
    fd_snapshot "$w"
    fds4=$FD_ALL anon4=$FD_ANON
    [ "$fds4" -le "$fds0" ] && break
    sleep 0.2
    i=$((i + 1))
done
objects4=$(objects_settled)
rss4=$(rss_kib "$w")
vt_info "scale-after-umount: umount $usummary; $(( $(vt_counter closes) - closes0 )) CLOSEs within ${t_close}s; worker objects $objects4, fds $fds4 (anon $anon4), RSS ${rss4} KiB"
if [ "$fds4" -le "$fds0" ] && [ "$objects4" = 0 ]; then
    vt_pass scale-fds-released "fds $fds0 before the mounts, $fds3 with $mounted mounted and read, $fds4 after the umounts; no object left"
else
    vt_fail scale-fds-released "fds $fds0 before the mounts, $fds4 after the umounts (anon $anon4: $(fd_detail "$w")); $objects4 objects left"
fi

vt_check_replies
if [ "$(vt_counter read_failed)" != 0 ] || [ "$(vt_counter open_refused)" != 0 ]; then
    vt_fail scale-counters "read_failed=$(vt_counter read_failed) open_refused=$(vt_counter open_refused)"
fi
vt_info "scale-counters: $(vt-counters --tag "$VT_TAG" opens opens_ok reads read_failed closes unknown_object restores_repair open_refused |
    paste -s -d' ' | awk '{ printf "opens=%s opens_ok=%s reads=%s read_failed=%s closes=%s unknown_object=%s restores_repair=%s open_refused=%s", $1, $2, $3, $4, $5, $6, $7, $8 }')"
vt_stop_supervisor
vt_info "scale-time: ${t_scenario:+$(vt_elapsed "$t_scenario")}s in all: sources ${t_gen}s, mkfs ${t_mkfs}s, mounts ${t_mount}s, umounts ${t_umount}s (+CLOSEs ${t_close}s) ($opens_total OPENs in all)"
exit 0
