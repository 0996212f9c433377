#!/bin/bash
# run-vm.sh: runs one VM test scenario in qemu (TCG, no KVM) on our 6.12 kernel.
#
# Usage:
#   tests/vm/run-vm.sh --scenario FILE [options]
#
# Options:
#   --scenario FILE        busybox sh script run in the VM as /scenario.sh
#                          (required). It sources /lib/vmtest.sh (tests/vm/lib.sh)
#                          and prints VMTEST PASS/FAIL/INFO lines.
#   --build-dir DIR        CMake build dir: ondemand-supervisor, ondemand-worker
#                          and ondemandctl found there go to /bin with the shared
#                          libraries ldd lists. Each one missing is a warning.
#   --image NAME=PROFILE[@SEED][:MKFS-ARGS]   (repeatable)
#                          generate tree PROFILE (tests/vm/gen-tree.py, seed
#                          default 1), build an EROFS image with mkfs.erofs
#                          MKFS-ARGS (split on whitespace, e.g. "-zlz4hc"), put
#                          it at /blobs/NAME and the manifest at
#                          /manifests/NAME.manifest. NAME is the fsid/blob id.
#                          The image gets a UUID derived from the cache key; a
#                          -U<uuid> in MKFS-ARGS comes later on mkfs.erofs's
#                          command line and wins.
#                          Multi-device (chunk-based) images: a MKFS-ARGS word
#                          --blobdev=BLOB (BLOB a bare name like NAME) makes
#                          mkfs.erofs write the file data to an extra device
#                          that is cached with the image and put at
#                          /blobs/BLOB, e.g.
#                            --image meta=basic:"--chunksize=65536 --blobdev=data"
#                          gives /blobs/meta (metadata) and /blobs/data. Mount
#                          it with -o fsid=meta,device=data: mkfs.erofs 1.5
#                          leaves the device tag empty. Several images may name
#                          the same BLOB (one blob shared by several metadata
#                          images, e.g. the same tree and --chunksize with
#                          different -U) only if they produce identical bytes.
#   --add HOSTPATH[:VMPATH] (repeatable) copy an extra file into the VM
#                          (default VMPATH /bin/<basename>); ELF files bring
#                          their shared libraries.
#   --env NAME=VALUE       (repeatable) exported to the scenario and everything
#                          it starts (written to /etc/vmtest.env, which
#                          lib.sh sources), e.g. --env ONDEMAND_LOG_LEVEL=debug
#   --systemd              boot Debian's systemd as PID 1 (with journald,
#                          systemctl, journalctl): init.sh sets up the cache
#                          ramdisk and execs it, and the scenario runs as
#                          vmtest.service (tests/vm/systemd/)
#   --install BUILD_DIR    `DESTDIR=<VM root> cmake --install BUILD_DIR`: the
#                          project as installed (its configured prefix,
#                          /usr/local by default: binaries, unit, config),
#                          with the libraries of the installed programs
#   --deb FILE             (repeatable) a Debian package for the scenario to
#                          install, at /debs/<basename>. The VM gets dpkg
#                          (dpkg, dpkg-deb, dpkg-split, GNU tar, ldconfig,
#                          start-stop-daemon, systemd-sysusers), the libraries
#                          of the package's programs, and a dpkg database in
#                          which the packages it Depends on are installed (this
#                          host's status entries for them: their files are
#                          the libraries just copied)
#   --timeout SECONDS      wall-clock limit for the VM (default 300, >= 30); the
#                          scenario itself gets SECONDS-20 so that the VM can
#                          still dump its logs before the host kills it.
#   --mem MB               guest RAM (default 1024)
#   --cache-mb MB          size of the ext4 ramdisk at /var/cache/ondemand
#                          (default 256)
#   --log FILE             write the console log there (kept). Default: a
#                          temporary file, deleted on success and kept (path
#                          printed) on failure.
#   --no-strip             keep debug info in the build-dir binaries (by
#                          default it is stripped from the copies in the VM:
#                          it triples the initramfs and nothing in the VM reads
#                          it; symbolize addresses on the host instead)
#   --keep                 keep the work dir (staging tree, initramfs)
#   -h, --help
#
# Result: exit 0 only if the console shows >= 1 "VMTEST PASS", no
# "VMTEST FAIL", "VMTEST-DONE", no kernel panic/BUG/Oops/WARNING/hung task and
# the VM finished in time. Exit 1 on a test failure, 2 on a usage or setup
# error; either way the last line is "run-vm: RESULT: ..." with the reason.
#
# Caches (shared by concurrent runs, guarded by flock):
#   kernel  build-kernel.sh ($ONDEMAND_KERNEL_CACHE, /var/cache/cachefiles-ondemand/kernel)
#   images  $ONDEMAND_IMAGE_CACHE (/var/cache/cachefiles-ondemand/images), keyed
#           on profile, seed, gen-tree.py, the mkfs.erofs binary and MKFS-ARGS.
#
# Example:
#   tests/vm/run-vm.sh --scenario tests/vm/scenarios/direct.sh --image basic=basic
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly here
# Everything in the trees and images gets this mtime, for reproducible images.
readonly FIXED_MTIME=1700000000
readonly BINARIES=(ondemand-supervisor ondemand-worker ondemandctl)

