#!/bin/sh
# Rolling upgrades under continuous, SHA-256-verified cache-miss reads:
# 20 upgrades alternating worker builds A and B (B reports another version
# and a higher handoff protocol maximum), each checked in `status`; then an
# upgrade to a binary that fails at start, which must be reported as failed
# while the old worker keeps serving. Readers must see 0 errors throughout.
# Prints each upgrade's longest reader stall against the normal read gap.
. /lib/vmtest.sh

UPGRADES=${UPGRADES:-20}
vt_start_supervisor || exit 0
vt_check_sandboxed
vt_wait_state running 30 || { vt_fail upgrade "worker never ran"; exit 0; }
version_of() { vt_ctl status --json | grep -o '"worker":{[^}]*}' | grep -o '"version":"[^"]*"' | cut -d'"' -f4; }
pid_of() { vt_json_num "$(vt_ctl status --json | grep -o '"worker":{[^}]*}')" pid; }
version_a=$(version_of)

rm -f /tmp/readers.stop
/bin/ondemand-chaos --config "$VT_CONFIG" --image "basic=$VT_MANIFEST_DIR/basic.manifest" \
    --no-kill --rounds 1 --until-file /tmp/readers.stop --readers 4 --max-seconds 1200 \
    --stall-log /tmp/stalls.log --stall-log-ms 5 > /tmp/readers.out 2> /tmp/readers.log &
readers=$!
sleep 1

ok=0
: > /tmp/windows
i=1
while [ "$i" -le "$UPGRADES" ]; do
    if [ $((i % 2)) -eq 1 ]; then bin=/bin/ondemand-worker-b; else bin=/bin/ondemand-worker; fi
    before=$(pid_of)
    t0=$(vt_now)
    if out=$(vt_ctl upgrade --binary "$bin" 2>&1); then
        t1=$(vt_now)
        echo "$i $t0 $t1" >> /tmp/windows
        v=$(version_of)
        want=$version_a
        [ "$bin" = /bin/ondemand-worker-b ] && want="${version_a}-B"
        if [ "$v" = "$want" ] && [ "$(pid_of)" != "$before" ]; then
            ok=$((ok + 1))
        else
            vt_fail "upgrade-$i" "status shows version $v pid $(pid_of), wanted $want and a pid other than $before"
        fi
    else
        vt_fail "upgrade-$i" "ondemandctl upgrade --binary $bin: $out"
    fi
    i=$((i + 1))
done
[ "$ok" -eq "$UPGRADES" ] && vt_pass upgrades "$ok/$UPGRADES upgrades A<->B, status showed the new version after each"

# An upgrade to a binary that fails at start: reported, old worker unharmed.
printf '#!/bin/sh\nexit 70\n' > /tmp/bad-worker
chmod +x /tmp/bad-worker
before=$(pid_of)
if out=$(vt_ctl upgrade --binary /tmp/bad-worker 2>&1); then
    vt_fail upgrade-bad-binary "upgrade to a failing binary reported success: $out"
else
    rc=$?
    if [ "$(pid_of)" = "$before" ] && vt_wait_state running 5; then
        vt_pass upgrade-bad-binary "exit $rc: $out; worker $before still serves"
    else
        vt_fail upgrade-bad-binary "exit $rc: $out; worker now $(pid_of), was $before"
    fi
fi
sleep 1

touch /tmp/readers.stop
wait "$readers"
rc=$?
report=$(tail -n 1 /tmp/readers.out)
if [ "$rc" -eq 0 ]; then
    vt_pass upgrade-readers "$report"
else
    vt_fail upgrade-readers "exit $rc: $report"
    tail -n 5 /tmp/readers.log
fi

# Per-upgrade longest stall: gaps that ended during the upgrade or within
# 0.5 s after ondemandctl returned.
normal=$(echo "$report" | grep -o '"read_gap_ms":{[^}]*}')
awk -v normal="$normal" 'NR == FNR { t0[$1] = $2; t1[$1] = $3; n = $1; next }
    { for (i = 1; i <= n; i++) if ($1 >= t0[i] && $1 <= t1[i] + 0.5 && $2 > worst[i]) worst[i] = $2 }
    END { for (i = 1; i <= n; i++) { printf "UPGRADE-STALL %d took %.2f s, longest reader stall %.1f ms\n", i, t1[i] - t0[i], worst[i] + 0 }
          print "UPGRADE-NORMAL " normal }' /tmp/windows /tmp/stalls.log
grep -E "upgrade done|handed over|received .* objects" "$VT_SUPERVISOR_LOG" | head -n 4 | sed 's/^/log| /'
vt_check_replies
vt_stop_supervisor
exit 0
