#!/bin/bash
# Builds the Debian package cachefiles-ondemand_<version>-<release>_<arch>.deb
# (deploy/package.cmake): a build configured for the prefix /usr, then
# `cpack -G DEB`. Installs its build dependencies first (idempotent).
#
# Usage: deploy/build-deb.sh [--build-dir DIR] [--out DIR] [--version-suffix S]
#   --build-dir DIR       the build tree (default build/deb)
#   --out DIR             where the .deb goes (default: the build tree)
#   --version-suffix S    appended to the version (ONDEMAND_VERSION_SUFFIX),
#                         e.g. +2 for a second build that upgrades the first
# Prints the path of the package on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=$root/build/deb out= suffix=
usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --build-dir) build=$(realpath -m "${2:?--build-dir needs a value}"); shift 2 ;;
        --out) out=$(realpath -m "${2:?--out needs a value}"); shift 2 ;;
        --version-suffix) suffix=${2?--version-suffix needs a value}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build-deb: unknown argument '$1'" >&2; usage >&2; exit 64 ;;
    esac
done
out=${out:-$build}

deploy/install-deps.sh >&2
export CCACHE_DIR=${CCACHE_DIR:-/var/cache/cachefiles-ondemand/ccache}
export CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=1
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
    -DONDEMAND_BUILD_TESTS=OFF -DONDEMAND_VERSION_SUFFIX="$suffix" >&2
cmake --build "$build" -j"$(nproc)" >&2
mkdir -p "$out"
# cpack writes the package into its working directory's -B.
(cd "$build" && cpack -G DEB -B "$out" >&2)
rm -rf "$out/_CPack_Packages"
version=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$build/CPackConfig.cmake")
deb=$(ls -t "$out"/cachefiles-ondemand_"$version"-*.deb | head -n 1)
dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Depends\|Recommends\):/build-deb: \1:/p' >&2
echo "$deb"
