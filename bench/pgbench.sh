#!/usr/bin/env bash
# bench/pgbench.sh: pgbench select-only throughput, directly against PostgreSQL vs through warden.
#
# Builds the release binary, starts a throwaway PostgreSQL 15 (system binaries) and a warden gateway in
# front of it, then runs `pgbench -S` in alternating rounds (direct / through warden, the order swapped
# every round to cancel drift) for the simple and prepared query protocols, and prints a table, a
# per-protocol summary and whether the target (warden TPS / direct TPS >= 0.85) is met.
# Everything (PostgreSQL, the gateway, the temporary directory) is removed on exit, including Ctrl-C.
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

for var in SCALE ROUNDS DURATION CLIENTS JOBS; do
    if ! [[ ${!var} =~ ^[1-9][0-9]*$ ]]; then
        echo "error: $var must be a positive integer (got '${!var}')" >&2
        exit 2
    fi
done

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
PGBENCH_PID=""

as_pg() {
    # initdb and pg_ctl refuse to run as root.
    if [[ $(id -u) == 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

cleanup() {
    local status=$?
    trap '' INT TERM
    set +e
    if [[ -n $PGBENCH_PID ]] && kill -0 "$PGBENCH_PID" 2>/dev/null; then
        kill -TERM "$PGBENCH_PID" 2>/dev/null
        wait "$PGBENCH_PID" 2>/dev/null
    fi
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
    if [[ $PG_STARTED == 1 ]]; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >/dev/null 2>&1 ||
            log "pg_ctl stop failed (server already gone?)"
    fi
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

# ---------------------------------------------------------------- 4. warden gateway

GW_PORT=$(free_port)
while [[ $GW_PORT == "$PG_PORT" ]]; do GW_PORT=$(free_port); done
API_KEY_SHA=$(printf %s "$API_KEY" | sha256sum | cut -d' ' -f1)

case ${UPSTREAM:-tcp} in
    tcp) UPSTREAM_ADDRESS="127.0.0.1:$PG_PORT" ;;
    unix) UPSTREAM_ADDRESS="$PG_DIR/.s.PGSQL.$PG_PORT" ;;
    *) die "UPSTREAM must be tcp or unix, not ${UPSTREAM}" ;;
esac
printf %s "$BENCH_PW" >"$TMP/bench.password"
chmod 600 "$TMP/bench.password"
cat >"$TMP/warden.toml" <<EOF
# Written by bench/pgbench.sh.
[state]
url = "sqlite://warden-data/warden.db"

[listen]
postgres = "127.0.0.1:$GW_PORT"

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
EOF

log "starting warden gateway on 127.0.0.1:$GW_PORT"
WARDEN_LOG=warn "$WARDEN_BIN" gateway --config "$TMP/warden.toml" </dev/null >"$TMP/warden.stdout" 2>"$TMP/warden.log" &
GW_PID=$!

warden_env=(env PGPASSWORD="$API_KEY" PGSSLMODE=disable)
warden_conn=(-h 127.0.0.1 -p "$GW_PORT" -U bench-client)

ready=0
deadline=$((SECONDS + 20))
while ((SECONDS < deadline)); do
    if ! kill -0 "$GW_PID" 2>/dev/null; then
        break
    fi
    if "${warden_env[@]}" PGCONNECT_TIMEOUT=2 "$PSQL" -X -q -At "${warden_conn[@]}" -d bench -c 'select 1' \
        >/dev/null 2>"$TMP/ready.err"; then
        ready=1
        break
    fi
    sleep 0.2
done
if [[ $ready != 1 ]]; then
    echo "---- last psql error:" >&2
    cat "$TMP/ready.err" >&2 || true
    echo "---- gateway log ($TMP/warden.log):" >&2
    cat "$TMP/warden.log" "$TMP/warden.stdout" >&2 || true
    if kill -0 "$GW_PID" 2>/dev/null; then
        die "the gateway did not accept a query within 20 s"
    else
        wait "$GW_PID" || true
        GW_PID=""
        die "the gateway exited during start-up"
    fi
fi
log "gateway is up"

# ---------------------------------------------------------------- 5. rounds

CLK_TCK=$(getconf CLK_TCK)
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
now() { date +%s.%N; }

declare -A TPS LAT CPU
RUN_TPS=""
RUN_LAT=""
RUN_CPU=""

# run_one ROUND PROTOCOL SIDE: sets RUN_TPS, RUN_LAT and (through warden) RUN_CPU, the gateway's CPU use
# over the run as a percentage of one core.
run_one() {
    local round=$1 protocol=$2 side=$3
    local out=$TMP/pgbench-r$round-$protocol-$side.log
    local -a cmd
    if [[ $side == direct ]]; then
        cmd=("${direct_env[@]}" "$PGBENCH" "${direct_conn[@]}")
    else
        cmd=("${warden_env[@]}" "$PGBENCH" "${warden_conn[@]}")
    fi
    cmd+=(-S -M "$protocol" -c "$CLIENTS" -j "$JOBS" -T "$DURATION" bench)

    log "round $round/$ROUNDS $protocol $side: pgbench -S -M $protocol -c $CLIENTS -j $JOBS -T $DURATION"
    local ticks0=0 t0 t1 rc=0
    if [[ $side == warden ]]; then ticks0=$(proc_ticks "$GW_PID"); fi
    t0=$(now)
    run_bg "$out" "${cmd[@]}" || rc=$?
    t1=$(now)
    if ((rc != 0)); then
        cat "$out" >&2
        if [[ $side == warden ]]; then echo "---- gateway log:" >&2; tail -n 50 "$TMP/warden.log" >&2; fi
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
    if [[ $side == warden ]]; then
        kill -0 "$GW_PID" 2>/dev/null || { cat "$TMP/warden.log" >&2; die "the gateway died during the run"; }
        local ticks1
        ticks1=$(proc_ticks "$GW_PID")
        RUN_CPU=$(awk -v a="$ticks0" -v b="$ticks1" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
            'BEGIN { printf "%.0f", (b - a) / hz / (t1 - t0) * 100 }')
    fi
}

PROTOCOLS=(simple prepared)
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2 == 1)); then order=(direct warden); else order=(warden direct); fi
    for protocol in "${PROTOCOLS[@]}"; do
        for side in "${order[@]}"; do
            run_one "$round" "$protocol" "$side"
            TPS[$round,$protocol,$side]=$RUN_TPS
            LAT[$round,$protocol,$side]=$RUN_LAT
            if [[ $side == warden ]]; then CPU[$round,$protocol]=$RUN_CPU; fi
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
echo "settings:   SCALE=$SCALE ROUNDS=$ROUNDS DURATION=${DURATION}s CLIENTS=$CLIENTS JOBS=$JOBS UPSTREAM=${UPSTREAM:-tcp}; pgbench -S (select-only), clients over TCP 127.0.0.1, sslmode=disable"
echo
echo "== runs (warden CPU = gateway process CPU time over the run, % of one core)"
printf '%-5s  %-8s  %12s  %12s  %7s  %11s  %11s  %10s\n' \
    round protocol "direct tps" "warden tps" ratio "direct ms" "warden ms" "warden CPU"
