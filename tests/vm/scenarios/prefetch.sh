#!/bin/sh
# Whole-blob prefetch: with "prefetch": true the worker writes an opened blob
# into its cache file in the background; within 60 s of the mount it has
# reached the blob's end; once it has, reading every file
# needs (almost) no READ requests, and every file still verifies.
. /lib/vmtest.sh

VT_CONFIG_EXTRA='"prefetch": true'
vt_start_supervisor || exit 0
vt_wait_state running 30 || { vt_fail prefetch "worker never ran"; exit 0; }
size=$(wc -c < "$VT_BLOB_DIR/basic")
vt_mount_fscache basic /mnt/basic || { vt_fail prefetch "mount failed"; exit 0; }
start=$(vt_now)
# Done when the worker says the prefetch reached the blob's end. Not when
# prefetched_bytes reaches the size: the prefetch skips what the cache file
# holds already, and the mount's own READs (a fill and its fill-ahead) race
# it for the first windows. (The cache file cannot be looked at meanwhile:
# cachefiles links it into cache_dir only when the object is released.)
done_re="prefetch of blob \"basic/basic\" reached its end"
deadline=$(awk -v n="$start" 'BEGIN { print n + 60 }')
until grep -q "$done_re" "$VT_SUPERVISOR_LOG"; do
    awk -v n="$(vt_now)" -v d="$deadline" 'BEGIN { exit !(n >= d) }' && break
    sleep 0.1
done
counts="the prefetch wrote $(vt_counter prefetched_bytes) bytes, READ fills $(vt_counter bytes_written)"
if line=$(grep -m 1 "$done_re" "$VT_SUPERVISOR_LOG"); then
    vt_pass prefetch-filled "$size-byte blob prefetched $(vt_elapsed "$start")s after mount ($counts): $(echo "$line" | cut -d' ' -f3-)"
else
    vt_fail prefetch-filled "no '$done_re' in the log 60 s after mount; $counts"
fi
reads_before=$(vt_counter reads)
if out=$(vt_verify_tree /mnt/basic "$VT_MANIFEST_DIR/basic.manifest"); then
    reads_after=$(vt_counter reads)
    # Without prefetch this tree takes ~14 READs at a 4 MiB window; a fully
    # prefetched blob should take none (the kernel asks only for holes).
    if [ $((reads_after - reads_before)) -le 1 ]; then
        vt_pass prefetch-read "$out; READ requests during the read: $((reads_after - reads_before))"
    else
        vt_fail prefetch-read "$out, but $((reads_after - reads_before)) READ requests: data did not come from the prefetch"
    fi
else
    vt_fail prefetch-read "$out"
fi
umount /mnt/basic
vt_stop_supervisor
exit 0
