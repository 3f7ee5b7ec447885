#!/usr/bin/env python3
"""bench/report.py: the number-crunching half of scripts/bench (standard library only).

Subcommands:
  pgbench LABEL CLIENTS STDOUT LOGPREFIX OUT   pgbench's summary + per-transaction log -> JSON
  sweep LOG BENCH_JSON OUT                     `sessionkeeper sweep` JSON log + the Get run -> JSON
  rawsweep LOGPREFIX T0_NS T1_NS WARMUP_S OUT pgbench -R -l log around a sweep -> before/during JSON
  startup READY_JSON SERVER_LOG OUT            wait-ready output + the startup sweep in the log -> JSON
  profile LABEL BENCH_JSON PERF_SCRIPT OUT     `perf script -F comm,tid,ip,sym,dso` (call graphs) of the
                                               server -> where its CPU goes, per call, grouped (JSON + table)
  summary DIR                                  every result in DIR -> summary.json, summary.md, a table

Results are grouped by label; with several rounds (files LABEL.rN.json) the median is used.
"""

import collections
import glob
import gzip
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


# ------------------------------------------------------------------------------------- profile

# Where a sample's CPU goes, by the crate of the innermost frame that says (generic frames of
# core/alloc/std, and the runtime's own poll machinery, defer to their callers). Kernel and
# malloc/free leaves are their own groups, split by the system call and by who made it or the
# allocation: the first crate above them that is not the runtime's I/O plumbing (tokio, mio).
# The second view charges those samples to that initiator's group instead.
GROUPS = [
    ("Postgres wire / sqlx (incl. the pool's return-to-pool Sync)",
     {"sqlx", "sqlx_core", "sqlx_postgres"}),
    ("HTTP/2 + tonic + prost", {"h2", "hyper", "hyper_util", "tonic", "tonic_prost", "prost", "http",
                                "http_body", "http_body_util", "tower", "tower_layer", "tower_service",
                                "bytes", "tonic_health", "tokio_stream", "tokio_util", "axum", "matchit"}),
    ("tracing / spans", {"tracing", "tracing_core", "tracing_subscriber", "tracing_opentelemetry",
                         "opentelemetry", "opentelemetry_sdk", "sharded_slab", "thread_local", "tracing_serde"}),
    ("tokio runtime (scheduling, timers, epoll)", {"tokio", "mio", "parking_lot", "parking_lot_core"}),
    ("sessionkeeper (service, domain, metrics)", {"sessionkeeper", "prometheus", "chrono", "sha2", "subtle",
                                                  "fastrand"}),
]
CRATE_GROUP = {crate: name for name, crates in GROUPS for crate in crates}
# serde_json defers too: its caller is the JSON log formatter (tracing) or the service.
GENERIC_CRATES = {"core", "alloc", "std", "hashbrown", "futures_util", "futures_core", "pin_project_lite",
                  "smallvec", "memchr", "indexmap", "serde", "serde_core", "serde_json", "itoa", "ryu"}
ALLOC_SYMBOLS = re.compile(r"^(__libc_)?(malloc|free|realloc|calloc|cfree|_int_malloc|_int_free\w*|_int_realloc|"
                           r"malloc_consolidate|unlink_chunk\S*|tcache_\w+|__rust_alloc\w*|__rust_dealloc|"
                           r"__rust_realloc|__rdl_\w+|__GI___libc_(malloc|free|realloc))\b")
# Frames a sample passes through: shares of all samples (inclusive; a sample counts once per
# marker). Only frames that do work of their own: hyper, tonic, the service and tracing's
# `Instrumented` wrap every call's future, so "any frame of them" would say nothing.
MARKERS = [
    ("sqlx: a connection's return to the pool (the Sync round trip)", re.compile(r"return_to_pool")),
    ("sqlx: any frame (statements, round trips, pool)", re.compile(r"\bsqlx_(core|postgres)::")),
    ("h2: frame encoding and flow control", re.compile(r"^<?h2::(codec|frame|hpack|proto::streams)")),
    ("prost: encode / decode", re.compile(r"\bprost::|::encode_raw|::merge_field")),
    ("tracing: spans and events, not the Instrumented wrapper",
     re.compile(r"^<?&?tracing(_core|_subscriber|_opentelemetry)?::(?!instrument::Instrumented)")),
    ("kernel: any frame", None),
]


