#!/bin/bash
# Installs everything the build, the tests and the VM rig need, from Debian's
# archive only. Idempotent: packages already present are not touched and
# `apt-get update` runs only when something is missing.
#
# Usage: deploy/install-deps.sh [--runtime-only]
#   --runtime-only  only what the installed binaries need at run time
set -euo pipefail

runtime=(libfmt9 libspdlog1.10 libcurl4 libsystemd0 libseccomp2)
build=(build-essential cmake pkg-config ccache
       libboost1.81-dev libfmt-dev libspdlog-dev nlohmann-json3-dev libcli11-dev catch2
       libcurl4-openssl-dev libssl-dev libsystemd-dev libseccomp-dev)
# The registry tests: a real registry (CNCF distribution), htpasswd for its
# basic auth, openssl for test CAs and token keys.
registry=(docker-registry apache2-utils openssl)
# The VM rig: kernel source and its build tools, qemu, the guest userland and
# image tools.
vm=(linux-source-6.12 bc bison flex libelf-dev libssl-dev xz-utils cpio
    qemu-system-x86 busybox-static erofs-utils e2fsprogs python3)
# Parser fuzzing (libFuzzer), unit-file checks, `promtool check metrics`
# (package prometheus) on the exposition, and curl to scrape it in the VM.
extra=(clang libclang-rt-14-dev systemd prometheus curl)

want=("${runtime[@]}")
if [[ ${1:-} != --runtime-only ]]; then
    want+=("${build[@]}" "${registry[@]}" "${vm[@]}" "${extra[@]}")
fi

missing=()
for pkg in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "install-deps: all ${#want[@]} packages present"
    exit 0
fi
if ((EUID != 0)); then
    echo "install-deps: missing packages: ${missing[*]}; run as root to install them" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