log() { echo "run-vm: $*" >&2; }
die() {
    echo "run-vm: error: $*" >&2
    echo "run-vm: RESULT: ERROR: $*"
    exit 2
}
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# ---- arguments ---------------------------------------------------------------

scenario='' build_dir='' log_file=''
timeout_s=300 mem_mb=1024 cache_mb=256 keep=0 strip=1 use_systemd=0 install_dir=
images=() adds=() envs=() debs=()
need_arg() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs an argument (see --help)"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --scenario) need_arg "$@"; scenario=$2; shift 2 ;;
        --build-dir) need_arg "$@"; build_dir=$2; shift 2 ;;
        --image) need_arg "$@"; images+=("$2"); shift 2 ;;
        --add) need_arg "$@"; adds+=("$2"); shift 2 ;;
        --env) need_arg "$@"; envs+=("$2"); shift 2 ;;
        --timeout) need_arg "$@"; timeout_s=$2; shift 2 ;;
        --mem) need_arg "$@"; mem_mb=$2; shift 2 ;;
        --cache-mb) need_arg "$@"; cache_mb=$2; shift 2 ;;
        --log) need_arg "$@"; log_file=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        --systemd) use_systemd=1; shift ;;
        --install) need_arg "$@"; install_dir=$2; shift 2 ;;
        --deb) need_arg "$@"; debs+=("$2"); shift 2 ;;
        --no-strip) strip=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[[ -n $scenario ]] || die "--scenario FILE is required (see --help)"
[[ -r $scenario ]] || die "scenario $scenario is not readable"
[[ $timeout_s =~ ^[0-9]+$ && $timeout_s -ge 30 ]] || die "--timeout must be an integer >= 30, got '$timeout_s'"
[[ $mem_mb =~ ^[0-9]+$ && $mem_mb -ge 256 ]] || die "--mem must be an integer >= 256, got '$mem_mb'"
[[ $cache_mb =~ ^[0-9]+$ && $cache_mb -ge 16 ]] || die "--cache-mb must be an integer >= 16, got '$cache_mb'"
if [[ -n $build_dir ]]; then
    [[ -d $build_dir ]] || die "--build-dir $build_dir is not a directory"
fi
if [[ -n $install_dir ]]; then
    [[ -f $install_dir/cmake_install.cmake ]] || die "--install $install_dir is not a configured CMake build dir"
fi
for deb in "${debs[@]}"; do
    dpkg-deb --info "$deb" >/dev/null 2>&1 || die "--deb $deb is not a Debian package"
