# Raw database: pgbench PK SELECT at 2000/s (16 clients) before and during the same batched sweep.
source /tmp/exp/env.sh
stop_server
for round in 1 2; do
psql_bench -v rows=1000000 -f "$ROOT/bench/expired-rows.sql" >/dev/null
rm -f "$OUT"/raw.log*
(cd "$OUT" && pgbench -h 127.0.0.1 -p "$PG_PORT" -U postgres -n -M prepared -D keys=10000 -c 16 -j 2 -R 2000 -T 22 \
    -l --log-prefix="$OUT/raw.log" -f "$ROOT/bench/pgbench-select.sql" "$DB" >/dev/null 2>&1) &
PGB=$!
sleep 13
t0=$(date +%s%N)
RUST_LOG=info,sqlx=warn DATABASE_URL="$PG_URL" "$BIN/sessionkeeper" sweep --log-format json >"$OUT/rawsweep.log" 2>&1
t1=$(date +%s%N)
wait $PGB
python3 - "$OUT" "$t0" "$t1" <<'PY'
import glob,sys
out,t0,t1=sys.argv[1],int(sys.argv[2])/1e9,int(sys.argv[3])/1e9
before,during=[],[]
start=None
rows=[]
for p in glob.glob(out+"/raw.log*"):
    for line in open(p):
        f=line.split()
        if len(f)<7: continue
        lat=int(f[2])+int(f[6]) # time + schedule lag
        t=int(f[4])+int(f[5])/1e6
        rows.append((t,lat))
rows.sort()
first=rows[0][0]
for t,lat in rows:
    if t<first+3: continue  # warm-up
    if t<t0: before.append(lat)
    elif t<=t1: during.append(lat)
def p99(v):
    v=sorted(v); return v[int(len(v)*0.99)-1] if v else 0
print(f"raw pgbench select @2000/s: before n={len(before)} p99={p99(before)}us; during ({t1-t0:.2f}s) n={len(during)} p99={p99(during)}us; factor={p99(during)/max(1,p99(before)):.2f}")
PY
grep -o 'deleted [0-9]* expired sessions in [^ ]*' "$OUT/rawsweep.log"
done
