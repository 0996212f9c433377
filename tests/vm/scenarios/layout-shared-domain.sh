#!/bin/sh
# Two chunk-based metadata images (same tree and chunk size, different
# UUIDs) whose data lives in ONE blob, mounted in one shared domain:
#   -o fsid=metaA,domain_id=d1,device=shared
#   -o fsid=metaB,domain_id=d1,device=shared
# Both trees verify file by file. In a domain the kernel keys the extra
# blob's cookie by name (erofs_domain_register_cookie), so the daemon must
# see "shared" opened once for both mounts, and the blob must keep serving
# the remaining mount after the other is unmounted. Control: the same
# metadata mounted outside any domain opens its own copy of the blob.
#   run-vm.sh --scenario layout-shared-domain.sh --add BUILD/tests/vm/tools/vt-counters \
#     --image "metaA=basic:-U<uuid-a> --chunksize=65536 --blobdev=shared" \
#     --image "metaB=basic:-U<uuid-b> --chunksize=65536 --blobdev=shared"
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. /lib/vmtest.sh

# debug: the worker logs every OPEN with its blob id.
export ONDEMAND_LOG_LEVEL=debug
vt_start_supervisor || exit 0
for b in metaA metaB shared; do
    [ -s "$VT_BLOB_DIR/$b" ] || vt_fail domain-setup "blob $b missing from $VT_BLOB_DIR (see the usage line above)"
done
if cmp -s "$VT_BLOB_DIR/metaA" "$VT_BLOB_DIR/metaB"; then
    vt_fail domain-setup "metaA and metaB are identical: the two images should differ (UUID)"
fi

# opens_of BLOB: OPENs the worker logged for that blob id so far.
opens_of() {
    grep -c "OPEN msg_id=.* blob \"$1\" size=" "$VT_SUPERVISOR_LOG"
}

opens0=$(vt_counter opens)
for m in metaA metaB; do
    start=$(vt_now)
    if ! err=$(vt_mount_fscache "$m" "/mnt/$m" "domain_id=d1,device=shared" 2>&1); then
        vt_fail "domain-verify-$m" "mount -o fsid=$m,domain_id=d1,device=shared failed: $err"
        continue
    fi
    if out=$(vt_verify_tree "/mnt/$m" "$VT_MANIFEST_DIR/$m.manifest"); then
        vt_pass "domain-verify-$m" "$out; $(vt_elapsed "$start")s with the mount"
    else
        vt_fail "domain-verify-$m" "$out"
    fi
done

opens=$(( $(vt_counter opens) - opens0 ))
shared_opens=$(opens_of shared)
if [ "$opens" -eq 3 ] && [ "$shared_opens" -eq 1 ]; then
    vt_pass domain-blob-opened-once "3 OPENs for two mounts (metaA, metaB, shared once); worker log: $shared_opens OPEN of \"shared\""
else
    vt_fail domain-blob-opened-once "expected 3 OPENs with \"shared\" once, counted $opens OPENs, $shared_opens of \"shared\" in the worker log"
fi

# metaA leaves the domain; the shared blob must keep serving metaB, with
# metaB's page cache dropped so that every byte is read again.
closes0=$(vt_counter closes)
umount /mnt/metaA
echo 3 > /proc/sys/vm/drop_caches
if out=$(vt_verify_tree /mnt/metaB "$VT_MANIFEST_DIR/metaB.manifest"); then
    vt_pass domain-survives-umount "after umount of metaA and drop_caches: $out"
else
    vt_fail domain-survives-umount "$out"
fi
# Only metaA's own object closes: "shared" still has a user.
vt_wait_counter closes $((closes0 + 1)) 10
sleep 0.5
closes=$(( $(vt_counter closes) - closes0 ))
umount /mnt/metaB
if vt_wait_counter closes $((closes0 + 3)) 10; then
    closes_all=$(( $(vt_counter closes) - closes0 ))
else
    closes_all="$(( $(vt_counter closes) - closes0 )) (waited 10s)"
fi
if [ "$closes" = 1 ] && [ "$closes_all" = 3 ]; then
    vt_pass domain-close-last "umount metaA closed 1 object (metaA), umount metaB closed metaB and shared"
else
    vt_fail domain-close-last "expected 1 CLOSE after umount metaA and 3 after both, got $closes and $closes_all"
fi

# Control: outside a domain every mount opens its own copy of the blob.
opens0=$(vt_counter opens)
shared0=$(opens_of shared)
if err=$(vt_mount_fscache metaA /mnt/solo "device=shared" 2>&1); then
    if out=$(vt_verify_tree /mnt/solo "$VT_MANIFEST_DIR/metaA.manifest"); then
        opens=$(( $(vt_counter opens) - opens0 ))
        shared_opens=$(( $(opens_of shared) - shared0 ))
        if [ "$opens" -eq 2 ] && [ "$shared_opens" -eq 1 ]; then
            vt_pass domain-control-no-domain "$out; 2 OPENs (metaA, shared) for a mount outside the domain"
        else
            vt_fail domain-control-no-domain "expected 2 OPENs (metaA, shared), counted $opens ($shared_opens of \"shared\")"
        fi
    else
        vt_fail domain-control-no-domain "$out"
    fi
    umount /mnt/solo
else
    vt_fail domain-control-no-domain "mount -o fsid=metaA,device=shared failed: $err"
fi

failed=$(vt_counter read_failed)
if [ "$failed" = 0 ]; then
    vt_pass domain-no-failed-reads "read_failed=0"
else
    vt_fail domain-no-failed-reads "read_failed=$failed"
fi
vt_stop_supervisor
exit 0
