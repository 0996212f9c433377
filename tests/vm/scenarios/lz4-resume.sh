#!/bin/sh
# A compressed image's whole-blob fill survives a kill -9 of the worker
# (issue 12 point 4). A compressed EROFS image is filled whole at its first
# READ, the superblock's during mount (frontends/cachefiles
# fill_whole_blob: a kernel bug hangs readers of a partly filled one), so
# the mount(2) of the ~257 MiB bench-lz4 image waits for all of it. The
# worker is kill -9'd once some of it is in the cache file and well before
# the end; then:
#   lz4-resume-mount     the mount that was waiting succeeds (the kernel
#                        hands its READ to the successor) and every file
#                        of the image verifies;
#   lz4-resume-resumed   the successor went on where the killed worker
#                        stopped (FillPlan resume: SEEK_HOLE/SEEK_DATA on
#                        the cache file) instead of copying the blob again:
#                        the bytes written into the cache over both
#                        workers (bytes_written in the supervisor's shared
#                        memory, which outlives workers) stay within one
#                        fill chunk (1 MiB) of the blob size, while the
#                        killed worker had written at least 16 MiB of it.
#                        Without resume they would be the blob size plus
#                        what was written before the kill;
#   lz4-resume-no-failed-reads, one-reply-each.
# The kill must land inside the fill; a fresh fsid (a hard link of the
# blob, nothing cached) is tried up to 5 times and the PASS says which.
#   run-vm.sh --scenario lz4-resume.sh --image zbig=bench-lz4:-zlz4 \
#     --add BUILD/tests/vm/tools/vt-counters --mem 3072 --cache-mb 1024
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. /lib/vmtest.sh

ATTEMPTS=5
MIN_BEFORE_KILL=$((16 << 20))
CHUNK=$((1 << 20))  # engine.cc MIN_CHUNK: the local backend's read unit
manifest=$VT_MANIFEST_DIR/zbig.manifest
if [ ! -s "$VT_BLOB_DIR/zbig" ] || [ ! -s "$manifest" ]; then
    vt_fail lz4-resume-setup "image zbig missing (run-vm.sh --image zbig=bench-lz4:-zlz4)"
    exit 0
fi
blob=$(stat -c %s "$VT_BLOB_DIR/zbig")
blob_pages=$(( (blob + 4095) / 4096 * 4096 ))

vt_start_supervisor || exit 0
if ! vt_wait_state running 30; then
    vt_fail lz4-resume "no worker running"
    vt_stop_supervisor
    exit 0
fi
mkdir -p /mnt/zr

try=1
while [ "$try" -le "$ATTEMPTS" ]; do
    fsid=zr-$try
    ln "$VT_BLOB_DIR/zbig" "$VT_BLOB_DIR/$fsid"
    w0=$(vt_counter bytes_written)
    r0=$(vt_counter restarts)
    rm -f /tmp/zr-mount.rc
    ( vt_mount_fscache "$fsid" /mnt/zr > /tmp/zr-mount.out 2>&1; echo $? > /tmp/zr-mount.rc ) &
    mounter=$!
    # Until the fill has written MIN_BEFORE_KILL, or the mount is over.
    before=0
    while [ ! -e /tmp/zr-mount.rc ]; do
        before=$(( $(vt_counter bytes_written) - w0 ))
        [ "$before" -ge "$MIN_BEFORE_KILL" ] && break
        sleep 0.02
    done
    victim=$(vt_worker_pid)
    killed=0
    # Inside the fill: the mount still waits and the blob is not all there.
    if [ ! -e /tmp/zr-mount.rc ] && [ "$before" -lt $((blob - MIN_BEFORE_KILL)) ]; then
        kill -9 "$victim" && killed=1
        # What it had written: its last chunks may have landed after the
        # look above (the counter moves per chunk, before the kill).
        vt_info "attempt $try: worker $victim kill -9'd after >= $before bytes of the $blob-byte blob"
    fi
    wait "$mounter"
    rc=$(cat /tmp/zr-mount.rc)
    if [ "$killed" = 0 ]; then
        vt_info "attempt $try: the fill ended before the kill ($before bytes seen), again"
        [ "$rc" = 0 ] && umount /mnt/zr
        rm -f "$VT_BLOB_DIR/$fsid"
        rm -rf "$VT_CACHE_DIR/cache/Ierofs,$fsid"
        try=$((try + 1))
        continue
    fi
    if [ "$rc" != 0 ]; then
        vt_fail lz4-resume-mount "attempt $try: the mount waiting on the killed worker failed: $(cat /tmp/zr-mount.out)"
        break
    fi
    # Written by the successor for the mount, all of it there now.
    total=$(( $(vt_counter bytes_written) - w0 ))
    restarts=$(( $(vt_counter restarts) - r0 ))
    successor=$(vt_worker_pid)
    if out=$(VT_HASHER="timeout 120 sha256sum" vt_verify_tree /mnt/zr "$manifest"); then
        vt_pass lz4-resume-mount "attempt $try: the mount waited through the kill of worker $victim (successor $successor, restarts +$restarts); $out"
    else
        vt_fail lz4-resume-mount "attempt $try: $out"
    fi
    # Reading every file wrote nothing more: the mount's fill was whole.
    after=$(( $(vt_counter bytes_written) - w0 ))
    if [ "$after" != "$total" ]; then
        vt_fail lz4-resume-whole "reading the files wrote $((after - total)) more bytes: the fill after the kill was not whole"
    fi
    if [ "$successor" = "$victim" ] || [ "$restarts" -lt 1 ]; then
        vt_fail lz4-resume-resumed "no successor took over (worker $victim, now $successor, restarts +$restarts)"
    # One chunk short at most: the killed worker's last pwrite may have
    # landed without being counted (the counter moves after each chunk,
    # and one thread writes a fill).
    elif [ "$total" -lt $((blob_pages - CHUNK)) ]; then
        vt_fail lz4-resume-resumed "only $total bytes written for a $blob-byte blob that should now be whole in the cache"
    elif [ "$total" -le $((blob_pages + CHUNK)) ]; then
        vt_pass lz4-resume-resumed "$total bytes written over both workers for a $blob-byte blob (killed after >= $before): the successor wrote only what was missing"
    else
        vt_fail lz4-resume-resumed "$total bytes written over both workers for a $blob-byte blob, killed after >= $before: $((total - blob_pages)) bytes copied twice (the successor did not resume)"
    fi
    umount /mnt/zr
    rm -f "$VT_BLOB_DIR/$fsid"
    break
done
[ "$try" -le "$ATTEMPTS" ] || vt_fail lz4-resume "no kill landed inside the fill in $ATTEMPTS attempts"

failed=$(vt_counter read_failed)
if [ "$failed" = 0 ]; then
    vt_pass lz4-resume-no-failed-reads "every READ was answered with its data"
else
    vt_fail lz4-resume-no-failed-reads "$failed READs were answered without their data"
fi
vt_check_replies
vt_stop_supervisor
exit 0
