#!/bin/sh
# Lazy pull from a real OCI registry (issue 10), on the real kernel. Debian's
# docker-registry runs in the VM on loopback (nothing leaves the VM); the
# test pushes each image's blob to it with curl through the distribution API
# and deletes the local copy, so every byte a reader gets came over HTTP
# through a blob binding made with `ondemandctl bind`.
#   - plain, multi-device and shared-domain images from registries with
#     basic auth and with token auth, and a plain one anonymous: every
#     file's SHA-256 verifies; reading one file fetches a small part of the
#     blob, not the blob;
#   - ondemand-chaos against registry-bound ids: worker kill -9s during the
#     transfers, 0 read errors (CHAOS_MIN_KILLS, default 300, anonymous;
#     AUTH_MIN_KILLS, default 20, basic auth);
#   - the registry SIGKILLed and restarted REG_RESTARTS times (default 10)
#     under continuous verified reads: 0 read errors; prints the longest
#     reader stall;
#   - bindings survive a supervisor kill -9 (adoption), a rolling upgrade and
#     a full stop and start: `ondemandctl bindings` and a verified read of an
#     id bound before, first mounted after;
#   - token auth (docker-registry's own, JWTs from vt-token-issuer): 10
#     forced token expiries under continuous verified reads, 0 read errors;
#   - a wrong digest, a missing repository, bad credentials, an unreachable
#     registry and malformed bind requests: one clear error naming the
#     binding, bounded, and the other mounts and the worker undisturbed;
#   - the registry password appears nowhere: logs, status, bindings, argv
#     and environment of supervisor and worker;
#   - with the worker's sandbox on (Landlock, seccomp), the anonymous
#     registry is named by host name (registry.vmtest, from /etc/hosts,
#     which the worker may read because registries are configured), and
#     the worker's TCP rule allows exactly the registries' ports, the token
#     realm's (registry_connect_ports) and 53.
# Needs (run-vm.sh --add): docker-registry, curl, htpasswd, openssl,
# ondemand-chaos, vt-counters, vt-token-issuer.
. /lib/vmtest.sh

PW=Vm-registry-s3cret-7f2c91
ANON_ADDR=127.0.0.1:5000
ANON=registry.vmtest:5000 # anonymous pulls, by host name (/etc/hosts below)
AUTH=127.0.0.1:5001    # htpasswd basic auth, the right credentials
BADCRED=127.0.0.1:5002 # htpasswd basic auth, the daemon has a wrong password
TOK=127.0.0.1:5003     # token auth (bearer JWTs from vt-token-issuer)
DEAD=127.0.0.1:5009    # nothing listens
CRED_DIR=/etc/ondemand/credentials

ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
# glibc (in the worker, in curl) resolves registry.vmtest from /etc/hosts:
# files first, as Debian's default nsswitch.conf says.
printf '127.0.0.1 localhost registry.vmtest\n' > /etc/hosts
printf 'hosts: files dns\n' > /etc/nsswitch.conf
for b in docker-registry curl htpasswd openssl ondemand-chaos vt-counters vt-token-issuer; do
    command -v "$b" > /dev/null || { vt_fail registry-setup "$b is not in the VM (run-vm.sh --add)"; exit 0; }
done

# bounded SECONDS OUT ERR CMD...: CMD with stdout in OUT and stderr in ERR;
# if it still runs after SECONDS, the logs and processes are printed, it is
# killed and the status is 124.
bounded() {
    _lim=$1 _out=$2 _err=$3
    shift 3
    "$@" > "$_out" 2> "$_err" &
    _bpid=$!
    _bt0=$(vt_now)
    while vt_proc_alive "$_bpid"; do
        if awk -v t="$(vt_elapsed "$_bt0")" -v l="$_lim" 'BEGIN { exit !(t > l) }'; then
            echo "---- $1 still running after ${_lim}s ----"
            tail -n 60 "$VT_SUPERVISOR_LOG" | sed 's/^/log| /'
            tail -n 20 "$_err" | sed 's/^/err| /'
            ps -o pid,ppid,stat,args | sed 's/^/ps| /'
            kill -KILL "$_bpid"
            wait "$_bpid"
            return 124
        fi
        sleep 1
    done
    wait "$_bpid"
}

