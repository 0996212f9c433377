#!/bin/sh
# Self-test of the rig's helpers (lib.sh), so that a scenario's PASS means
# something: vt_verify_tree must catch every kind of mismatch and name the
# bad path, and the supervisor helpers must start, detect and stop a process
# (a shell stand-in here, so this needs no build).
#   tests/vm/run-vm.sh --scenario tests/vm/scenarios/selftest.sh --image small=small
# shellcheck disable=SC2119  # vt_start_supervisor takes optional extra args
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. /lib/vmtest.sh

name=
for img in "$VT_BLOB_DIR"/*; do
    [ -f "$img" ] && { name=${img##*/}; break; }
done
[ -n "$name" ] || { vt_fail selftest "no image in $VT_BLOB_DIR"; exit 1; }
manifest=$VT_MANIFEST_DIR/$name.manifest
mnt=/mnt/selftest
mkdir -p "$mnt"
mount -t erofs -o loop,ro "$VT_BLOB_DIR/$name" "$mnt" || { vt_fail selftest "loop mount failed"; exit 1; }

if out=$(vt_verify_tree "$mnt" "$manifest"); then
    vt_pass verify-good "$out"
else
    vt_fail verify-good "$out"
fi

# expect_bad CASE PATH MANIFEST: verification must fail and name PATH.
expect_bad() {
    if out=$(vt_verify_tree "$mnt" "$3"); then
        vt_fail "verify-$1" "mismatch not detected: $out"
    else
        case $out in
            *"first: $2:"*) vt_pass "verify-$1" "$out" ;;
            *) vt_fail "verify-$1" "detected but did not name $2 first: $out" ;;
        esac
    fi
}
first_file=$(grep -m1 -E '^[0-9a-f]{64}  ' "$manifest" | cut -d' ' -f3)
first_link=$(grep -m1 '^symlink ' "$manifest" | cut -d' ' -f2)
first_dir=$(grep -m1 '^dir ' "$manifest" | cut -d' ' -f2)
bad=/tmp/bad.manifest

sed "s|^[0-9a-f]\{64\}  $first_file\$|0000000000000000000000000000000000000000000000000000000000000000  $first_file|" "$manifest" > "$bad"
expect_bad content "$first_file" "$bad"
grep -v "  $first_file\$" "$manifest" > "$bad"
expect_bad unexpected-file "$first_file" "$bad"
{ cat "$manifest"; echo "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  zz-not-there"; } > "$bad"
expect_bad missing-file zz-not-there "$bad"
sed "s|^symlink $first_link .*|symlink $first_link elsewhere|" "$manifest" > "$bad"
expect_bad symlink-target "$first_link" "$bad"
grep -vx "dir $first_dir" "$manifest" > "$bad"
expect_bad unexpected-dir "$first_dir" "$bad"
umount "$mnt"

# Supervisor helpers against a stand-in that behaves like the real one:
# writes worker.pid once up, exits on SIGTERM.
fake=/tmp/fake-supervisor
cat > "$fake" <<'FAKE'
#!/bin/sh
[ "$1" = --config ] && [ -r "$2" ] || { echo "usage: $0 --config FILE" >&2; exit 2; }
grep -q '"tag": "vmtest"' "$2" || { echo "bad config: $(cat "$2")" >&2; exit 3; }
trap 'echo "fake: SIGTERM"; exit 0' TERM
mkdir -p /run/ondemand
sleep 0.3
echo $$ > /run/ondemand/worker.pid
while :; do sleep 1; done
FAKE
chmod +x "$fake"
VT_SUPERVISOR_BIN=$fake
if vt_start_supervisor; then
    pid=$VT_SUPERVISOR_PID
    if vt_stop_supervisor; then
        vt_pass supervisor-helpers "started pid $pid, stopped cleanly"
    else
        vt_fail supervisor-helpers "vt_stop_supervisor returned $?"
    fi
else
    vt_fail supervisor-helpers "vt_start_supervisor failed"
fi
grep -q 'fake: SIGTERM' "$VT_SUPERVISOR_LOG" || vt_fail supervisor-log "stand-in output missing from $VT_SUPERVISOR_LOG"

# A supervisor that dies at start must be reported promptly, not waited for.
printf '#!/bin/sh\necho "dying at start" >&2\nexit 4\n' > "$fake"
t0=$(vt_now)
if (vt_start_supervisor) > /tmp/start.out; then
    vt_fail supervisor-early-exit "vt_start_supervisor succeeded with a supervisor that exits"
elif grep -q 'VMTEST FAIL supervisor-start supervisor exited with status 4' /tmp/start.out; then
    vt_pass supervisor-early-exit "reported after $(vt_elapsed "$t0")s"
else
    vt_fail supervisor-early-exit "unexpected report: $(cat /tmp/start.out)"
fi
# That expected FAIL was captured, but it left the failure flag behind.
rm -f "$VT_FAILED_FLAG"

vt_with_timeout 1 sleep 5 2> /tmp/with-timeout.err
rc=$?
if [ "$rc" -eq 143 ] && grep -q "killed (status 143)" /tmp/with-timeout.err; then
    vt_pass with-timeout "sleep 5 under a 1s limit: status 143, reported"
else
    vt_fail with-timeout "sleep 5 under a 1s limit: status $rc, stderr: $(cat /tmp/with-timeout.err)"
fi
exit 0
