#!/usr/bin/env python3
"""bench/report.py: the number-crunching half of scripts/bench (standard library only).

Subcommands:
  pgbench LABEL CLIENTS STDOUT LOGPREFIX OUT   pgbench's summary + per-transaction log -> JSON
  sweep LOG BENCH_JSON OUT                     `sessionkeeper sweep` JSON log + the Get run -> JSON
  rawsweep LOGPREFIX T0_NS T1_NS WARMUP_S OUT pgbench -R -l log around a sweep -> before/during JSON
  startup READY_JSON SERVER_LOG OUT            wait-ready output + the startup sweep in the log -> JSON
  summary DIR                                  every result in DIR -> summary.json, summary.md, a table

Results are grouped by label; with several rounds (files LABEL.rN.json) the median is used.
"""

import glob
import json
import os
import re
import statistics
import sys

TARGETS = {
    "get_ratio": 0.5,          # Get@16 >= 0.5 x pgbench PK select@16
    "get_c1_p99_ms": 1.0,      # serial Get p99 <= 1 ms
    "get_c16_p99_ms": 3.0,     # Get p99 at 16 in flight <= 3 ms
    "report_ratio": 0.6,       # ReportResult@16 >= 0.6 x pgbench upsert@16
    "sweep_rows_per_s": 300_000,
    "sweep_max_batch_ms": 250.0,
    "sweep_p99_factor": 2.0,   # Get p99 during the sweep <= 2 x before
    "startup_serving_ms": 200.0,
    "rss_flat_pct": 10.0,      # resident size within +-10 %
}


