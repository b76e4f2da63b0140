#!/usr/bin/env bash
# Processes of terraform/examples/local: started and stopped by the
# example's local-exec provisioners (terraform apply / destroy are the
# interface; this script is not meant to be run by hand). Settings come in
# the environment: STATE_DIR always, the others per subcommand.
#
#   init                 state_dir, the app secret and the admin token
#   pki <names...>       the dev mesh CA and a certificate per edge name
#   unpki                remove them
#   etcd                 start etcd (ETCD_BIN, ADDRESS, CLIENT_PORT, PEER_PORT)
#   controller | edge    write CONFIG to <NAME>.toml, check it, start BIN, wait
#                        for HEALTH_URL (and a controller's ADMIN_URL/healthz)
#   ready                wait until the network serves (CONTROLLER_URLS,
#                        ADMIN_URLS: the controllers' admin faces, EDGE_IDS,
#                        EDGE_ADMIN_URLS)
#   stop                 stop NAME: SIGTERM, wait, SIGKILL
#   teardown             stop whatever still runs from state_dir, remove it
#
# Every process runs in a session of its own (setsid), with its standard
# streams on files (so terraform does not wait for it), its pid in
# <NAME>.pid and its output in <NAME>.log, all in STATE_DIR. It starts with
# an environment of its own (env -i), so RTN_* variables of the caller's
# shell cannot override its config.
set -euo pipefail

: "${STATE_DIR:?STATE_DIR is not set}"
MARKER="$STATE_DIR/.rtn-local"
START_TIMEOUT=${START_TIMEOUT:-40}
STOP_TIMEOUT=${STOP_TIMEOUT:-15}
READY_TIMEOUT=${READY_TIMEOUT:-90}

say() { echo "rtn-local: $*"; }
die() {
    echo "rtn-local: $*" >&2
    exit 1
}

# HTTP status of a GET, 000 when nothing answers.
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true; }

