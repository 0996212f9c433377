# shellcheck shell=sh
# shellcheck disable=SC2034  # VT_* settings are used by the scenarios
# Helpers for VM test scenarios; installed as /lib/vmtest.sh in the
# initramfs. Scenarios start with `. /lib/vmtest.sh`. Busybox ash syntax only.
#
# Result protocol (parsed by run-vm.sh on the host, one line each, at the
# start of a console line):
#   VMTEST PASS <name> [detail]
#   VMTEST FAIL <name> <detail>
#   VMTEST INFO <anything>
# A run passes when at least one PASS and no FAIL were printed, the scenario
# exited 0 and the kernel printed no panic/BUG/Oops/WARNING.
#
# Every helper that can block has a wall-clock bound; the bounds can be tuned
# per scenario through the VT_*_TIMEOUT variables below.

VT_CACHE_DIR=/var/cache/ondemand
VT_STATE_DIR=/run/ondemand
VT_BLOB_DIR=/blobs
VT_MANIFEST_DIR=/manifests
VT_CONFIG=/etc/ondemand.json
VT_TAG=vmtest
VT_SUPERVISOR_BIN=/bin/ondemand-supervisor
VT_SUPERVISOR_LOG=/tmp/supervisor.log
VT_FAILED_FLAG=/tmp/vmtest.failed
# Extra JSON members appended to the generated config, e.g.
# VT_CONFIG_EXTRA='"heartbeat_ms": 200'
: "${VT_CONFIG_EXTRA:=}"
: "${VT_START_TIMEOUT:=30}"
: "${VT_STOP_TIMEOUT:=15}"
: "${VT_MOUNT_TIMEOUT:=60}"
VT_SUPERVISOR_PID=

vt_pass() {
    echo "VMTEST PASS $*"
}

