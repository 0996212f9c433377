#!/bin/sh
# Walking skeleton on the real kernel: the supervisor binds /dev/cachefiles
# and hands it to a worker; images mounted through fscache read back with
# every file's SHA-256 equal to its source tree. An unknown fsid fails the
# mount promptly, and the daemon still serves a mount made after it.
#   run-vm.sh --scenario serve.sh --image basic=basic --image second=small@2
. /lib/vmtest.sh

vt_start_supervisor || exit 0
vt_check_sandboxed

mkdir -p /mnt/basic /mnt/missing /mnt/second
start=$(vt_now)
if err=$(vt_mount_fscache basic /mnt/basic 2>&1); then
    if out=$(vt_verify_tree /mnt/basic "$VT_MANIFEST_DIR/basic.manifest"); then
        vt_pass serve-basic "$out in $(vt_elapsed "$start")s"
    else
        vt_fail serve-basic "$out"
    fi
else
    vt_fail serve-basic "mount -o fsid=basic failed: $err"
fi

# No blob called "nonexistent": the worker answers copen -ENOENT and the
# mount must fail by itself, well inside the bound.
start=$(vt_now)
if err=$(VT_MOUNT_TIMEOUT=30 vt_mount_fscache nonexistent /mnt/missing 2>&1); then
    vt_fail unknown-fsid "mount of a missing blob succeeded"
else
    took=$(vt_elapsed "$start")
    if awk -v t="$took" 'BEGIN { exit !(t < 20) }'; then
        vt_pass unknown-fsid "mount failed in ${took}s: $err"
    else
        vt_fail unknown-fsid "mount failed only after ${took}s (hung?): $err"
    fi
fi

if err=$(vt_mount_fscache second /mnt/second 2>&1); then
    if out=$(vt_verify_tree /mnt/second "$VT_MANIFEST_DIR/second.manifest"); then
        vt_pass serve-after-unknown "$out"
    else
        vt_fail serve-after-unknown "$out"
    fi
else
    vt_fail serve-after-unknown "mount -o fsid=second failed: $err"
fi

umount /mnt/basic /mnt/second 2>/dev/null
vt_stop_supervisor
exit 0
