#!/bin/sh
# shellcheck disable=SC2002  # cat FILE | xargs on purpose (see the readers below)
# 8 parallel readers over one cold fscache mount. The manifest's files are
# dealt round-robin into 8 slices; reader i hashes slices i and i+1 (mod 8),
# forwards when i is even and backwards when odd, so every file is read by
# two readers, often at the same moment from opposite directions, while the
# daemon serves all of them. Passes when every file of the manifest was
# hashed by both of its readers with the manifest's SHA-256, no reader
# failed, and the worker completed every READ with its data.
#   run-vm.sh --scenario layout-parallel.sh --add BUILD/tests/vm/tools/vt-counters \
#     --image basic=basic
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. /lib/vmtest.sh

READERS=8
name=basic
manifest=$VT_MANIFEST_DIR/$name.manifest
vt_start_supervisor || exit 0
if ! err=$(vt_mount_fscache "$name" "/mnt/$name" 2>&1); then
    vt_fail parallel-mount "mount -o fsid=$name failed: $err"
    vt_stop_supervisor
    exit 0
fi

work=/tmp/parallel
mkdir -p "$work"
# Regular files only (sha256sum lines: hash, two spaces, path).
awk '$1 != "dir" && $1 != "symlink" { print $2 }' "$manifest" > "$work/files"
nfiles=$(wc -l < "$work/files")
i=0
while [ "$i" -lt "$READERS" ]; do
    next=$(( (i + 1) % READERS ))
    awk -v n="$READERS" -v a="$i" -v b="$next" '(NR - 1) % n == a || (NR - 1) % n == b' \
        "$work/files" > "$work/list.$i"
    if [ $((i % 2)) -eq 1 ]; then
        sed -n '1!G;h;$p' "$work/list.$i" > "$work/list.$i.r" && mv "$work/list.$i.r" "$work/list.$i"
    fi
    i=$((i + 1))
done

reads0=$(vt_counter reads)
start=$(vt_now)
i=0
pids=
while [ "$i" -lt "$READERS" ]; do
    # From a pipe, never a file: busybox's applets can move a shared file
    # offset back under xargs, which then reads parts of its list twice
    # (scale.sh). Safe today only while a list fits one batch.
    ( cd "/mnt/$name" && cat "$work/list.$i" | xargs -r sha256sum > "$work/out.$i" 2> "$work/err.$i"
      echo $? > "$work/rc.$i" ) &
    pids="$pids $!"
    i=$((i + 1))
done
# shellcheck disable=SC2086
wait $pids
took=$(vt_elapsed "$start")

bad=0
detail=
i=0
while [ "$i" -lt "$READERS" ]; do
    rc=$(cat "$work/rc.$i" 2>/dev/null)
    if [ "$rc" != 0 ] || [ -s "$work/err.$i" ]; then
        bad=$((bad + 1))
        [ -z "$detail" ] && detail="reader $i: status ${rc:-?}: $(head -n 1 "$work/err.$i")"
    fi
    i=$((i + 1))
done
# Every (path, hash) line of every reader must be the manifest's, and every
# file must have been hashed exactly twice.
check=$(cat "$work"/out.* | awk -v want="$manifest" '
    BEGIN {
        while ((getline line < want) > 0) {
            split(line, f, " ")
            if (f[1] != "dir" && f[1] != "symlink") { hash[f[2]] = f[1]; n++ }
        }
    }
    {
        if (!($2 in hash)) { bad++; if (!first) first = "unexpected path " $2; next }
        if ($1 != hash[$2]) { bad++; if (!first) first = "sha256 mismatch on " $2; next }
        seen[$2]++
    }
    END {
        for (p in hash) if (seen[p] != 2) { bad++; if (!first) first = p " hashed " seen[p] + 0 " times, not 2" }
        if (bad) printf "BAD %d problems, first: %s\n", bad, first
        else printf "OK %d files x 2 readers\n", n
    }')
bytes=$( (cd "/mnt/$name" && cat "$work/files" | xargs -r stat -c %s) | awk '{ s += $1 } END { printf "%d", s }')
reads=$(( $(vt_counter reads) - reads0 ))
failed=$(vt_counter read_failed)

if [ "$bad" -eq 0 ] && [ "${check%% *}" = OK ] && [ "$failed" = 0 ]; then
    vt_pass parallel-8-readers "${check#OK } verified ($nfiles files, $bytes bytes, each read twice) in ${took}s; $reads READs, read_failed=0"
else
    vt_fail parallel-8-readers "$bad readers failed${detail:+ ($detail)}; check: $check; read_failed=$failed"
fi

# The whole tree (directories, symlinks, no extras) once more, now warm.
if out=$(vt_verify_tree "/mnt/$name" "$manifest"); then
    vt_pass parallel-tree-after "$out"
else
    vt_fail parallel-tree-after "$out"
fi
umount "/mnt/$name"
vt_stop_supervisor
exit 0