# Also leaves a flag so /init dumps the logs once the scenario ends.
vt_fail() {
    if [ $# -lt 2 ]; then
        echo "VMTEST FAIL ${1:-unnamed} (no detail given)"
    else
        echo "VMTEST FAIL $*"
    fi
    : > "$VT_FAILED_FLAG"
}

vt_info() {
    echo "VMTEST INFO $*"
}

# Seconds since boot with centisecond resolution (guest clock).
vt_now() {
    cut -d' ' -f1 /proc/uptime
}

# vt_elapsed START: seconds elapsed since START (a vt_now value).
vt_elapsed() {
    awk -v a="$1" -v b="$(vt_now)" 'BEGIN { printf "%.2f", b - a }'
}

# vt_with_timeout SECONDS CMD...: runs CMD, SIGTERM after SECONDS. Returns the
# command's status; 143 usually means the limit was hit (busybox timeout execs
# CMD in place, so it cannot report a timeout distinctly).
vt_with_timeout() {
    _vt_secs=$1
    shift
    timeout "$_vt_secs" "$@"
    _vt_rc=$?
    if [ "$_vt_rc" -eq 143 ] || [ "$_vt_rc" -eq 137 ]; then
        echo "vt_with_timeout: '$*' killed (status $_vt_rc) after at most ${_vt_secs}s" >&2
    fi
    return "$_vt_rc"
}

# vt_proc_alive PID: true while PID exists and is not a zombie (a child that
# exited stays a zombie until `wait`, and `kill -0` still succeeds on it).
vt_proc_alive() {
    [ -r "/proc/$1/stat" ] || return 1
    _vt_state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$_vt_state" ] && [ "$_vt_state" != Z ]
}

# vt_wait_gone PID SECONDS: polls until PID is dead; false on timeout.
vt_wait_gone() {
    _vt_deadline=$(awk -v n="$(vt_now)" -v s="$2" 'BEGIN { print n + s }')
    while vt_proc_alive "$1"; do
        if awk -v n="$(vt_now)" -v d="$_vt_deadline" 'BEGIN { exit !(n >= d) }'; then
            return 1
        fi
        sleep 0.1
    done
    return 0
}

# vt_verify_tree MOUNTPOINT MANIFEST: compares the tree under MOUNTPOINT with
# a gen-tree.py manifest: every regular file's sha256, every symlink target,
# every directory, and no extra or missing entry of any type. Prints one line:
# the counts on success, the number of mismatches and the first bad path
# (bytewise order) on failure, which also returns 1.
vt_verify_tree() {
    _vt_mnt=$1
    _vt_manifest=$2
    if [ ! -d "$_vt_mnt" ]; then
        echo "vt_verify_tree: $_vt_mnt is not a directory"
        return 1
    fi
    if [ ! -r "$_vt_manifest" ]; then
        echo "vt_verify_tree: cannot read manifest $_vt_manifest"
        return 1
    fi
    _vt_t0=$(vt_now)
    # mktemp, not $$: concurrent calls from one shell's background jobs
    # share $$.
    _vt_act=$(mktemp /tmp/vt_verify.XXXXXX) || return 1
    _vt_err=$(mktemp /tmp/vt_verify.XXXXXX) || return 1
    (
        cd "$_vt_mnt" || exit 1
        find . -mindepth 1 -type d | sed 's|^\./||; s|^|dir |'
        find . -type l | sed 's|^\./||' | while read -r _vt_l; do
            echo "symlink $_vt_l $(readlink "$_vt_l")"
        done
        find . -mindepth 1 ! -type d ! -type l ! -type f | sed 's|^\./||; s|^|special |'
        # One sha256sum per batch rather than per file: fork+exec is the
        # expensive part under TCG.
        find . -type f | sed 's|^\./||' | xargs -r sha256sum
    ) > "$_vt_act" 2> "$_vt_err"
    _vt_rc=$?
    _vt_bytes=$(cd "$_vt_mnt" && find . -type f -exec stat -c %s {} + 2>>"$_vt_err" |
        awk '{ s += $1 } END { printf "%d", s }')
    _vt_result=$(awk -v act="$_vt_act" '
        # Every line type carries its path in field 2 (sha256sum output has
        # two spaces, which awk field splitting absorbs).
        { exp_line[$2] = $0 }
        END {
            while ((getline line < act) > 0) {
                split(line, f, " ")
                got[f[2]] = line
            }
            nbad = 0
            for (p in exp_line) {
                if (!(p in got)) why = "missing (expected \"" exp_line[p] "\")"
                else if (got[p] != exp_line[p]) why = "expected \"" exp_line[p] "\", found \"" got[p] "\""
                else continue
                nbad++
                if (first == "" || p < first) { first = p; first_why = why }
            }
            for (p in got) {
                if (p in exp_line) continue
                nbad++
                if (first == "" || p < first) { first = p; first_why = "unexpected \"" got[p] "\"" }
            }
            nf = 0; nl = 0; nd = 0
            for (p in got) {
                if (got[p] ~ /^symlink /) nl++
                else if (got[p] ~ /^dir /) nd++
                else if (got[p] !~ /^special /) nf++
            }
            if (nbad) printf "BAD %d mismatches; first: %s: %s\n", nbad, first, first_why
            else printf "OK %d files, %d symlinks, %d dirs\n", nf, nl, nd
        }' "$_vt_manifest")
    _vt_secs=$(vt_elapsed "$_vt_t0")
    _vt_firsterr=$(head -n 1 "$_vt_err")
    rm -f "$_vt_act" "$_vt_err"
    case $_vt_result in
        OK*)
            if [ "$_vt_rc" -ne 0 ] || [ -n "$_vt_firsterr" ]; then
                echo "vt_verify_tree: $_vt_mnt: listing/reading failed: ${_vt_firsterr:-status $_vt_rc}"
                return 1
            fi
            echo "vt_verify_tree: $_vt_mnt: ${_vt_result#OK } verified, $_vt_bytes bytes in ${_vt_secs}s"
            return 0 ;;
        *)
            echo "vt_verify_tree: $_vt_mnt: ${_vt_result#BAD }${_vt_firsterr:+ (first read error: $_vt_firsterr)}"
            return 1 ;;
    esac
}

# vt_write_config: writes $VT_CONFIG for the supervisor.
vt_write_config() {
    mkdir -p "${VT_CONFIG%/*}"
    {
        printf '{"cache_dir": "%s", "tag": "%s", "blob_dir": "%s", "state_dir": "%s"' \
            "$VT_CACHE_DIR" "$VT_TAG" "$VT_BLOB_DIR" "$VT_STATE_DIR"
        [ -n "$VT_CONFIG_EXTRA" ] && printf ', %s' "$VT_CONFIG_EXTRA"
        printf '}\n'
    } > "$VT_CONFIG"
}

