# Sourced by run-asan.sh and run-tsan.sh: every sanitizer report of a run
# goes to a file in one dir (the caller points its *SAN_OPTIONS log_path
# there, after sanitizer_reset_dir), and any file there fails the run,
# whoever wrote it: the test binary or a process it started.
#
#   sanitizer_run NAME REPORT_DIR BINARY [ARGS...]
#
# Prints every report file and exits 1 if there is one; otherwise exits
# with the binary's status if it is non-zero, naming it; returns 0.

# sanitizer_reset_dir DIR: an empty report dir.
sanitizer_reset_dir() {
    rm -rf "$1"
    mkdir -p "$1"
}

sanitizer_run() {
    local name=$1 reports=$2 rc=0 found f
    shift 2
    "$@" || rc=$?
    found=$(find "$reports" -type f | sort)
    if [[ -n $found ]]; then
        for f in $found; do
            echo "==== $f"
            cat "$f"
        done
        echo "$name: FAIL: sanitizer reports from $1 (above)" >&2
        exit 1
    fi
    if [[ $rc -ne 0 ]]; then
        echo "$name: FAIL: $1 exited $rc (no sanitizer report)" >&2
        exit "$rc"
    fi
}
