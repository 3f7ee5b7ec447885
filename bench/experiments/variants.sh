source /tmp/exp/env.sh
DURATION=${DUR:-10}; WARMUP=3
MAINBIN=$BIN
pgq() { # label clients script
    pgbench -h 127.0.0.1 -p "$PG_PORT" -U postgres -n -M prepared -D "keys=$KEYS" -c "$2" -j 2 -T "$DURATION" -f "$ROOT/bench/$3" "$DB" 2>/dev/null | awk -v l="$1" '/^tps/ {print l": tps="$3} /latency average/ {print l": avg_ms="$4}'
}
suite() {
    q "$1 get1" --mix get=100 --concurrency 1 --connections 1
    q "$1 get16" --mix get=100 --concurrency 16 --connections 2
    q "$1 report16" --mix report=100 --concurrency 16 --connections 2
    q "$1 report16-noid" --mix report=100 --concurrency 16 --connections 2 --no-report-id
    q "$1 mix16" --mix get=80,report=20 --concurrency 16 --connections 2
}
variant() { # name bin env...
    local name=$1 bin=$2; shift 2
    stop_server
    BIN=$bin
    env "$@" bash -c true
    for kv in "$@"; do export "$kv"; done
    start_server "$name" --database-url "$PG_URL" >/dev/null 2>&1
    BIN=$MAINBIN
    echo "--- $name ($* ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
    suite "$name"
    for kv in "$@"; do unset "${kv%%=*}"; done
}
echo "load: $(cat /proc/loadavg)"
pgq pgb-select16 16 pgbench-select.sql
pgq pgb-upsert16 16 pgbench-upsert.sql
for v in ${VARIANTS:-base never idle fast warn text w1}; do
  case $v in
    base) variant base "$MAINBIN" ;;
    never) variant ping-never /tmp/sk-exp/target/release SK_EXP_PING=never ;;
    idle) variant ping-idle /tmp/sk-exp/target/release SK_EXP_PING=idle ;;
    fast) variant fast+never /tmp/sk-exp/target/release SK_EXP_PING=never SK_EXP_REPORT_FAST=1 ;;
    warn) SERVER_LOG_FILTER=warn variant log-warn "$MAINBIN" ;;
    text) BENCH_LOG_FORMAT=text variant log-text "$MAINBIN" ;;
    w1) variant workers1 "$MAINBIN" TOKIO_WORKER_THREADS=1 ;;
    all) SERVER_LOG_FILTER=warn variant all-fixes /tmp/sk-exp/target/release SK_EXP_PING=never SK_EXP_REPORT_FAST=1 ;;
  esac
done
pgq pgb-select16 16 pgbench-select.sql
pgq pgb-upsert16 16 pgbench-upsert.sql
echo "load: $(cat /proc/loadavg)"
