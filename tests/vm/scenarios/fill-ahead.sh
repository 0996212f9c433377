#!/bin/sh
# Answer first, fill ahead after, on the real kernel (issue 12). With a
# 64 MiB fill_window the first READ of the ~56 MB basic image (the mount's
# superblock) starts a fill of nearly all of it: the READ is answered once
# its own page is in the cache file, and the rest is written in the
# background. Each part uses a fresh fsid (a hard link of the blob), so
# nothing is cached:
#   fill-ahead-join   READs that arrive while their range is being filled
#                     ahead wait for that fill instead of copying it again
#                     (reads_joined grows), answered early (reads_early
#                     grows), and every file's SHA-256 is right;
#   fill-ahead-close  an umount (CLOSE) while the big window is still being
#                     filled stops that fill (fill_ahead_stopped grows), the
#                     worker's fds go back to what they were, and the half
#                     filled cache file reads back right when mounted again;
#   one-reply-each    no reply refused by the kernel (a second reply, or a
#                     reply to a closed object).
# The timing-dependent parts (a READ landing in a fill, an umount before
# the fill ends) get up to 5 fresh attempts each, and say how many they
# took.
#   run-vm.sh --scenario fill-ahead.sh --image basic=basic \
#     --add BUILD/tests/vm/tools/vt-counters
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. /lib/vmtest.sh

ATTEMPTS=5
manifest=$VT_MANIFEST_DIR/basic.manifest
# shellcheck disable=SC2034  # read by vt_write_config in lib.sh
VT_CONFIG_EXTRA='"fill_window": 67108864'
vt_start_supervisor || exit 0
if ! vt_wait_state running 30; then
    vt_fail fill-ahead "no worker running"
    vt_stop_supervisor
    exit 0
fi
mkdir -p /mnt/fa

fresh_fsid() { # NAME: a new blob id for the same bytes
    ln "$VT_BLOB_DIR/basic" "$VT_BLOB_DIR/$1"
}
# Waits (up to 10 s) until no fill-ahead runs, so attempts do not overlap.
wait_fill_idle() {
    _n=0
    while [ "$(vt_counter fill_ahead_running)" != 0 ] && [ "$_n" -lt 100 ]; do
        sleep 0.1
        _n=$((_n + 1))
    done
}

# ---- a READ arriving while its range is being filled ahead
try=1
joined=0
while [ "$try" -le "$ATTEMPTS" ]; do
    fsid=fa-join-$try
    fresh_fsid "$fsid"
    j0=$(vt_counter reads_joined)
    e0=$(vt_counter reads_early)
    w0=$(vt_counter bytes_written)
    if ! err=$(vt_mount_fscache "$fsid" /mnt/fa 2>&1); then
        vt_fail fill-ahead-join "mount -o fsid=$fsid failed: $err"
        break
    fi
    # Four readers at once on the biggest files while the mount's window
    # is still being written, then every file checked.
    # (Their pids only: a bare `wait` would wait for the supervisor too.)
    pids=
    for f in $(cd /mnt/fa && find . -type f -size +1000k | head -n 4); do
        cat "/mnt/fa/$f" > /dev/null &
        pids="$pids $!"
    done
    # shellcheck disable=SC2086
    wait $pids
    if ! out=$(vt_verify_tree /mnt/fa "$manifest"); then
        vt_fail fill-ahead-join "$out"
        umount /mnt/fa
        break
    fi
    joined=$(( $(vt_counter reads_joined) - j0 ))
    early=$(( $(vt_counter reads_early) - e0 ))
    written=$(( $(vt_counter bytes_written) - w0 ))
    umount /mnt/fa
    wait_fill_idle
    rm -f "$VT_BLOB_DIR/$fsid"
    blob=$(stat -c %s "$VT_BLOB_DIR/basic")
    if [ "$joined" -gt 0 ]; then
        # Nothing copied twice: joined READs brought no copy of their own.
        if [ "$written" -le $(( (blob + 4095) / 4096 * 4096 )) ]; then
            vt_pass fill-ahead-join "attempt $try: $joined READs waited for the fill in flight, $early answered early; $written bytes written for a $blob-byte blob; $out"
        else
            vt_fail fill-ahead-join "attempt $try: $written bytes written for a $blob-byte blob (some copied twice)"
        fi
        break
    fi
    vt_info "fill-ahead-join attempt $try: no READ arrived during the fill ($early early), again"
    try=$((try + 1))