htpasswd -B -C 4 -bn alice "$PW" > /etc/registry.htpasswd 2>/dev/null || { vt_fail registry-setup "htpasswd failed"; exit 0; }
printf 'auth:\n  htpasswd:\n    realm: vmtest\n    path: /etc/registry.htpasswd\n' > /etc/registry-htpasswd.yml
# Token auth: the registry trusts tokens signed by vt-token-issuer, which
# hands them out to alice (basic credentials) with a 3 s lifetime.
mkdir -p /var/lib/issuer
vt-token-issuer /var/lib/issuer vmtest-registry vmtest-issuer "alice:$PW" 3 > /var/lib/issuer/log 2>&1 &
issuer=$!
i=0
while [ ! -s /var/lib/issuer/issuer.env ] && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
REALM=$(sed -n 's/^REALM=//p' /var/lib/issuer/issuer.env)
[ -n "$REALM" ] || { vt_fail registry-setup "vt-token-issuer did not start: $(cat /var/lib/issuer/log)"; exit 0; }
# The realm listens on a port of its own, which the worker's Landlock TCP
# rule refuses unless registry_connect_ports names it.
REALM_PORT=$(echo "$REALM" | sed -n 's|^[a-z]*://[^/]*:\([0-9]*\)/.*|\1|p')
[ -n "$REALM_PORT" ] || { vt_fail registry-setup "no port in the token realm $REALM"; exit 0; }
printf 'auth:\n  token:\n    realm: %s\n    service: vmtest-registry\n    issuer: vmtest-issuer\n    rootcertbundle: /var/lib/issuer/issuer.crt\n' \
    "$REALM" > /etc/registry-token.yml
for r in "anon $ANON_ADDR" "auth $AUTH /etc/registry-htpasswd.yml" "badcred $BADCRED /etc/registry-htpasswd.yml" \
         "tok $TOK /etc/registry-token.yml"; do
    # shellcheck disable=SC2086  # NAME HOST [AUTH_YAML]
    if ! err=$(vt_registry_start $r); then vt_fail registry-setup "$err"; exit 0; fi
done