def crate_of(symbol):
    """The crate a demangled Rust symbol belongs to: `<a::B as c::D>::f` -> a; None when unknown."""
    text = symbol.lstrip("<&*")
    text = re.sub(r"^(mut |const |dyn )", "", text)
    match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", text)
    return match.group(1) if match else None


def named_crates(symbol):
    return re.findall(r"(?<![A-Za-z0-9_])([a-z_][a-z0-9_]*)::", symbol)


def frame_owner(symbol):
    """The group-deciding crate of one frame, or None to defer to the caller."""
    crate = crate_of(symbol)
    if crate in CRATE_GROUP:
        # The runtime polling a task defers to the task's future when the symbol names it.
        if crate == "tokio" and re.search(r"::(poll|run|block_on)\b", symbol):
            inner = [c for c in named_crates(symbol)[1:] if c in CRATE_GROUP and c != "tokio"]
            return inner[0] if inner else crate
        return crate
    if crate in GENERIC_CRATES or crate is None:
        # drop_in_place<sqlx_core::…>, Vec<h2::…>::push: the first named crate that has a group.
        inner = [c for c in named_crates(symbol) if c in CRATE_GROUP]
        return inner[0] if inner else None
    return crate


def perf_samples(lines):
    """(comm, [(symbol, dso), …] innermost first) per sample of `perf script` output."""
    frame = re.compile(r"^\s+([0-9a-f]+)\s+(.*?)\s+\(([^()]*)\)\s*$")
    comm, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if comm is not None and frames:
                yield comm, frames
            comm, frames = None, []
            continue
        match = frame.match(line)
        if match and comm is not None:
            frames.append((re.sub(r"\+0x[0-9a-f]+$", "", match.group(2)), match.group(3)))
        elif not line.startswith((" ", "\t")):
            if comm is not None and frames:
                yield comm, frames
            comm, frames = line.split()[0] if line.split() else "?", []
    if comm is not None and frames:
        yield comm, frames


RUNTIME_CRATES = {"tokio", "mio", "parking_lot", "parking_lot_core"}
KERNEL_GROUP = "kernel (system calls, loopback TCP, scheduling)"
ALLOC_GROUP = "allocation (malloc/free)"
SHORT = {name: name.split(" (")[0] for name, _ in GROUPS}


def is_kernel(symbol, dso):
    return "kernel.kallsyms" in dso or dso.startswith("[kernel") or dso == "[vdso]"


def native(symbol, dso):
    return is_kernel(symbol, dso) or "libc" in dso or "ld-linux" in dso


def system_call(frames):
    """The system call a kernel sample is in (named by the libc wrapper that made it), or what
    else the kernel was doing (an interrupt, the scheduler)."""
    kernel = [sym for sym, dso in frames if is_kernel(sym, dso)]
    if any(sym.startswith(("entry_SYSCALL", "do_syscall")) for sym in kernel):
        for symbol, dso in frames:
            if is_kernel(symbol, dso):
                match = re.match(r"__(?:x64|ia32)_sys_(\w+)", symbol)
                if match:
                    return match.group(1)
                continue
            return re.sub(r"^(__GI___libc_|__libc_|__GI___|__)", "", symbol).split("@")[0] or "syscall"
        return "syscall"
    if any("irq" in sym or sym.startswith("asm_sysvec") for sym in kernel):
        return "interrupts"
    return "scheduling / other"


