#!/bin/sh
# The Debian package under Debian's real systemd (run-vm.sh --systemd
# --deb PKG1 --deb PKG2; deploy/build-deb.sh built both, PKG2 with a higher
# version and binaries that report it). Checks:
#   - install: `"$DPKG" -i` of the first creates the user "ondemand"
#     (systemd-sysusers), enables and starts ondemand.service; the worker
#     runs as that user, sandboxed; a mount verifies;
#   - upgrade with reads running: an operator's edit of the conffile; then
#     `"$DPKG" -i` of the second under continuous verified reads: 0 read errors,
#     0 mismatches, longest stall reported beside a baseline of the same
#     readers with no upgrade; afterwards supervisor and worker are the
#     second build's (they report its version, and run from the files dpkg
#     put in place, not deleted ones), the conffile edit is kept;
#   - remove with a mount in place is refused, naming the mount, and the
#     service serves on (a stop would kill the mount);
#   - remove with no mount: the service stopped and disabled, the programs
#     and unit gone, the conffile kept; purge: the conffile and the cache's
#     contents gone, the user kept.
. /lib/vmtest.sh
PKG=cachefiles-ondemand
UNIT=ondemand.service
CONFIG=/etc/ondemand/ondemand.json
CTL=/usr/bin/ondemandctl
# Busybox's sh runs its own applets named dpkg and dpkg-deb before PATH:
# the real ones by path.
DPKG=/usr/bin/dpkg DPKG_DEB=/usr/bin/dpkg-deb DPKG_QUERY=/usr/bin/dpkg-query
state_dir=/run/ondemand
blob_dir=/var/lib/ondemand/blobs
VT_STATE_DIR=$state_dir

case $(readlink /proc/1/exe) in
    */systemd) ;;
    *) vt_fail deb-pid1 "PID 1 is $(readlink /proc/1/exe), not systemd"; exit 0 ;;
