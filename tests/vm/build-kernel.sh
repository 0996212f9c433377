#!/bin/bash
# Builds the VM test kernel from Debian's linux-source-6.12 plus
# tests/vm/kernel.fragment, and caches it outside the repo.
#
# Cache key: the linux-source package version + sha256 of the fragment, so a
# new Debian point release or a fragment edit rebuilds, anything else reuses.
# Prints the path of the bzImage on stdout (logs go to stderr).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
fragment=$here/kernel.fragment
cache_root=${ONDEMAND_KERNEL_CACHE:-/var/cache/cachefiles-ondemand/kernel}
tarball=/usr/src/linux-source-6.12.tar.xz

# Options the tests cannot run without; checked in the final .config because
# allnoconfig silently drops an option whose menu or dependency is missing.
required=(CACHEFILES_ONDEMAND EROFS_FS_ONDEMAND EROFS_FS CACHEFILES FSCACHE
          BLK_DEV_RAM BLK_DEV_LOOP EXT4_FS VIRTIO_BLK SERIAL_8250_CONSOLE
          DEVTMPFS UNIX EROFS_FS_ZIP INET SECCOMP_FILTER SECURITY_LANDLOCK CGROUPS)

log() { echo "build-kernel: $*" >&2; }

[[ -r $tarball ]] || { log "missing $tarball (apt-get install linux-source-6.12)"; exit 1; }
version=$(dpkg-query -W -f='${Version}' linux-source-6.12)
key="${version}-$(sha256sum "$fragment" | cut -c1-16)"
out=$cache_root/$key

if [[ -s $out/bzImage ]]; then
    log "cached kernel $out/bzImage"
    echo "$out/bzImage"
    exit 0
fi

mkdir -p "$cache_root"
# Parallel ctest runs on a cold cache must not build the kernel twice: the
# first one builds, the others wait on the lock and then reuse its result.
exec 9>"$cache_root/.build.lock"
if ! flock -w 1800 9; then
    log "timed out after 1800 s waiting for another build (lock $cache_root/.build.lock)"
    exit 1
fi
if [[ -s $out/bzImage ]]; then
    log "kernel built by a concurrent run: $out/bzImage"
    echo "$out/bzImage"
    exit 0
fi
work=$(mktemp -d "$cache_root/build.XXXXXX")
# The compiler's output goes to a log of its own, kept on failure (and with
# ONDEMAND_KEEP_KERNEL_LOG=1), so a first run says what it is doing instead
# of sitting silent for minutes.
build_log=$cache_root/build-$key.log
: > "$build_log"
cleanup() {
    local rc=$?
    rm -rf "$work"
    if ((rc != 0)); then
        log "FAILED (exit $rc); the build log is kept: $build_log"
    elif [[ ${ONDEMAND_KEEP_KERNEL_LOG:-0} != 1 ]]; then
        rm -f "$build_log"
    fi
}
trap cleanup EXIT
log "building the test kernel $key: first run only, about 4 minutes on 2 idle cores"
log "(10 or more on a busy machine); the result is cached in $cache_root; log: $build_log"
tar -C "$work" -xf "$tarball"
src=$(echo "$work"/linux-source-6.12)
make -C "$src" -s allnoconfig KCONFIG_ALLCONFIG="$fragment" >>"$build_log" 2>&1
for opt in "${required[@]}"; do
    if ! grep -q "^CONFIG_${opt}=y" "$src/.config"; then
        log "CONFIG_${opt} is not =y in the resulting .config: fix kernel.fragment"
        exit 1
    fi
done
make -C "$src" -s -j"$(nproc)" bzImage >>"$build_log" 2>&1
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
cp "$src/arch/x86/boot/bzImage" "$out.tmp/bzImage"
cp "$src/.config" "$out.tmp/config"
mv "$out.tmp" "$out"
log "kernel ready: $out/bzImage"
echo "$out/bzImage"
