source /tmp/exp/env.sh
DURATION=14; WARMUP=2
q get16 --mix get=100 --concurrency 16 --connections 2 &
QP=$!
sleep 5
perf record -p "$SERVER_PID" --call-graph dwarf,16384 -F 299 -o /tmp/exp/srv-dwarf.data -- sleep 4 >/dev/null 2>&1
wait $QP