esac
set -- /debs/*.deb
[ $# = 2 ] || { vt_fail deb-setup "want two packages in /debs, found: $*"; exit 0; }
deb1=$1 deb2=$2
v1=$("$DPKG_DEB" -f "$deb1" Version) v2=$("$DPKG_DEB" -f "$deb2" Version)
if "$DPKG" --compare-versions "$v1" gt "$v2"; then
    deb1=$2 deb2=$1 v=$v1 v1=$v2 v2=$v
fi
"$DPKG" --compare-versions "$v2" gt "$v1" || { vt_fail deb-setup "$deb2 ($v2) does not upgrade $deb1 ($v1)"; exit 0; }
vt_info "packages: $(basename "$deb1") ($v1), then $(basename "$deb2") ($v2)"

dump() {
    echo "---- journalctl -u $UNIT ----"
    journalctl -u "$UNIT" --no-pager -o short-monotonic 2>&1 | tail -n 60 | sed 's/^/journal| /'
    echo "---- systemctl status ----"
    systemctl status "$UNIT" --no-pager 2>&1 | sed 's/^/status| /'
    for f in /tmp/dpkg*.out; do
        [ -f "$f" ] && sed "s|^|${f#/tmp/}| |" "$f"
    done
}
json_str() { printf '%s' "$1" | grep -o "\"$2\":\"[^\"]*\"" | head -n 1 | cut -d'"' -f4; }
worker_json() { printf '%s' "$1" | grep -o '"worker":{[^}]*}'; }
# The supervisor's own fields: the status without its worker objects.
top_json() { printf '%s' "$1" | sed 's/"[a-z_]*worker":{[^}]*}//g'; }
# The program a process runs; " (deleted)" if dpkg replaced the file under it.
exe_of() { readlink "/proc/$1/exe"; }

# ---- install ----
if ! vt_with_timeout 120 "$DPKG" -i "$deb1" > /tmp/dpkg1.out 2>&1; then
    vt_fail deb-install "dpkg -i $deb1: $(tail -n 15 /tmp/dpkg1.out | tr '\n' ' ' | cut -c1-600)"; dump; exit 0
fi
uid=$(id -u ondemand 2>/dev/null)
status=$("$CTL" status --json 2>&1)
worker=$(vt_worker_pid)
wuid=$(awk '/^Uid:/ { print $2 }' "/proc/$worker/status" 2>/dev/null)
detail="dpkg -i $(basename "$deb1"): user ondemand uid ${uid:-none}, unit $(systemctl is-enabled "$UNIT" 2>&1) and $(systemctl is-active "$UNIT" 2>&1), worker $worker uid ${wuid:-?} $(grep -E '^(CapEff|NoNewPrivs|Seccomp):' "/proc/$worker/status" 2>/dev/null | tr -s '\t\n' '  ')"
if [ -n "$uid" ] && [ "$wuid" = "$uid" ] && [ "$(systemctl is-enabled "$UNIT")" = enabled ] &&
   worker_json "$status" | grep -q '"serving":true' && [ "$(json_str "$(top_json "$status")" version)" = "${v1%-*}" ]; then
    vt_pass deb-install "$detail, version $(json_str "$(top_json "$status")" version)"
else
    vt_fail deb-install "$detail; status: $(printf '%s' "$status" | grep -o '"\(serving\|version\|state\)":[^,}]*' | tr '\n' ' '); dpkg: $(tail -n 5 /tmp/dpkg1.out | tr '\n' ' ')"; dump; exit 0
fi

cp /blobs/basic "$blob_dir/basic"
vt_mount_fscache basic /mnt/basic || { vt_fail deb-mount "mount failed"; dump; exit 0; }
out=$(vt_verify_tree /mnt/basic /manifests/basic.manifest) && vt_pass deb-read "$out" || vt_fail deb-read "$out"

# An operator's edit of the conffile, which the upgrade must keep (the new
# package's copy is the same as the old one's, so dpkg keeps it silently).
awk '{ print } NR == 1 && /^\{$/ { print "  \"worker_user\": \"ondemand\"," }' "$CONFIG" > /tmp/edited.json && cat /tmp/edited.json > "$CONFIG"
grep -q '"worker_user": "ondemand"' "$CONFIG" || vt_fail deb-conffile "could not edit $CONFIG"

# ---- baseline: the same readers for a while, no upgrade ----
chaos() {
    /usr/bin/ondemand-chaos --config "$CONFIG" --image "basic=/manifests/basic.manifest" --no-kill \
        --readers 2 --rounds 1 --until-file "$1" --mount-root "$2"
}
rm -f /tmp/base.done
( sleep 8; touch /tmp/base.done ) &
chaos /tmp/base.done /mnt/base > /tmp/base.out 2> /tmp/base.err
base_stall=$(vt_json_dec "$(tail -n 1 /tmp/base.out)" longest_reader_stall_ms)

# ---- upgrade under continuous verified reads ----
old_main=$(systemctl show -p MainPID --value "$UNIT")
old_worker=$(vt_worker_pid)
rm -f /tmp/upgrade.done
chaos /tmp/upgrade.done /mnt/chaos > /tmp/chaos.out 2> /tmp/chaos.err &
chaos_pid=$!
sleep 2
t0=$(vt_now)
vt_with_timeout 180 "$DPKG" -i "$deb2" > /tmp/dpkg2.out 2>&1
dpkg_rc=$?
took=$(vt_elapsed "$t0")
sleep 2
touch /tmp/upgrade.done
wait "$chaos_pid"
chaos_rc=$?
report=$(tail -n 1 /tmp/chaos.out)
errors=$(vt_json_num "$report" read_errors)
mismatches=$(vt_json_num "$report" mismatches)
stall=$(vt_json_dec "$report" longest_reader_stall_ms)
main=$(systemctl show -p MainPID --value "$UNIT")
status=$("$CTL" status --json 2>&1)
worker=$(worker_json "$status")
new_worker=$(vt_worker_pid)
sup_version=$(json_str "$(top_json "$status")" version)
worker_version=$(json_str "$worker" version)
sup_exe=$(exe_of "$main") worker_exe=$(exe_of "$new_worker")
detail="dpkg -i $(basename "$deb2") rc $dpkg_rc in ${took}s; supervisor $old_main -> $main ($sup_exe, $sup_version), worker $old_worker -> $new_worker ($worker_exe, $worker_version); readers: $(vt_json_num "$report" files_verified) files, read errors ${errors:-?}, mismatches ${mismatches:-?}, longest stall ${stall:-?} ms (${base_stall:-?} ms with no upgrade)"
if [ "$dpkg_rc" = 0 ] && [ "$chaos_rc" = 0 ] && [ "$errors" = 0 ] && [ "$mismatches" = 0 ] &&
   [ "$("$DPKG_QUERY" -W -f='${Version}' "$PKG")" = "$v2" ] &&
   [ "$main" != "$old_main" ] && [ "$new_worker" != "$old_worker" ] &&
   [ "$sup_version" = "${v2%-*}" ] && [ "$worker_version" = "${v2%-*}" ] &&
   [ "$sup_exe" = /usr/bin/ondemand-supervisor ] && [ "$worker_exe" = /usr/bin/ondemand-worker ]; then
    vt_pass deb-upgrade "$detail"
else
    vt_fail deb-upgrade "$detail; dpkg: $(tail -n 8 /tmp/dpkg2.out | tr '\n' ' ' | cut -c1-500); chaos: $(head -c 300 /tmp/chaos.err)"; dump
fi
vt_info "dpkg -i output: $(grep 'cachefiles-ondemand:' /tmp/dpkg2.out | tr '\n' ' ' | cut -c1-400)"
if grep -q '"worker_user": "ondemand"' "$CONFIG" && [ ! -e "$CONFIG.dpkg-new" ] && [ ! -e "$CONFIG.dpkg-dist" ]; then
    vt_pass deb-conffile "the operator's edit of $CONFIG survived the upgrade"
else
    vt_fail deb-conffile "$CONFIG after the upgrade: $(tr '\n' ' ' < "$CONFIG"); $(ls "$CONFIG".dpkg-* 2>/dev/null)"
fi

# ---- remove with a mount in place: refused, nothing stops ----
if "$DPKG" -r "$PKG" > /tmp/dpkg-r1.out 2>&1; then
    vt_fail deb-remove-mounted "dpkg -r succeeded with /mnt/basic mounted: $(tail -n 5 /tmp/dpkg-r1.out | tr '\n' ' ')"; dump; exit 0
fi
out=$(vt_verify_tree /mnt/basic /manifests/basic.manifest)
verified=$?
if grep -q 'refusing to remove.*/mnt/basic' /tmp/dpkg-r1.out && [ "$(systemctl is-active "$UNIT")" = active ] &&
   [ "$verified" = 0 ] && [ "$("$DPKG_QUERY" -W -f='${db:Status-Status}' "$PKG")" = installed ]; then
    # (dpkg marks it selected for removal: "deinstall ok installed".)
    vt_pass deb-remove-mounted "refused: $(grep -m 1 refusing /tmp/dpkg-r1.out | cut -c1-200); still active and installed; $out"
