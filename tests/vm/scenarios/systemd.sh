#!/bin/sh
# The unit under Debian's real systemd (run-vm.sh --systemd --install):
# PID 1 is systemd, the project is installed with `cmake --install` and runs
# from its own unit file and example config. Checks:
#   - `systemctl start` returns once a worker serves (Type=notify, READY=1);
#   - a mount verifies; `systemctl kill --signal=SIGKILL` of supervisor AND
#     worker keeps the cache bound through the fd store: a reader running
#     across the kill verifies every byte, 0 errors;
#   - SD_RESTARTS `systemctl restart`s under continuous verified reads
#     (ondemand-chaos --no-kill): each one hands the serving worker to the
#     next supervisor (same worker pid after it: gapless), 0 read errors,
#     longest stall reported;
#   - the journal has the supervisor's lines (journalctl -u), and after
#     SD_KILLS kill -9s of the worker exactly that many "worker died" and
#     "failover serving" entries by MESSAGE_ID (proto/log_events.h), and a
#     request's lines are found by BLOB= (with OBJECT_ID=, MSG_ID=);
#   - `systemctl stop` stops both processes and the unit is inactive.
. /lib/vmtest.sh
: "${SD_RESTARTS:=10}"
PREFIX=/usr/local
CONFIG=$PREFIX/etc/ondemand/ondemand.json
CTL=$PREFIX/bin/ondemandctl
UNIT=ondemand.service

case $(readlink /proc/1/exe) in
    */systemd) vt_pass systemd-pid1 "PID 1 is $(readlink /proc/1/exe) ($(systemctl --version | head -n 1))" ;;
    *) vt_fail systemd-pid1 "PID 1 is $(readlink /proc/1/exe), not systemd"; exit 0 ;;
esac
[ -r "$CONFIG" ] || { vt_fail systemd-install "no $CONFIG from cmake --install"; exit 0; }
systemctl cat "$UNIT" > /tmp/unit.txt 2>&1 || { vt_fail systemd-install "systemctl cat $UNIT: $(head -c 300 /tmp/unit.txt)"; exit 0; }
vt_info "unit: $(grep '^ExecStart=' /tmp/unit.txt)"

# The example config's blob_dir.
blob_dir=$(sed -n 's/.*"blob_dir": *"\([^"]*\)".*/\1/p' "$CONFIG")
state_dir=$(sed -n 's/.*"state_dir": *"\([^"]*\)".*/\1/p' "$CONFIG")
mkdir -p "$blob_dir"
cp /blobs/basic "$blob_dir/basic"

dump() {
    echo "---- journalctl -u $UNIT ----"
    journalctl -u "$UNIT" --no-pager -o short-monotonic 2>&1 | tail -n 80 | sed 's/^/journal| /'
    echo "---- systemctl status ----"
    systemctl status "$UNIT" --no-pager 2>&1 | sed 's/^/status| /'
}

t0=$(vt_now)
if ! vt_with_timeout 60 systemctl start "$UNIT"; then
    vt_fail systemd-start "systemctl start $UNIT failed"; dump; exit 0
fi
took=$(vt_elapsed "$t0")
# Type=notify: start returned only after READY=1, which the supervisor sends
# once a worker serves, so the worker is serving now (no waiting here).
if status=$("$CTL" --config "$CONFIG" status --json) && printf '%s' "$status" | grep -q '"serving":true'; then
    vt_pass systemd-start "systemctl start returned after ${took}s with a worker serving"
else
    vt_fail systemd-start "after systemctl start: $(printf '%s' "$status" | head -c 300)"; dump; exit 0
fi

VT_STATE_DIR=$state_dir
vt_mount_fscache basic /mnt/basic || { vt_fail systemd-mount "mount failed"; dump; exit 0; }
out=$(vt_verify_tree /mnt/basic /manifests/basic.manifest) && vt_pass systemd-read "$out" || vt_fail systemd-read "$out"

