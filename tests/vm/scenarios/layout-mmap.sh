#!/bin/sh
# Reads through mmap: every file of a cold fscache mount is hashed by
# mmap-sha256 (tests/vm/tools/mmap_sha256.cc), so every byte arrives by page
# fault (filemap_fault, fault-around and readahead) instead of read(2).
# Each image is checked twice on its own cold mount (a fresh fsid made by
# hard-linking the blob): front to back, then with --reverse (MADV_RANDOM,
# pages faulted last to first, one at a time). Images: plain ("basic"),
# and lz4hc ("compressible", filled whole at mount: see fill_whole_blob in
# worker/engine.cc).
#   run-vm.sh --scenario layout-mmap.sh --add BUILD/tests/vm/tools/mmap-sha256 \
#     --add BUILD/tests/vm/tools/vt-counters --image basic=basic \
#     --image z-lz4hc=compressible@2:-zlz4hc
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. /lib/vmtest.sh

if ! command -v mmap-sha256 >/dev/null 2>&1; then
    vt_fail mmap-setup "mmap-sha256 is not in the VM (run-vm.sh --add BUILD/tests/vm/tools/mmap-sha256)"
    exit 0
fi
vt_start_supervisor || exit 0

# check NAME MODE: MODE "" (sequential) or "--reverse".
check() {
    fsid=$1-mmap${2:+-reverse}
    prop=mmap-$1${2:+-reverse}
    ln "$VT_BLOB_DIR/$1" "$VT_BLOB_DIR/$fsid" || { vt_fail "$prop" "ln $1 $fsid failed"; return; }
    if ! err=$(vt_mount_fscache "$fsid" "/mnt/$fsid" 2>&1); then
        vt_fail "$prop" "mount -o fsid=$fsid failed: $err"
        return
    fi
    reads0=$(vt_counter reads)
    if out=$(VT_HASHER="timeout 60 mmap-sha256 $2" vt_verify_tree "/mnt/$fsid" "$VT_MANIFEST_DIR/$1.manifest"); then
        vt_pass "$prop" "$out; $(( $(vt_counter reads) - reads0 )) READs"
    else
        vt_fail "$prop" "$out"
    fi
    umount "/mnt/$fsid"
}

for m in "$VT_MANIFEST_DIR"/*.manifest; do
    [ -e "$m" ] || break
    name=${m##*/}
    name=${name%.manifest}
    check "$name" ""
    check "$name" --reverse
done

failed=$(vt_counter read_failed)
if [ "$failed" = 0 ]; then
    vt_pass mmap-no-failed-reads "read_failed=0"
else
    vt_fail mmap-no-failed-reads "read_failed=$failed"
fi
vt_stop_supervisor
exit 0
