# Sweep under Get traffic (2000/s open loop): pause between batches vs p99 during/before.
source /tmp/exp/env.sh
SCR=/tmp/sk-exp/target/release
sweeptraffic() { # name env...
    local name=$1; shift
    psql_bench -v rows=1000000 -f "$ROOT/bench/expired-rows.sql" >/dev/null
    local cmd="env $* RUST_LOG=info,sqlx=warn,sessionkeeper::sweeper=debug DATABASE_URL='$PG_URL' '$SCR/sessionkeeper' sweep --log-format json > '$OUT/sweep-$name.log' 2>&1"
    "$BIN/sessionkeeper-bench" run --target "http://127.0.0.1:$GRPC_PORT" --keys "$KEYS" --connections 2 --mix get=100 \
        --concurrency 16 --rate 2000 --warmup 3s --duration 10s --during-cmd "$cmd" --after 3s --json --out "$OUT/sweep_get-$name.json" >/dev/null
    python3 "$ROOT/bench/report.py" sweep "$OUT/sweep-$name.log" "$OUT/sweep_get-$name.json" "$OUT/sweep-$name.json"
    echo "$name ($*): $(jq -c '{rows_per_s, max_batch_ms, p99_before: .get_before.p99_us, p99_during: .get_during.p99_us, p99_factor}' "$OUT/sweep-$name.json") load $(cut -d' ' -f1 /proc/loadavg)"
}
for round in 1 2; do
sweeptraffic pause2ms SK_EXP_SWEEP_PAUSE_US=2000
sweeptraffic pause5ms SK_EXP_SWEEP_PAUSE_US=5000
sweeptraffic pause10ms SK_EXP_SWEEP_PAUSE_US=10000
sweeptraffic b2000-p4ms SK_EXP_SWEEP_BATCH=2000 SK_EXP_SWEEP_PAUSE_US=4000
done
