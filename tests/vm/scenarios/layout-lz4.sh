#!/bin/sh
# Compressed images through fscache: every image in /blobs that has a
# manifest is mounted and verified file by file. Registered with the
# "compressible" tree (text, zeros, files mixing compressed and stored
# extents) under lz4, lz4hc, and lz4hc level 12 with 64 KiB physical
# clusters (-C65536: big pclusters, one compressed extent spans many
# pages), plus the mostly incompressible "basic" tree under lz4 (stored
# extents inside a compressed image).
#   run-vm.sh --scenario layout-lz4.sh --add BUILD/tests/vm/tools/vt-counters \
#     --image z-lz4=compressible:-zlz4 --image z-lz4hc=compressible@2:-zlz4hc \
#     --image "z-lz4hc-big=compressible@3:-zlz4hc,12 -C65536" \
#     --image z-lz4-basic=basic:-zlz4
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. /lib/vmtest.sh

vt_start_supervisor || exit 0

n=0
for m in "$VT_MANIFEST_DIR"/*.manifest; do
    [ -e "$m" ] || break
    name=${m##*/}
    name=${name%.manifest}
    n=$((n + 1))
    start=$(vt_now)
    if ! err=$(vt_mount_fscache "$name" "/mnt/$name" 2>&1); then
        vt_fail "lz4-$name" "mount -o fsid=$name failed: $err"
        continue
    fi
    # Bounded: the 6.12 hang worked around by fill_whole_blob (engine.cc)
    # leaves the reader asleep (killable) in folio_wait_bit; fail in a minute
    # rather than at the scenario timeout.
    if out=$(VT_HASHER="timeout 60 sha256sum" vt_verify_tree "/mnt/$name" "$m"); then
        vt_pass "lz4-$name" "image $(stat -c %s "$VT_BLOB_DIR/$name") bytes: $out; $(vt_elapsed "$start")s with the mount"
    else
        vt_fail "lz4-$name" "$out"
    fi
    umount "/mnt/$name"
done
[ "$n" -gt 0 ] || vt_fail lz4-setup "no image in $VT_MANIFEST_DIR"

failed=$(vt_counter read_failed)
if [ "$failed" = 0 ]; then
    vt_pass lz4-no-failed-reads "read_failed=0 over $n images ($(vt_counter reads) READs)"
else
    vt_fail lz4-no-failed-reads "read_failed=$failed"
fi
vt_stop_supervisor
exit 0
