"""The chart's monitoring against the real binary: the metric families a real scrape of the
release binary exposes; the PrometheusRule through `promtool check rules` and the unit tests in
monitoring/rules.test.yaml (`promtool test rules`), which must also fail on thresholds ten times
too lax; every expression of the rules and of the Grafana dashboard parsed by promtool and every
metric name in it exposed by the scrape (or one of the few named external series)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .common import CHART, CHECK_DIR, NAMESPACE, RELEASE, R, clean_env

# Series a rule may use that the binary does not export, and who does.
EXTERNAL = {"up": "Prometheus' own scrape health", "kube_pod_status_ready": "kube-state-metrics"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan", "le", "atan2"}


def scrape(binary: Path) -> str:
    """Starts the release binary on loopback ports chosen by the kernel and reads its /metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.log"
        with log.open("w") as out:
            proc = subprocess.Popen([str(binary), "serve", f"--data-dir={tmp}", "--listen=127.0.0.1:0",
                                     "--metrics-listen=127.0.0.1:0", "--log-format=json"],
                                    stdout=out, stderr=subprocess.STDOUT, env=clean_env())
        try:
            addr, deadline = None, time.monotonic() + 20
            while addr is None and time.monotonic() < deadline and proc.poll() is None:
                m = re.search(r'"metrics_addr":"([^"]+)"', log.read_text())
                addr = m.group(1) if m else None
                time.sleep(0.05)
            if addr is None:
                raise RuntimeError(f"the binary did not report its metrics address: {log.read_text()[-400:]}")
            with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return text


def scrape_metric_names(binary: Path) -> set[str]:
    """The series names a real scrape of the release binary exposes."""
    text = scrape(binary)
    names = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(family)
        if kind in ("histogram", "summary"):
            names.update({f"{family}_sum", f"{family}_count"} | ({f"{family}_bucket"} if kind == "histogram" else set()))
    names.update(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, matchers, ranges, label lists,
    functions and keywords removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+\S+", " ", e)
    found = re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", e)
    return {n for n in found if n.lower() not in PROMQL_WORDS}


def _promtool(*args: str) -> tuple[bool, str]:
    proc = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def _render_rules(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    out = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    rule = next(yaml.safe_load(t) for p, t in out.items() if p.endswith("templates/prometheusrule.yaml") and t.strip())
    return rule["spec"]["groups"]


def check_names(where: str, exprs: list[str], exposed: set[str]) -> None:
    used = set().union(*(metric_names(e) for e in exprs)) if exprs else set()
    missing = sorted(n for n in used if n not in exposed and n not in EXTERNAL)
    R.check(bool(used) and not missing, f"{where}: every metric name is exposed by the binary's /metrics "
            f"({', '.join(sorted(used - set(EXTERNAL)))}; external: {', '.join(sorted(used & set(EXTERNAL))) or 'none'})",
            f"not exposed: {missing}")


def check_monitoring(chart: Any, binary: Path, out: Path) -> None:
    R.start("monitoring: PrometheusRule (promtool) and Grafana dashboard against a real /metrics scrape")
    if not R.check(shutil.which("promtool") is not None, "promtool is installed (Debian's prometheus package)"):
        return
    exposed = scrape_metric_names(binary)
    R.check(any(n.startswith("sessionkeeper_") for n in exposed), f"a real scrape of the release binary: {len(exposed)} series names")
    R.check(metric_names('sum(rate(sessionkeeper_rpc_duration_second_count{code="OK"}[5m]))') - exposed
            == {"sessionkeeper_rpc_duration_second_count"}, "self-test: a misspelt metric name is caught by the name check")
    work = out / "monitoring"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copyfile(CHECK_DIR / "monitoring" / "rules.test.yaml", work / "rules.test.yaml")

    groups = _render_rules(chart, {"metrics": {"prometheusRule": {"enabled": True}}})
    (work / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    ok, text = _promtool("check", "rules", str(work / "rules.yaml"))
    R.check(ok, f"promtool check rules: {text.splitlines()[-1].strip() if text else ''}", text)
    ok, text = _promtool("test", "rules", str(work / "rules.test.yaml"))
    R.check(ok, "promtool test rules deploy/check/monitoring/rules.test.yaml: every alert fires when it must, and only then", text[-1500:])
    check_names("PrometheusRule", [str(r["expr"]) for g in groups for r in g["rules"]], exposed)

    lax = {"readinessChanges": 40, "errorRatio": 0.5, "p99Seconds": 5, "poolSaturation": 0.99, "resumeFailureRatio": 0.9}
    lax_groups = _render_rules(chart, {"metrics": {"prometheusRule": {"enabled": True, "thresholds": lax}}})
    (work / "rules.yaml").write_text(yaml.safe_dump({"groups": lax_groups}, sort_keys=False))
    ok, text = _promtool("test", "rules", str(work / "rules.test.yaml"))
    failed = set(re.findall(r"alertname: (\w+)", text))
    R.check(not ok and len(failed) >= 5, f"self-test: with thresholds ten times too lax the unit tests fail ({len(failed)} alerts)", text[-600:])
    (work / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))

    dash = json.loads((CHART / "dashboards" / "sessionkeeper.json").read_text())
    exprs = [t["expr"] for p in dash.get("panels", []) for t in p.get("targets", []) if t.get("expr")]
    var_queries = [re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", (v.get("query") or {}).get("query", ""))
                   for v in dash.get("templating", {}).get("list", []) if v.get("type") == "query"]
    R.check(len(exprs) == sum(len(p.get("targets", [])) for p in dash.get("panels", [])),
            f"dashboard: {len(exprs)} panel queries, {len(var_queries)} variable queries")
    concrete = [re.sub(r"\$__rate_interval|\$__interval", "5m", re.sub(r"\$(namespace|job)", ".*", e)) for e in exprs + var_queries]
    recording = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query:{i}", "expr": e} for i, e in enumerate(concrete)]}]}
    (work / "dashboard-queries.yaml").write_text(yaml.safe_dump(recording, sort_keys=False))
    ok, text = _promtool("check", "rules", str(work / "dashboard-queries.yaml"))
    R.check(ok, "dashboard: promtool parses every query (as recording rules)", text[-800:])
    check_names("dashboard", concrete, exposed)
