#!/bin/sh
# A dead cache (issue 9): `mount -o remount,abort` shuts cache_dir's ext4
# down (EXT4_FLAGS_SHUTDOWN: its operations fail with EIO); unmounting an
# image then makes cachefiles fail to write its object's xattr, and
# cachefiles_io_error marks the cache dead (a failed mkdir does not). The
# worker must notice, exit CACHE_DEAD (79) and the supervisor park, not
# crash-loop; no reader hangs.
. /lib/vmtest.sh

VT_CONFIG_EXTRA='"park_retry_ms": 1000, "spare_worker": false'
vt_start_supervisor || exit 0
vt_wait_state running 30 || { vt_fail dead "worker never ran"; exit 0; }
vt_mount_fscache img1 /mnt/img1 || { vt_fail dead "first mount failed"; exit 0; }
out=$(vt_verify_tree /mnt/img1 "$VT_MANIFEST_DIR/img1.manifest") || vt_fail dead-before "$out"
mount -o remount,abort "$VT_CACHE_DIR" 2>&1 | sed 's/^/remount: /'
vt_with_timeout 30 umount /mnt/img1
VT_MOUNT_TIMEOUT=30 vt_mount_fscache img2 /mnt/img2 2>&1 | sed 's/^/mount img2: /'
dmesg | grep -i "cachefiles" | tail -n 5 | sed 's/^/kmsg: /'
if vt_wait_state parked 20; then
    vt_pass dead-parked "supervisor parked the worker"
else
    vt_fail dead-parked "not parked: $(vt_ctl status 2>&1 | head -n 3)"
fi
sleep 5
restarts=$(vt_counter restarts)
if grep -q "is DEAD" "$VT_SUPERVISOR_LOG" && grep -q "cache dead" "$VT_SUPERVISOR_LOG" && [ "$restarts" -le 8 ]; then
    vt_pass dead-reported "log says DEAD and parks for a dead cache; $restarts restarts in ~5 s of 1 s park retries"
else
    vt_fail dead-reported "restarts=$restarts; log: $(grep -E 'DEAD|parked' "$VT_SUPERVISOR_LOG" | head -n 3)"
fi
[ "$(vt_counter cache_dead)" = 1 ] && vt_pass dead-counter "cache_dead=1" || vt_fail dead-counter "cache_dead=$(vt_counter cache_dead)"
umount /mnt/img1 /mnt/img2 2>/dev/null
vt_stop_supervisor
exit 0