def classify(frames):
    """(group, detail, group charged) of one sample."""
    leaf_symbol, leaf_dso = frames[0]
    owners = [frame_owner(symbol) for symbol, dso in frames if not native(symbol, dso)]
    owners = [o for o in owners if o]
    rust_owner = owners[0] if owners else None
    initiator = next((o for o in owners if o not in RUNTIME_CRATES), rust_owner)
    charged = CRATE_GROUP.get(initiator, "other")
    if is_kernel(leaf_symbol, leaf_dso):
        return KERNEL_GROUP, f"{system_call(frames)} from {SHORT.get(charged, charged)}", charged
    if ALLOC_SYMBOLS.match(leaf_symbol) or any(ALLOC_SYMBOLS.match(s) for s, _ in frames[:3]):
        return ALLOC_GROUP, "for " + SHORT.get(charged, charged), charged
    if "libc" in leaf_dso and rust_owner is None:
        return "libc (memcpy, …)", leaf_symbol, "other"
    if rust_owner is None:
        return "other", leaf_symbol if leaf_symbol != "[unknown]" else leaf_dso, "other"
    group = CRATE_GROUP.get(rust_owner, "other")
    return group, rust_owner, group


def cmd_profile(label, bench_json, perf_script, out):
    bench = json.load(open(bench_json, encoding="utf-8"))
    server = bench.get("server") or {}
    cpu_us = server.get("cpu_us_per_call")
    groups, details, markers = collections.Counter(), collections.Counter(), collections.Counter()
    leaves, charged_groups = collections.Counter(), collections.Counter()
    total = 0
    opener = gzip.open if perf_script.endswith(".gz") else open
    with opener(perf_script, "rt", encoding="utf-8", errors="replace") as lines:
        samples = list(perf_samples(lines))
    for comm, frames in samples:
        total += 1
        group, detail, charged = classify(frames)
        groups[group] += 1
        charged_groups[charged] += 1
        details[(group, detail)] += 1
        leaves[frames[0][0]] += 1
        for name, pattern in MARKERS:
            if pattern is None:
                hit = any(is_kernel(s, d) for s, d in frames)
            else:
                hit = any(pattern.search(s) for s, _ in frames)
            if hit:
                markers[name] += 1
    if total == 0:
        sys.exit(f"profile {label}: no samples in the perf script output")

    def share(n):
        return round(100.0 * n / total, 1)

    def per_call(n):
        return round(cpu_us * n / total, 1) if cpu_us else None

    result = {
        "label": label,
        "samples": total,
        "cpu_us_per_call": cpu_us,
        "calls_per_s": cell(bench).get("rps"),
        "groups": [{"group": g, "pct": share(n), "us_per_call": per_call(n),
                    "detail": [{"what": d, "pct": share(m)} for (gg, d), m in details.most_common() if gg == g][:6]}
                   for g, n in groups.most_common()],
        "charged_to_initiator": [{"group": g, "pct": share(n), "us_per_call": per_call(n)}
                                 for g, n in charged_groups.most_common()],
        "through": [{"frames": name, "pct": share(markers[name]), "us_per_call": per_call(markers[name])}
                    for name, _ in MARKERS],
        "top_leaves": [{"symbol": sym[:160], "pct": share(n)} for sym, n in leaves.most_common(15)],
    }
    write_json(out, result)
    print(f"profile {label}: {total} samples, {fmt(cpu_us, 1)} µs of server CPU per call "
          f"at {fmt(result['calls_per_s'])} calls/s")
    print("| where (innermost frame that says) | share | µs per call | mostly |\n|---|---:|---:|---|")
    for g in result["groups"]:
        mostly = ", ".join(f"{d['what']} {d['pct']} %" for d in g["detail"][:3])
        print(f"| {g['group']} | {g['pct']} % | {fmt(g['us_per_call'], 1)} | {mostly} |")
    print("\n| kernel and malloc/free charged to who called them | share | µs per call |\n|---|---:|---:|")
    for g in result["charged_to_initiator"]:
        print(f"| {g['group']} | {g['pct']} % | {fmt(g['us_per_call'], 1)} |")
    print("\n| samples passing through | share | µs per call |\n|---|---:|---:|")
    for m in result["through"]:
        print(f"| {m['frames']} | {m['pct']} % | {fmt(m['us_per_call'], 1)} |")


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