else
    vt_fail deb-remove-mounted "dpkg -r: $(tr '\n' ' ' < /tmp/dpkg-r1.out | cut -c1-400); unit $(systemctl is-active "$UNIT"); status $("$DPKG_QUERY" -W -f='${Status}' "$PKG"); read: $out"; dump
fi

# ---- remove, then purge ----
for m in $(awk '$3 == "erofs" { print $2 }' /proc/mounts); do umount "$m"; done
main=$(systemctl show -p MainPID --value "$UNIT")
worker=$(vt_worker_pid)
if ! vt_with_timeout 60 "$DPKG" -r "$PKG" > /tmp/dpkg-r.out 2>&1; then
    vt_fail deb-remove "dpkg -r: $(tail -n 8 /tmp/dpkg-r.out | tr '\n' ' ' | cut -c1-500)"; dump; exit 0
fi
vt_wait_gone "$worker" 15
left=$(ls /usr/bin/ondemand-supervisor /usr/bin/ondemand-worker /usr/bin/ondemandctl /usr/lib/systemd/system/$UNIT \
    /etc/systemd/system/multi-user.target.wants/$UNIT 2>/dev/null)
state=$(systemctl is-active "$UNIT" 2>&1)
if [ -z "$left" ] && [ "$state" != active ] && ! vt_proc_alive "$main" && ! vt_proc_alive "$worker" && [ -f "$CONFIG" ] &&
   [ "$("$DPKG_QUERY" -W -f='${Status}' "$PKG")" = "deinstall ok config-files" ]; then
    vt_pass deb-remove "dpkg -r: supervisor $main and worker $worker gone, unit $state, programs and unit gone, $CONFIG kept"
else
    vt_fail deb-remove "after "$DPKG" -r: left '$left', unit $state, supervisor alive $(vt_proc_alive "$main" && echo yes || echo no), worker alive $(vt_proc_alive "$worker" && echo yes || echo no), config $(ls "$CONFIG" 2>&1)"
fi
if ! vt_with_timeout 60 "$DPKG" --purge "$PKG" > /tmp/dpkg-p.out 2>&1; then
    vt_fail deb-purge "dpkg --purge: $(tail -n 8 /tmp/dpkg-p.out | tr '\n' ' ' | cut -c1-500)"; exit 0
fi
cache_left=$(find /var/cache/ondemand -mindepth 1 2>/dev/null | head -n 3 | tr '\n' ' ')
if [ ! -e "$CONFIG" ] && [ -z "$cache_left" ] && ! "$DPKG_QUERY" -W "$PKG" >/dev/null 2>&1 && id ondemand >/dev/null 2>&1; then
    vt_pass deb-purge "dpkg --purge: $CONFIG gone, the cache emptied, no trace in dpkg's database; user ondemand kept"
else
    vt_fail deb-purge "after purge: config $(ls "$CONFIG" 2>&1), cache '$cache_left', dpkg-query: $("$DPKG_QUERY" -W "$PKG" 2>&1), user $(id ondemand 2>&1)"
fi
exit 0
