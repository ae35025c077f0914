#!/usr/bin/env bash
# bench/pgbench.sh: pgbench select-only throughput, directly against PostgreSQL vs through warden (and, on
# request, through reference proxies: pgbouncer, haproxy).
#
# Builds the release binary, starts a throwaway PostgreSQL 15 (system binaries) and a warden gateway in
# front of it (plus the reference proxies named in REFERENCE), then runs `pgbench -S` in rounds (direct /
# through warden / through each reference, the order rotated every round to cancel drift) for the simple and
# prepared query protocols, and prints a table, a per-protocol summary and whether the target (warden TPS /
# direct TPS >= 0.85) is met. See bench/README.md for the output.
# warden runs with a policy set shaped like a real deployment's (written to $TMP/policies/bench.cedar): the bench
# identity may connect and read the pgbench tables; the other policies name other groups, connections and
# statements. With BASELINE_BIN or BASELINE_REF, a second warden binary (typically one from before policies
# existed) runs with the same configuration as the side `warden-baseline`, and the summary shows the cost of
# policies: warden TPS / warden-baseline TPS (target >= 0.95).
# Everything (PostgreSQL, the gateways, the reference proxies, a baseline build, its git worktree, the temporary
# directory) is stopped or removed on exit, including Ctrl-C.
#
# Usage: bench/pgbench.sh            (run as any user; as root, PostgreSQL runs as the `postgres` user)
#
# Environment:
#   SCALE      pgbench scale factor for `pgbench -i`             (default 10)
#   ROUNDS     rounds; each runs both protocols on both sides    (default 3; 1 with QUICK=1)
#   DURATION   seconds per pgbench run (-T)                      (default 10; 3 with QUICK=1)
#   CLIENTS    pgbench clients (-c)                              (default 8)
#   JOBS       pgbench threads (-j)                              (default 2)
#   WARDEN_BIN path to an already built warden binary; skips `cargo build --release -p warden-cli`
#   UPSTREAM   how warden reaches PostgreSQL: tcp (127.0.0.1, like the direct runs) or unix (its socket) (default tcp)
#              (the reference proxies reach it the same way)
#   REFERENCE  comma-separated reference proxies to measure too: pgbouncer, haproxy      (default: none)
#              Each runs on a free 127.0.0.1 port in front of the same PostgreSQL, and every round runs pgbench
#              through it as well. pgbouncer: session pooling (a pass-through of client sessions), SCRAM on both
#              sides, default_pool_size 20, max_client_conn 100, no TLS (run as `postgres` when root).
#              haproxy: `mode tcp`, a plain TCP relay with no protocol awareness: a floor for any proxy's cost.
#              A missing binary is installed with apt-get (needs root; otherwise the script stops).
#   BASELINE_BIN path to another warden binary (e.g. built from a commit before policies existed), measured as
#              the side `warden-baseline` with the same configuration (a pre-policy binary ignores [policy]);
#              the summary adds warden / warden-baseline per protocol, target >= 0.95         (default: none)
#   BASELINE_REF a git revision to build and use as BASELINE_BIN (e.g. b923f0a, the commit before policies):
#              `git worktree add` under target/baseline/, `cargo build --release -p warden-cli` with
#              CARGO_TARGET_DIR=target/baseline; the binary is kept as target/baseline/bins/warden-<commit> and
#              reused by later runs; the worktree is removed. Give BASELINE_BIN or BASELINE_REF, not both.
#   EXTRA_CONFIG  TOML appended to the gateways' configuration, e.g. $'[audit]\nresult_rows = 0'   (default: none)
#   QUICK=1    smoke run: 1 round of 3 s (explicit ROUNDS/DURATION still win)
#
# Exit status: 0 when all runs succeeded (whether or not the target is met), non-zero on any failure.

set -euo pipefail

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    ROUNDS=${ROUNDS:-1}
    DURATION=${DURATION:-3}
fi
SCALE=${SCALE:-10}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-8}
JOBS=${JOBS:-2}
TARGET=0.85
BASELINE_TARGET=0.95

for var in SCALE ROUNDS DURATION CLIENTS JOBS; do
    if ! [[ ${!var} =~ ^[1-9][0-9]*$ ]]; then
        echo "error: $var must be a positive integer (got '${!var}')" >&2
        exit 2
    fi
done

# REFERENCE: comma-separated, whitespace around names ignored, duplicates dropped.
REFERENCE=${REFERENCE:-}
REFS=()
IFS=',' read -r -a ref_names <<<"$REFERENCE"
for ref in "${ref_names[@]}"; do
    ref=${ref//[[:space:]]/}
    [[ -n $ref ]] || continue
    case $ref in
        pgbouncer | haproxy) ;;
        *)
            echo "error: REFERENCE may name pgbouncer and haproxy, comma-separated (got '$ref' in '$REFERENCE')" >&2
            exit 2
            ;;
    esac
    [[ " ${REFS[*]} " == *" $ref "* ]] || REFS+=("$ref")
done
unset ref_names ref

BASELINE_BIN=${BASELINE_BIN:-}
BASELINE_REF=${BASELINE_REF:-}
if [[ -n $BASELINE_BIN && -n $BASELINE_REF ]]; then
    echo "error: give BASELINE_BIN or BASELINE_REF, not both" >&2
    exit 2
fi

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

# Libpq settings from the caller's environment must not leak into the runs.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE PGSERVICE PGSERVICEFILE \
    PGOPTIONS PGSSLMODE PGAPPNAME PGCONNECT_TIMEOUT PGTARGETSESSIONATTRS 2>/dev/null || true

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- cleanup (runs on every exit path)

