#!/bin/sh
# A full cache, culled (issue 9). The cache ramdisk (--cache-mb 32) is
# smaller than the data read: small@1..small@N are mounted, verified and
# unmounted in turn. VT_CULL=on (default): cache_max_bytes 6 MiB, every
# file verifies, the culler removes objects and the cache ends under its
# limit (du), no object of unknown use is culled. VT_CULL=off: once the
# ramdisk is full readers (or mounts) fail, bounded by timeout (no hang), and
# the worker stays up.
. /lib/vmtest.sh

: "${VT_CULL:=on}"
: "${VT_CULL_IMAGES:=40}"
limit=$((6 << 20))
if [ "$VT_CULL" = on ]; then
    # Culling walks cache_dir, which cachefiles keeps 0700 root: only a
    # worker that keeps root culls (common/sandbox.h).
    VT_CONFIG_EXTRA="\"cache_max_bytes\": $limit, \"cache_low_watermark\": 50, \"sandbox_drop_privileges\": false"
else
    VT_CONFIG_EXTRA='"cache_cull": false'
fi
vt_start_supervisor || exit 0
vt_wait_state running 30 || { vt_fail cull "worker never ran"; exit 0; }
pid=$(vt_worker_pid)
ok=0 failed=0 max_du=0
i=1
while [ "$i" -le "$VT_CULL_IMAGES" ]; do
    name=img$i
    mnt=/mnt/$name
    if VT_MOUNT_TIMEOUT=30 vt_mount_fscache "$name" "$mnt" 2>/tmp/mount.err; then
        if out=$(vt_with_timeout 60 sh -c ". /lib/vmtest.sh; vt_verify_tree $mnt $VT_MANIFEST_DIR/$name.manifest"); then
            ok=$((ok + 1))
        else
            failed=$((failed + 1))
            vt_info "$name: $out"
        fi
        vt_with_timeout 30 umount "$mnt"
    else
        failed=$((failed + 1))
        vt_info "$name: mount failed: $(cat /tmp/mount.err)"
    fi
    du=$(du -sk "$VT_CACHE_DIR" | cut -f1)
    [ "$du" -gt "$max_du" ] && max_du=$du
    i=$((i + 1))
done
vt_info "verified $ok, failed $failed; largest du ${max_du} KiB; $(df -k "$VT_CACHE_DIR" | tail -n 1)"
vt_info "counters: $(vt-counters | tr '\n' ' ')"

if [ "$VT_CULL" = on ]; then
    [ "$failed" -eq 0 ] && vt_pass cull-verified "$ok images of small verified through a 32 MiB cache" \
        || vt_fail cull-verified "$failed of $VT_CULL_IMAGES images failed"
    # Unmounted volumes stay in use for the cookie LRU (~10 s); then the
    # culler gets the cache under its limit.
    t=0
    while [ "$(du -sk "$VT_CACHE_DIR" | cut -f1)" -gt $((limit / 1024)) ] && [ "$t" -lt 40 ]; do
        sleep 1; t=$((t + 1))
    done
    du=$(du -sk "$VT_CACHE_DIR" | cut -f1)
    if [ "$du" -le $((limit / 1024)) ] && [ "$(vt_counter culled_objects)" -gt 0 ]; then
        vt_pass cull-under-limit "du ${du} KiB <= $((limit / 1024)) KiB; culled $(vt_counter culled_objects) objects"
    else
        vt_fail cull-under-limit "du ${du} KiB, limit $((limit / 1024)) KiB, culled $(vt_counter culled_objects)"
    fi
    [ "$(vt_counter cull_skipped_unknown)" -eq 0 ] && vt_pass cull-no-unknown "no object of unknown use" \
        || vt_fail cull-no-unknown "$(vt_counter cull_skipped_unknown) objects of unknown use"
    # The culler runs inside the worker's sandbox (Landlock, seccomp): one
    # worker did all of it. A call the sandbox refuses kills the worker
    # (SIGSYS) and its successors in turn, which readers barely notice.
    if [ "$(vt_worker_pid)" = "$pid" ] && [ "$(vt_counter restarts)" -eq 0 ]; then
        vt_pass cull-one-worker "worker pid $pid culled everything, 0 restarts"
    else
        vt_fail cull-one-worker "worker pid $pid replaced by $(vt_worker_pid), $(vt_counter restarts) restarts: $(grep -m1 'killed by' "$VT_SUPERVISOR_LOG" 2>/dev/null)"
    fi
else
    [ "$failed" -gt 0 ] && vt_pass full-fails "$failed reads/mounts failed, none hung" \
        || vt_fail full-fails "a full cache without culling served everything?"
    if [ "$(vt_worker_pid)" = "$pid" ] && vt_ctl status | grep -q "running"; then
        vt_pass full-worker-up "worker pid $pid still serving"
    else
        vt_fail full-worker-up "worker changed or down: $(vt_ctl status 2>&1 | head -n 3)"
    fi
fi
vt_stop_supervisor
exit 0
