#!/bin/sh
# The chaos scenario (chaos.sh, copied in as /lib/chaos-scenario.sh) with an
# ASan+UBSan supervisor and worker (run-vm.sh --build-dir of the asan
# flavour, tests/sanitize/run-asan.sh). The worker is kill -9'd on purpose,
# which is no finding; a sanitizer report from any process is one: every
# report goes to a file under $san_dir (log_path), and the supervisor's log,
# which holds the workers' stderr, must not show one either (a worker runs
# as worker_user and cannot write $san_dir: a sanitized worker reports to
# its stderr, worker/main.cc). LeakSanitizer
# is on: the supervisor and the last worker stop gracefully at the end and
# report leaks; SIGKILLed workers report nothing.
# Env (from run-vm.sh --env): CHAOS_ROUNDS, CHAOS_MIN_KILLS (chaos.sh).
. /lib/vmtest.sh

# Binaries without the runtime would pass without checking anything.
for b in /bin/ondemand-supervisor /bin/ondemand-worker; do
    if ! grep -q __asan_init "$b"; then
        vt_fail asan-binaries "$b is not built with AddressSanitizer (run-vm.sh --build-dir of the asan flavour)"
        exit 0
    fi
done
vt_pass asan-binaries "supervisor and worker carry the ASan+UBSan runtime"

san_dir=/tmp/sanitizer
mkdir -p "$san_dir"
export ASAN_OPTIONS="halt_on_error=1 detect_leaks=1 log_path=$san_dir/asan ${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1 print_stacktrace=1 log_path=$san_dir/ubsan ${UBSAN_OPTIONS:-}"
vt_info "ASAN_OPTIONS=$ASAN_OPTIONS"
vt_info "UBSAN_OPTIONS=$UBSAN_OPTIONS"

# The worker's own sandbox would blind the sanitizers: LeakSanitizer stops
# the world with ptrace (not on the seccomp list) and reports go to
# $san_dir (outside the Landlock rules). This gate is about memory errors;
# vm_chaos runs the same scenario with the sandbox on.
export VT_CONFIG_EXTRA='"sandbox_seccomp": false, "sandbox_landlock": false'
export VT_EXPECT_SECCOMP=0
sh /lib/chaos-scenario.sh

reports=$(find "$san_dir" -type f | sort)
if [ -n "$reports" ]; then
    for f in $reports; do
        sed "s|^|sanitizer $f| |" "$f"
    done
    vt_fail sanitizer-reports "$(echo "$reports" | wc -l) report file(s): $(echo "$reports" | tr '\n' ' ')"
else
    vt_pass sanitizer-reports "no report file under $san_dir"
fi
if grep -E "ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|Can't open file)|runtime error:" "$VT_SUPERVISOR_LOG" > /tmp/san-grep.txt; then
    sed 's/^/sanitizer-log| /' /tmp/san-grep.txt | head -n 20
    vt_fail sanitizer-log "$(wc -l < /tmp/san-grep.txt) sanitizer line(s) in $VT_SUPERVISOR_LOG"
else
    vt_pass sanitizer-log "no sanitizer report in $VT_SUPERVISOR_LOG"
fi
exit 0