TMP=""
PG_BIN=""
PG_DATA=""
PG_STARTED=0
GW_PID=""
BASE_PID=""   # the warden-baseline gateway
PGBENCH_PID=""
BUILD_PID=""  # the baseline's cargo build: leader of its own process group (setsid), so rustc goes with it
BASELINE_WORKTREE=""
# Reference proxies, by name: REF_PID is the proxy process (measured, stopped first); REF_LAUNCHER is the
# background job that started it (runuser, when pgbouncer runs as `postgres`; the proxy itself otherwise).
declare -A REF_PID=() REF_LAUNCHER=()

as_pg() {
    # initdb and pg_ctl refuse to run as root.
    if [[ $(id -u) == 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# stop_pid LABEL PID: SIGTERM, SIGKILL after 5 s, then reaps it (when it is this shell's child).
stop_pid() {
    local label=$1 pid=$2
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$label did not stop on SIGTERM within 5 s; killing it"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

# stop_group LABEL PID: like stop_pid, for the process group PID leads (and its leader, this shell's child).
stop_group() {
    local label=$1 pid=$2
    [[ -n $pid ]] || return 0
    if kill -0 -- "-$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null
        for _ in $(seq 50); do
            kill -0 -- "-$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 -- "-$pid" 2>/dev/null; then
            log "$label did not stop on SIGTERM within 5 s; killing it"
            kill -KILL -- "-$pid" 2>/dev/null
        fi
    fi
    wait "$pid" 2>/dev/null
    return 0
}

# Removes the baseline's git worktree (its build cache under target/baseline stays).
remove_worktree() {
    [[ -n $BASELINE_WORKTREE ]] || return 0
    if ! git -C "$REPO_ROOT" worktree remove --force "$BASELINE_WORKTREE" >/dev/null 2>&1; then
        rm -rf -- "$BASELINE_WORKTREE"
        git -C "$REPO_ROOT" worktree prune >/dev/null 2>&1
    fi
    BASELINE_WORKTREE=""
}

cleanup() {
    local status=$?
    trap '' INT TERM
    set +e
    if [[ -n $PGBENCH_PID ]] && kill -0 "$PGBENCH_PID" 2>/dev/null; then
        kill -TERM "$PGBENCH_PID" 2>/dev/null
        wait "$PGBENCH_PID" 2>/dev/null
    fi
    stop_group "baseline build" "$BUILD_PID"
    if [[ -n $GW_PID ]] && kill -0 "$GW_PID" 2>/dev/null; then
        kill -TERM "$GW_PID" 2>/dev/null
        for _ in $(seq 50); do
            kill -0 "$GW_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$GW_PID" 2>/dev/null; then
            log "gateway did not stop on SIGTERM within 5 s; killing it"
            kill -KILL "$GW_PID" 2>/dev/null
        fi
        wait "$GW_PID" 2>/dev/null
    fi
    stop_pid "baseline gateway" "$BASE_PID"
    local ref
    for ref in "${!REF_LAUNCHER[@]}"; do
        stop_pid "$ref" "${REF_PID[$ref]:-}"
        # runuser passes SIGTERM on to pgbouncer if its pid was not known yet, and exits when pgbouncer has.
        stop_pid "$ref (launcher)" "${REF_LAUNCHER[$ref]}"
    done
    if [[ $PG_STARTED == 1 ]]; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >/dev/null 2>&1 ||
            log "pg_ctl stop failed (server already gone?)"
    fi
    remove_worktree
    if [[ -n $TMP && -d $TMP ]]; then
        rm -rf -- "$TMP"
    fi
    if [[ $status != 0 ]]; then
        log "exiting with status $status (everything cleaned up)"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command in the background and waits for it, so that a signal to this script interrupts the wait
# (bash defers traps while a foreground child runs) and cleanup can stop it.
run_bg() {
    local out=$1
    shift
    "$@" >"$out" 2>&1 &
    PGBENCH_PID=$!
    local rc=0
    wait "$PGBENCH_PID" || rc=$?
    PGBENCH_PID=""
    return "$rc"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# ---------------------------------------------------------------- 1. warden binary

if [[ -n ${WARDEN_BIN:-} ]]; then
    [[ -x $WARDEN_BIN ]] || die "WARDEN_BIN=$WARDEN_BIN is not an executable file"
    WARDEN_BIN=$(cd "$(dirname "$WARDEN_BIN")" && pwd)/$(basename "$WARDEN_BIN")
    log "using WARDEN_BIN=$WARDEN_BIN (no build)"
else
    log "building: cargo build --release -p warden-cli (in $REPO_ROOT)"
    (cd "$REPO_ROOT" && cargo build --release -p warden-cli) || die "cargo build failed"
    WARDEN_BIN=$REPO_ROOT/target/release/warden
    [[ -x $WARDEN_BIN ]] || die "no binary at $WARDEN_BIN after the build"
fi

# ---------------------------------------------------------------- 1a. baseline warden binary (optional)

BASELINE_DESC=""
if [[ -n $BASELINE_REF ]]; then
    command -v git >/dev/null 2>&1 || die "BASELINE_REF needs git"
    command -v setsid >/dev/null 2>&1 || die "BASELINE_REF needs setsid (util-linux) to run the baseline build"
    BASELINE_SHA=$(git -C "$REPO_ROOT" rev-parse --verify --quiet "$BASELINE_REF^{commit}") ||
        die "BASELINE_REF=$BASELINE_REF is not a commit of $REPO_ROOT"
    BASELINE_CACHE=$REPO_ROOT/target/baseline
    BASELINE_BIN=$BASELINE_CACHE/bins/warden-$BASELINE_SHA
    BASELINE_DESC="BASELINE_REF=$BASELINE_REF, commit $BASELINE_SHA"
    if [[ -x $BASELINE_BIN ]]; then
        log "baseline: reusing $BASELINE_BIN (built earlier from $BASELINE_REF)"
    else
        mkdir -p "$BASELINE_CACHE/bins"
        BASELINE_WORKTREE=$(mktemp -d "$BASELINE_CACHE/worktree.XXXXXX")
        log "baseline: git worktree add $BASELINE_WORKTREE $BASELINE_SHA"
        git -C "$REPO_ROOT" worktree add --detach "$BASELINE_WORKTREE" "$BASELINE_SHA" >&2 ||
            die "git worktree add failed"
        log "baseline: cargo build --release -p warden-cli (in $BASELINE_WORKTREE, CARGO_TARGET_DIR=$BASELINE_CACHE)"
        # In the background and in its own process group (setsid does not fork here: a job of a script is not a
        # group leader), so that a signal interrupts the wait and cleanup can stop cargo with its rustc processes.
        (cd "$BASELINE_WORKTREE" && CARGO_TARGET_DIR=$BASELINE_CACHE exec setsid -w cargo build --release -p warden-cli) </dev/null >&2 &
        BUILD_PID=$!
        rc=0
        wait "$BUILD_PID" || rc=$?
        BUILD_PID=""
        ((rc == 0)) || die "baseline build failed (cargo build exited with status $rc)"
        [[ -x $BASELINE_CACHE/release/warden ]] || die "no binary at $BASELINE_CACHE/release/warden after the baseline build"
        cp "$BASELINE_CACHE/release/warden" "$BASELINE_BIN.tmp.$$"
        mv -f "$BASELINE_BIN.tmp.$$" "$BASELINE_BIN"
        remove_worktree
        log "baseline: built $BASELINE_BIN"
    fi
elif [[ -n $BASELINE_BIN ]]; then
    [[ -x $BASELINE_BIN ]] || die "BASELINE_BIN=$BASELINE_BIN is not an executable file"
    BASELINE_BIN=$(cd "$(dirname "$BASELINE_BIN")" && pwd)/$(basename "$BASELINE_BIN")
    BASELINE_DESC="BASELINE_BIN"
    log "using BASELINE_BIN=$BASELINE_BIN as the warden-baseline side"
fi
if [[ -n $BASELINE_BIN && $BASELINE_BIN -ef $WARDEN_BIN ]]; then
    log "note: the baseline binary is the warden binary itself; warden / warden-baseline then measures only noise"
fi

# ---------------------------------------------------------------- 1b. reference proxies' binaries

declare -A REF_BIN=()
# Debian installs both in /usr/sbin, which a non-root PATH may lack.
find_sbin() {
    local p
    if p=$(command -v "$1" 2>/dev/null); then
        printf '%s\n' "$p"
        return 0
    fi
    for p in "/usr/sbin/$1" "/usr/local/sbin/$1" "/sbin/$1"; do
        if [[ -x $p ]]; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    return 1
}
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$1" >&2
}
for ref in "${REFS[@]}"; do
    ref_path=$(find_sbin "$ref" || true)
    if [[ -z $ref_path ]]; then
        [[ $(id -u) == 0 ]] || die "REFERENCE names $ref, which is not installed, and installing it needs root: run" \
            "'apt-get install -y --no-install-recommends $ref' as root (or run this script as root), or drop $ref from REFERENCE"
        command -v apt-get >/dev/null 2>&1 || die "$ref is not installed and there is no apt-get to install it with"
        log "$ref not found; installing it: apt-get install -y --no-install-recommends $ref"
        if ! apt_install "$ref"; then
            log "apt-get install $ref failed; running apt-get update -qq and trying again"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
            apt_install "$ref" || die "apt-get install -y --no-install-recommends $ref failed"
        fi
        ref_path=$(find_sbin "$ref" || true)
        [[ -n $ref_path ]] || die "$ref is still not found after installing it"
    fi
    REF_BIN[$ref]=$ref_path
    log "reference $ref: ${REF_BIN[$ref]}"
done

# ---------------------------------------------------------------- 2. throwaway PostgreSQL

if command -v pg_config >/dev/null 2>&1 && [[ -x $(pg_config --bindir)/initdb ]]; then
    PG_BIN=$(pg_config --bindir)
else
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
fi
[[ -n $PG_BIN && -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] || die "no PostgreSQL server binaries found (pg_config --bindir, /usr/lib/postgresql/*/bin)"
for tool in pgbench psql; do
    if [[ -x $PG_BIN/$tool ]]; then
        printf -v "TOOL_${tool}" '%s' "$PG_BIN/$tool"
    else
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
        printf -v "TOOL_${tool}" '%s' "$(command -v "$tool")"
    fi
done
PGBENCH=$TOOL_pgbench
PSQL=$TOOL_psql
command -v python3 >/dev/null 2>&1 || die "python3 not found (used to pick free ports)"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum not found"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/warden-bench.XXXXXX")
chmod 755 "$TMP"
PG_DIR=$TMP/pg            # data directory, socket and server log; owned by the server's user
PG_DATA=$PG_DIR/data
mkdir -p "$PG_DIR"
chmod 700 "$PG_DIR"
if [[ $(id -u) == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to run the server as"
    chown postgres: "$PG_DIR"
fi

SUPER_PW=$(random_hex 24)
BENCH_PW=$(random_hex 24)
API_KEY=wk_$(random_hex 32)
PG_PORT=$(free_port)

printf '%s\n' "$SUPER_PW" >"$PG_DIR/pwfile"
chmod 600 "$PG_DIR/pwfile"
if [[ $(id -u) == 0 ]]; then chown postgres: "$PG_DIR/pwfile"; fi

log "initdb ($PG_BIN) into $PG_DATA"
as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=scram-sha-256 --pwfile="$PG_DIR/pwfile" \
    --no-sync -E UTF8 --locale=C >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
rm -f "$PG_DIR/pwfile"

cat >>"$PG_DATA/postgresql.conf" <<EOF

# bench/pgbench.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR'
max_connections = 100
fsync = off
synchronous_commit = off
shared_buffers = 128MB
EOF

log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
PG_STARTED=1
as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_DIR/server.log" -w -t 60 >"$TMP/pg_ctl.log" 2>&1 || {
    cat "$TMP/pg_ctl.log" "$PG_DIR/server.log" >&2 2>/dev/null
    die "PostgreSQL did not start"
}

super_psql() {
    PGPASSWORD=$SUPER_PW PGSSLMODE=disable "$PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}
super_psql -d postgres -c "CREATE ROLE bench LOGIN PASSWORD '$BENCH_PW'" -c "CREATE DATABASE bench OWNER bench" \
    || die "cannot create the bench role and database"
PG_VERSION=$(super_psql -d postgres -At -c "SELECT version()")

# ---------------------------------------------------------------- 3. pgbench -i (directly, as bench)

direct_env=(env PGPASSWORD="$BENCH_PW" PGSSLMODE=disable)
direct_conn=(-h 127.0.0.1 -p "$PG_PORT" -U bench)

log "pgbench -i -s $SCALE"
run_bg "$TMP/pgbench-init.log" "${direct_env[@]}" "$PGBENCH" -i -q -s "$SCALE" "${direct_conn[@]}" bench ||
    { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }

# ---------------------------------------------------------------- 4. warden gateways

GW_PORT=$(free_port)
while [[ $GW_PORT == "$PG_PORT" ]]; do GW_PORT=$(free_port); done
BASE_PORT=""
if [[ -n $BASELINE_BIN ]]; then
    BASE_PORT=$(free_port)
    while [[ $BASE_PORT == "$PG_PORT" || $BASE_PORT == "$GW_PORT" ]]; do BASE_PORT=$(free_port); done
fi
API_KEY_SHA=$(printf %s "$API_KEY" | sha256sum | cut -d' ' -f1)

case ${UPSTREAM:-tcp} in
    tcp) UPSTREAM_ADDRESS="127.0.0.1:$PG_PORT" ;;
    unix) UPSTREAM_ADDRESS="$PG_DIR/.s.PGSQL.$PG_PORT" ;;
    *) die "UPSTREAM must be tcp or unix, not ${UPSTREAM}" ;;
esac
printf %s "$BENCH_PW" >"$TMP/bench.password"
chmod 600 "$TMP/bench.password"

# The policy set: shaped like a real deployment's. The bench identity (group "bench") may connect from loopback
# and read the pgbench tables, the connection itself (SELECT 1) and the system catalogs (pgbench's start-up looks
# up pgbench_accounts there); nothing else grants it more than read, so its upstream sessions are read-only
# (default_transaction_read_only) and pgbench's start-up housekeeping (VACUUM pgbench_branches / pgbench_tellers,
# TRUNCATE pgbench_history), which pgbench runs before the timed part and whose errors it ignores, is refused.
# The other policies name other groups, another connection, or statements pgbench -S does not send, and do not
# apply to the bench identity; those whose scope covers (connection bench, read) are still evaluated.
POLICY_FILE=$TMP/policies/bench.cedar
mkdir -p "$TMP/policies"
cat >"$POLICY_FILE" <<'EOF'
// Written by bench/pgbench.sh: a policy set shaped like a real deployment's.

// ---- the load-test client: read-only, from this host
@id("bench-connect-from-loopback")
permit (principal in Warden::Group::"bench",
        action == Warden::Action::"connect",
        resource == Warden::Connection::"bench")
when { context.client has address && context.client.address.isLoopback() };

@id("bench-read-pgbench-tables")
permit (principal in Warden::Group::"bench",
        action == Warden::Action::"read",
        resource is Warden::Table in Warden::Connection::"bench")
when { resource.schema == "public"
       && ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"].contains(resource.name) };

// Statements that read no table (SELECT 1, SELECT version()) are authorized on the connection.
@id("bench-read-without-tables")
permit (principal in Warden::Group::"bench",
        action == Warden::Action::"read",
        resource == Warden::Connection::"bench");

// ---- everyone: clients look up tables, types and settings in the system catalogs
@id("catalog-read")
permit (principal,
        action == Warden::Action::"read",
        resource is Warden::Table)
when { resource.schema == "pg_catalog" || resource.schema == "information_schema" };

// ---- other groups
@id("readers-read-bench")
permit (principal in Warden::Group::"readers",
        action in [Warden::Action::"connect", Warden::Action::"read"],
        resource in Warden::Connection::"bench");

@id("analysts-read-warehouse")
permit (principal in Warden::Group::"analysts",
        action in [Warden::Action::"connect", Warden::Action::"read"],
        resource in Warden::Connection::"warehouse");

@id("app-connect")
permit (principal in Warden::Group::"app",
        action == Warden::Action::"connect",
        resource == Warden::Connection::"bench");

@id("app-update-balances")
permit (principal in Warden::Group::"app",
        action in [Warden::Action::"read", Warden::Action::"write"],
        resource is Warden::Table in Warden::Connection::"bench")
when { ["pgbench_accounts", "pgbench_tellers", "pgbench_branches"].contains(resource.name)
       && context has statement && ["select", "update"].contains(context.statement.kind) };

@id("app-append-history")
permit (principal in Warden::Group::"app",
        action == Warden::Action::"write",
        resource == Warden::Table::"bench/public.pgbench_history")
when { context has statement && context.statement.kind == "insert" };

@id("oncall-admin-from-bastion")
permit (principal in Warden::Group::"oncall",
        action,
        resource)
when { context.client has address && context.client.address.isInRange(ip("10.20.0.0/24")) };

// ---- guard rails, for everyone
@id("no-unbounded-delete-or-update")
forbid (principal,
        action == Warden::Action::"write",
        resource)
when { context has statement && ["delete", "update"].contains(context.statement.kind)
       && context.statement has has_where && !context.statement.has_where };

@id("internal-addresses-only")
forbid (principal, action, resource)
when { context.client has address
       && !context.client.address.isLoopback()
       && !context.client.address.isInRange(ip("10.0.0.0/8")) };

@id("app-not-interactive")
forbid (principal in Warden::Group::"app", action, resource)
when { context.client has application_name
       && (["psql", "pgcli", "DBeaver"].contains(context.client.application_name)
           || context.client.application_name like "pgAdmin*") };

@id("schema-changes-by-migrations-only")
forbid (principal,
        action in [Warden::Action::"ddl", Warden::Action::"dcl"],
        resource)
unless { principal in Warden::Group::"migrations" };
EOF

# write_config FILE PORT STATE_DIRECTORY: the gateways' configuration. warden and warden-baseline get the same one
# (connection, API key, policy files) but for the listening port and the state store.
write_config() {
    cat >"$1" <<EOF
# Written by bench/pgbench.sh.
[state]
url = "sqlite://$3/warden.db"

[listen]
postgres = "127.0.0.1:$2"

[[connection]]
name = "bench"
kind = "postgres"
address = "$UPSTREAM_ADDRESS"
database = "bench"
user = "bench"
password = { file = "bench.password" }
tls = { mode = "disable" }

[[api_key]]
name = "bench"
key = { sha256 = "$API_KEY_SHA" }
groups = ["bench"]

[policy]
files = ["policies/*.cedar"]
${EXTRA_CONFIG:-}
EOF
}
write_config "$TMP/warden.toml" "$GW_PORT" warden-data
if [[ -n $BASELINE_BIN ]]; then write_config "$TMP/warden-baseline.toml" "$BASE_PORT" warden-baseline-data; fi

# warden check validates the configuration and the policies against warden's Cedar schema.
"$WARDEN_BIN" check --config "$TMP/warden.toml" >"$TMP/check.out" 2>&1 ||
    { cat "$TMP/check.out" >&2; die "warden check rejected the generated configuration or its policies ($TMP/warden.toml)"; }
log "$(tail -n1 "$TMP/check.out")"
if [[ -n $BASELINE_BIN ]]; then
    "$BASELINE_BIN" check --config "$TMP/warden-baseline.toml" >"$TMP/check-baseline.out" 2>&1 ||
        { cat "$TMP/check-baseline.out" >&2; die "the baseline binary rejected the configuration ($TMP/warden-baseline.toml)"; }
fi

warden_env=(env PGPASSWORD="$API_KEY" PGSSLMODE=disable)
warden_conn=(-h 127.0.0.1 -p "$GW_PORT" -U bench-client)
baseline_conn=(-h 127.0.0.1 -p "$BASE_PORT" -U bench-client)

# start_gateway PID_VAR LABEL BIN CONFIG PORT LOG: starts a gateway, stores its pid in PID_VAR and waits up to 20 s
# for `select 1` through it (or stops the script).
start_gateway() {
    local pid_var=$1 label=$2 bin=$3 config=$4 port=$5 log_file=$6
    log "starting $label on 127.0.0.1:$port"
    WARDEN_LOG=warn "$bin" gateway --config "$config" </dev/null >"$log_file.stdout" 2>"$log_file" &
    local pid=$!
    printf -v "$pid_var" '%s' "$pid"

    local ready=0 deadline=$((SECONDS + 20))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        if "${warden_env[@]}" PGCONNECT_TIMEOUT=2 "$PSQL" -X -q -At -h 127.0.0.1 -p "$port" -U bench-client -d bench \
            -c 'select 1' >/dev/null 2>"$TMP/ready.err"; then
            ready=1
            break
        fi
        sleep 0.2
    done
    if [[ $ready != 1 ]]; then
        echo "---- last psql error:" >&2
        cat "$TMP/ready.err" >&2 || true
        echo "---- $label log ($log_file):" >&2
        cat "$log_file" "$log_file.stdout" >&2 || true
        if kill -0 "$pid" 2>/dev/null; then
            die "the $label did not accept a query within 20 s"
        else
            wait "$pid" || true
            printf -v "$pid_var" '%s' ""
            die "the $label exited during start-up"
        fi
    fi
    log "$label is up"
}

start_gateway GW_PID "warden gateway" "$WARDEN_BIN" "$TMP/warden.toml" "$GW_PORT" "$TMP/warden.log"
if [[ -n $BASELINE_BIN ]]; then
    start_gateway BASE_PID "baseline gateway" "$BASELINE_BIN" "$TMP/warden-baseline.toml" "$BASE_PORT" \
        "$TMP/warden-baseline.log"
fi

# ---------------------------------------------------------------- 4b. reference proxies

# Clients reach each reference as the bench role with its password, like the direct runs.
declare -A REF_PORT=() REF_LOG=() REF_VERSION=()
USED_PORTS=" $PG_PORT $GW_PORT $BASE_PORT "
pick_port() {
    PICKED_PORT=$(free_port)
    while [[ $USED_PORTS == *" $PICKED_PORT "* ]]; do PICKED_PORT=$(free_port); done
    USED_PORTS+="$PICKED_PORT "
}

# ref_wait_ready NAME: waits up to 20 s for `select 1` through the reference, or stops the script.
ref_wait_ready() {
    local ref=$1 deadline=$((SECONDS + 20))
    while ((SECONDS < deadline)); do
        kill -0 "${REF_LAUNCHER[$ref]}" 2>/dev/null || break
        if "${direct_env[@]}" PGCONNECT_TIMEOUT=2 "$PSQL" -X -q -At -h 127.0.0.1 -p "${REF_PORT[$ref]}" -U bench \
            -d bench -c 'select 1' >/dev/null 2>"$TMP/ready-$ref.err"; then
            return 0
        fi
        sleep 0.2
    done
    echo "---- last psql error:" >&2
    cat "$TMP/ready-$ref.err" >&2 || true
    echo "---- $ref log (${REF_LOG[$ref]}):" >&2
    cat "${REF_LOG[$ref]}" >&2 || true
    if kill -0 "${REF_LAUNCHER[$ref]}" 2>/dev/null; then
        die "$ref did not accept a query within 20 s"
    else
        wait "${REF_LAUNCHER[$ref]}" || true
        die "$ref exited during start-up"
    fi
}

start_pgbouncer() {
    local dir=$TMP/pgbouncer host
    pick_port
    REF_PORT[pgbouncer]=$PICKED_PORT
    REF_LOG[pgbouncer]=$dir/pgbouncer.out
    case ${UPSTREAM:-tcp} in
        tcp) host=127.0.0.1 ;;
        unix) host=$PG_DIR ;; # a host starting with / is a Unix socket directory
    esac
    mkdir -p "$dir"
    chmod 700 "$dir"
    # Plaintext password: pgbouncer then does SCRAM both with the clients and with PostgreSQL.
    printf '"bench" "%s"\n' "$BENCH_PW" >"$dir/userlist.txt"
    cat >"$dir/pgbouncer.ini" <<EOF
;; Written by bench/pgbench.sh.
[databases]
bench = host=$host port=$PG_PORT dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${REF_PORT[pgbouncer]}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
client_tls_sslmode = disable
server_tls_sslmode = disable
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
    chmod 600 "$dir/userlist.txt" "$dir/pgbouncer.ini"
    local -a launch=()
    if [[ $(id -u) == 0 ]]; then
        # pgbouncer refuses to run as root.
        chown -R postgres: "$dir"
        launch=(runuser -u postgres --)
    fi
    log "starting pgbouncer on 127.0.0.1:${REF_PORT[pgbouncer]}"
    # In the foreground (no -d), as a job of this script; it logs to stderr and to its logfile.
    (cd "$dir" && exec "${launch[@]}" "${REF_BIN[pgbouncer]}" "$dir/pgbouncer.ini") </dev/null >"${REF_LOG[pgbouncer]}" 2>&1 &
    REF_LAUNCHER[pgbouncer]=$!
    if [[ ${#launch[@]} == 0 ]]; then REF_PID[pgbouncer]=$!; fi
    ref_wait_ready pgbouncer
    if [[ -z ${REF_PID[pgbouncer]:-} ]]; then
        local pid
        pid=$(cat "$dir/pgbouncer.pid" 2>/dev/null || true)
        [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == pgbouncer ]] ||
            die "cannot find pgbouncer's process id (pidfile $dir/pgbouncer.pid: '$pid')"
        REF_PID[pgbouncer]=$pid
    fi
    REF_VERSION[pgbouncer]=$("${REF_BIN[pgbouncer]}" --version 2>/dev/null | head -n1 || true)
}

start_haproxy() {
    local dir=$TMP/haproxy server
    pick_port
    REF_PORT[haproxy]=$PICKED_PORT
    REF_LOG[haproxy]=$dir/haproxy.out
    case ${UPSTREAM:-tcp} in
        tcp) server=127.0.0.1:$PG_PORT ;;
        unix) server=unix@$PG_DIR/.s.PGSQL.$PG_PORT ;;
    esac
    mkdir -p "$dir"
    cat >"$dir/haproxy.cfg" <<EOF
# Written by bench/pgbench.sh: a plain TCP relay (threads: haproxy's default).
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend bench
    bind 127.0.0.1:${REF_PORT[haproxy]}
    default_backend postgres

backend postgres
    server postgres $server
EOF
    "${REF_BIN[haproxy]}" -c -f "$dir/haproxy.cfg" >"$dir/check.out" 2>&1 ||
        { cat "$dir/check.out" >&2; die "haproxy rejected its configuration ($dir/haproxy.cfg)"; }
    log "starting haproxy on 127.0.0.1:${REF_PORT[haproxy]}"
    # -db: stay in the foreground, as a job of this script.
    "${REF_BIN[haproxy]}" -db -f "$dir/haproxy.cfg" </dev/null >"${REF_LOG[haproxy]}" 2>&1 &
    REF_LAUNCHER[haproxy]=$!
    REF_PID[haproxy]=$!
    ref_wait_ready haproxy
    REF_VERSION[haproxy]=$("${REF_BIN[haproxy]}" -v 2>/dev/null | head -n1 | sed 's/ - http.*//' || true)
}

for ref in "${REFS[@]}"; do
    "start_$ref"
    log "$ref is up"
done

# ---------------------------------------------------------------- 5. rounds

CLK_TCK=$(getconf CLK_TCK)
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
now() { date +%s.%N; }

# The sides of every round: direct, then the proxies. SIDE_PID: the process whose CPU use is measured.
SIDES=(direct warden)
declare -A SIDE_PID=([warden]=$GW_PID) SIDE_LOG=([warden]=$TMP/warden.log)
if [[ -n $BASELINE_BIN ]]; then
    SIDES+=(warden-baseline)
    SIDE_PID[warden-baseline]=$BASE_PID
    SIDE_LOG[warden-baseline]=$TMP/warden-baseline.log
fi
SIDES+=("${REFS[@]}")
for ref in "${REFS[@]}"; do
    SIDE_PID[$ref]=${REF_PID[$ref]}
    SIDE_LOG[$ref]=${REF_LOG[$ref]}
done

declare -A TPS LAT CPU POS MEAN_TPS
RUN_TPS=""
RUN_LAT=""
RUN_CPU=""

# run_one ROUND PROTOCOL SIDE: sets RUN_TPS, RUN_LAT and (through a proxy) RUN_CPU, the proxy process's CPU
# use over the run as a percentage of one core.
run_one() {
    local round=$1 protocol=$2 side=$3
    local out=$TMP/pgbench-r$round-$protocol-$side.log
    local -a cmd
    case $side in
        direct) cmd=("${direct_env[@]}" "$PGBENCH" "${direct_conn[@]}") ;;
        warden) cmd=("${warden_env[@]}" "$PGBENCH" "${warden_conn[@]}") ;;
        warden-baseline) cmd=("${warden_env[@]}" "$PGBENCH" "${baseline_conn[@]}") ;;
        *) cmd=("${direct_env[@]}" "$PGBENCH" -h 127.0.0.1 -p "${REF_PORT[$side]}" -U bench) ;;
    esac
    cmd+=(-S -M "$protocol" -c "$CLIENTS" -j "$JOBS" -T "$DURATION" bench)

    log "round $round/$ROUNDS $protocol $side: pgbench -S -M $protocol -c $CLIENTS -j $JOBS -T $DURATION"
    local ticks0=0 t0 t1 rc=0
    if [[ $side != direct ]]; then ticks0=$(proc_ticks "${SIDE_PID[$side]}"); fi
    t0=$(now)
    run_bg "$out" "${cmd[@]}" || rc=$?
    t1=$(now)
    if ((rc != 0)); then
        cat "$out" >&2
        if [[ $side != direct ]]; then echo "---- $side log:" >&2; tail -n 50 "${SIDE_LOG[$side]}" >&2; fi
        die "pgbench ($protocol, $side, round $round) exited with status $rc"
    fi

    local failed
    failed=$(sed -n 's/^number of failed transactions: \([0-9][0-9]*\).*/\1/p' "$out")
    if [[ -n $failed && $failed != 0 ]]; then
        cat "$out" >&2
        die "pgbench ($protocol, $side, round $round) reported $failed failed transactions"
    fi
    RUN_TPS=$(sed -n 's/^tps = \([0-9.][0-9.]*\) (without initial connection time).*/\1/p' "$out")
    RUN_LAT=$(sed -n 's/^latency average = \([0-9.][0-9.]*\) ms.*/\1/p' "$out")
    if [[ -z $RUN_TPS || -z $RUN_LAT ]]; then
        cat "$out" >&2
        die "cannot parse tps / latency from pgbench output ($protocol, $side, round $round)"
    fi
    RUN_CPU=""
    if [[ $side != direct ]]; then
        kill -0 "${SIDE_PID[$side]}" 2>/dev/null || { cat "${SIDE_LOG[$side]}" >&2; die "$side died during the run"; }
        local ticks1
        ticks1=$(proc_ticks "${SIDE_PID[$side]}")
        RUN_CPU=$(awk -v a="$ticks0" -v b="$ticks1" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
            'BEGIN { printf "%.0f", (b - a) / hz / (t1 - t0) * 100 }')
    fi
}