done
for spec in "${envs[@]}"; do
    [[ $spec =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env '$spec': expected NAME=VALUE with NAME a shell variable name"
done
scenario_name=$(basename "$scenario" .sh)

for tool in qemu-system-x86_64 mkfs.erofs python3 cpio busybox ldd timeout flock sha256sum cmp; do
    command -v "$tool" >/dev/null || die "'$tool' not found in PATH (see deploy/ for the dependency list)"
done
if [[ -n $build_dir && $strip -eq 1 ]]; then
    command -v strip >/dev/null || die "'strip' (binutils) not found; install it or pass --no-strip"
fi
mkfs_ext4=$(command -v mkfs.ext4 || command -v mke2fs || true)
[[ -n $mkfs_ext4 ]] || mkfs_ext4=/sbin/mke2fs
[[ -x $mkfs_ext4 ]] || die "mkfs.ext4 / mke2fs (e2fsprogs) not found"

# ---- work dir and cleanup ----------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/var/tmp}/run-vm.${scenario_name}.XXXXXX")
qemu_pidfile=$work/qemu.pid
result_ok=0
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local pid kept
    if [[ -s $qemu_pidfile ]]; then
        pid=$(<"$qemu_pidfile")
        if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$work"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    if [[ -z $log_file && $result_ok -eq 0 && -s $work/console.log ]]; then
        kept="${TMPDIR:-/tmp}/run-vm-${scenario_name}-$(date +%Y%m%d-%H%M%S)-$$.log"
        cp "$work/console.log" "$kept" && log "console log kept: $kept"
    fi
    if [[ $keep -eq 1 ]]; then
        log "work dir kept: $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM
if [[ -n $log_file ]]; then
    mkdir -p "$(dirname "$log_file")"
    console_log=$log_file
else
    console_log=$work/console.log
fi

# ---- kernel ------------------------------------------------------------------

[[ -x $here/build-kernel.sh ]] || die "$here/build-kernel.sh missing or not executable"
kernel=$(timeout 2400 "$here/build-kernel.sh") || die "build-kernel.sh failed or timed out (40 min)"
[[ -s $kernel ]] || die "build-kernel.sh printed '$kernel', which is not a kernel image"

# ---- images ------------------------------------------------------------------

image_cache=${ONDEMAND_IMAGE_CACHE:-/var/cache/cachefiles-ondemand/images}
mkdir -p "$image_cache/trees" "$image_cache/erofs" "$image_cache/locks"
gen_hash=$(sha256sum "$here/gen-tree.py" | cut -c1-12)
mkfs_hash=$(sha256sum "$(command -v mkfs.erofs)" | cut -c1-12)

# ensure_image NAME PROFILE SEED ARGS: sets $image_path and $manifest_path,
# and $blob_name/$blob_path when ARGS hold --blobdev=BLOB (else empty).
ensure_image() {
    local name=$1 profile=$2 seed=$3 args=$4
    local tree_key="${profile}-seed${seed}-g${gen_hash}"
    local tree=$image_cache/trees/$tree_key
    local key uuid mkfs_args=() i
    key=$(printf '%s\n' "$tree_key" "$mkfs_hash" "$args" | sha256sum | cut -c1-32)
    uuid="${key:0:8}-${key:8:4}-${key:12:4}-${key:16:4}-${key:20:12}"
    image_path=$image_cache/erofs/$tree_key-${key:0:12}.img
    manifest_path=$tree.manifest
    blob_name='' blob_path=''
    read -r -a mkfs_args <<<"$args"
    for i in "${!mkfs_args[@]}"; do
        case ${mkfs_args[$i]} in
            --blobdev=*)
                [[ -z $blob_name ]] || die "--image $name: --blobdev given twice"
                blob_name=${mkfs_args[$i]#--blobdev=}
                [[ $blob_name =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] \
                    || die "--image $name: --blobdev=BLOB must name a blob ([A-Za-z0-9][A-Za-z0-9._-]{0,63}), got '$blob_name'"
                blob_path=${image_path%.img}.blob
                mkfs_args[i]=--blobdev=$blob_path.tmp
                ;;
            --blobdev)
                die "--image $name: write --blobdev=BLOB (one word), not --blobdev BLOB" ;;
        esac
    done

    exec 8>"$image_cache/locks/$tree_key.lock"
    flock -w 1200 8 || die "timed out waiting for the image cache lock $image_cache/locks/$tree_key.lock"
    if [[ ! -e $tree.done ]]; then
        log "generating tree $tree_key"
        timeout 300 python3 "$here/gen-tree.py" "$tree" --profile "$profile" --seed "$seed" \
            || die "gen-tree.py --profile $profile --seed $seed failed (status $?)"
        touch "$tree.done"
    fi
    if [[ ! -s $image_path || ( -n $blob_path && ! -e $blob_path ) ]]; then
        log "building image $image_path (mkfs.erofs ${args:-no extra args})"
        rm -f "$image_path.tmp" "$image_path"
        [[ -n $blob_path ]] && rm -f "$blob_path.tmp" "$blob_path"
        timeout 600 mkfs.erofs --quiet -T"$FIXED_MTIME" -U"$uuid" --all-root \
            "${mkfs_args[@]}" "$image_path.tmp" "$tree" >&2 \
            || die "mkfs.erofs ${args} for image $name failed (status $?)"
        # The blob first: an image without its blob is rebuilt (test above).
        [[ -n $blob_path ]] && mv "$blob_path.tmp" "$blob_path"
        mv "$image_path.tmp" "$image_path"
    fi
    exec 8>&-
    log "image $name: $image_path ($(stat -c %s "$image_path") bytes)"
    [[ -n $blob_path ]] && log "image $name: extra device /blobs/$blob_name: $blob_path ($(stat -c %s "$blob_path") bytes)"
    return 0
}

declare -A seen_names=() blob_sources=()
image_names=() image_paths=() manifest_paths=() blob_names=() blob_paths=()
for spec in "${images[@]}"; do
    [[ $spec == *=* ]] || die "--image '$spec': expected NAME=PROFILE[@SEED][:MKFS-ARGS]"
    name=${spec%%=*}
    rest=${spec#*=}
    args=
    if [[ $rest == *:* ]]; then
        args=${rest#*:}
        rest=${rest%%:*}
    fi
    profile=${rest%@*}
    seed=1
    [[ $rest == *@* ]] && seed=${rest#*@}
    [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] \
        || die "--image '$spec': NAME must match [A-Za-z0-9][A-Za-z0-9._-]{0,63} (it is the fsid)"
    [[ $profile =~ ^[a-z0-9_-]+$ ]] || die "--image '$spec': bad profile '$profile'"
    [[ $seed =~ ^[0-9]+$ ]] || die "--image '$spec': seed must be a non-negative integer, got '$seed'"
    [[ -z ${seen_names[$name]:-} ]] || die "--image: name '$name' given twice"
    [[ -z ${blob_sources[$name]:-} ]] || die "--image: name '$name' is also a --blobdev blob"
    seen_names[$name]=1
    ensure_image "$name" "$profile" "$seed" "$args"
    image_names+=("$name")
    image_paths+=("$image_path")
    manifest_paths+=("$manifest_path")
    if [[ -n $blob_name ]]; then
        [[ -z ${seen_names[$blob_name]:-} ]] || die "--image $name: blob '$blob_name' is also an image name"
        if [[ -n ${blob_sources[$blob_name]:-} ]]; then
            cmp -s "${blob_sources[$blob_name]}" "$blob_path" \
                || die "--image $name: blob '$blob_name' is also made by another image, with different bytes (same tree and --chunksize needed to share it)"
        else
            blob_sources[$blob_name]=$blob_path
            blob_names+=("$blob_name")
            blob_paths+=("$blob_path")
        fi
    fi
done

# ---- initramfs ---------------------------------------------------------------

stage=$work/root
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,lib,etc,proc,sys,dev,tmp,run,root,mnt,blobs,manifests,var/cache/ondemand}

# add_elf SRC DEST: copies SRC to DEST in the VM plus every library ldd lists,
# each at the exact path the dynamic loader will look for it.
add_elf() {
    install -D -m 0755 "$1" "$stage$2"
    add_libs_of "$1"
}
# add_libs_of ELF: only the libraries of ELF (its own copy comes otherwise).
add_libs_of() {
    local src=$1 out lib
    if ! out=$(ldd "$src" 2>&1); then
        [[ $out == *"not a dynamic executable"* ]] && return 0
        die "ldd $src failed: $out"
    fi
    if [[ $out == *"not found"* ]]; then
        die "ldd $src: unresolved libraries: $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"
    fi
    while read -r lib; do
        [[ -e $stage$lib ]] || install -D -m 0755 "$lib" "$stage$lib"
    done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out")
}
is_elf() { [[ $(head -c 4 "$1" | od -An -c | tr -d ' ') == '177ELF' ]]; }

busybox_bin=$(command -v busybox)
if ldd "$busybox_bin" >/dev/null 2>&1; then
    die "$busybox_bin is dynamically linked: install busybox-static"
fi
install -m 0755 "$busybox_bin" "$stage/bin/busybox"
while read -r applet; do
    [[ -n $applet && $applet != linuxrc ]] || continue
    mkdir -p "$stage/$(dirname "$applet")"
    [[ -e $stage/$applet || -L $stage/$applet ]] || ln -s /bin/busybox "$stage/$applet"
done < <("$busybox_bin" --list-full)

# e2fsprogs' mkfs: the kernel has no ext2 driver, and busybox mke2fs makes ext2.
add_elf "$mkfs_ext4" /sbin/mkfs.ext4
[[ -r /etc/mke2fs.conf ]] && install -m 0644 /etc/mke2fs.conf "$stage/etc/mke2fs.conf"
# nobody: the user the worker drops to by default (config worker_user).
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$stage/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"

if [[ -n $build_dir ]]; then
    for bin in "${BINARIES[@]}"; do
        found=$(find "$build_dir" -maxdepth 4 -name CMakeFiles -prune -o -type f -name "$bin" -perm -u+x -print \
            | awk '{ print length($0) "\t" $0 }' | sort -n | head -n 1 | cut -f2-)
        if [[ -z $found ]]; then
            log "WARNING: $bin not found under $build_dir: scenarios that need it will fail"
            continue
        fi
        add_elf "$found" "/bin/$bin"
        if [[ $strip -eq 1 ]]; then
            strip --strip-debug "$stage/bin/$bin" || die "strip --strip-debug $found failed (use --no-strip)"
        fi
        log "binary $found -> /bin/$bin"
    done
fi
for spec in "${adds[@]}"; do
    src=${spec%%:*}
    dest=/bin/$(basename "$src")
    [[ $spec == *:* ]] && dest=${spec#*:}
    [[ -f $src ]] || die "--add: $src is not a file"
    [[ $dest == /* ]] || die "--add: VM path '$dest' must be absolute"
    if is_elf "$src"; then add_elf "$src" "$dest"; else install -D -m 0755 "$src" "$stage$dest"; fi
done

if [[ $use_systemd -eq 1 ]]; then
    # Debian's systemd: PID 1, journald and the two clients, their libraries
    # (libsystemd-shared via RUNPATH, which ldd resolves), journald's units.
    [[ -x /lib/systemd/systemd ]] || die "/lib/systemd/systemd not found (package systemd; deploy/install-deps.sh)"
    add_elf /lib/systemd/systemd /lib/systemd/systemd
    add_elf /lib/systemd/systemd-journald /lib/systemd/systemd-journald
    add_elf "$(command -v systemctl)" /bin/systemctl
    add_elf "$(command -v journalctl)" /bin/journalctl
    for unit in systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket \
                systemd-journald-audit.socket /lib/systemd/system/*.target /lib/systemd/system/*.slice; do
        unit=${unit##*/}
        install -D -m 0644 "/lib/systemd/system/$unit" "$stage/lib/systemd/system/$unit"
    done
    install -D -m 0644 "$here/systemd/vmtest.service" "$stage/lib/systemd/system/vmtest.service"
    install -m 0644 /etc/os-release "$stage/etc/os-release"
    log "systemd $(systemctl --version | head -n 1 | cut -d' ' -f2) as PID 1"
fi
if [[ -n $install_dir ]]; then
    # Into a scratch tree first: install's ELF files are re-added with
    # add_elf (their libraries) and stripped like the build-dir binaries.
    inst=$work/install
    DESTDIR=$inst cmake --install "$install_dir" >/dev/null || die "cmake --install $install_dir failed"
    while IFS= read -r -d '' f; do
        rel=${f#"$inst"}
        if is_elf "$f"; then
            add_elf "$f" "$rel"
            [[ $strip -eq 1 ]] && { strip --strip-debug "$stage$rel" || die "strip --strip-debug $rel failed"; }
        else
            install -D -m "$(stat -c %a "$f")" "$f" "$stage$rel"
        fi
        log "installed $rel"
    done < <(find "$inst" -type f -print0)
fi
if ((${#debs[@]})); then
    # dpkg and what it runs: dpkg-deb unpacks, GNU tar extracts the control
    # archive, ldconfig and start-stop-daemon are on dpkg's list of programs
    # it must find in PATH; sh, rm and diff are busybox's.
    for prog in /usr/bin/dpkg /usr/bin/dpkg-deb /usr/bin/dpkg-split /usr/bin/dpkg-query /bin/tar \
                /sbin/ldconfig /sbin/start-stop-daemon /usr/bin/systemd-sysusers; do
        [[ -x $prog ]] || die "--deb: $prog not found on this host"
        # Busybox's applets of the same name (dpkg, dpkg-deb, tar) would come first in PATH.
        for d in bin sbin usr/bin usr/sbin; do
            [[ -L $stage/$d/${prog##*/} ]] && rm -f "$stage/$d/${prog##*/}"
        done
        add_elf "$prog" "$prog"
    done
    mkdir -p "$stage"/var/lib/dpkg/{info,updates,triggers,alternatives} "$stage"/etc/dpkg "$stage"/var/log \
        "$stage"/var/lib/ondemand "$stage"/debs
    : >"$stage/var/lib/dpkg/status"
    : >"$stage/var/lib/dpkg/available"
    deps=()
    for deb in "${debs[@]}"; do
        x=$work/deb-$(basename "$deb")
        mkdir -p "$x"
        dpkg-deb -x "$deb" "$x"
        while IFS= read -r -d '' f; do
            is_elf "$f" && add_libs_of "$f"
        done < <(find "$x" -type f -print0)
        # Depends: "a (>= 1), b | c, ...": the first alternative of each.
        while read -r dep; do deps+=("$dep"); done < <(dpkg-deb -f "$deb" Depends | tr ',' '\n' \
            | sed 's/|.*//; s/(.*)//; s/:any//; s/[[:space:]]//g' | grep .)
        install -m 0644 "$deb" "$stage/debs/$(basename "$deb")"
        log "package $(basename "$deb") -> /debs (Depends: $(dpkg-deb -f "$deb" Depends))"
    done
    # A virtual package (libspdlog1.10-fmt9) is the installed one that
    # Provides it; its stanza carries the Provides: line dpkg resolves.
    providers=$(dpkg-query -W -f='${Package}\t${Provides}\n' | awk -F'\t' '{
        n = split($2, v, ","); for (i = 1; i <= n; i++) { sub(/\(.*/, "", v[i]); gsub(/[[:space:]]|:any/, "", v[i]); if (v[i] != "") print v[i], $1 } }')
    for dep in $(printf '%s\n' "${deps[@]}" | sort -u); do
        pkg=$dep
        dpkg-query -s "$pkg" >/dev/null 2>&1 || pkg=$(awk -v d="$dep" '$1 == d { print $2; exit }' <<<"$providers")
        [[ -n $pkg ]] && dpkg-query -s "$pkg" >/dev/null 2>&1 ||
            die "--deb: the package depends on $dep, which no package on this host is or provides"
        { dpkg-query -s "$pkg"; echo; } >>"$stage/var/lib/dpkg/status"
        # Its file list, empty: none of its files is dpkg's to manage here.
        : >"$stage/var/lib/dpkg/info/$(dpkg-query -W -f='${binary:Package}' "$pkg").list"
    done
    log "dpkg database: $(grep -c '^Package:' "$stage/var/lib/dpkg/status") packages installed (the Depends)"
fi
for i in "${!image_names[@]}"; do
    cp "${image_paths[$i]}" "$stage/blobs/${image_names[$i]}"
    chmod 0644 "$stage/blobs/${image_names[$i]}"
    cp "${manifest_paths[$i]}" "$stage/manifests/${image_names[$i]}.manifest"
done
for i in "${!blob_names[@]}"; do
    cp "${blob_paths[$i]}" "$stage/blobs/${blob_names[$i]}"
    chmod 0644 "$stage/blobs/${blob_names[$i]}"
done
for spec in "${envs[@]}"; do
    # Single-quoted for sh: ' becomes '\''.
    value=${spec#*=}
    printf "export %s='%s'\n" "${spec%%=*}" "${value//\'/\'\\\'\'}"
done >"$stage/etc/vmtest.env"
install -m 0755 "$here/init.sh" "$stage/init"
install -m 0644 "$here/lib.sh" "$stage/lib/vmtest.sh"
install -m 0644 "$here/run.sh" "$stage/lib/vmtest-run.sh"
install -m 0755 "$scenario" "$stage/scenario.sh"

initrd=$work/initramfs.cpio
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort \
    | timeout 300 cpio -o -H newc -R 0:0 --reproducible --quiet) >"$initrd" \
    || die "packing the initramfs failed"
initrd_bytes=$(stat -c %s "$initrd")
log "initramfs $initrd: $((initrd_bytes / 1024)) KiB"

# ---- boot --------------------------------------------------------------------

inner_timeout=$((timeout_s - 20))
# No "quiet": it hides KERN_WARNING, i.e. WARN_ON splats. loglevel=5 shows
# warnings and worse; printk.time=1 timestamps kernel lines so that they can
# be told apart from scenario output. oops=panic ends the VM at the first
# Oops instead of letting the scenario hang until the timeout.
cmdline="console=ttyS0 loglevel=5 printk.time=1 panic=-1 oops=panic"
cmdline+=" brd.rd_nr=1 brd.rd_size=$((cache_mb * 1024)) vmtest.timeout=$inner_timeout"
# systemd's own status lines stay off the console (the scenario's output is
# what the verdict reads); its warnings and errors still show.
[[ $use_systemd -eq 1 ]] && cmdline+=" vmtest.systemd=1 systemd.show_status=false systemd.log_target=console systemd.log_level=warning"
# +rdrand: without an entropy source the guest's crng needs ~4 s of jitter
# entropy before getrandom() returns (mkfs.ext4 blocked on it); with RDRAND
# it is ready at boot (random.trust_cpu defaults on).
# shellcheck disable=SC2054  # the commas belong to qemu's option syntax
qemu=(qemu-system-x86_64 -accel tcg -cpu qemu64,+rdrand -nographic -no-reboot -nic none
      -m "$mem_mb" -smp 2 -kernel "$kernel" -initrd "$initrd" -append "$cmdline"
      -pidfile "$qemu_pidfile")
log "booting: ${qemu[*]}"
t_start=$EPOCHREALTIME
echo "# run-vm $(date -Is): ${qemu[*]}" >"$console_log"
# sed: drop CRs and the terminal control sequences SeaBIOS and the kernel
# emit, so that every marker starts its line. The pipeline runs in the
# background with `wait` because bash runs the INT/TERM traps (whose exit
# kills qemu) only after a foreground pipeline has finished.
{
    rc=0
    timeout -k 10 "$timeout_s" "${qemu[@]}" </dev/null || rc=$?
    echo "$rc" >"$work/qemu.rc"
} 2>&1 | sed -u 's/\r$//; s/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g' | tee -a "$console_log" >&2 &
wait $! || true
t_end=$EPOCHREALTIME
qemu_rc=$(cat "$work/qemu.rc" 2>/dev/null || true)
[[ $qemu_rc =~ ^[0-9]+$ ]] || qemu_rc=255

# ---- verdict -----------------------------------------------------------------

grep_log() { grep -E "$@" "$console_log" || true; }
pass_lines=$(grep_log '^VMTEST PASS( |$)')
fail_lines=$(grep_log '^VMTEST FAIL( |$)')
result_lines=$(grep_log '^VMTEST (PASS|FAIL|INFO)( |$)')
# Kernel lines carry a printk timestamp; the dump in vt_dump_logs keeps it.
kernel_err=$(grep_log '\[ *[0-9]+\.[0-9]{6}\].*(Kernel panic|BUG:|Oops|WARNING:|hung_task|blocked for more than|general protection fault|Unable to handle|stack-protector|detected stall)' | head -n 1)
n_pass=$(grep -c . <<<"$pass_lines" || true)
n_fail=$(grep -c . <<<"$fail_lines" || true)

reason=
if [[ $qemu_rc -eq 124 || $qemu_rc -eq 137 ]]; then
    reason="timeout: the VM did not finish within ${timeout_s}s"
elif [[ $qemu_rc -ne 0 ]]; then
    reason="qemu exited with status $qemu_rc"
elif [[ -n $kernel_err ]]; then
    reason="kernel: $kernel_err"
elif [[ $n_fail -gt 0 ]]; then
    reason="$n_fail FAIL line(s), first: $(head -n 1 <<<"$fail_lines")"
elif ! grep -q '^VMTEST-DONE' "$console_log"; then
    reason="no VMTEST-DONE: the VM stopped before the scenario finished"
elif [[ $n_pass -eq 0 ]]; then
    reason="no VMTEST PASS line: the scenario verified nothing"
fi
# A timeout or crash can have a more precise cause in the console.
if [[ -n $reason && $reason != kernel:* && -n $kernel_err ]]; then
    reason+=" (kernel: $kernel_err)"
fi

uptime_at() { sed -n "s/.*$1 uptime=\([0-9.]*\).*/\1/p" "$console_log" | head -n 1; }
t_boot=$(uptime_at VMTEST-SCENARIO-START)
t_end_guest=$(uptime_at VMTEST-SCENARIO-END)
scenario_secs=
if [[ -n $t_boot && -n $t_end_guest ]]; then
    scenario_secs=$(awk -v a="$t_boot" -v b="$t_end_guest" 'BEGIN { printf "%.2f", b - a }')
fi
wall=$(awk -v a="$t_start" -v b="$t_end" 'BEGIN { printf "%.1f", b - a }')

echo "==== run-vm summary: $scenario_name (${image_names[*]:-no images}) ===="
[[ -n $result_lines ]] && echo "${result_lines//VMTEST /  }"
echo "timing: guest boot+setup ${t_boot:-?}s, scenario ${scenario_secs:-?}s (guest clock), qemu wall ${wall}s; initramfs $((initrd_bytes / 1024)) KiB"
if [[ -z $reason ]]; then
    result_ok=1
    echo "run-vm: RESULT: PASS ($n_pass passed)" | tee -a "$console_log"
    exit 0
fi
[[ -n $log_file ]] && echo "console log: $log_file"
echo "run-vm: RESULT: FAIL: $reason" | tee -a "$console_log"
exit 1
