#!/bin/bash
# The whole test suite, as CI runs it (.ci/run) and as the README tells a
# person to: installs dependencies, builds, runs every ctest test (unit
# tests, parser fuzzing, VM tests on the real kernel). Exit 0 only if all pass.
#
# Env: BUILD_DIR (default build/ci), CTEST_ARGS (extra ctest arguments, e.g.
# "-L unit" while developing; CI passes none).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${BUILD_DIR:-$root/build/ci}

deploy/install-deps.sh
# Compiler cache outside the repo, like the kernel cache.
export CCACHE_DIR=${CCACHE_DIR:-/var/cache/cachefiles-ondemand/ccache}
# Hits across clones (CI builds a fresh clone in another folder): paths
# under the tree are hashed relative to it, and -g's cwd is not hashed.
export CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=1
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"
# The VM tests' kernel, built once and cached (ctest's vm_kernel fixture
# would do it too, but silently): say what happens and how long it takes.
tests/vm/build-kernel.sh >/dev/null
cd "$build"
# shellcheck disable=SC2086
ctest --output-on-failure --no-tests=error ${CTEST_ARGS:-}
