source /tmp/exp/env.sh
DURATION=15; WARMUP=3
uptime
q get16 --mix get=100 --concurrency 16 --connections 2 &
sleep 5
perf record -a -F 499 -o /tmp/exp/get16.data -- sleep 8 2>/dev/null >/dev/null
wait
perf report -i /tmp/exp/get16.data --sort comm --stdio 2>/dev/null | grep -v "^#" | grep -v "^$" | head -20