# vt_start_supervisor [EXTRA ARGS...]: writes the config, starts the
# supervisor in the background (log: $VT_SUPERVISOR_LOG, pid:
# $VT_SUPERVISOR_PID) and waits up to VT_START_TIMEOUT seconds for
# $VT_STATE_DIR/worker.pid. Returns 1 (after vt_fail) if it does not appear.
vt_start_supervisor() {
    if [ ! -x "$VT_SUPERVISOR_BIN" ]; then
        vt_fail supervisor-start "$VT_SUPERVISOR_BIN is not in the initramfs (run-vm.sh --build-dir DIR)"
        return 1
    fi
    if [ -n "$VT_SUPERVISOR_PID" ] && vt_proc_alive "$VT_SUPERVISOR_PID"; then
        vt_fail supervisor-start "already running as pid $VT_SUPERVISOR_PID"
        return 1
    fi
    vt_write_config
    rm -f "$VT_STATE_DIR/worker.pid"
    echo "==== $(vt_now) vt_start_supervisor $VT_SUPERVISOR_BIN --config $VT_CONFIG $*" >> "$VT_SUPERVISOR_LOG"
    "$VT_SUPERVISOR_BIN" --config "$VT_CONFIG" "$@" >> "$VT_SUPERVISOR_LOG" 2>&1 &
    VT_SUPERVISOR_PID=$!
    _vt_t0=$(vt_now)
    _vt_deadline=$(awk -v n="$_vt_t0" -v s="$VT_START_TIMEOUT" 'BEGIN { print n + s }')
    while [ ! -s "$VT_STATE_DIR/worker.pid" ]; do
        if ! vt_proc_alive "$VT_SUPERVISOR_PID"; then
            wait "$VT_SUPERVISOR_PID"
            vt_fail supervisor-start "supervisor exited with status $? before writing $VT_STATE_DIR/worker.pid"
            VT_SUPERVISOR_PID=
            return 1
        fi
        if awk -v n="$(vt_now)" -v d="$_vt_deadline" 'BEGIN { exit !(n >= d) }'; then
            vt_fail supervisor-start "no $VT_STATE_DIR/worker.pid after ${VT_START_TIMEOUT}s"
            return 1
        fi
        sleep 0.1
    done
    vt_info "supervisor pid $VT_SUPERVISOR_PID up, worker pid $(vt_worker_pid) after $(vt_elapsed "$_vt_t0")s"
    return 0
}

# vt_worker_pid: the worker pid the supervisor last recorded (empty if none).
vt_worker_pid() {
    tr -d ' \n' < "$VT_STATE_DIR/worker.pid" 2>/dev/null
}

# vt_stop_supervisor: SIGTERM, then waits up to VT_STOP_TIMEOUT seconds; a
# supervisor that does not exit in time is SIGKILLed and reported as a FAIL.
# Returns the supervisor's exit status (1 if it had to be killed).
vt_stop_supervisor() {
    if [ -z "$VT_SUPERVISOR_PID" ]; then
        vt_fail supervisor-stop "vt_stop_supervisor called but no supervisor was started"
        return 1
    fi
    _vt_pid=$VT_SUPERVISOR_PID
    VT_SUPERVISOR_PID=
    kill -TERM "$_vt_pid" 2>/dev/null
    if ! vt_wait_gone "$_vt_pid" "$VT_STOP_TIMEOUT"; then
        vt_fail supervisor-stop "pid $_vt_pid still running ${VT_STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
        kill -KILL "$_vt_pid" 2>/dev/null
        wait "$_vt_pid" 2>/dev/null
        return 1
    fi
    wait "$_vt_pid"
    _vt_rc=$?
    echo "==== $(vt_now) supervisor pid $_vt_pid exited with status $_vt_rc" >> "$VT_SUPERVISOR_LOG"
    return "$_vt_rc"
}

# vt_mount_fscache FSID MOUNTPOINT [EXTRA OPTS]: mounts EROFS over fscache,
# bounded by VT_MOUNT_TIMEOUT seconds (a mount whose OPEN nobody answers
# would otherwise sleep forever).
vt_mount_fscache() {
    mkdir -p "$2" || return 1
    vt_with_timeout "$VT_MOUNT_TIMEOUT" mount -t erofs none -o "fsid=$1${3:+,$3}" "$2"
}

# vt_dump_logs: supervisor log, processes and the kernel log tail, each line
# prefixed so none of it can be mistaken for a result line.
vt_dump_logs() {
    echo "---- $VT_SUPERVISOR_LOG ----"
    if [ -e "$VT_SUPERVISOR_LOG" ]; then
        sed 's/^/log| /' "$VT_SUPERVISOR_LOG"
    else
        echo "log| (no supervisor log)"
    fi
    echo "---- ps ----"
    ps -o pid,ppid,stat,args 2>/dev/null | sed 's/^/ps| /'
    echo "---- dmesg (last 60 lines) ----"
    dmesg | tail -n 60 | sed 's/^/kmsg| /'
    echo "---- end of logs ----"
}