done
[ "$try" -le "$ATTEMPTS" ] || vt_fail fill-ahead-join "no READ joined a fill in flight in $ATTEMPTS attempts"

# ---- CLOSE during fill-ahead: umount while the big window is being filled
worker=$(vt_worker_pid)
fds0=$(vt_fd_count "$worker")
try=1
while [ "$try" -le "$ATTEMPTS" ]; do
    fsid=fa-close-$try
    fresh_fsid "$fsid"
    s0=$(vt_counter fill_ahead_stopped)
    c0=$(vt_counter closes)
    if ! err=$(vt_mount_fscache "$fsid" /mnt/fa 2>&1); then
        vt_fail fill-ahead-close "mount -o fsid=$fsid failed: $err"
        break
    fi
    running=$(vt_counter fill_ahead_running)
    umount /mnt/fa
    if ! vt_wait_counter closes $((c0 + 1)) 10; then
        vt_fail fill-ahead-close "no CLOSE within 10 s of umount"
        break
    fi
    wait_fill_idle
    stopped=$(( $(vt_counter fill_ahead_stopped) - s0 ))
    if [ "$stopped" -gt 0 ]; then
        # The stopped fill released the object's anonymous fd and blob fd.
        n=0
        fds=$(vt_fd_count "$worker")
        while [ "$fds" != "$fds0" ] && [ "$n" -lt 50 ]; do
            sleep 0.1
            fds=$(vt_fd_count "$worker")
            n=$((n + 1))
        done
        if [ "$fds" = "$fds0" ]; then
            vt_pass fill-ahead-close "attempt $try: the umount's CLOSE stopped the fill-ahead (running at umount: $running); worker fds $fds0 before, $fds after"
        else
            vt_fail fill-ahead-close "worker pid $worker had $fds0 fds before and $fds after the CLOSE"
        fi
        # What the stopped fill left is a partly filled cache file: mounted
        # again, the holes are asked for and filled.
        if ! err=$(vt_mount_fscache "$fsid" /mnt/fa 2>&1); then
            vt_fail fill-ahead-close-remount "mount -o fsid=$fsid failed: $err"
        elif out=$(vt_verify_tree /mnt/fa "$manifest"); then
            vt_pass fill-ahead-close-remount "$out"
            umount /mnt/fa
        else
            vt_fail fill-ahead-close-remount "$out"
            umount /mnt/fa
        fi
        rm -f "$VT_BLOB_DIR/$fsid"
        break
    fi
    vt_info "fill-ahead-close attempt $try: no fill-ahead was stopped by the CLOSE (running at umount: $running), again"
    rm -f "$VT_BLOB_DIR/$fsid"
    try=$((try + 1))
done
[ "$try" -le "$ATTEMPTS" ] || vt_fail fill-ahead-close "no CLOSE came during fill-ahead in $ATTEMPTS attempts"

failed=$(vt_counter read_failed)
if [ "$failed" = 0 ]; then
    vt_pass fill-ahead-no-read-failed "every READ was answered with its data"
else
    vt_fail fill-ahead-no-read-failed "$failed READs were answered without their data"
fi
vt_info "counters: $(vt-counters --tag "$VT_TAG" | grep -E 'reads|fill|read_failed|closes' | tr '\n' ' ')"
vt_check_replies
vt_stop_supervisor
exit 0