PROTOCOLS=(simple prepared)
for ((round = 1; round <= ROUNDS; round++)); do
    # Rotate the order by one side every round, so that no side always runs first (two sides: alternate).
    shift_by=$(((round - 1) % ${#SIDES[@]}))
    order=("${SIDES[@]:shift_by}" "${SIDES[@]:0:shift_by}")
    for protocol in "${PROTOCOLS[@]}"; do
        pos=0
        for side in "${order[@]}"; do
            pos=$((pos + 1))
            run_one "$round" "$protocol" "$side"
            TPS[$round,$protocol,$side]=$RUN_TPS
            LAT[$round,$protocol,$side]=$RUN_LAT
            CPU[$round,$protocol,$side]=$RUN_CPU
            POS[$round,$protocol,$side]=$pos
        done
    done
done

# ---------------------------------------------------------------- 6. report

echo
echo "== machine"
echo "nproc:      $(nproc)"
echo "cpu:        $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)"
echo "kernel:     $(uname -sr)"
echo "pgbench:    $("$PGBENCH" --version)"
echo "postgres:   $PG_VERSION"
echo "warden:     $("$WARDEN_BIN" --version 2>/dev/null || echo unknown) ($WARDEN_BIN)"
echo "policies:   $(grep -c '^@id(' "$POLICY_FILE") in $POLICY_FILE (shaped like a deployment's; see bench/README.md), identity bench in group bench, read-only"
if [[ -n $BASELINE_BIN ]]; then
    echo "baseline:   $("$BASELINE_BIN" --version 2>/dev/null || echo unknown) ($BASELINE_BIN; $BASELINE_DESC), same configuration"
fi
echo "settings:   SCALE=$SCALE ROUNDS=$ROUNDS DURATION=${DURATION}s CLIENTS=$CLIENTS JOBS=$JOBS UPSTREAM=${UPSTREAM:-tcp}; pgbench -S (select-only), clients over TCP 127.0.0.1, sslmode=disable"
for ref in "${REFS[@]}"; do
    case $ref in
        pgbouncer) how="pool_mode=session, auth_type=scram-sha-256 (plaintext auth_file), default_pool_size=20, max_client_conn=100, no TLS" ;;
        haproxy) how="mode tcp (plain TCP relay), default threads, timeouts connect 5s / client and server 1h" ;;
    esac
    printf '%-12s%s (%s); %s\n' "$ref:" "${REF_VERSION[$ref]:-unknown}" "${REF_BIN[$ref]}" "$how"
done
echo
echo "== runs (ratio = tps / direct tps of the same round and protocol; CPU = the proxy process's CPU time over"
echo "   the run, % of one core; # = position in the round's run order, rotated every round)"
runs_fmt='%-5s  %-8s  %-15s  %2s  %12s  %7s  %10s  %5s\n'
printf "$runs_fmt" round protocol side "#" tps ratio "latency ms" CPU
for ((round = 1; round <= ROUNDS; round++)); do
    for protocol in "${PROTOCOLS[@]}"; do
        d=${TPS[$round,$protocol,direct]}
        for side in "${SIDES[@]}"; do
            t=${TPS[$round,$protocol,$side]}
            if [[ $side == direct ]]; then
                ratio=- cpu=-
            else
                ratio=$(awk -v d="$d" -v t="$t" 'BEGIN { printf "%.3f", t / d }')
                cpu=${CPU[$round,$protocol,$side]}%
            fi
            printf "$runs_fmt" "$round" "$protocol" "$side" "${POS[$round,$protocol,$side]}" \
                "$(printf %.1f "$t")" "$ratio" "$(printf %.3f "${LAT[$round,$protocol,$side]}")" "$cpu"
        done
    done
done

echo
echo "== summary over $ROUNDS round(s) (ratio of means = mean tps / mean direct tps; target applies to warden only)"
if [[ -n $BASELINE_BIN ]]; then
    echo "   (warden/baseline: the ratios are warden tps / warden-baseline tps, the cost of policies)"
fi
sum_fmt='%-8s  %-15s  %12s  %14s  %12s  %8s  %7s\n'
printf "$sum_fmt" protocol side "mean tps" "ratio of means" "median ratio" "mean CPU" target
mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.1f", s / NR }'; }
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
all_met=1
baseline_met=1
for protocol in "${PROTOCOLS[@]}"; do
    directs=()
    for ((round = 1; round <= ROUNDS; round++)); do directs+=("${TPS[$round,$protocol,direct]}"); done
    mean_d=$(mean "${directs[@]}")
    printf "$sum_fmt" "$protocol" direct "$mean_d" - - - -
    for side in "${SIDES[@]:1}"; do
        values=() ratios=() cpus=()
        for ((round = 1; round <= ROUNDS; round++)); do
            values+=("${TPS[$round,$protocol,$side]}")
            ratios+=("$(awk -v d="${TPS[$round,$protocol,direct]}" -v t="${TPS[$round,$protocol,$side]}" 'BEGIN { printf "%.6f", t / d }')")
            cpus+=("${CPU[$round,$protocol,$side]}")
        done
        mean_t=$(mean "${values[@]}")
        ratio_means=$(awk -v d="$mean_d" -v t="$mean_t" 'BEGIN { printf "%.3f", t / d }')
        median=$(median "${ratios[@]}")
        mean_cpu=$(printf '%s\n' "${cpus[@]}" | awk '{ s += $1 } END { printf "%.0f%%", s / NR }')
        met=-
        if [[ $side == warden ]]; then
            if awk -v r="$ratio_means" -v t="$TARGET" 'BEGIN { exit !(r >= t) }'; then met=met; else met="NOT met"; all_met=0; fi
        fi
        printf "$sum_fmt" "$protocol" "$side" "$mean_t" "$ratio_means" "$median" "$mean_cpu" "$met"
        MEAN_TPS[$protocol,$side]=$mean_t
    done
    if [[ -n $BASELINE_BIN ]]; then
        # The cost of policies: warden over the baseline binary, same configuration, same rounds.
        ratios=()
        for ((round = 1; round <= ROUNDS; round++)); do
            ratios+=("$(awk -v b="${TPS[$round,$protocol,warden-baseline]}" -v t="${TPS[$round,$protocol,warden]}" 'BEGIN { printf "%.6f", t / b }')")
        done
        ratio_means=$(awk -v b="${MEAN_TPS[$protocol,warden-baseline]}" -v t="${MEAN_TPS[$protocol,warden]}" 'BEGIN { printf "%.3f", t / b }')
        if awk -v r="$ratio_means" -v t="$BASELINE_TARGET" 'BEGIN { exit !(r >= t) }'; then met=met; else met="NOT met"; baseline_met=0; fi
        printf "$sum_fmt" "$protocol" warden/baseline - "$ratio_means" "$(median "${ratios[@]}")" - "$met"
    fi
done
echo
echo "target: ratio >= $TARGET (warden mean tps / direct mean tps, per protocol)"
if [[ $all_met == 1 ]]; then echo "target met for all protocols"; else echo "target NOT met"; fi
if [[ -n $BASELINE_BIN ]]; then
    echo "policy-cost target: ratio >= $BASELINE_TARGET (warden mean tps / warden-baseline mean tps, per protocol: policies on within 5% of off)"
    if [[ $baseline_met == 1 ]]; then echo "policy-cost target met for all protocols"; else echo "policy-cost target NOT met"; fi
fi
echo
# show_log LABEL FILE: how many lines a gateway logged at WARDEN_LOG=warn, and the last 20.
show_log() {
    local lines
    lines=$(grep -c . "$2" || true)
    if [[ $lines == 0 ]]; then
        echo "$1 (WARDEN_LOG=warn): empty"
    else
        echo "$1 (WARDEN_LOG=warn): $lines line(s); last 20:"
        tail -n 20 "$2"
    fi
}
show_log "gateway log" "$TMP/warden.log"
# pgbench's start-up housekeeping (VACUUM, TRUNCATE) is refused through warden by the policies; pgbench reports it
# and carries on, before the timed part. Shown from one run (every run sends the same).
refused=$(sed -n 's/^.*pgbench: error: ERROR: *//p' "$TMP/pgbench-r1-simple-warden.log" | awk '!seen[$0]++')
if [[ -n $refused ]]; then
    echo "refused through warden at pgbench start-up (pgbench ignores these errors; before the timed part):"
    sed 's/^/  /' <<<"$refused"
fi
if [[ -n $BASELINE_BIN ]]; then
    show_log "baseline gateway log" "$TMP/warden-baseline.log"
fi
for ref in "${REFS[@]}"; do
    # pgbouncer: WARNING/ERROR/FATAL lines; haproxy: [WARNING]/[ALERT] lines (its [NOTICE] lines are routine).
    problems=$(grep -E 'WARNING|ERROR|FATAL|ALERT' "${REF_LOG[$ref]}" || true)
    if [[ -z $problems ]]; then
        echo "$ref log: no warnings or errors"
    else
        echo "$ref log: $(grep -c . <<<"$problems") warning/error line(s); last 20:"
        tail -n 20 <<<"$problems"
    fi
done
