#!/bin/sh
# Bad input gets a clear error and loses nothing, on the real kernel:
#  - a hostile blob id (path traversal) is refused: the mount fails at once,
#    the worker logs the id, nothing outside blob_dir is opened;
#  - a backend that fails mid-read (the blob file truncated under a live
#    mount) gives readers EIO promptly instead of a hang, and every READ is
#    still answered (the mount stays usable for the intact part);
. /lib/vmtest.sh

vt_start_supervisor || exit 0
vt_wait_state running 30 || { vt_fail errors "worker never ran"; exit 0; }

# 1. Hostile ids. A "/" never reaches us (cachefiles cannot create the
# volume directory "Ierofs,<fsid>" and fails the mount itself); these do:
# a dot entry, a byte outside the allowed set, and a symlink planted in
# blob_dir that points outside it.
ln -sf /etc/passwd "$VT_BLOB_DIR/evil"
for id in .. "a b" evil; do
    start=$(vt_now)
    if VT_MOUNT_TIMEOUT=20 vt_mount_fscache "$id" /mnt/hostile 2>/dev/null; then
        vt_fail hostile-id "mount of fsid=$id succeeded"
        umount /mnt/hostile
    elif grep -q "blob \{0,1\}[a-z ]*\"$id\"" "$VT_SUPERVISOR_LOG" ||
         grep -q "blob id \"$id\"" "$VT_SUPERVISOR_LOG"; then
        vt_pass "hostile-id" "fsid=\"$id\" refused in $(vt_elapsed "$start")s: $(grep "\"$id\"" "$VT_SUPERVISOR_LOG" | tail -n 1 | cut -d' ' -f3- | cut -c1-140)"
    else
        vt_fail hostile-id "fsid=\"$id\" refused but no worker log line names it"
    fi
done
refused=$(vt_json_num "$(vt_ctl status --json)" open_refused)
[ "$refused" -ge 3 ] || vt_fail hostile-id "open_refused=$refused, expected >= 3"

# 2. A backend failing mid-read: copy the image, mount it, truncate the copy.
cp "$VT_BLOB_DIR/basic" "$VT_BLOB_DIR/victim"
vt_mount_fscache victim /mnt/victim || { vt_fail backend-error "mount failed"; exit 0; }
size=$(wc -c < "$VT_BLOB_DIR/victim")
half=$((size / 2 / 4096 * 4096))
truncate -s "$half" "$VT_BLOB_DIR/victim" 2>/dev/null || dd if=/dev/null of="$VT_BLOB_DIR/victim" bs=1 seek="$half" 2>/dev/null
start=$(vt_now)
errors=0; ok=0
while read -r sum path; do
    case $sum in symlink|dir) continue ;; esac
    if got=$(vt_with_timeout 30 sha256sum "/mnt/victim/$path" 2>/dev/null); then
        if [ "${got%% *}" = "$sum" ]; then ok=$((ok + 1)); else vt_fail backend-error "wrong data in $path"; fi
    else
        errors=$((errors + 1))
    fi
done < "$VT_MANIFEST_DIR/basic.manifest"
took=$(vt_elapsed "$start")
failed=$(vt_json_num "$(vt_ctl status --json)" read_failed)
if [ "$errors" -gt 0 ] && [ "$ok" -gt 0 ] && [ "${failed:-0}" -gt 0 ]; then
    vt_pass backend-error "blob truncated to ${half} of ${size} bytes: $ok files intact, $errors got an I/O error, none hung (${took}s); read_failed=$failed"
else
    vt_fail backend-error "ok=$ok errors=$errors read_failed=$failed after ${took}s"
fi
umount /mnt/victim

vt_stop_supervisor
exit 0
