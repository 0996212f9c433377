#!/bin/bash
# Builds unit_tests with ThreadSanitizer and runs them; fails on the first
# report (halt_on_error=1).
#
#   tests/sanitize/run-tsan.sh [CATCH2 ARGS...]
#
# Own build directory (TSAN_BUILD_DIR, default build/tsan), ccache when
# CCACHE_DIR is set (tests/run-all.sh exports it). Only the unit_tests
# target (and the two programs its SIGPIPE test runs) is built, -j2, to
# keep the extra CI time small.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${TSAN_BUILD_DIR:-$root/build/tsan}

cmake -S "$root" -B "$build" -DONDEMAND_SANITIZE=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
nice cmake --build "$build" --target unit_tests -j2
# second_deadlock_stack: a lock-order report names both stacks.
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
"$build/tests/unit/unit_tests" "$@"
echo "run-tsan.sh: unit_tests passed under ThreadSanitizer"
