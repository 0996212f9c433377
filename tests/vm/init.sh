#!/bin/sh
# PID 1 of the VM test initramfs (packed as /init by run-vm.sh). Busybox ash.
#
# Sets up /proc, /sys, /dev, tmpfs on /dev/shm, /tmp and /run, an ext4 cache
# filesystem on /dev/ram0 at /var/cache/ondemand, then runs /scenario.sh with
# a time limit, prints VMTEST-DONE and reboots (qemu runs with -no-reboot, so
# that ends the VM). No `set -e`: PID 1 exiting is a kernel panic, and every
# failure here must instead be reported as a VMTEST FAIL line.
#
# Kernel command line parameters read here:
#   vmtest.timeout=SECONDS   limit for /scenario.sh (default 240)
#   vmtest.systemd=1         after the set-up, exec Debian's systemd as PID 1,
#                            which runs the scenario as vmtest.service

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
umask 022

setup_failed() {
    echo "VMTEST FAIL vm-setup $*"
    echo "VMTEST-DONE"
    reboot -n -f
    sleep 60
}

mount -t proc proc /proc || setup_failed "mount /proc"
mount -t sysfs sysfs /sys || setup_failed "mount /sys"
mount -t devtmpfs devtmpfs /dev || setup_failed "mount devtmpfs on /dev"
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || setup_failed "mount /dev/shm"
mount -t tmpfs -o mode=1777 tmpfs /tmp || setup_failed "mount /tmp"
mount -t tmpfs -o mode=0755 tmpfs /run || setup_failed "mount /run"
ln -sf /proc/self/fd /dev/fd 2>/dev/null

timeout_s=240
use_systemd=
# shellcheck disable=SC2013  # the command line is one line of words
for arg in $(cat /proc/cmdline); do
    case $arg in
        vmtest.timeout=*) timeout_s=${arg#vmtest.timeout=} ;;
        vmtest.systemd=1) use_systemd=1 ;;
    esac
done

# The cache must be a real disk filesystem: cachefiles refuses tmpfs, and the
# kernel is built without ext2 (EXT4_USE_FOR_EXT2 is off in allnoconfig), so
# it is e2fsprogs' mkfs.ext4, not busybox mke2fs. No journal: a throwaway
# cache gains nothing from one and formatting is faster.
[ -b /dev/ram0 ] || setup_failed "/dev/ram0 missing (brd.rd_nr=1 brd.rd_size=... on the command line?)"
if ! out=$(mkfs.ext4 -q -F -m 0 -O ^has_journal -E lazy_itable_init=1 /dev/ram0 2>&1); then
    setup_failed "mkfs.ext4 /dev/ram0: $out"
fi
mkdir -p /var/cache/ondemand
mount -t ext4 /dev/ram0 /var/cache/ondemand || setup_failed "mount -t ext4 /dev/ram0"

if [ -n "$use_systemd" ]; then
    # Debian's systemd as PID 1 (run-vm.sh --systemd): it runs the scenario
    # as vmtest.service (/lib/vmtest-run.sh, the same steps as below).
    echo "$timeout_s" > /etc/vmtest.timeout
    exec /lib/systemd/systemd --unit=vmtest.service
    setup_failed "exec /lib/systemd/systemd failed"
fi
. /lib/vmtest-run.sh