def percentile(sorted_values, q):
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def cmd_pgbench(label, clients, stdout_path, log_prefix, out):
    text = open(stdout_path, encoding="utf-8", errors="replace").read()
    tps = float(re.search(r"tps = ([0-9.]+) \(without initial connection time\)", text).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", text)
    latencies = []
    for path in glob.glob(log_prefix + ".*"):
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    latencies.append(int(parts[2]))
    latencies.sort()
    result = {
        "label": label,
        "tool": "pgbench",
        "concurrency": int(clients),
        "phases": {
            "main": {
                "all": {
                    "ok": len(latencies),
                    "errors": int(failed.group(1)) if failed else 0,
                    "rps": tps,
                    "mean_us": round(statistics.fmean(latencies), 1) if latencies else 0,
                    "p50_us": percentile(latencies, 0.50),
                    "p90_us": percentile(latencies, 0.90),
                    "p99_us": percentile(latencies, 0.99),
                    "p999_us": percentile(latencies, 0.999),
                    "max_us": latencies[-1] if latencies else 0,
                }
            }
        },
    }
    for path in glob.glob(log_prefix + ".*"):
        os.remove(path)
    write_json(out, result)


def json_lines(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    pass


def batches(events):
    return [e for e in events if e.get("message") == "sweep batch"]


def cmd_sweep(log, bench_json, out):
    events = list(json_lines(log))
    rows = batches(events)
    bench = json.load(open(bench_json, encoding="utf-8"))
    during = bench.get("during_cmd", {})
    deleted = sum(int(b["rows"]) for b in rows)
    took = [int(b["took_us"]) for b in rows]
    match = re.search(r"deleted (\d+) expired sessions in ([0-9.]+)(ns|µs|us|ms|s)\b", during.get("stdout_tail", "")
                      + open(log, encoding="utf-8", errors="replace").read())
    sweep_s = None
    if match:
        deleted = int(match.group(1))
        value, unit = float(match.group(2)), match.group(3)
        sweep_s = value * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]
    phases = bench.get("phases", {})
    before = phases.get("main", {}).get("get", {})
    during_get = phases.get("during", {}).get("get", {})
    result = {
        "label": "sweep",
        "deleted": deleted,
        "batches": len(rows),
        "sweep_s": sweep_s,
        "command_wall_s": during.get("wall_s"),
        "rows_per_s": round(deleted / sweep_s) if sweep_s else None,
        "max_batch_ms": round(max(took) / 1000, 3) if took else None,
        "median_batch_ms": round(statistics.median(took) / 1000, 3) if took else None,
        "db_time_s": round(sum(took) / 1e6, 3),
        "get_before": before,
        "get_during": during_get,
        "get_after": phases.get("after", {}).get("get", {}),
        "p99_factor": round(during_get["p99_us"] / before["p99_us"], 2)
        if before.get("p99_us") and during_get.get("p99_us") else None,
    }
    write_json(out, result)


def cmd_rawsweep(log_prefix, t0_ns, t1_ns, warmup_s, out):
    """pgbench -R -l during `sessionkeeper sweep`: PK SELECT latency before vs during the sweep."""
    t0, t1 = int(t0_ns) / 1e9, int(t1_ns) / 1e9
    rows = []
    for path in glob.glob(log_prefix + ".*"):
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 7:
                    continue
                # latency from the scheduled start: time + schedule lag (pgbench --rate)
                rows.append((int(parts[4]) + int(parts[5]) / 1e6, int(parts[2]) + int(parts[6])))
        os.remove(path)
    rows.sort()
    start = rows[0][0] if rows else 0
    before = sorted(lat for t, lat in rows if start + float(warmup_s) <= t < t0)
    during = sorted(lat for t, lat in rows if t0 <= t <= t1)

    def summary(values, seconds):
        return {"ok": len(values), "rps": round(len(values) / seconds, 1) if seconds > 0 else None,
                "p50_us": percentile(values, 0.5), "p99_us": percentile(values, 0.99),
                "p999_us": percentile(values, 0.999), "max_us": values[-1] if values else 0}

    result = {
        "label": "rawsweep",
        "tool": "pgbench",
        "sweep_s": round(t1 - t0, 3),
        "select_before": summary(before, t0 - start - float(warmup_s)),
        "select_during": summary(during, t1 - t0),
    }
    b, d = result["select_before"]["p99_us"], result["select_during"]["p99_us"]
    result["p99_factor"] = round(d / b, 2) if b and d else None
    write_json(out, result)


def cmd_startup(ready_json, server_log, out):
    ready = json.load(open(ready_json, encoding="utf-8"))
    events = list(json_lines(server_log))
    finished = [e for e in events if e.get("message") == "sweep finished" and e.get("trigger") == "startup"]
    took = [int(b["took_us"]) for b in batches(events)]
    result = {
        "label": "startup",
        "listening_ms": ready.get("listening_ms"),
        "serving_ms": ready.get("serving_ms"),
        "startup_sweep_deleted": finished[0].get("deleted") if finished else None,
        "startup_sweep_ms": finished[0].get("took_ms") if finished else None,
        "startup_sweep_max_batch_ms": round(max(took) / 1000, 3) if took else None,
    }
    if result["startup_sweep_deleted"] and result["startup_sweep_ms"]:
        result["startup_sweep_rows_per_s"] = round(result["startup_sweep_deleted"] / (result["startup_sweep_ms"] / 1000))
    write_json(out, result)


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)
        f.write("\n")