# The matrix's operations: service label part, pgbench script, the store's batched operation.
MATRIX_OPS = [("get", "Get", "select", "PK SELECT", "load"),
              ("report", "ReportResult", "upsert", "durable upsert", "report")]


def matrix_rows(runs):
    """The matrix (labels mx_<op>_c<N>_n<conns>, mx_pgb_<script>_c<N>) as entries and table lines."""
    found = []
    for label in runs:
        match = re.fullmatch(r"mx_(get|report)_c(\d+)_n(\d+)", label)
        if match:
            found.append((match.group(1), int(match.group(2)), int(match.group(3)), label))
    if not found:
        return [], []
    entries = []
    md = ["| call | in flight | conns | calls/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU µs/call "
          "| mean batch | pgbench tps (same clients) | pgbench p99 ms | ratio |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    order = {op: i for i, (op, *_rest) in enumerate(MATRIX_OPS)}
    for op, c, n, label in sorted(found, key=lambda f: (order[f[0]], f[1], f[2])):
        _, title, script, _, batched = next(m for m in MATRIX_OPS if m[0] == op)
        s = runs[label]
        p = runs.get(f"mx_pgb_{script}_c{c}", [])
        rps, base = med(s, "rps"), med(p, "rps")
        servers = [r.get("server") or {} for r in s]
        cpu = [v.get("cpu_us_per_call") for v in servers if v.get("cpu_us_per_call") is not None]
        batch = [((v.get("batches") or {}).get(batched) or {}).get("mean_batch") for v in servers]
        batch = [b for b in batch if b is not None]
        entry = {
            "label": label, "op": op, "in_flight": c, "connections": n, "rps": rps,
            "p50_ms": ms_or_none(med(s, "p50_us")), "p99_ms": ms_or_none(med(s, "p99_us")),
            "p999_ms": ms_or_none(med(s, "p999_us")), "errors": sum(cell(r).get("errors", 0) for r in s),
            "cpu_us_per_call": statistics.median(cpu) if cpu else None,
            "mean_batch": statistics.median(batch) if batch else None,
            "baseline": f"mx_pgb_{script}_c{c}", "baseline_tps": base,
            "baseline_p99_ms": ms_or_none(med(p, "p99_us")),
            "ratio": round(rps / base, 3) if rps and base else None,
        }
        entries.append(entry)
        md.append(f"| {title} | {c} | {n} | {fmt(rps)} | {fmt(entry['p50_ms'], 3)} | {fmt(entry['p99_ms'], 3)} | "
                  f"{fmt(entry['p999_ms'], 3)} | {entry['errors']} | {fmt(entry['cpu_us_per_call'], 1)} | "
                  f"{fmt(entry['mean_batch'], 2)} | {fmt(base)} | {fmt(entry['baseline_p99_ms'], 3)} | "
                  f"{fmt(entry['ratio'], 2)} |")
    return entries, md


def ms_or_none(us):
    return us / 1000 if us is not None else None


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
    matrix, matrix_md = matrix_rows(runs)
    if matrix:
        summary["matrix"] = matrix
        md += ["", "Matrix (issue 17): each service row beside pgbench at the same number of clients, "
               "measured in this run", ""] + matrix_md
    write_json(os.path.join(directory, "summary.json"), summary)
    with open(os.path.join(directory, "summary.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    command, args = argv[1], argv[2:]
    {"pgbench": cmd_pgbench, "sweep": cmd_sweep, "rawsweep": cmd_rawsweep, "startup": cmd_startup,
     "profile": cmd_profile, "summary": cmd_summary}[command](*args)


if __name__ == "__main__":
    main(sys.argv)
