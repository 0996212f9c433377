#!/bin/sh
# Kernel side of cachefiles on-demand mode, driven from the shell with no
# daemon: bind the cache by hand, mount an image over fscache, read the OPEN
# request the mount produces and refuse it, which must fail the mount cleanly.
#   tests/vm/run-vm.sh --scenario tests/vm/scenarios/bind.sh --image small=small
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. /lib/vmtest.sh

fsid=
for img in "$VT_BLOB_DIR"/*; do
    [ -f "$img" ] && { fsid=${img##*/}; break; }
done
if [ -z "$fsid" ]; then
    vt_fail bind "no image in $VT_BLOB_DIR (pass --image NAME=PROFILE to run-vm.sh)"
    exit 1
fi

if [ ! -c /dev/cachefiles ]; then
    vt_fail dev-cachefiles "/dev/cachefiles is missing or not a character device"
    exit 1
fi
vt_pass dev-cachefiles

# fd 3 is the daemon's descriptor for the rest of the script; closing it
# unbinds the cache. Each echo is one write(), i.e. one command.
if ! exec 3<>/dev/cachefiles; then
    vt_fail bind-open "cannot open /dev/cachefiles read-write"
    exit 1
fi
for cmd in "dir $VT_CACHE_DIR" "tag $VT_TAG" "bind ondemand"; do
    if ! echo "$cmd" >&3; then
        vt_fail bind "writing '$cmd' to /dev/cachefiles failed"
        exit 1
    fi
done
vt_pass bind "dir $VT_CACHE_DIR, tag $VT_TAG, bind ondemand accepted"

# The device is exclusive: a second open must get EBUSY.
if (exec 4<>/dev/cachefiles) 2>/dev/null; then
    vt_fail bind-exclusive "a second open of /dev/cachefiles succeeded"
else
    vt_pass bind-exclusive
fi

mkdir -p /mnt/fscache
mount -t erofs none -o "fsid=$fsid" /mnt/fscache > /tmp/mount.out 2>&1 &
mount_pid=$!

# read() on the device returns 0 while nothing is pending: poll. One read()
# returns exactly one message (struct cachefiles_msg, <= 1024 bytes).
msg=/tmp/cachefiles.msg
got=0
t0=$(vt_now)
while awk -v a="$t0" -v b="$(vt_now)" 'BEGIN { exit !(b - a < 30) }'; do
    dd bs=1024 count=1 of="$msg" <&3 2>/dev/null
    if [ -s "$msg" ]; then
        got=1
        break
    fi
    sleep 0.1
done
if [ "$got" -ne 1 ]; then
    vt_fail bind-read "no message on /dev/cachefiles within 30s of mounting fsid=$fsid"
    kill -KILL "$mount_pid" 2>/dev/null
    exit 1
fi

# Header: msg_id, opcode, len, object_id (u32 each); opcode 0 is OPEN, whose
# payload carries the volume key "erofs,<fsid>" and the cookie key "<fsid>".
# shellcheck disable=SC2046  # splitting od's output into the four fields
set -- $(od -An -t u4 -N 16 "$msg")
msg_id=$1 opcode=$2 len=$3 object_id=$4
size=$(wc -c < "$msg")
keys=$(dd if="$msg" bs=1 skip=32 2>/dev/null | tr '\0' '\n')
keys_shown=$(echo "$keys" | tr '\n' ' ')
vt_info "message: msg_id=$msg_id opcode=$opcode len=$len object_id=$object_id bytes=$size keys=$keys_shown"
if [ "$opcode" != 0 ] || [ "$len" != "$size" ]; then
    vt_fail bind-open-msg "expected an OPEN of $size bytes, got opcode=$opcode len=$len"
elif ! echo "$keys" | grep -qx "erofs,$fsid" || ! echo "$keys" | grep -qx "$fsid"; then
    vt_fail bind-open-msg "OPEN does not carry volume key erofs,$fsid and cookie key $fsid: $keys_shown"
else
    vt_pass bind-open-msg "OPEN msg_id=$msg_id object_id=$object_id for fsid=$fsid"
fi

# Refuse the blob (-ENOENT): the mount must fail instead of hanging.
if ! echo "copen $msg_id,-2" >&3; then
    vt_fail bind-copen "writing 'copen $msg_id,-2' failed"
fi
# A second reply to the same request is refused: what vt_check_replies
# relies on to see duplicate replies (two readers of one device).
if (echo "copen $msg_id,-2" >&3) 2>/tmp/dup.err; then
    vt_fail bind-duplicate-copen "a second 'copen $msg_id,-2' was accepted"
else
    vt_pass bind-duplicate-copen "a second 'copen $msg_id,-2' is refused: $(tr -d '\n' < /tmp/dup.err)"
fi
if vt_wait_gone "$mount_pid" 30; then
    wait "$mount_pid"
    mount_rc=$?
    if [ "$mount_rc" -ne 0 ]; then
        vt_pass bind-refused-mount "mount failed as expected (status $mount_rc: $(cat /tmp/mount.out))"
    else
        vt_fail bind-refused-mount "mount succeeded although the OPEN was refused"
        umount /mnt/fscache
    fi
else
    vt_fail bind-refused-mount "mount still blocked 30s after the OPEN was refused"
    kill -KILL "$mount_pid" 2>/dev/null
fi

exec 3>&-
exit 0
