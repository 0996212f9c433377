#!/bin/bash
# The ThreadSanitizer flavour: builds it and runs the unit tests or the host
# fault harness with it; fails on the first report (halt_on_error=1).
#
#   tests/sanitize/run-tsan.sh [unit] [CATCH2 ARGS...]   (what tsan_unit runs)
#   tests/sanitize/run-tsan.sh harness [CATCH2 ARGS...]  (what tsan_harness runs,
#                                  with HARNESS_TESTS=the CI build's harness_tests)
#
# Own build directory (TSAN_BUILD_DIR, default build/tsan), ccache when
# CCACHE_DIR is set (tests/run-all.sh exports it). Only what the mode runs
# is built, -j2, to keep the extra CI time small: unit_tests (and the two
# programs its SIGPIPE test runs), or the three programs the harness starts
# (ondemand-supervisor, ondemand-worker, ondemandctl). The harness's test
# driver need not be sanitized: the processes under test are, and their
# races are what this gate is for.
#
# A report from any process of the run fails it: the test binary, or a
# supervisor or worker it started (the supervisor passes TSAN_OPTIONS on to
# its workers). Reports go to files under the run's report dir (log_path),
# which must be empty at the end; a sandboxed worker, which Landlock keeps
# from opening that dir, writes its report to stderr, i.e. the supervisor's
# log, which the harness scans (harness.h sanitizer_report).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${TSAN_BUILD_DIR:-$root/build/tsan}
mode=unit
case ${1:-} in
    unit|harness) mode=$1; shift ;;
esac

cmake -S "$root" -B "$build" -DONDEMAND_SANITIZE=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
if [[ $mode == unit ]]; then
    nice cmake --build "$build" --target unit_tests -j2
    binary=$build/tests/unit/unit_tests
else
    nice cmake --build "$build" --target ondemand-supervisor ondemand-worker ondemandctl -j2
    binary=${HARNESS_TESTS:-$build/tests/harness/harness_tests}
    export HARNESS_BIN_DIR=$build
fi
[[ -x $binary ]] || { echo "run-tsan.sh: $binary missing" >&2; exit 2; }

. "$root/tests/sanitize/reports.sh"
reports=$build/sanitizer-reports/$mode
sanitizer_reset_dir "$reports"
# second_deadlock_stack: a lock-order report names both stacks.
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 log_path=$reports/tsan ${TSAN_OPTIONS:-}"

sanitizer_run run-tsan.sh "$reports" "$binary" "$@"
echo "run-tsan.sh: $mode passed under ThreadSanitizer with no report"