def load_runs(directory):
    """label -> list of results (one per round)."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        name = os.path.basename(path)
        if name.startswith("summary") or name.startswith("machine"):
            continue
        label = re.sub(r"\.r\d+$", "", name[: -len(".json")])
        try:
            runs.setdefault(label, []).append(json.load(open(path, encoding="utf-8")))
        except (json.JSONDecodeError, OSError):
            continue
    return runs


def cell(run, phase="main", op="all"):
    return run.get("phases", {}).get(phase, {}).get(op, {})


def med(runs, key, phase="main", op="all"):
    values = [cell(r, phase, op).get(key) for r in runs]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{value:,.0f}" if isinstance(value, (int, float)) else str(value)


def cmd_summary(directory):
    runs = load_runs(directory)
    rows = []
    latency_rows = [
        ("Get, 1 in flight", "svc_get_c1", "pgb_select_c1", "PK SELECT, 1 client"),
        ("Get, 16 in flight", "svc_get_c16", "pgb_select_c16", "PK SELECT, 16 clients"),
        ("ReportResult, 16", "svc_report_c16", "pgb_upsert_c16", "upsert, 16 clients"),
        ("ReportResult (no report_id), 16", "svc_report_noid_c16", "pgb_upsert_c16", "upsert, 16 clients"),
        ("80/20 Get/Report, 16", "svc_mix_c16", "pgb_mix_c16", "80/20 SELECT/upsert, 16"),
        ("(report transaction, 16)", None, "pgb_report_tx_c16", "BEGIN…6 statements…COMMIT, 16"),
        ("embedded: Get, 1", "lite_get_c1", "rawlite_select_c1", "raw SQLite PK SELECT, 1 connection"),
        ("embedded: Get, 16", "lite_get_c16", "rawlite_select_c16", "raw SQLite PK SELECT, 16 connections"),
        ("embedded: ReportResult, 16", "lite_report_c16", "rawlite_upsert_c16",
         "raw SQLite upsert (own transaction each), 16 connections"),
    ]
    md = ["| measurement | rps | p50 ms | p99 ms | p99.9 ms | errors | raw baseline | baseline tps | baseline p99 ms | ratio |",
          "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    summary = {"runs": {}}
    for title, svc, pgb, pgb_title in latency_rows:
        s = runs.get(svc, []) if svc else []
        p = runs.get(pgb, []) if pgb else []
        if not s and not p:
            continue
        rps = med(s, "rps")
        base = med(p, "rps")
        ratio = rps / base if rps and base else None
        p50, p99, p999 = med(s, "p50_us"), med(s, "p99_us"), med(s, "p999_us")
        errors = sum(cell(r).get("errors", 0) for r in s)
        entry = {
            "rps": rps, "p50_ms": p50 / 1000 if p50 else None, "p99_ms": p99 / 1000 if p99 else None,
            "p999_ms": p999 / 1000 if p999 else None, "errors": errors, "rounds": len(s),
            "baseline": pgb, "baseline_tps": base,
            "baseline_p99_ms": (med(p, "p99_us") or 0) / 1000 if p else None,
            "ratio": round(ratio, 3) if ratio else None,
        }
        summary["runs"][svc or pgb] = entry
        md.append(
            f"| {title} | {fmt(rps)} | {fmt(entry['p50_ms'], 3)} | {fmt(entry['p99_ms'], 3)} | "
            f"{fmt(entry['p999_ms'], 3)} | {errors if s else '-'} | {pgb_title or '-'} | {fmt(base)} | "
            f"{fmt(entry['baseline_p99_ms'], 3)} | {fmt(entry['ratio'], 2)} |")

    sweep = (runs.get("sweep") or [None])[0]
    rawsweep = (runs.get("rawsweep") or [None])[0]
    startup = (runs.get("startup") or [None])[0]
    memory = (runs.get("svc_memory_mix_c16") or [None])[0]
    mem = None
    if memory and memory.get("rss"):
        samples = [s for s in memory["rss"]["samples"] if s["phase"] == "main"]
        if samples:
            kbs = [s["rss_kb"] for s in samples]
            first = kbs[0]
            mem = {
                "samples": len(kbs), "first_mb": round(first / 1024, 1), "min_mb": round(min(kbs) / 1024, 1),
                "max_mb": round(max(kbs) / 1024, 1), "last_mb": round(kbs[-1] / 1024, 1),
                "max_deviation_pct": round(max(abs(k - first) for k in kbs) / first * 100, 1),
                "duration_s": memory.get("duration_s"), "rps": cell(memory).get("rps"),
                "errors": cell(memory).get("errors"),
            }
    summary.update({"sweep": sweep, "rawsweep": rawsweep, "startup": startup, "memory": mem})

    get1 = summary["runs"].get("svc_get_c1", {})
    get16 = summary["runs"].get("svc_get_c16", {})
    rep16 = summary["runs"].get("svc_report_c16", {})
    checks = [
        ("Get@16 / pgbench select@16", get16.get("ratio"), ">=", TARGETS["get_ratio"], 2),
        ("serial Get p99 (ms)", get1.get("p99_ms"), "<=", TARGETS["get_c1_p99_ms"], 3),
        ("Get p99 @16 (ms)", get16.get("p99_ms"), "<=", TARGETS["get_c16_p99_ms"], 3),
        ("ReportResult@16 / pgbench upsert@16", rep16.get("ratio"), ">=", TARGETS["report_ratio"], 2),
        ("sweep rows/s", sweep and sweep.get("rows_per_s"), ">=", TARGETS["sweep_rows_per_s"], 0),
        ("longest sweep batch (ms)", sweep and sweep.get("max_batch_ms"), "<=", TARGETS["sweep_max_batch_ms"], 1),
        ("Get p99 during / before sweep", sweep and sweep.get("p99_factor"), "<=", TARGETS["sweep_p99_factor"], 2),
        ("startup to SERVING (ms)", startup and startup.get("serving_ms"), "<=", TARGETS["startup_serving_ms"], 1),
        ("RSS max deviation (%)", mem and mem.get("max_deviation_pct"), "<=", TARGETS["rss_flat_pct"], 1),
    ]
    summary["targets"] = []
    md += ["", "| target | measured | goal | met |", "|---|---:|---:|---|"]
    for name, value, op, goal, digits in checks:
        met = None if value is None else (value >= goal if op == ">=" else value <= goal)
        summary["targets"].append({"target": name, "measured": value, "goal": f"{op} {goal}", "met": met})
        md.append(f"| {name} | {fmt(value, digits)} | {op} {goal} | {'-' if met is None else ('yes' if met else '**MISSED**')} |")

    extra = []
    if sweep:
        extra.append(
            f"sweep: {fmt(sweep.get('deleted'))} rows in {fmt(sweep.get('sweep_s'), 2)} s = "
            f"{fmt(sweep.get('rows_per_s'))} rows/s, {sweep.get('batches')} batches, longest "
            f"{fmt(sweep.get('max_batch_ms'), 1)} ms (median {fmt(sweep.get('median_batch_ms'), 1)} ms); "
            f"Get p99 {fmt((sweep.get('get_before') or {}).get('p99_us', 0) / 1000, 3)} ms before, "
            f"{fmt((sweep.get('get_during') or {}).get('p99_us', 0) / 1000, 3)} ms during "
            f"(x{fmt(sweep.get('p99_factor'), 2)}), "
            f"{fmt((sweep.get('get_during') or {}).get('errors'))} errors during")
    if rawsweep:
        extra.append(
            f"raw baseline of the same sweep: pgbench PK SELECT at the same rate, p99 "
            f"{fmt(rawsweep['select_before']['p99_us'] / 1000, 3)} ms before, "
            f"{fmt(rawsweep['select_during']['p99_us'] / 1000, 3)} ms during (x{fmt(rawsweep.get('p99_factor'), 2)})")
    if startup:
        extra.append(
            f"startup: listening after {fmt(startup.get('listening_ms'), 1)} ms, SERVING after "
            f"{fmt(startup.get('serving_ms'), 1)} ms; the startup sweep deleted "
            f"{fmt(startup.get('startup_sweep_deleted'))} rows in {fmt(startup.get('startup_sweep_ms'))} ms behind it")
    if mem:
        extra.append(
            f"memory: VmRSS over {mem['samples']} samples: first {mem['first_mb']} MiB, min {mem['min_mb']}, "
            f"max {mem['max_mb']}, last {mem['last_mb']} (max deviation {mem['max_deviation_pct']} %) "
            f"at {fmt(mem['rps'])} calls/s")
    md += [""] + [f"- {line}" for line in extra]
    write_json(os.path.join(directory, "summary.json"), summary)
    with open(os.path.join(directory, "summary.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    command, args = argv[1], argv[2:]
    {"pgbench": cmd_pgbench, "sweep": cmd_sweep, "rawsweep": cmd_rawsweep, "startup": cmd_startup,
     "summary": cmd_summary}[command](*args)


if __name__ == "__main__":
    main(sys.argv)
