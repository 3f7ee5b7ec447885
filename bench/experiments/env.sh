# Experiment harness: source scripts/bench, start a cluster + server, then run $@ pieces.
source /work/main/scripts/bench
OUT=/tmp/exp/out-$(date +%H%M%S)
mkdir -p "$OUT"
trap on_exit EXIT
start_bench_cluster
"$BIN/sessionkeeper" migrate --database-url "$PG_URL" >/dev/null
start_server main --database-url "$PG_URL"
"$BIN/sessionkeeper-bench" run --target "http://127.0.0.1:$GRPC_PORT" --keys "$KEYS" --seed "$KEYS" --seed-only --concurrency 16
psql_bench -v keys="$KEYS" -f "$ROOT/bench/schema.sql" >/dev/null
# q LABEL ARGS: a quiet bench run printing one summary line
q() {
    local label=$1; shift
    "$BIN/sessionkeeper-bench" run --target "http://127.0.0.1:$GRPC_PORT" --keys "$KEYS" --json \
        --duration "${DURATION}s" --warmup "${WARMUP}s" --label "$label" "$@" |
        jq -r --arg l "$label" '.phases.main.all | "\($l): rps=\(.rps|floor) p50=\(.p50_us) p99=\(.p99_us) p999=\(.p999_us) err=\(.errors)"'
}