# Blobs: basic (55 MB) anonymous; second, the multi-device pair and the
# shared-domain blob behind basic auth. Then the local copies go.
push() { # VAR HOST REPO BLOB [CURL ARGS...]
    _var=$1 _h=$2 _r=$3 _b=$4
    shift 4
    if ! _dg=$(vt_registry_push "$_h" "$_r" "$VT_BLOB_DIR/$_b" "$@"); then
        vt_fail registry-push "$_b: $_dg"
        exit 0
    fi
    eval "$_var=\$_dg"
}
t0=$(vt_now)
push D_BASIC "$ANON" vm/basic basic
push D_SECOND_ANON "$ANON" vm/second second
push D_SECOND "$AUTH" vm/second second -u "alice:$PW"
push D_MD "$AUTH" vm/md md -u "alice:$PW"
push D_MDDATA "$AUTH" vm/md md-data -u "alice:$PW"
push D_METAA "$AUTH" vm/shared metaA -u "alice:$PW"
push D_METAB "$AUTH" vm/shared metaB -u "alice:$PW"
push D_SHARED "$AUTH" vm/shared shared -u "alice:$PW"
token=$(curl -sS -u "alice:$PW" "$REALM?service=vmtest-registry&scope=repository:vm/tok:push,pull" |
    sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
push D_TOK "$TOK" vm/tok second -H "Authorization: Bearer $token"
for b in md md-data metaA metaB shared; do
    repo=vm/tok-$b
    case $b in md-data) repo=vm/tok-md ;; metaA|metaB|shared) repo=vm/tok-shared ;; esac
    token=$(curl -sS -u "alice:$PW" "$REALM?service=vmtest-registry&scope=repository:$repo:push,pull" |
        sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
    push dg "$TOK" "$repo" "$b" -H "Authorization: Bearer $token"
done
size_basic=$(stat -c %s "$VT_BLOB_DIR/basic")
vt_info "pushed 14 blobs in $(vt_elapsed "$t0")s; basic $D_BASIC ($size_basic bytes)"
rm -f "$VT_BLOB_DIR"/*
if ls "$VT_BLOB_DIR" | grep -q .; then vt_fail registry-setup "blob_dir not empty"; fi

mkdir -p "$CRED_DIR"
(umask 077 && printf '{"username": "alice", "password": "%s"}\n' "$PW" > "$CRED_DIR/auth" &&
    printf '{"username": "alice", "password": "wrong-password"}\n' > "$CRED_DIR/badcred")
VT_CONFIG_EXTRA=$(printf '"data_dir": "/var/lib/ondemand", "registry_request_timeout_ms": 10000, "registry_connect_ports": [%s], "registries": {"%s": {"insecure_http": true}, "%s": {"insecure_http": true, "credentials_file": "%s/auth"}, "%s": {"insecure_http": true, "credentials_file": "%s/badcred"}, "%s": {"insecure_http": true}, "%s": {"insecure_http": true, "credentials_file": "%s/auth"}}' \
    "$REALM_PORT" "$ANON" "$AUTH" "$CRED_DIR" "$BADCRED" "$CRED_DIR" "$DEAD" "$TOK" "$CRED_DIR")
vt_start_supervisor || { vt_dump_logs; exit 0; }
vt_check_sandboxed
# The worker's TCP rule (worker/sandbox.h allowed_tcp_ports): the kernel
# here has Landlock ABI 6, so TCP is restricted.
vt_wait_state running 30
tcp_rule=$(grep "sandbox: Landlock TCP" "$VT_SUPERVISOR_LOG" | tail -n 1 | sed 's/.*sandbox: //')
case $tcp_rule in
    *"connect only to ports 53, 5000, 5001, 5002, 5003, 5009, $REALM_PORT on any address"*)
        vt_pass registry-sandbox-tcp "$tcp_rule" ;;
    *) vt_fail registry-sandbox-tcp "${tcp_rule:-no sandbox: Landlock TCP line in the log}" ;;
esac
vt_wait_state running 30 || vt_fail registry "worker not running"

bind() { # ID HOST REPO DIGEST
    if ! out=$(vt_ctl bind "$1" --registry "$2" --repository "$3" --digest "$4" 2>&1); then
        vt_fail "bind-$1" "$out"
        return 1
    fi
}
bind basic "$ANON" vm/basic "$D_BASIC"
bind second "$AUTH" vm/second "$D_SECOND"
bind md "$AUTH" vm/md "$D_MD"
bind md-data "$AUTH" vm/md "$D_MDDATA"
bind metaA "$AUTH" vm/shared "$D_METAA"
bind metaB "$AUTH" vm/shared "$D_METAB"
bind shared "$AUTH" vm/shared "$D_SHARED"
bind tok "$TOK" vm/tok "$D_TOK"
# The same layouts through token auth, under other ids (the device tag and
# the domain's blob name come from the mount options).
bind tok-md "$TOK" vm/tok-md "$D_MD"
bind tok-md-data "$TOK" vm/tok-md "$D_MDDATA"
bind tok-metaA "$TOK" vm/tok-shared "$D_METAA"
bind tok-metaB "$TOK" vm/tok-shared "$D_METAB"
bind tok-shared "$TOK" vm/tok-shared "$D_SHARED"
# Bound now, first mounted after an adoption, an upgrade and a restart.
for k in keep-adopt keep-upgrade keep-restart; do bind "$k" "$AUTH" vm/second "$D_SECOND"; done
n=$(vt_ctl bindings | grep -c "sha256:")
[ "$n" -eq 16 ] && vt_pass bindings-listed "16 bindings" || vt_fail bindings-listed "$n bindings: $(vt_ctl bindings 2>&1 | tr '\n' ' ')"

# Lazy: one small file of basic fetches a small part of the 55 MB blob.
w0=$(vt_counter bytes_written)
if err=$(vt_mount_fscache basic /mnt/basic 2>&1); then
    # The first regular file of the manifest ("<sha256>  <path>"): only its
    # directories and its data are looked up.
    one=$(awk 'length($1) == 64 && NF == 2 { print $2; exit }' "$VT_MANIFEST_DIR/basic.manifest")
    cat "/mnt/basic/$one" > /dev/null
    w1=$(vt_counter bytes_written)
    fetched=$((w1 - w0))
    if [ "$fetched" -gt 0 ] && [ "$fetched" -lt $((size_basic / 4)) ]; then
        vt_pass registry-lazy "mount + reading $one fetched $fetched of $size_basic bytes"
    else
        vt_fail registry-lazy "mount + reading $one fetched $fetched of $size_basic bytes"
    fi
    t0=$(vt_now)
    if out=$(vt_verify_tree /mnt/basic "$VT_MANIFEST_DIR/basic.manifest"); then
        vt_pass registry-anonymous "$out through $ANON in $(vt_elapsed "$t0")s"
    else
        vt_fail registry-anonymous "$out"
    fi
else
    vt_fail registry-anonymous "mount -o fsid=basic: $err"
fi

mount_verify() { # NAME FSID OPTS MANIFEST
    if ! err=$(vt_mount_fscache "$2" "/mnt/$2" "$3" 2>&1); then
        vt_fail "$1" "mount -o fsid=$2${3:+,$3}: $err"
        return 1
    fi
    if out=$(vt_verify_tree "/mnt/$2" "$4"); then vt_pass "$1" "$out"; else vt_fail "$1" "$out"; fi
}
mount_verify registry-basic-auth second "" "$VT_MANIFEST_DIR/second.manifest"
mount_verify registry-token-auth tok "" "$VT_MANIFEST_DIR/second.manifest"
umount /mnt/tok
mount_verify registry-multidev md "device=md-data" "$VT_MANIFEST_DIR/md.manifest"
mount_verify registry-shared-domain-a metaA "domain_id=d1,device=shared" "$VT_MANIFEST_DIR/metaA.manifest"
mount_verify registry-shared-domain-b metaB "domain_id=d1,device=shared" "$VT_MANIFEST_DIR/metaB.manifest"
mount_verify registry-token-multidev tok-md "device=tok-md-data" "$VT_MANIFEST_DIR/md.manifest"
mount_verify registry-token-shared-domain-a tok-metaA "domain_id=d2,device=tok-shared" "$VT_MANIFEST_DIR/metaA.manifest"
mount_verify registry-token-shared-domain-b tok-metaB "domain_id=d2,device=tok-shared" "$VT_MANIFEST_DIR/metaB.manifest"
umount /mnt/md /mnt/metaA /mnt/metaB /mnt/tok-md /mnt/tok-metaA /mnt/tok-metaB 2>/dev/null

# Worker kill -9s while bytes are on the wire: 4 readers verify basic and
# second from the anonymous registry round after round, the worker killed
# 300-1500 ms after each time it serves. Not vm_chaos's 5-200 ms: under TCG
# a new worker's first registry fill (connect, HEAD, a ranged GET of up to 4
# MiB) completes about 0.5 s after it serves, so kills that come sooner
# would leave every fill unfinished and the readers without progress until
# the kills stop (measured: 290 kills, no round finished).
t0=$(vt_now)
bounded "${CHAOS_BOUND:-900}" /tmp/chaos.out /tmp/chaos.log /bin/ondemand-chaos --config "$VT_CONFIG" \
    --registry-image "basic=$VT_MANIFEST_DIR/basic.manifest,$ANON,vm/basic,$D_BASIC" \
    --registry-image "second=$VT_MANIFEST_DIR/second.manifest,$ANON,vm/second,$D_SECOND_ANON" \
    --rounds "${CHAOS_ROUNDS:-20}" --min-kills "${CHAOS_MIN_KILLS:-300}" \
    --readers 4 --kill-interval-ms 300-1500 --max-seconds 800
rc=$?
report=$(tail -n 1 /tmp/chaos.out)
echo "REGISTRY-CHAOS $report"
if [ "$rc" -eq 0 ]; then
    vt_pass registry-chaos "$report in $(vt_elapsed "$t0")s"
else
    vt_fail registry-chaos "exit $rc: $report"
    tail -n 5 /tmp/chaos.log | sed 's/^/chaos| /'
fi
vt_wait_state running 30 || vt_fail registry "worker not running after the kills"

# The same through basic auth, with kills spaced so that a worker lives
# long enough to finish a request: every request there is checked against
# a bcrypt hash, which under TCG takes longer than 200 ms, so 5-200 ms
# kills would never let one through.
t0=$(vt_now)
bounded 300 /tmp/chaos-auth.out /tmp/chaos-auth.log /bin/ondemand-chaos --config "$VT_CONFIG" \
    --registry-image "second=$VT_MANIFEST_DIR/second.manifest,$AUTH,vm/second,$D_SECOND" \
    --rounds 5 --min-kills "${AUTH_MIN_KILLS:-20}" --readers 4 --kill-interval-ms 300-1500 --max-seconds 240
rc=$?
report=$(tail -n 1 /tmp/chaos-auth.out)
if [ "$rc" -eq 0 ]; then
    vt_pass registry-chaos-basic-auth "$report in $(vt_elapsed "$t0")s"
else
    vt_fail registry-chaos-basic-auth "exit $rc: $report"
    tail -n 5 /tmp/chaos-auth.log | sed 's/^/chaos| /'
fi
vt_wait_state running 30 || vt_fail registry "worker not running after the kills"

# The registry SIGKILLed and restarted under continuous verified reads of
# basic (a round takes long enough that every restart lands in reads).
rm -f /tmp/readers.stop
/bin/ondemand-chaos --config "$VT_CONFIG" --no-kill --rounds 1 --until-file /tmp/readers.stop \
    --registry-image "basic=$VT_MANIFEST_DIR/basic.manifest,$ANON,vm/basic,$D_BASIC" \
    --readers 4 --max-seconds 900 > /tmp/readers.out 2> /tmp/readers.log &
readers=$!
sleep 2
restarts=0
down_max=0
i=1
while [ "$i" -le "${REG_RESTARTS:-10}" ]; do
    kill -KILL "$(vt_registry_pid anon)"
    t0=$(vt_now)
    sleep 0.5
    if err=$(vt_registry_start anon "$ANON_ADDR"); then
        restarts=$((restarts + 1))
        down=$(vt_elapsed "$t0")
        down_max=$(awk -v a="$down" -v b="$down_max" 'BEGIN { print (a > b) ? a : b }')
    else
        vt_fail "registry-restart-$i" "$err"
    fi
    sleep 1.5
    i=$((i + 1))
done
touch /tmp/readers.stop
wait "$readers"
rc=$?
report=$(tail -n 1 /tmp/readers.out)
stall=$(vt_json_dec "$report" longest_reader_stall_ms)
echo "REGISTRY-RESTART-STALL longest reader stall ${stall} ms; registry down up to ${down_max}s"
if [ "$rc" -eq 0 ] && [ "$restarts" -eq "${REG_RESTARTS:-10}" ]; then
    vt_pass registry-restarts "$restarts registry SIGKILLs+restarts (down up to ${down_max}s), longest reader stall ${stall} ms: $report"
else
    vt_fail registry-restarts "$restarts restarts; readers exit $rc: $report"
    tail -n 5 /tmp/readers.log | sed 's/^/readers| /'
fi

# Forced token expiries under continuous verified reads: each SIGUSR1 makes
# the issuer hand out one token the registry refuses (401), as it would an
# expired one; tokens also run out every 3 s by themselves.
read -r treq0 _ < /var/lib/issuer/requests
rm -f /tmp/readers.stop
/bin/ondemand-chaos --config "$VT_CONFIG" --no-kill --rounds 1 --until-file /tmp/readers.stop \
    --registry-image "tok=$VT_MANIFEST_DIR/second.manifest,$TOK,vm/tok,$D_TOK" \
    --readers 4 --max-seconds 600 > /tmp/readers-tok.out 2> /tmp/readers-tok.log &
readers=$!
# One at a time: each bad token is served and followed by a good one before
# the next is armed. Two refused tokens in a row are the credentials' fault
# for the client (it fails that read with EACCES), not an expiry.
i=1
while [ "$i" -le "${TOKEN_EXPIRIES:-10}" ]; do
    read -r armed _ < /var/lib/issuer/requests
    kill -USR1 "$issuer"
    sleep 0.3
    # Served, and a good token after it (the replacement the 401 asked for,
    # or the next refresh).
    j=0
    while read -r treq pending < /var/lib/issuer/requests &&
          { [ "$pending" -gt 0 ] || [ "$treq" -lt $((armed + 2)) ]; } && [ "$j" -lt 150 ]; do
        sleep 0.1
        j=$((j + 1))
    done
    i=$((i + 1))
done
touch /tmp/readers.stop
wait "$readers"
rc=$?
report=$(tail -n 1 /tmp/readers-tok.out)
read -r treq pending < /var/lib/issuer/requests
if [ "$rc" -eq 0 ] && [ "$pending" -eq 0 ]; then
    vt_pass registry-token-expiries "${TOKEN_EXPIRIES:-10} refused tokens served, $((treq - treq0)) token requests during the reads: $report"
else
    vt_fail registry-token-expiries "readers exit $rc, $pending bad tokens never asked for, $((treq - treq0)) token requests: $report"
    tail -n 5 /tmp/readers-tok.log | sed 's/^/readers| /'
fi

# Bindings survive: adoption after a supervisor kill -9, an upgrade, a
# full stop and start. Each time: the list, and a verified first read of an
# id bound at the start.
survives() { # WHAT ID
    n=$(vt_ctl bindings 2>/dev/null | grep -c "sha256:")
    if [ "$n" -lt 16 ]; then
        vt_fail "bindings-survive-$1" "$n bindings after $1: $(vt_ctl bindings 2>&1 | tr '\n' ' ')"
        return
    fi
    if ! err=$(vt_mount_fscache "$2" "/mnt/$2" 2>&1); then
        vt_fail "bindings-survive-$1" "mount -o fsid=$2: $err"
        return
    fi
    if out=$(vt_verify_tree "/mnt/$2" "$VT_MANIFEST_DIR/second.manifest"); then
        vt_pass "bindings-survive-$1" "$n bindings; $2: $out"
    else
        vt_fail "bindings-survive-$1" "$out"
    fi
    umount "/mnt/$2"
}
worker=$(vt_worker_pid)
kill -KILL "$VT_SUPERVISOR_PID"
wait "$VT_SUPERVISOR_PID" 2>/dev/null
VT_SUPERVISOR_PID=
vt_start_supervisor > /dev/null
t0=$(vt_now)
while ! vt_ctl status --json 2>/dev/null | grep -q '"adopted":true'; do
    awk -v t="$(vt_elapsed "$t0")" 'BEGIN { exit !(t > 20) }' || break
    sleep 0.05
done
[ "$(vt_worker_pid)" = "$worker" ] || vt_fail bindings-survive-adopt "worker $worker not adopted: $(vt_worker_pid)"
survives adopt keep-adopt
if out=$(vt_ctl upgrade 2>&1); then survives upgrade keep-upgrade; else vt_fail bindings-survive-upgrade "$out"; fi
umount /mnt/basic /mnt/second 2>/dev/null
vt_stop_supervisor
vt_start_supervisor > /dev/null && vt_wait_state running 30
survives restart keep-restart

# Bad bindings: one clear error each, bounded, nothing else disturbed.
worker=$(vt_worker_pid)
mount_verify registry-before-errors second "" "$VT_MANIFEST_DIR/second.manifest"
zeros=sha256:0000000000000000000000000000000000000000000000000000000000000000
bind bad-digest "$ANON" vm/basic "$zeros"
bind bad-repo "$ANON" vm/nope "$D_BASIC"
bind bad-cred "$BADCRED" vm/second "$D_SECOND"
bind bad-dead "$DEAD" vm/second "$D_SECOND"
for id in bad-digest bad-repo bad-cred bad-dead; do
    t0=$(vt_now)
    if VT_MOUNT_TIMEOUT=40 vt_mount_fscache "$id" "/mnt/$id" > /tmp/mount.err 2>&1; then
        vt_fail "registry-error-$id" "mount succeeded"
        umount "/mnt/$id"
        continue
    fi
    took=$(vt_elapsed "$t0")
    line=$(grep "binding \"$id\"" "$VT_SUPERVISOR_LOG" | tail -n 1 | cut -c1-300)
    if [ -n "$line" ] && awk -v t="$took" 'BEGIN { exit !(t < 35) }'; then
        vt_pass "registry-error-$id" "mount failed in ${took}s; log: $line"
    else
        vt_fail "registry-error-$id" "after ${took}s, log line naming the binding: ${line:-none}"
    fi
done
for req in "bad/../id --registry $ANON --repository vm/basic --digest $D_BASIC" \
           "x --registry $ANON --repository vm/basic --digest sha256:xyz" \
           "x --registry $ANON --repository BAD..REPO --digest $D_BASIC"; do
    # shellcheck disable=SC2086  # the request's words
    if out=$(vt_ctl bind $req 2>&1); then
        vt_fail registry-bad-request "accepted: bind $req"
    else
        vt_pass registry-bad-request "refused: $(echo "$out" | head -n 1 | cut -c1-200)"
    fi
done
if [ "$(vt_worker_pid)" = "$worker" ] && out=$(vt_verify_tree /mnt/second "$VT_MANIFEST_DIR/second.manifest"); then
    vt_pass registry-errors-isolated "worker $worker still serving, the mounted image still reads: $out"
else
    vt_fail registry-errors-isolated "worker $worker -> $(vt_worker_pid): ${out:-}"
fi
vt_check_replies

# The password: nowhere but the credentials files.
found=
for f in "$VT_SUPERVISOR_LOG" /tmp/chaos*.log /tmp/chaos*.out /tmp/readers*.log /tmp/readers*.out; do
    grep -q "$PW" "$f" 2>/dev/null && found="$found $f"
done
for p in "$VT_SUPERVISOR_PID" "$(vt_worker_pid)"; do
    tr '\0' '\n' < "/proc/$p/cmdline" | grep -q "$PW" && found="$found /proc/$p/cmdline"
    tr '\0' '\n' < "/proc/$p/environ" | grep -q "$PW" && found="$found /proc/$p/environ"
done
vt_ctl status --json | grep -q "$PW" && found="$found status"
vt_ctl bindings --json | grep -q "$PW" && found="$found bindings"
dmesg | grep -q "$PW" && found="$found dmesg"
if [ -z "$found" ]; then
    vt_pass registry-no-secret "the password is in no log, status, bindings output, argv or environment"
else
    vt_fail registry-no-secret "the password appears in:$found"
fi

if [ -e "$VT_FAILED_FLAG" ]; then
    echo "---- warnings and errors of $VT_SUPERVISOR_LOG (without the kills) ----"
    grep -E ' (warning|error|critical) ' "$VT_SUPERVISOR_LOG" | grep -v 'killed by SIGKILL\|culler off' |
        tail -n 60 | sed 's/^/log| /'
fi
umount /mnt/second 2>/dev/null
vt_stop_supervisor
exit 0
