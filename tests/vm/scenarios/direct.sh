#!/bin/sh
# Loop-mounts every image in /blobs directly (no fscache, no daemon) and
# verifies it against its manifest. Proves the rig itself: kernel, images,
# manifests, vt_verify_tree. Also the baseline for fscache read speed.
#   tests/vm/run-vm.sh --scenario tests/vm/scenarios/direct.sh --image basic=basic
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. /lib/vmtest.sh

n=0
for img in "$VT_BLOB_DIR"/*; do
    [ -f "$img" ] || continue
    name=${img##*/}
    n=$((n + 1))
    mnt=/mnt/direct/$name
    mkdir -p "$mnt"
    if ! err=$(vt_with_timeout 60 mount -t erofs -o loop,ro "$img" "$mnt" 2>&1); then
        vt_fail "direct-$name" "loop mount of $img failed: $err"
        continue
    fi
    if out=$(vt_verify_tree "$mnt" "$VT_MANIFEST_DIR/$name.manifest"); then
        vt_pass "direct-$name" "$out"
    else
        vt_fail "direct-$name" "$out"
    fi
    if ! err=$(vt_with_timeout 30 umount "$mnt" 2>&1); then
        vt_fail "direct-umount-$name" "$err"
    fi
done
[ "$n" -gt 0 ] || vt_fail direct "no images in $VT_BLOB_DIR (pass --image NAME=PROFILE to run-vm.sh)"
exit 0