for ((round = 1; round <= ROUNDS; round++)); do
    for protocol in "${PROTOCOLS[@]}"; do
        d=${TPS[$round,$protocol,direct]}
        w=${TPS[$round,$protocol,warden]}
        printf '%-5s  %-8s  %12.1f  %12.1f  %7.3f  %11.3f  %11.3f  %9s%%\n' \
            "$round" "$protocol" "$d" "$w" "$(awk -v d="$d" -v w="$w" 'BEGIN { print w / d }')" \
            "${LAT[$round,$protocol,direct]}" "${LAT[$round,$protocol,warden]}" "${CPU[$round,$protocol]}"
    done
done

echo
echo "== summary over $ROUNDS round(s)"
printf '%-8s  %16s  %16s  %14s  %12s  %7s\n' protocol "mean direct tps" "mean warden tps" "ratio of means" "median ratio" target
all_met=1
for protocol in "${PROTOCOLS[@]}"; do
    directs=() wardens=() ratios=()
    for ((round = 1; round <= ROUNDS; round++)); do
        directs+=("${TPS[$round,$protocol,direct]}")
        wardens+=("${TPS[$round,$protocol,warden]}")
        ratios+=("$(awk -v d="${TPS[$round,$protocol,direct]}" -v w="${TPS[$round,$protocol,warden]}" 'BEGIN { printf "%.6f", w / d }')")
    done
    mean_d=$(printf '%s\n' "${directs[@]}" | awk '{ s += $1 } END { printf "%.1f", s / NR }')
    mean_w=$(printf '%s\n' "${wardens[@]}" | awk '{ s += $1 } END { printf "%.1f", s / NR }')
    ratio_means=$(awk -v d="$mean_d" -v w="$mean_w" 'BEGIN { printf "%.3f", w / d }')
    median=$(printf '%s\n' "${ratios[@]}" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    if awk -v r="$ratio_means" -v t="$TARGET" 'BEGIN { exit !(r >= t) }'; then met=met; else met="NOT met"; all_met=0; fi
    printf '%-8s  %16s  %16s  %14s  %12s  %7s\n' "$protocol" "$mean_d" "$mean_w" "$ratio_means" "$median" "$met"
done
echo
echo "target: ratio >= $TARGET (warden mean tps / direct mean tps, per protocol)"
if [[ $all_met == 1 ]]; then echo "target met for all protocols"; else echo "target NOT met"; fi

echo
gw_lines=$(grep -c . "$TMP/warden.log" || true)
if [[ $gw_lines == 0 ]]; then
    echo "gateway log (WARDEN_LOG=warn): empty"
else
    echo "gateway log (WARDEN_LOG=warn): $gw_lines line(s); last 20:"
    tail -n 20 "$TMP/warden.log"
fi
