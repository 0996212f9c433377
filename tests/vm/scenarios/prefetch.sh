#!/bin/sh
# Whole-blob prefetch: with "prefetch": true the worker writes an opened blob
# into its cache file in the background; once it has, reading every file
# needs (almost) no READ requests, and every file still verifies.
. /lib/vmtest.sh

VT_CONFIG_EXTRA='"prefetch": true'
vt_start_supervisor || exit 0
vt_wait_state running 30 || { vt_fail prefetch "worker never ran"; exit 0; }
size=$(wc -c < "$VT_BLOB_DIR/basic")
vt_mount_fscache basic /mnt/basic || { vt_fail prefetch "mount failed"; exit 0; }
start=$(vt_now)
if vt_wait_counter prefetched_bytes "$size" 60; then
    vt_pass prefetch-filled "$(vt_counter prefetched_bytes) bytes of a $size-byte blob prefetched in $(vt_elapsed "$start")s after mount"
else
    vt_fail prefetch-filled "only $(vt_counter prefetched_bytes) of $size bytes after 60 s"
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