# ---- SIGKILL of supervisor and worker: the fd store keeps the cache ----
ln "$blob_dir/basic" "$blob_dir/basic-kill"
vt_mount_fscache basic-kill /mnt/kill || { vt_fail systemd-kill "mount failed"; dump; exit 0; }
( vt_verify_tree /mnt/kill /manifests/basic.manifest > /tmp/kill.out 2>&1; echo $? > /tmp/kill.rc ) &
reader=$!
old_main=$(systemctl show -p MainPID --value "$UNIT")
old_worker=$(tr -d ' \n' < "$state_dir/worker.pid")
systemctl kill --signal=SIGKILL "$UNIT"
vt_wait_gone "$old_worker" 10 || vt_fail systemd-kill "worker $old_worker survived SIGKILL"
t0=$(vt_now)
while :; do
    main=$(systemctl show -p MainPID --value "$UNIT")
    state=$(systemctl is-active "$UNIT")
    [ "$state" = active ] && [ -n "$main" ] && [ "$main" != 0 ] && [ "$main" != "$old_main" ] && break
    if awk -v t="$(vt_elapsed "$t0")" 'BEGIN { exit !(t > 30) }'; then
        # Nothing serves: the reader would wait forever (until vmtest.timeout).
        vt_fail systemd-kill "no new supervisor active 30 s after SIGKILL (state $state)"; dump
        kill "$reader" 2>/dev/null; exit 0
    fi
    sleep 0.1
done
wait "$reader"
# systemd chowned state_dir's files to root at this start; the supervisor
# gave the worker's back (common/sandbox.h), or no worker could serve.
vt_info "after the restart: $(journalctl -u "$UNIT" --no-pager -o cat | grep -m1 'gave .* back to the worker' | cut -c1-160)"
if [ "$(cat /tmp/kill.rc)" = 0 ] && journalctl -u "$UNIT" --no-pager | grep -q "fd store"; then
    vt_pass systemd-kill "supervisor $old_main and worker $old_worker SIGKILLed; back as $main in $(vt_elapsed "$t0")s via the fd store; reader: $(cat /tmp/kill.out)"
else
    vt_fail systemd-kill "reader rc $(cat /tmp/kill.rc): $(cat /tmp/kill.out)"; dump
fi

# ---- baseline: the same readers for a while, nothing restarted ----
rm -f /tmp/baseline.done
( sleep 8; touch /tmp/baseline.done ) &
/bin/ondemand-chaos --config "$CONFIG" --image "basic=/manifests/basic.manifest" --no-kill --readers 2 \
    --rounds 1 --until-file /tmp/baseline.done --mount-root /mnt/base > /tmp/base.out 2> /tmp/base.err
base_stall=$(vt_json_dec "$(tail -n 1 /tmp/base.out)" longest_reader_stall_ms)
vt_info "baseline (no restarts, same readers): longest reader stall ${base_stall:-?} ms"

# ---- systemctl restart under continuous verified reads ----
rm -f /tmp/restarts.done
/bin/ondemand-chaos --config "$CONFIG" --image "basic=/manifests/basic.manifest" --no-kill --readers 2 \
    --rounds 1 --until-file /tmp/restarts.done --mount-root /mnt/chaos > /tmp/chaos.out 2> /tmp/chaos.err &
chaos=$!
sleep 1
i=0
longest_restart=0
kept=0
while [ "$i" -lt "$SD_RESTARTS" ]; do
    i=$((i + 1))
    before=$(tr -d ' \n' < "$state_dir/worker.pid")
    t0=$(vt_now)
    if ! vt_with_timeout 60 systemctl restart "$UNIT"; then
        vt_fail systemd-restart "restart $i failed"; dump; break
    fi
    d=$(vt_elapsed "$t0")
    longest_restart=$(awk -v a="$longest_restart" -v b="$d" 'BEGIN { print (b > a) ? b : a }')
    # Gapless: the new supervisor adopted the same worker (start returns
    # once it serves, Type=notify).
    after=$(tr -d ' \n' < "$state_dir/worker.pid")
    [ "$after" = "$before" ] && kill -0 "$before" 2>/dev/null && kept=$((kept + 1))
    sleep 0.5
done
touch /tmp/restarts.done
wait "$chaos"
chaos_rc=$?
report=$(tail -n 1 /tmp/chaos.out)
errors=$(vt_json_num "$report" read_errors)
mismatches=$(vt_json_num "$report" mismatches)
stall=$(vt_json_dec "$report" longest_reader_stall_ms)
detail="$i restarts (longest systemctl restart ${longest_restart}s), the serving worker kept (adopted) in $kept, read errors ${errors:-?}, mismatches ${mismatches:-?}, longest reader stall ${stall:-?} ms (${base_stall:-?} ms with no restart), files $(vt_json_num "$report" files_verified)"
if [ "$chaos_rc" = 0 ] && [ "$errors" = 0 ] && [ "$mismatches" = 0 ] && [ "$kept" = "$i" ]; then
    vt_pass systemd-restart "$detail"
else
    vt_fail systemd-restart "$detail; chaos rc $chaos_rc: $(head -c 300 /tmp/chaos.err)"; dump
fi

