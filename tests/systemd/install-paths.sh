#!/bin/bash
# install-paths.sh SOURCE_DIR: for the prefixes /usr and /usr/local, the
# config file lands where the installed unit's ExecStart and ondemandctl's
# default --config look for it. (With -DCMAKE_INSTALL_PREFIX=/usr the config
# used to go to /usr/etc/ondemand while the unit read /etc/ondemand: the
# service exited 78 for ever.) Configures throw-away build trees and installs
# only the `config` component (no compiling) into a DESTDIR.
set -euo pipefail
src=${1:?usage: $0 SOURCE_DIR}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
for prefix in /usr /usr/local; do
    b=$work/build${prefix//\//_}
    cmake -S "$src" -B "$b" -DCMAKE_INSTALL_PREFIX="$prefix" -DONDEMAND_BUILD_TESTS=OFF >/dev/null
    DESTDIR=$work/root$prefix cmake --install "$b" --component config >/dev/null
    root=$work/root$prefix
    unit=$(find "$root" -name ondemand.service)
    config=$(sed -n 's/^ExecStart=.* --config \([^ ]*\).*/\1/p' "$unit")
    ctl_default=$(grep -o 'ONDEMAND_DEFAULT_CONFIG=[^ ]*' \
        "$b/tools/ctl/CMakeFiles/ondemandctl.dir/flags.make" | sed 's/^[^=]*=//; s/[\\"]//g')
    echo "prefix $prefix: unit reads $config; ondemandctl default $ctl_default"
    if [[ ! -f $root$config ]]; then
        echo "FAIL: prefix $prefix: the unit reads $config, not installed (installed: $(cd "$root" && find . -name ondemand.json))"
        fail=1
    fi
    if [[ $ctl_default != "$config" ]]; then
        echo "FAIL: prefix $prefix: ondemandctl defaults to $ctl_default, the unit to $config"
        fail=1
    fi
done
exit $fail
