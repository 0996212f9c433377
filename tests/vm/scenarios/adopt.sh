#!/bin/sh
# Supervisor restart without unmounting: under continuous, SHA-256-verified
# cache-miss reads, the supervisor is kill -9'd 10 times; each time a new
# supervisor adopts the running worker (same pid, no restart, no restore)
# through <state_dir>/worker.sock. Readers must see 0 errors. Prints the time
# from each kill to the adoption. Then: a second supervisor started while one
# runs must refuse to start rather than steal the worker.
. /lib/vmtest.sh

KILLS=${KILLS:-10}
vt_start_supervisor || exit 0
vt_wait_state running 30 || { vt_fail adopt "worker never ran"; exit 0; }
worker=$(vt_worker_pid)
restores0=$(vt_json_num "$(vt_ctl status --json)" restores)

rm -f /tmp/readers.stop
/bin/ondemand-chaos --config "$VT_CONFIG" --image "basic=$VT_MANIFEST_DIR/basic.manifest" \
    --no-kill --rounds 1 --until-file /tmp/readers.stop --readers 4 --max-seconds 600 \
    > /tmp/readers.out 2> /tmp/readers.log &
readers=$!
sleep 0.5

adopted=0
i=1
while [ "$i" -le "$KILLS" ]; do
    kill -9 "$VT_SUPERVISOR_PID"
    wait "$VT_SUPERVISOR_PID" 2>/dev/null
    t0=$(vt_now)
    VT_SUPERVISOR_PID=
    vt_start_supervisor > /dev/null || break
    # Adoption is done when the new supervisor reports the worker adopted.
    while ! vt_ctl status --json 2>/dev/null | grep -q '"adopted":true'; do
        if awk -v t="$(vt_elapsed "$t0")" 'BEGIN { exit !(t > 20) }'; then break; fi
        sleep 0.02
    done
    took=$(vt_elapsed "$t0")
    now_worker=$(vt_worker_pid)
    if [ "$now_worker" = "$worker" ] && vt_ctl status --json | grep -q '"adopted":true'; then
        adopted=$((adopted + 1))
        echo "ADOPT-TIME $i ${took}s"
    else
        vt_fail "adopt-$i" "after ${took}s: worker pid $now_worker (was $worker), status: $(vt_ctl status --json 2>&1)"
    fi
    sleep 0.3
    i=$((i + 1))
done
restores1=$(vt_json_num "$(vt_ctl status --json)" restores)
if [ "$adopted" -eq "$KILLS" ] && [ "$restores1" = "$restores0" ]; then
    vt_pass adopt "$adopted/$KILLS supervisor kill -9s, worker $worker adopted each time, restores unchanged ($restores1)"
else
    vt_fail adopt "$adopted/$KILLS adopted; restores $restores0 -> $restores1"
fi

# A second supervisor while one runs: the worker refuses, the newcomer exits.
if /bin/ondemand-supervisor --config "$VT_CONFIG" > /tmp/second.log 2>&1; then
    vt_fail adopt-second "a second supervisor started: $(tail -n 2 /tmp/second.log)"
else
    rc=$?
    if [ "$(vt_worker_pid)" = "$worker" ] && vt_wait_state running 5; then
        vt_pass adopt-second "second supervisor exited $rc: $(tail -n 1 /tmp/second.log | cut -c1-160)"
    else
        vt_fail adopt-second "worker disturbed: pid $(vt_worker_pid)"
    fi
fi

touch /tmp/readers.stop
wait "$readers"
rc=$?
report=$(tail -n 1 /tmp/readers.out)
if [ "$rc" -eq 0 ]; then vt_pass adopt-readers "$report"; else vt_fail adopt-readers "exit $rc: $report"; fi

# The adopted worker still restarts normally when it dies.
kill -9 "$worker"
if vt_wait_state running 20 && [ "$(vt_worker_pid)" != "$worker" ]; then
    vt_pass adopt-then-crash "adopted worker $worker killed; replaced by $(vt_worker_pid)"
else
    vt_fail adopt-then-crash "no replacement after killing the adopted worker"
fi
vt_check_replies
vt_stop_supervisor
exit 0
