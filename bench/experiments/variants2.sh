source /tmp/exp/env.sh
DURATION=${DUR:-10}; WARMUP=3
MAINBIN=$BIN
SCR=/tmp/sk-exp/target/release
suite() {
    q "$1 get1" --mix get=100 --concurrency 1 --connections 1
    q "$1 get16" --mix get=100 --concurrency 16 --connections 2
    q "$1 report16" --mix report=100 --concurrency 16 --connections 2
}
variant() { # name bin filter env...
    local name=$1 bin=$2 filter=$3; shift 3
    stop_server
    BIN=$bin
    for kv in "$@"; do export "$kv"; done
    SERVER_LOG_FILTER=$filter start_server "$name" --database-url "$PG_URL" >/dev/null 2>&1
    BIN=$MAINBIN
    echo "--- $name ($filter $*) load: $(cut -d' ' -f1-3 /proc/loadavg)"
    suite "$name"
    for kv in "$@"; do unset "${kv%%=*}"; done
}
INFO=info,sqlx=warn
NOOBS=$INFO,sessionkeeper::server::observe=warn
NOSPANS=$NOOBS,sessionkeeper::service=warn
if [[ ${PART:-all} != sweep ]]; then
for round in 1 2; do
  variant base "$MAINBIN" "$INFO"
  variant no-rpc-span "$MAINBIN" "$NOOBS"
  variant no-spans "$MAINBIN" "$NOSPANS"
  variant warn "$MAINBIN" warn
  variant all-fixes "$SCR" "$NOSPANS" SK_EXP_PING=never SK_EXP_REPORT_FAST=1
done
fi
stop_server
sweepv() { # name bin env...
    local name=$1 bin=$2; shift 2
    psql_bench -v rows=1000000 -f "$ROOT/bench/expired-rows.sql" >/dev/null
    env "$@" RUST_LOG=info,sqlx=warn,sessionkeeper::sweeper=debug DATABASE_URL="$PG_URL" "$bin/sessionkeeper" sweep --log-format json > "$OUT/sweep-$name.log" 2>&1
    echo "sweep $name ($*): $(grep -o 'deleted [0-9]* expired sessions in [^ ]*' "$OUT/sweep-$name.log") max_batch_us=$(grep '"sweep batch"' "$OUT/sweep-$name.log" | jq -s 'map(.took_us)|max') batches=$(grep -c '"sweep batch"' "$OUT/sweep-$name.log")"
}
sweepv base "$MAINBIN"
sweepv pause0 "$SCR" SK_EXP_SWEEP_PAUSE_US=0
sweepv nolock "$SCR" SK_EXP_SWEEP_NOLOCK=1
sweepv nolock-10k "$SCR" SK_EXP_SWEEP_NOLOCK=1 SK_EXP_SWEEP_BATCH=10000
sweepv base-again "$MAINBIN"
