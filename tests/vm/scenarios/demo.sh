#!/bin/sh
# The README's main job, inside the VM: bind the cache, mount a sample image
# through fscache, read and checksum every file, then kill -9 the worker a
# few times under load and show the failover. Lines starting "demo| " are
# what deploy/demo.sh prints.
. /lib/vmtest.sh
say() { echo "demo| $*"; }

vt_start_supervisor || exit 0
vt_wait_state running 30 || { vt_fail demo "worker never ran"; exit 0; }
say "ondemand-supervisor bound /dev/cachefiles (tag $VT_TAG, cache on ext4 at $VT_CACHE_DIR) and started a worker:"
vt_ctl status | sed 's/^/demo|   /'

start=$(vt_now)
if vt_mount_fscache basic /mnt/sample; then
    say "mounted: mount -t erofs none -o fsid=basic /mnt/sample"
    if out=$(vt_verify_tree /mnt/sample "$VT_MANIFEST_DIR/basic.manifest"); then
        say "read every file through the daemon, all SHA-256 match: ${out#vt_verify_tree: }"
        vt_pass demo-read "$out"
    else
        say "CHECKSUM FAILURE: $out"
        vt_fail demo-read "$out"
    fi
else
    vt_fail demo-read "mount failed"
fi

say ""
say "now 4 readers verify fresh mounts while the worker is kill -9'd after every 5-200 ms of serving:"
/bin/ondemand-chaos --config "$VT_CONFIG" --image "basic=$VT_MANIFEST_DIR/basic.manifest" \
    --rounds 2 --min-kills 12 --readers 4 --kill-interval-ms 5-200 --summary > /tmp/chaos.out 2>/dev/null
rc=$?
report=$(tail -n 1 /tmp/chaos.out)
sed '$d' /tmp/chaos.out | sed 's/^/demo| /'
if [ "$rc" -eq 0 ]; then vt_pass demo-chaos "$report"; else vt_fail demo-chaos "$report"; fi

say ""
say "one failover, as the supervisor logged it (\"serving, N ms after\" is the first timing above):"
grep -m 1 -A 5 "killed by SIGKILL" "$VT_SUPERVISOR_LOG" | sed 's/^/demo|   /'
say ""
say "status after the kills:"
vt_ctl status | sed 's/^/demo|   /'
umount /mnt/sample
vt_stop_supervisor
exit 0
