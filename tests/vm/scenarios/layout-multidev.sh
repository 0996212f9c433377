#!/bin/sh
# Chunk-based multi-device images: the metadata image is the fsid's blob and
# all file data sits in a second blob (mkfs.erofs --chunksize --blobdev),
# named at mount time with device= because mkfs.erofs 1.5 leaves the device
# tag empty. Every file's SHA-256 is checked; each mount opens exactly its
# two blobs; a mount that does not name the extra device fails promptly.
#   run-vm.sh --scenario layout-multidev.sh --add BUILD/tests/vm/tools/vt-counters \
#     --image "md=basic:--chunksize=65536 --blobdev=md-data" \
#     --image "md4k=small@3:--chunksize=4096 --blobdev=md4k-data"
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. /lib/vmtest.sh

vt_start_supervisor || exit 0
for b in md md-data md4k md4k-data; do
    [ -s "$VT_BLOB_DIR/$b" ] || vt_fail multidev-setup "blob $b missing from $VT_BLOB_DIR (see the usage line above)"
done

# Without device= the kernel reads the empty tag from the device table and
# refuses the mount (erofs_init_device: "empty device tag"); the daemon must
# just see the meta blob opened and closed again.
mkdir -p /mnt/nodev
start=$(vt_now)
if err=$(VT_MOUNT_TIMEOUT=30 vt_mount_fscache md /mnt/nodev 2>&1); then
    vt_fail multidev-needs-device "mount -o fsid=md without device= succeeded"
    umount /mnt/nodev
else
    took=$(vt_elapsed "$start")
    if dmesg | grep -q 'empty device tag'; then
        vt_pass multidev-needs-device "refused in ${took}s (kernel: empty device tag): $err"
    else
        vt_fail multidev-needs-device "refused in ${took}s, but not for the empty device tag: $err; dmesg: $(dmesg | tail -n 3 | tr '\n' ' ')"
    fi
fi

# mount_and_verify NAME FSID BLOB CHUNK
mount_and_verify() {
    opens0=$(vt_counter opens)
    start=$(vt_now)
    if ! err=$(vt_mount_fscache "$2" "/mnt/$2" "device=$3" 2>&1); then
        vt_fail "$1" "mount -o fsid=$2,device=$3 failed: $err"
        return 1
    fi
    if out=$(vt_verify_tree "/mnt/$2" "$VT_MANIFEST_DIR/$2.manifest"); then
        vt_pass "$1" "chunk size $4, data in /blobs/$3 ($(stat -c %s "$VT_BLOB_DIR/$3") bytes): $out; $(vt_elapsed "$start")s with the mount"
    else
        vt_fail "$1" "$out"
    fi
    opens=$(( $(vt_counter opens) - opens0 ))
    if [ "$opens" -eq 2 ]; then
        vt_pass "$1-opens" "2 OPENs (meta $2 + data $3)"
    else
        vt_fail "$1-opens" "expected 2 OPENs (meta $2 + data $3), counted $opens"
    fi
}
mount_and_verify multidev-64k md md-data 65536
mount_and_verify multidev-4k md4k md4k-data 4096

failed=$(vt_counter read_failed)
if [ "$failed" = 0 ]; then
    vt_pass multidev-no-failed-reads "read_failed=0"
else
    vt_fail multidev-no-failed-reads "read_failed=$failed"
fi

umount /mnt/md /mnt/md4k
vt_stop_supervisor
exit 0