# A process that runs (a zombie has exited: it holds no socket).
alive() {
    local state
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# A process of this network: its command line names a file in state_dir
# (a recycled pid never does).
ours() { tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$STATE_DIR/"; }

log_tail() {
    local log="$STATE_DIR/$1.log"
    [ -f "$log" ] && { echo "--- last lines of $log:"; tail -n 30 "$log"; } >&2 || true
}

# launch NAME VAR=value... PROGRAM ARGS...: start a daemon, record its pid.
launch() {
    local name=$1 pid_file="$STATE_DIR/$1.pid"
    shift
    if [ -f "$pid_file" ] && alive "$(cat "$pid_file")" && ours "$(cat "$pid_file")"; then
        die "$name already runs (pid $(cat "$pid_file")); terraform destroy stops it"
    fi
    rm -f "$pid_file"
    # The inner sh writes its own pid, then becomes the program (exec keeps
    # the pid), so the pid file is right however setsid forks.
    setsid sh -c 'echo $$ >"$0"; exec "$@"' "$pid_file" env -i "$@" \
        </dev/null >"$STATE_DIR/$name.log" 2>&1 &
    local i
    for i in $(seq 50); do
        [ -s "$pid_file" ] && break
        sleep 0.1
    done
    [ -s "$pid_file" ] || die "$name: no pid file after 5 s"
}

# wait_up NAME URL: until URL answers 200; stops the process and fails if it
# exits or the time runs out.
wait_up() {
    local name=$1 url=$2 pid
    pid=$(cat "$STATE_DIR/$name.pid")
    local deadline=$((SECONDS + START_TIMEOUT))
    while [ "$(status "$url")" != 200 ]; do
        if ! alive "$pid"; then
            log_tail "$name"
            rm -f "$STATE_DIR/$name.pid"
            die "$name exited during start"
        fi
        if [ $SECONDS -ge $deadline ]; then
            stop_one "$name"
            log_tail "$name"
            die "$name did not answer $url within ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    say "$name is up (pid $pid, $url)"
}

stop_one() {
    local name=$1 pid_file="$STATE_DIR/$1.pid" pid i
    if [ ! -f "$pid_file" ]; then
        say "$name: no pid file, nothing to stop"
        return 0
    fi
    pid=$(cat "$pid_file")
    if alive "$pid" && ours "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq $((STOP_TIMEOUT * 10))); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            say "$name (pid $pid) still runs ${STOP_TIMEOUT}s after SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for i in $(seq 50); do
                alive "$pid" || break
                sleep 0.1
            done
            alive "$pid" && die "$name (pid $pid) survived SIGKILL"
        fi
        say "$name (pid $pid) stopped"
    else
        say "$name (pid $pid) was not running"
    fi
    rm -f "$pid_file"
}

# Secrets: 24 random bytes in hex.
secret() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
init)
    if [ -e "$STATE_DIR" ] && [ ! -e "$MARKER" ] && [ -n "$(ls -A "$STATE_DIR")" ]; then
        die "$STATE_DIR exists and is not this example's state directory: choose another state_dir"
    fi
    if [ -e "$MARKER" ]; then
        # Left over from a run whose terraform state is gone: clean it first.
        say "cleaning up an earlier run in $STATE_DIR"
        bash "$0" teardown
    fi
    umask 077
    mkdir -p "$STATE_DIR/secrets"
    : >"$MARKER"
    secret >"$STATE_DIR/secrets/app-secret"
    secret >"$STATE_DIR/secrets/admin-token"
    say "state in $STATE_DIR"
    ;;
pki)
    : "${EDGE_BIN:?}"
    rm -rf "$STATE_DIR/certs"
    "$EDGE_BIN" dev-certs --out "$STATE_DIR/certs" $(printf -- '--name %s ' "$@")
    chmod 600 "$STATE_DIR"/certs/*.key
    ;;
unpki)
    rm -rf "$STATE_DIR/certs"
    ;;
etcd)
    : "${NAME:?}" "${ETCD_BIN:?}" "${ADDRESS:?}" "${CLIENT_PORT:?}" "${PEER_PORT:?}"
    rm -rf "$STATE_DIR/etcd.data"
    client="http://$ADDRESS:$CLIENT_PORT"
    peer="http://$ADDRESS:$PEER_PORT"
    launch "$NAME" PATH="$PATH" "$ETCD_BIN" --name rtn-local --data-dir "$STATE_DIR/etcd.data" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "rtn-local=$peer" --initial-cluster-state new \
        --initial-cluster-token rtn-local --log-level warn
    wait_up "$NAME" "$client/health"
    ;;
controller)
    : "${NAME:?}" "${CONFIG:?}" "${BIN:?}" "${HEALTH_URL:?}" "${ADMIN_URL:?}"
    cfg="$STATE_DIR/$NAME.toml"
    printf '%s' "$CONFIG" >"$cfg"
    env_vars=(PATH="$PATH" RUST_LOG="${LOG_LEVEL:-info}" RTN_CTL_ADMIN_TOKEN="$(cat "$STATE_DIR/secrets/admin-token")")
    env -i "${env_vars[@]}" "$BIN" check-config --config "$cfg" >/dev/null ||
        die "$NAME: region-controller check-config refused $cfg"
    launch "$NAME" "${env_vars[@]}" "$BIN" run --config "$cfg"
    wait_up "$NAME" "$HEALTH_URL"
    # The admin face (/v1/mesh, the dashboard, /metrics) listens on its own port.
    wait_up "$NAME" "$ADMIN_URL/healthz"
    ;;
edge)
    : "${NAME:?}" "${CONFIG:?}" "${BIN:?}" "${HEALTH_URL:?}" "${APP_ENV:?}"
    cfg="$STATE_DIR/$NAME.toml"
    printf '%s' "$CONFIG" >"$cfg"
    env_vars=(PATH="$PATH" RUST_LOG="${LOG_LEVEL:-info}" "$APP_ENV=$(cat "$STATE_DIR/secrets/app-secret")"
        RTN_EDGE_ADMIN_TOKEN="$(cat "$STATE_DIR/secrets/admin-token")")
    env -i "${env_vars[@]}" "$BIN" check-config --config "$cfg" >/dev/null ||
        die "$NAME: edge-node check-config refused $cfg"
    launch "$NAME" "${env_vars[@]}" "$BIN" run --config "$cfg"
    wait_up "$NAME" "$HEALTH_URL"
    ;;
ready)
    : "${CONTROLLER_URLS:?}" "${ADMIN_URLS:?}" "${EDGE_IDS:?}" "${EDGE_ADMIN_URLS:?}"
    deadline=$((SECONDS + READY_TIMEOUT))
    pending=""
    while [ $SECONDS -lt $deadline ]; do
        pending=""
        for url in $CONTROLLER_URLS $ADMIN_URLS; do
            [ "$(status "$url/readyz")" = 200 ] || pending="$pending $url/readyz"
        done
        first=${CONTROLLER_URLS%% *}
        listed=$(curl -s --max-time 2 "$first/v1/edges/nearest?limit=16" 2>/dev/null | grep -o '"id":[0-9]*' || true)
        for id in $EDGE_IDS; do
            grep -qx "\"id\":$id" <<<"$listed" || pending="$pending edge-$id-listed"
        done
        for url in $EDGE_ADMIN_URLS; do
            version=$(curl -s --max-time 2 "$url/metrics" 2>/dev/null | sed -n 's/^rtn_edge_route_table_version\({[^}]*}\)\{0,1\} \([0-9]*\).*/\2/p' || true)
            [ "${version:-0}" -gt 0 ] 2>/dev/null || pending="$pending $url:routes"
        done
        if [ -z "$pending" ]; then
            say "ready: $(wc -w <<<"$CONTROLLER_URLS") controllers, $(wc -w <<<"$EDGE_IDS") edges with routes"
            say "dashboards (admin token in $STATE_DIR/secrets/admin-token): $(printf '%s/ ' $ADMIN_URLS)"
            exit 0
        fi
        sleep 0.5
    done
    die "not ready within ${READY_TIMEOUT}s, waiting for:$pending (logs in $STATE_DIR)"
    ;;
stop)
    : "${NAME:?}"
    stop_one "$NAME"
    ;;
teardown)
    if [ ! -e "$STATE_DIR" ]; then
        say "$STATE_DIR is gone already"
        exit 0
    fi
    [ -e "$MARKER" ] || die "$STATE_DIR is not this example's state directory: not removing it"
    # Edges first, etcd last, as terraform orders them.
    for kind in edge controller etcd; do
        for pid_file in "$STATE_DIR"/$kind*.pid; do
            [ -e "$pid_file" ] || continue
            stop_one "$(basename "$pid_file" .pid)"
        done
    done
    rm -rf "$STATE_DIR"
    say "removed $STATE_DIR"
    ;;
*)
    die "unknown command ${cmd:-(none)}; see the comment at the top of $0"
    ;;
esac