# ---- the journal: every failover findable by MESSAGE_ID ----
n=$(journalctl -u "$UNIT" --no-pager | grep -c 'serving')
if [ "$n" -ge 1 ]; then
    vt_pass systemd-journal "journalctl -u $UNIT: $n 'serving' lines"
else
    vt_fail systemd-journal "no supervisor lines in the journal"; dump
fi
# proto/log_events.h
DIED=22f72b8707814e68bf823557e21875a8
SERVING=cb3a9d6495e94c88a76d3aed761ee803
died0=$(journalctl -u "$UNIT" --no-pager -o cat MESSAGE_ID=$DIED | wc -l)
serving0=$(journalctl -u "$UNIT" --no-pager -o cat MESSAGE_ID=$SERVING | wc -l)
: "${SD_KILLS:=3}"
i=0
while [ "$i" -lt "$SD_KILLS" ]; do
    i=$((i + 1))
    victim=$(tr -d ' \n' < "$state_dir/worker.pid")
    kill -KILL "$victim"
    vt_wait_gone "$victim" 10
    t0=$(vt_now)
    until [ "$(tr -d ' \n' < "$state_dir/worker.pid")" != "$victim" ] && \
          "$CTL" --config "$CONFIG" status --json 2>/dev/null | grep -q '"serving":true'; do
        if awk -v t="$(vt_elapsed "$t0")" 'BEGIN { exit !(t > 20) }'; then
            vt_fail systemd-failover "kill $i: no serving worker 20 s after killing $victim"; break 2
        fi
        sleep 0.1
    done
done
sleep 0.5  # the journal receives asynchronously
died=$(( $(journalctl -u "$UNIT" --no-pager -o cat MESSAGE_ID=$DIED | wc -l) - died0 ))
serving=$(( $(journalctl -u "$UNIT" --no-pager -o cat MESSAGE_ID=$SERVING | wc -l) - serving0 ))
fields=$(journalctl -u "$UNIT" --no-pager -o verbose MESSAGE_ID=$SERVING -n 1 | grep -E '^ *(RECOVERY_MS|WORKER_PID|ONDEMAND_ROLE)=' | tr -s ' \n' ' ')
if [ "$died" = "$SD_KILLS" ] && [ "$serving" = "$SD_KILLS" ] && printf '%s' "$fields" | grep -q RECOVERY_MS=; then
    vt_pass systemd-journal-ids "$SD_KILLS kill -9s: journalctl MESSAGE_ID=<worker died> +$died, MESSAGE_ID=<failover serving> +$serving; last:$fields"
else
    vt_fail systemd-journal-ids "$SD_KILLS kills: died +$died, serving +$serving, fields '$fields'"; dump
fi

# ---- the journal: a request's lines carry BLOB= and OBJECT_ID= ----
# A mount of a blob that does not exist: the worker's "OPEN ... refused"
# line is found by its blob alone, with the kernel's object id beside it.
vt_mount_fscache sd-no-such-blob /mnt/nosuch 2>/dev/null && { vt_fail systemd-journal-blob "the mount of a missing blob succeeded"; umount /mnt/nosuch; }
sleep 0.5  # the journal receives asynchronously
blob_fields=$(journalctl -u "$UNIT" --no-pager -o verbose BLOB=sd-no-such-blob | grep -E '^ *(BLOB|OBJECT_ID|MSG_ID|MESSAGE)=' | tr -s ' \n' ' ')
if printf '%s' "$blob_fields" | grep -q 'OBJECT_ID=' && printf '%s' "$blob_fields" | grep -q 'refused'; then
    vt_pass systemd-journal-blob "journalctl BLOB=sd-no-such-blob:$(printf '%s' "$blob_fields" | cut -c1-300)"
else
    vt_fail systemd-journal-blob "journalctl BLOB=sd-no-such-blob found '$blob_fields'"; dump
fi

# ---- systemctl stop: both processes end, the unit is inactive ----
umount /mnt/basic /mnt/kill 2>/dev/null
main=$(systemctl show -p MainPID --value "$UNIT")
worker=$(tr -d ' \n' < "$state_dir/worker.pid")
vt_with_timeout 60 systemctl stop "$UNIT"
vt_wait_gone "$worker" 15
state=$(systemctl is-active "$UNIT")
if [ "$state" = inactive ] && ! vt_proc_alive "$main" && ! vt_proc_alive "$worker"; then
    vt_pass systemd-stop "systemctl stop: supervisor $main and worker $worker gone, unit $state"
else
    vt_fail systemd-stop "after stop: unit $state, supervisor alive: $(vt_proc_alive "$main" && echo yes || echo no), worker alive: $(vt_proc_alive "$worker" && echo yes || echo no)"; dump
fi
exit 0
