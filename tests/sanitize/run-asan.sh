#!/bin/bash
# The AddressSanitizer + UndefinedBehaviorSanitizer flavour: builds it, runs
# the unit tests or the host fault harness with it.
#
#   tests/sanitize/run-asan.sh build         (what asan_vm_chaos runs)
#   tests/sanitize/run-asan.sh build-tests   (also unit_tests, harness_tests)
#   tests/sanitize/run-asan.sh unit    [CATCH2 ARGS...]   (builds unit_tests first;
#                                 what asan_unit runs)
#   tests/sanitize/run-asan.sh harness [CATCH2 ARGS...]   (what asan_harness runs,
#                                 with HARNESS_TESTS=the CI build's harness_tests)
#
# Own build directory (ASAN_BUILD_DIR, default build/asan), ccache when
# CCACHE_DIR is set (tests/run-all.sh exports it). `build` builds only what
# the ctest gate asan_vm_chaos runs in the VM: ondemand-supervisor,
# ondemand-worker, ondemandctl; `unit` adds unit_tests (the largest target
# of the tree) and runs it. `build-tests` builds unit_tests and
# harness_tests (and the programs they start) for running them by hand.
#
# A report from any process of the run fails it, whoever wrote it: a test
# binary, or a supervisor or worker it started (they get the options through
# the environment; the supervisor passes *SAN_OPTIONS on to workers). Every
# report goes to a file under the run's report dir (log_path), which must be
# empty at the end; the files are printed. ASan halts on the first error and
# UBSan does not recover (-fno-sanitize-recover=undefined), so a report is
# also a non-zero exit. LeakSanitizer is on: a process that exits (a test
# binary, a supervisor stopped with SIGTERM) reports what it leaked; one
# killed by SIGKILL, as the harness does to workers on purpose, reports
# nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${ASAN_BUILD_DIR:-$root/build/asan}
mode=${1:-}
[[ $# -gt 0 ]] && shift

case $mode in
    build|build-tests)
        cmake -S "$root" -B "$build" -DONDEMAND_SANITIZE=address,undefined \
            -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        targets=(ondemand-supervisor ondemand-worker ondemandctl)
        # harness_tests depends on the programs it runs; unit_tests on the two
        # its SIGPIPE test runs.
        [[ $mode == build-tests ]] && targets+=(unit_tests harness_tests)
        nice cmake --build "$build" --target "${targets[@]}" -j"$(nproc)"
        echo "run-asan.sh: built the ASan+UBSan flavour in $build"
        exit 0
        ;;
    unit)
        # Builds what it runs (asan_unit): unit_tests and the two programs
        # its SIGPIPE test starts, on top of asan_build's.
        cmake -S "$root" -B "$build" -DONDEMAND_SANITIZE=address,undefined \
            -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        nice cmake --build "$build" --target unit_tests -j"$(nproc)"
        binary=$build/tests/unit/unit_tests
        ;;
    harness)
        # The test driver need not be sanitized (ctest asan_harness passes
        # the CI build's in HARNESS_TESTS); the programs under test are.
        binary=${HARNESS_TESTS:-$build/tests/harness/harness_tests}
        # The binaries under test are the sanitized ones, not the CI build's.
        export HARNESS_BIN_DIR=$build
        ;;
    *)
        echo "usage: $0 build | build-tests | unit [CATCH2 ARGS...] | harness [CATCH2 ARGS...]" >&2
        exit 2
        ;;
esac
[[ -x $binary ]] || { echo "run-asan.sh: $binary missing: run '$0 build-tests' first" >&2; exit 2; }

. "$root/tests/sanitize/reports.sh"
reports=$build/sanitizer-reports/$mode
sanitizer_reset_dir "$reports"
export ASAN_OPTIONS="halt_on_error=1 detect_leaks=1 detect_stack_use_after_return=1 check_initialization_order=1 strict_init_order=1 log_path=$reports/asan ${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1 print_stacktrace=1 log_path=$reports/ubsan ${UBSAN_OPTIONS:-}"

sanitizer_run run-asan.sh "$reports" "$binary" "$@"
echo "run-asan.sh: $mode passed under ASan+UBSan with no report"
