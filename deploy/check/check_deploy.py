#!/usr/bin/env python3
"""The deployment check behind scripts/test-deploy.

Validates the Dockerfile and the Helm chart in helm/sessionkeeper, offline, with the official
engines: Helm's Go SDK (helm-python-sdk) for lint and render, strict Kubernetes OpenAPI schemas
(kubernetes-validate) for every rendered object, BuildKit's Dockerfile parser for the Dockerfile.
Then it cross-checks the chart with the binary: every flag and variable the chart passes must be
one `sessionkeeper <command> --help` lists, the ports the binary listens on (from the rendered args
and env, or the defaults --help shows) must be the container, probe and Service ports, and the
binary is started with the rendered args, env and mounted files in a private network namespace,
where the rendered probes are run against it exactly as the kubelet would.

Run it through scripts/test-deploy (it prepares the venv and the binary). Exit code: 0 when every
check passed, 1 otherwise. Every check prints one line.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import tomllib
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "sessionkeeper"
DEPLOY = ROOT / "deploy"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
RELEASE = "sessionkeeper"
NAMESPACE = "sessionkeeper"

# Kubernetes versions every rendered object is validated against (strict schemas): the oldest the
# chart supports (Chart.yaml kubeVersion) and the newest kubernetes-validate 1.37.0 ships.
KUBE_VERSIONS = ["1.29.0", "1.37.0"]
LINT_KUBE_VERSION = "v1.29.0"

# CRDs are not in the Kubernetes schemas: each is validated against a schema vendored here.
VENDORED_CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "monitoring.coreos.com_v1_servicemonitor.json",
}

# Standard OpenTelemetry SDK environment variables (read by the OTel SDK, not by clap).
OTEL_STANDARD_ENV = {
    "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_LOG_LEVEL",
    "OTEL_PROPAGATORS", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
}
# Other variables the binary reads that are not clap settings (checked against the binary's bytes).
OTHER_BINARY_ENV = {"RUST_LOG"}
# Variables the specification promises but a binary may not accept yet: named in the failure.
PENDING_IN_SPEC = {
    "SESSIONKEEPER_AUTH_TOKENS": "--auth-tokens / SESSIONKEEPER_AUTH_TOKENS (the tokens file, SPEC §6 "
    "'Access') is not implemented in this binary yet; the chart sets it from auth.existingSecret",
}

LIVENESS_SERVICE = ""
READINESS_SERVICE = "sessionkeeper.v1.SessionService"


# ------------------------------------------------------------------------------------ reporting

class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.skipped = 0
        self.section = ""

    def start(self, title: str) -> None:
        self.section = title
        print(f"\n== {title}", flush=True)

    def ok(self, msg: str) -> None:
        self.passed += 1
        print(f"  ok    {msg}", flush=True)

    def fail(self, msg: str) -> None:
        self.failed.append(f"[{self.section}] {msg}")
        print(f"  FAIL  {msg}", flush=True)

    def skip(self, msg: str) -> None:
        self.skipped += 1
        print(f"  skip  {msg}", flush=True)

    def note(self, msg: str) -> None:
        print(f"  note  {msg}", flush=True)

    def check(self, cond: bool, msg: str, detail: str = "") -> bool:
        if cond:
            self.ok(msg)
        else:
            self.fail(f"{msg}{': ' + detail if detail else ''}")
        return bool(cond)


R = Report()


# --------------------------------------------------------------------------------- small helpers

_DURATION_UNITS = {
    "nsec": 1e-9, "ns": 1e-9, "usec": 1e-6, "us": 1e-6, "µs": 1e-6, "msec": 1e-3, "ms": 1e-3,
    "seconds": 1, "second": 1, "secs": 1, "sec": 1, "s": 1,
    "minutes": 60, "minute": 60, "mins": 60, "min": 60, "m": 60,
    "hours": 3600, "hour": 3600, "hrs": 3600, "hr": 3600, "h": 3600,
    "days": 86400, "day": 86400, "d": 86400, "weeks": 604800, "week": 604800, "w": 604800,
    "months": 2630016, "month": 2630016, "M": 2630016, "years": 31557600, "year": 31557600, "y": 31557600,
}


def parse_duration(text: str) -> float:
    """humantime's grammar (what the binary parses): 1h 30m, 500ms, 7days."""
    parts = re.findall(r"\s*([0-9]+)\s*([a-zA-Zµ]+)", text)
    if not parts or re.sub(r"\s*[0-9]+\s*[a-zA-Zµ]+", "", text).strip():
        raise ValueError(f"not a duration: {text!r}")
    total = 0.0
    for number, unit in parts:
        if unit not in _DURATION_UNITS:
            raise ValueError(f"unknown duration unit {unit!r} in {text!r}")
        total += int(number) * _DURATION_UNITS[unit]
    return total


_QUANTITY_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
                    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def parse_quantity(q: Any) -> float:
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(q))
    if not m or m.group(2) not in _QUANTITY_SUFFIX:
        raise ValueError(f"not a quantity: {q!r}")
    return float(m.group(1)) * _QUANTITY_SUFFIX[m.group(2)]


def dig(obj: Any, *path: Any, default: Any = None) -> Any:
    for key in path:
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return default
    return obj


def labels_match(selector: dict[str, str] | None, labels: dict[str, str] | None) -> bool:
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


# ------------------------------------------------------------------------------ the binary's CLI

@dataclass
class Flag:
    name: str
    takes_value: bool
    optional_value: bool
    value_name: str | None
    env: str | None
    default: str | None
    possible: list[str] | None


@dataclass
class Cli:
    command: str
    flags: dict[str, Flag] = field(default_factory=dict)

    @property
    def env_vars(self) -> dict[str, Flag]:
        return {f.env: f for f in self.flags.values() if f.env}


def clean_env() -> dict[str, str]:
    """The environment without anything the binary reads (so --help shows no local values)."""
    return {k: v for k, v in os.environ.items()
            if not (k.startswith("SESSIONKEEPER_") or k.startswith("OTEL_") or k in ("DATABASE_URL", "RUST_LOG"))}


def parse_help(binary: Path, command: str) -> Cli:
    out = subprocess.run([str(binary), command, "--help"], capture_output=True, text=True,
                         env=clean_env(), timeout=30, check=True).stdout
    cli = Cli(command)
    entries: list[list[str]] = []
    for line in out.splitlines():
        if re.match(r"^\s+(-\w, )?--[a-z0-9-]+", line):
            entries.append([line])
        elif entries and line.startswith("          "):
            entries[-1].append(line)
        elif not line.strip():
            continue
        elif entries and not line.startswith(" "):
            entries.append([])  # a new section ends the previous entry
    for entry in filter(None, entries):
        text = " ".join(s.strip() for s in entry)
        m = re.match(r"^(?:-\w, )?--([a-z0-9-]+)(?: (\[<([^>]+)>\]|<([^>]+)>))?", text)
        if not m:
            continue
        env = re.search(r"\[env: ([A-Z0-9_]+)(?:=[^\]]*)?\]", text)
        default = re.search(r"\[default: ([^\]]*)\]", text)
        possible = re.search(r"\[possible values: ([^\]]*)\]", text)
        cli.flags[m.group(1)] = Flag(
            name=m.group(1),
            takes_value=bool(m.group(2)),
            optional_value=bool(m.group(3)),
            value_name=m.group(3) or m.group(4),
            env=env.group(1) if env else None,
            default=default.group(1) if default else None,
            possible=[p.strip() for p in possible.group(1).split(",")] if possible else None,
        )
    return cli


def parse_subcommands(binary: Path) -> list[str]:
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, env=clean_env(),
                         timeout=30, check=True).stdout
    section = re.search(r"Commands:\n((?:  .*\n)+)", out)
    return [line.split()[0] for line in section.group(1).splitlines()] if section else []


# ---------------------------------------------------------------------------------- helm engine

def helm():
    import helm_python  # noqa: PLC0415  (only inside the venv)
    return helm_python


@dataclass
class Variant:
    name: str
    values_file: Path | None
    values: dict[str, Any]
    merged: dict[str, Any] = field(default_factory=dict)
    rendered: dict[str, str] = field(default_factory=dict)
    objects: list[dict[str, Any]] = field(default_factory=list)
    notes: str = ""

    def find(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]

    def one(self, kind: str) -> dict[str, Any] | None:
        found = self.find(kind)
        return found[0] if len(found) == 1 else None


def load_variants() -> list[Variant]:
    variants = [Variant("default values", None, {})]
    files = [DEPLOY / "values-production.yaml", *sorted((DEPLOY / "variants").glob("*.yaml"))]
    for path in files:
        variants.append(Variant(str(path.relative_to(ROOT)), path, yaml.safe_load(path.read_text()) or {}))
    return variants


def render(variant: Variant) -> None:
    h = helm()
    with h.Chart.load(str(CHART)) as chart:
        variant.merged = chart.merge_values(variant.values)
        variant.rendered = chart.render(values=variant.values, name=RELEASE, namespace=NAMESPACE,
                                         is_install=True)
    for path, text in sorted(variant.rendered.items()):
        if path.endswith("NOTES.txt"):
            variant.notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {})
                doc["__source"] = path
                variant.objects.append(doc)


def strip_source(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "__source"}


def write_rendered(variant: Variant, out_dir: Path) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", variant.name)
    path = out_dir / f"{slug}.yaml"
    docs = [yaml.safe_dump(strip_source(o), sort_keys=False) for o in variant.objects]
    path.write_text("---\n".join(docs) + ("\n# NOTES.txt\n" + "\n".join("# " + l for l in variant.notes.splitlines())))
    return path


# ---------------------------------------------------------------------------- Dockerfile checks

def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str], str]]:
    """.dockerignore with BuildKit's semantics (moby/patternmatcher): last match wins, a pattern
    also matches every file below a matching directory, `!` re-includes, `**` spans directories."""
    patterns = []
    path = ROOT / ".dockerignore"
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pat = line if exclude else line[1:].strip()
        pat = os.path.normpath(pat).lstrip("/") if pat not in ("", ".") else "."
        rx = ""
        i = 0
        while i < len(pat):
            c = pat[i]
            if c == "*":
                if pat[i:i + 2] == "**":
                    i += 1
                    if pat[i + 1:i + 2] == "/":
                        i += 1
                        rx += "(.*/)?"
                    else:
                        rx += ".*"
                else:
                    rx += "[^/]*"
            elif c == "?":
                rx += "[^/]"
            elif c == "[":
                j = pat.find("]", i)
                rx += pat[i:j + 1] if j > i else re.escape(c)
                i = j if j > i else i
            elif c == "\\" and i + 1 < len(pat):
                i += 1
                rx += re.escape(pat[i])
            else:
                rx += re.escape(c)
            i += 1
        patterns.append((exclude, re.compile("^" + rx + "$"), line))
    return patterns


def excluded_from_context(rel: str, patterns: list[tuple[bool, re.Pattern[str], str]]) -> bool:
    parts = rel.split("/")
    candidates = [rel] + ["/".join(parts[:i + 1]) for i in range(len(parts) - 1)]
    excluded = False
    for exclude, rx, _ in patterns:
        if any(rx.match(c) for c in candidates):
            excluded = exclude
    return excluded


def build_inputs(binary: Path) -> set[str]:
    """Every repository file `cargo build` reads for the binary: rustc's dep-info of the binary,
    the manifest, the lock file, build.rs and the paths build.rs names."""
    inputs = {"Cargo.toml", "Cargo.lock"}
    dep_info = binary.with_suffix(".d")
    text = dep_info.read_text().replace("\\ ", "\0")
    for token in text.split(":", 1)[1].split():
        p = Path(token.replace("\0", " "))
        try:
            rel = p.resolve().relative_to(ROOT)
        except ValueError:
            continue
        if rel.parts and rel.parts[0] == "target":
            continue
        inputs.add(str(rel))
    build_rs = ROOT / "build.rs"
    if build_rs.exists():
        inputs.add("build.rs")
        for literal in re.findall(r'"([^"\\]+)"', build_rs.read_text()):
            if (ROOT / literal).exists() and not literal.startswith("/"):
                inputs.add(literal)
    files: set[str] = set()
    for rel in inputs:
        p = ROOT / rel
        if p.is_dir():
            files.update(str(f.relative_to(ROOT)) for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            files.add(rel)
    return files


def check_dockerfile(binary: Path, help_serve: Cli, chart_values: dict[str, Any]) -> None:
    import dockerfile  # noqa: PLC0415

    R.start("Dockerfile (parsed with BuildKit's parser) and .dockerignore")
    path = ROOT / "Dockerfile"
    if not R.check(path.exists(), "Dockerfile exists at the repository root"):
        return
    commands = dockerfile.parse_file(str(path))
    R.ok(f"Dockerfile parses ({len(commands)} instructions)")
    args = {}
    stages: list[dict[str, Any]] = []
    for cmd in commands:
        if cmd.cmd == "ARG" and not stages:
            name, _, value = cmd.value[0].partition("=")
            args[name] = value
        elif cmd.cmd == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), cmd.value[0])
            alias = cmd.value[2] if len(cmd.value) >= 3 and cmd.value[1].upper() == "AS" else None
            stages.append({"image": image, "alias": alias, "cmds": []})
        elif stages:
            stages[-1]["cmds"].append(cmd)
    R.check(len(stages) >= 2, "multi-stage build", f"{len(stages)} stage(s)")
    if len(stages) < 2:
        return
    builder, runtime = stages[0], stages[-1]
    R.check(builder["image"].startswith("rust:"), f"build stage is a Rust image ({builder['image']})")

    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    rust_version = cargo.get("package", {}).get("rust-version")
    m = re.match(r"rust:(\d+)\.(\d+)", builder["image"])
    if rust_version and m:
        want = tuple(int(x) for x in rust_version.split(".")[:2])
        R.check((int(m.group(1)), int(m.group(2))) >= want,
                f"builder Rust {m.group(1)}.{m.group(2)} >= Cargo.toml rust-version {rust_version}")

    small = ("gcr.io/distroless/cc-debian", "gcr.io/distroless/static", "debian:", "cgr.dev/chainguard")
    R.check(runtime["image"].startswith(small), f"runtime stage is a small image ({runtime['image']})")
    codename = {"bookworm": "12", "trixie": "13", "bullseye": "11"}
    bm = re.search(r"(bookworm|trixie|bullseye)", builder["image"])
    rm = re.search(r"debian(\d+)|(bookworm|trixie|bullseye)", runtime["image"])
    if bm and rm:
        runtime_release = rm.group(1) or codename[rm.group(2)]
        R.check(codename[bm.group(1)] == runtime_release,
                f"builder and runtime are the same Debian release ({bm.group(1)} / debian{runtime_release}): same glibc")
    else:
        R.fail(f"cannot tell the Debian releases of {builder['image']} and {runtime['image']} (glibc compatibility)")

    rcmds = runtime["cmds"]
    R.check(not any(c.cmd == "RUN" for c in rcmds), "no RUN in the runtime stage (no shell needed at run time)")
    users = [c.value[0] for c in rcmds if c.cmd == "USER"]
    user = users[-1] if users else ""
    uid = user.split(":")[0]
    R.check(bool(user) and uid not in ("0", "root") and uid.isdigit(),
            f"runtime USER is a numeric non-root uid ({user or 'none'})")
    pod_uid = dig(chart_values, "podSecurityContext", "runAsUser")
    R.check(str(pod_uid) == uid, f"chart podSecurityContext.runAsUser ({pod_uid}) is the image's USER ({uid})")

    entry = [c for c in rcmds if c.cmd == "ENTRYPOINT"]
    cmd = [c for c in rcmds if c.cmd == "CMD"]
    R.check(bool(entry) and entry[-1].json, "ENTRYPOINT in exec (JSON) form")
    R.check(not cmd or cmd[-1].json, "CMD in exec (JSON) form")
    argv = (list(entry[-1].value) if entry else []) + (list(cmd[-1].value) if cmd else [])
    copies_from_builder = [c for c in rcmds if c.cmd == "COPY"
                           and any(f in (f"--from={builder['alias']}", "--from=0") for f in c.flags)]
    bin_dests = {c.value[-1] for c in copies_from_builder}
    R.check(bool(argv) and argv[0] in bin_dests, f"ENTRYPOINT runs the binary copied from the build stage ({argv[:1]})")
    R.check(argv[1:2] == ["serve"], f"the default command is `serve` ({argv})")
    subcommands = parse_subcommands(binary)
    R.check("serve" in subcommands and "migrate" in subcommands,
            f"the binary has the serve and migrate subcommands ({', '.join(subcommands)})")

    exposed = {int(p.split("/")[0]) for c in rcmds if c.cmd == "EXPOSE" for p in c.value}
    for flag, what in (("listen", "gRPC"), ("metrics-listen", "metrics")):
        default = help_serve.flags[flag].default if flag in help_serve.flags else None
        if default:
            R.check(port_of(default) in exposed, f"EXPOSE has the binary's default {what} port {port_of(default)}",
                    f"EXPOSE {sorted(exposed)}")
    envs = {}
    for c in rcmds:
        if c.cmd == "ENV":
            vals = list(c.value)
            for k, v in zip(vals[0::2], vals[1::2], strict=False):
                envs[k] = v
    for k in envs:
        if k.startswith("SESSIONKEEPER_") or k == "DATABASE_URL":
            R.check(k in help_serve.env_vars, f"ENV {k} is a variable `sessionkeeper serve --help` lists")
    data_dir = envs.get("SESSIONKEEPER_DATA_DIR")
    if data_dir:
        owned = [c for c in rcmds if c.cmd == "COPY" and c.value[-1].rstrip("/") == data_dir.rstrip("/")
                 and any(f.startswith("--chown=") and f.split("=", 1)[1].split(":")[0] == uid for f in c.flags)]
        R.check(bool(owned), f"the embedded store's directory {data_dir} is created owned by uid {uid}")
    else:
        R.fail("no ENV SESSIONKEEPER_DATA_DIR: the embedded store would write to ./data under WORKDIR")

    # The build context.
    patterns = dockerignore_patterns()
    if not R.check(bool(patterns), ".dockerignore exists and has patterns"):
        return
    for rel in ("target/debug/sessionkeeper", "target/release/sessionkeeper", ".git/HEAD", "data/sessionkeeper.sqlite3"):
        R.check(excluded_from_context(rel, patterns), f".dockerignore keeps {rel} out of the build context")
    inputs = build_inputs(binary)
    builder_copies = [c for c in builder["cmds"] if c.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in c.flags)]
    sources = [s.rstrip("/") for c in builder_copies for s in c.value[:-1]]
    missing_ctx = sorted(f for f in inputs if excluded_from_context(f, patterns))
    missing_copy = sorted(f for f in inputs if not any(s in (".", f) or f.startswith(s + "/") for s in sources))
    R.check(not missing_ctx, f"every file the build reads ({len(inputs)}, from rustc's dep-info) is in the build context",
            f"excluded by .dockerignore: {missing_ctx[:8]}")
    R.check(not missing_copy, "the build stage COPYs every file the build reads", f"not copied: {missing_copy[:8]}")


# ------------------------------------------------------------------------ chart-level checks

def check_chart_metadata(binary: Path) -> dict[str, Any]:
    R.start("Chart.yaml")
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    R.check(chart.get("apiVersion") == "v2", "apiVersion v2")
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    version = cargo["package"]["version"]
    R.check(str(chart.get("appVersion")) == version, f"appVersion {chart.get('appVersion')} is Cargo.toml's version {version}")
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=clean_env(), timeout=30).stdout
    R.check(version in out, f"`sessionkeeper --version` reports {version}", out.strip())
    kv = chart.get("kubeVersion", "")
    floor = re.search(r">=\s*v?(\d+)\.(\d+)", kv)
    for v in KUBE_VERSIONS:
        major, minor = (int(x) for x in v.split(".")[:2])
        R.check(bool(floor) and (major, minor) >= (int(floor.group(1)), int(floor.group(2))),
                f"validated Kubernetes {v} satisfies kubeVersion {kv!r}")
    R.check((CHART / "values.schema.json").exists(), "values.schema.json exists")
    schema = json.loads((CHART / "values.schema.json").read_text())
    R.check(schema.get("additionalProperties") is False, "values.schema.json rejects unknown top-level keys")
    return yaml.safe_load((CHART / "values.yaml").read_text())


def check_lint(variants: list[Variant]) -> None:
    h = helm()
    R.start(f"helm lint (Helm SDK {h.helm_sdk_version()}, strict, kubeVersion {LINT_KUBE_VERSION})")
    for v in variants:
        report = h.lint(str(CHART), v.values or None, strict=True, namespace=NAMESPACE, kube_version=LINT_KUBE_VERSION)
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        infos = [m["error"] for m in report.get("messages", []) if m.get("severity", 0) < 2]
        R.check(not bad and not report.get("errors"), f"lint {v.name}" + (f" (info: {'; '.join(infos)})" if infos else ""),
                "; ".join(f"{m['path']}: {m['error']}" for m in bad) + "; ".join(report.get("errors") or []))


def check_invalid_values() -> None:
    h = helm()
    R.start("values that must be refused (deploy/invalid/*.yaml)")
    files = sorted((DEPLOY / "invalid").glob("*.yaml"))
    R.check(bool(files), f"{len(files)} invalid values files")
    with h.Chart.load(str(CHART)) as chart:
        for path in files:
            text = path.read_text()
            expect = re.search(r"^# expect-(schema|fail): (.+)$", text, re.M)
            if not expect:
                R.fail(f"{path.name}: no '# expect-schema:' or '# expect-fail:' line")
                continue
            kind, needle = expect.group(1), expect.group(2).strip()
            values = yaml.safe_load(text) or {}
            try:
                chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            except h.HelmValuesError as e:
                R.check(kind == "schema" and needle in str(e),
                        f"{path.name}: refused by values.schema.json ({needle})", str(e).replace("\n", " "))
                continue
            except h.HelmError as e:
                R.check(kind == "fail" and needle in str(e), f"{path.name}: refused by the chart ({needle})",
                        str(e).replace("\n", " "))
                continue
            R.fail(f"{path.name}: helm template SUCCEEDED but must fail ({kind}: {needle})")


_schema_cache: dict[Path, Any] = {}


def validate_objects(variant: Variant) -> None:
    import jsonschema  # noqa: PLC0415
    import kubernetes_validate  # noqa: PLC0415
    from kubernetes_validate import utils as kv_utils  # noqa: PLC0415

    if not getattr(kv_utils.schema_contents, "cache_info", None):
        kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)
    seen = set()
    for obj in variant.objects:
        clean = strip_source(obj)
        kind, api, name = clean.get("kind"), clean.get("apiVersion"), dig(clean, "metadata", "name")
        key = (kind, name)
        if key in seen:
            R.fail(f"{variant.name}: {kind}/{name} rendered twice")
        seen.add(key)
        R.check(dig(clean, "metadata", "namespace") == NAMESPACE, f"{variant.name}: {kind}/{name} is in the release namespace",
                f"namespace {dig(clean, 'metadata', 'namespace')!r}")
        vendored = VENDORED_CRD_SCHEMAS.get((api, kind))
        for version in KUBE_VERSIONS:
            try:
                if vendored:
                    if vendored not in _schema_cache:
                        _schema_cache[vendored] = json.loads(vendored.read_text())
                    jsonschema.Draft202012Validator(_schema_cache[vendored]).validate(clean)
                    kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": clean["metadata"]},
                                                 version, strict=True)
                else:
                    kubernetes_validate.validate(clean, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                R.fail(f"{variant.name}: {kind}/{name} ({api}): no Kubernetes {version} schema and none vendored")
                break
            except jsonschema.ValidationError as e:
                where = ".".join(str(p) for p in e.absolute_path)
                R.fail(f"{variant.name}: {kind}/{name} invalid for Kubernetes {version}"
                       f"{' (vendored CRD schema)' if vendored else ''}: {where}: {e.message}")
                break
        else:
            R.ok(f"{variant.name}: {kind}/{name} ({api}) valid, strict, on Kubernetes {' and '.join(KUBE_VERSIONS)}"
                 + (f" [CRD: vendored schema {vendored.name}]" if vendored else ""))


# ----------------------------------------------------------------------- the pod and its wiring

def pod_specs(variant: Variant) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for kind in ("Deployment", "Job"):
        for obj in variant.find(kind):
            specs.append((f"{kind}/{obj['metadata']['name']}", dig(obj, "spec", "template", "spec")))
    return specs


def containers_of(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return ([("initContainer " + c["name"], c) for c in spec.get("initContainers") or []]
            + [("container " + c["name"], c) for c in spec.get("containers") or []])


def split_args(args: list[str], cli: Cli) -> tuple[dict[str, str | None], list[str]]:
    """`--flag=value`, `--flag value` -> {flag: value}; problems as strings."""
    result: dict[str, str | None] = {}
    problems = []
    i = 0
    while i < len(args):
        arg = str(args[i])
        if not arg.startswith("--"):
            problems.append(f"unexpected positional argument {arg!r}")
            i += 1
            continue
        name, eq, value = arg[2:].partition("=")
        flag = cli.flags.get(name)
        if flag is None:
            problems.append(f"--{name} is not a flag of `sessionkeeper {cli.command}` (not in its --help)")
            i += 1
            continue
        if eq:
            if not flag.takes_value:
                problems.append(f"--{name} takes no value")
            result[name] = value
        elif flag.takes_value and not flag.optional_value:
            if i + 1 >= len(args):
                problems.append(f"--{name} needs a value")
                break
            result[name] = str(args[i + 1])
            i += 1
        else:
            result[name] = None
        if flag.possible and result.get(name) is not None and result[name] not in flag.possible:
            problems.append(f"--{name}={result[name]} is not one of {flag.possible}")
        if name in result and (result[name] or "") and (flag.value_name == "DURATION"):
            try:
                parse_duration(result[name] or "")
            except ValueError as e:
                problems.append(f"--{name}: {e}")
        i += 1
    return result, problems


def effective(cli: Cli, flags: dict[str, str | None], env: dict[str, str], name: str) -> str | None:
    """A setting as the binary resolves it: flag, then environment, then its default."""
    flag = cli.flags[name]
    if name in flags:
        return flags[name] if flags[name] is not None else "true"
    if flag.env and flag.env in env:
        return env[flag.env]
    return flag.default


def env_map(container: dict[str, Any]) -> dict[str, str]:
    out = {}
    for e in container.get("env") or []:
        if "value" in e:
            out[e["name"]] = str(e["value"])
        elif "valueFrom" in e:
            out[e["name"]] = "<valueFrom>"
    return out


def check_cli_and_ports(variant: Variant, clis: dict[str, Cli], binary_bytes: bytes) -> None:
    """Flags and variables against --help; ports the binary listens on against the chart's."""
    deployment = variant.one("Deployment")
    for owner, spec in pod_specs(variant):
        for cname, c in containers_of(spec):
            where = f"{variant.name}: {owner} {cname}"
            if c.get("command"):
                R.fail(f"{where}: overrides the image ENTRYPOINT with command {c['command']}")
            args = [str(a) for a in c.get("args") or []]
            sub = args[0] if args else "serve"
            if sub not in clis:
                R.fail(f"{where}: first argument {sub!r} is not a sessionkeeper subcommand ({', '.join(clis)})")
                continue
            cli = clis[sub]
            flags, problems = split_args(args[1:], cli)
            R.check(not problems, f"{where}: `sessionkeeper {sub}` accepts all {len(flags)} flags "
                    f"({', '.join('--' + f for f in flags)})", "; ".join(problems))
            R.check("database-url" not in flags, f"{where}: no --database-url flag (the URL stays in the Secret)")
            env = c.get("env") or []
            names = [e["name"] for e in env]
            referenced = set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(str(e.get("value", "")) for e in env)))
            for e in env:
                n = e["name"]
                if n in cli.env_vars:
                    R.ok(f"{where}: env {n} is --{cli.env_vars[n].name} in `sessionkeeper {sub} --help`")
                elif n.startswith("SESSIONKEEPER_"):
                    hint = PENDING_IN_SPEC.get(n, "the binary ignores unknown variables, so this setting would silently not apply")
                    R.fail(f"{where}: env {n} is rendered by the chart but `sessionkeeper {sub} --help` lists no "
                           f"[env: {n}]: {hint}")
                elif n in OTEL_STANDARD_ENV:
                    R.ok(f"{where}: env {n} is a standard OpenTelemetry SDK variable")
                    if n.encode() not in binary_bytes:
                        R.note(f"{n}: this binary does not read it yet (no OpenTelemetry exporter built in); allowed as a standard variable")
                elif n.startswith("OTEL_"):
                    R.fail(f"{where}: env {n} is not a standard OpenTelemetry SDK variable")
                elif n in OTHER_BINARY_ENV:
                    R.check(n.encode() in binary_bytes, f"{where}: env {n} is read by the binary (found in its bytes)")
                elif "fieldRef" in (e.get("valueFrom") or {}) and n in referenced:
                    R.ok(f"{where}: env {n} (downward API) only feeds $({n}) in another variable")
                else:
                    R.fail(f"{where}: env {n} is neither a flag variable of `sessionkeeper {sub}`, a standard OTEL_* "
                           "variable, nor RUST_LOG")
            R.check(len(names) == len(set(names)), f"{where}: no variable set twice")
            for e in env:
                if e["name"] == "DATABASE_URL":
                    ref = dig(e, "valueFrom", "secretKeyRef")
                    R.check(bool(ref) and "value" not in e,
                            f"{where}: DATABASE_URL comes only from secretKeyRef",
                            "a literal value would put the password in the pod spec")
                    if ref:
                        R.check(ref.get("name") == dig(variant.merged, "database", "existingSecret")
                                and ref.get("key") == dig(variant.merged, "database", "secretKey"),
                                f"{where}: DATABASE_URL from Secret {ref.get('name')} key {ref.get('key')} (database.existingSecret/secretKey)")
            # paths the binary opens must be mounted
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
            values = {f"--{k}": v for k, v in flags.items() if v}
            values.update({e["name"]: str(e["value"]) for e in env if "value" in e})
            for label, value in values.items():
                if not value.startswith("/"):
                    continue
                mount = next((m for p, m in mounts.items() if value == p or value.startswith(p.rstrip("/") + "/")), None)
                flag = cli.flags.get(label[2:]) if label.startswith("--") else None
                needs_write = bool(flag and flag.value_name == "DIR")
                R.check(mount is not None and not (needs_write and mount.get("readOnly")),
                        f"{where}: {label}={value} is on a {'writable ' if needs_write else ''}volume mount"
                        + (f" ({mount['name']})" if mount else ""),
                        "not under any volumeMount" if mount is None else "mounted read-only")

            if sub != "serve" or c is not dig(deployment, "spec", "template", "spec", "containers", 0):
                continue
            # -------- the server container: ports, probes, shutdown
            envs = env_map(c)
            ports = {p.get("name"): p for p in c.get("ports") or []}
            listen = effective(cli, flags, envs, "listen")
            metrics = effective(cli, flags, envs, "metrics-listen")
            for label, addr, pname in (("gRPC", listen, "grpc"), ("metrics", metrics, "metrics")):
                host = addr.rsplit(":", 1)[0] if addr else ""
                R.check(host in ("0.0.0.0", "[::]"), f"{where}: {label} listens on all interfaces ({addr})",
                        "the kubelet and the Service reach the pod IP, not loopback")
                R.check(pname in ports and ports[pname].get("containerPort") == port_of(addr),
                        f"{where}: containerPort {pname!r} is the port the binary listens on for {label} ({port_of(addr)})",
                        f"containerPort {dig(ports, pname, 'containerPort')}")
            grpc_port, metrics_port = port_of(listen), port_of(metrics)
            tls_on = bool(effective(cli, flags, envs, "tls-cert"))

            def resolve(port: Any, ports: dict[str, Any] = ports) -> int | None:
                if isinstance(port, int):
                    return port
                return dig(ports, port, "containerPort")

            for probe_name, want_service, want_path in (("startupProbe", LIVENESS_SERVICE, "/livez"),
                                                        ("livenessProbe", LIVENESS_SERVICE, "/livez"),
                                                        ("readinessProbe", READINESS_SERVICE, "/readyz")):
                probe = c.get(probe_name)
                if not R.check(bool(probe), f"{where}: has a {probe_name}"):
                    continue
                if "grpc" in probe:
                    R.check(not tls_on, f"{where}: {probe_name} is gRPC only while gRPC is plaintext",
                            "Kubernetes gRPC probes cannot speak TLS: use HTTP on the metrics port")
                    R.check(probe["grpc"].get("port") == grpc_port and probe["grpc"].get("service", "") == want_service,
                            f"{where}: {probe_name} checks gRPC health service {want_service!r} on port {grpc_port}",
                            f"got port {probe['grpc'].get('port')} service {probe['grpc'].get('service', '')!r}")
                elif "httpGet" in probe:
                    hg = probe["httpGet"]
                    R.check(resolve(hg.get("port")) == metrics_port and hg.get("path") == want_path
                            and hg.get("scheme", "HTTP") == "HTTP",
                            f"{where}: {probe_name} GETs http {want_path} on the metrics port {metrics_port}",
                            f"got {hg}")
                else:
                    R.fail(f"{where}: {probe_name} is neither grpc nor httpGet")
            delay = parse_duration(effective(cli, flags, envs, "shutdown-delay") or "0s")
            drain = parse_duration(effective(cli, flags, envs, "drain-timeout") or "0s")
            grace = spec.get("terminationGracePeriodSeconds", 30)
            R.check(delay > 0, f"{where}: --shutdown-delay is set ({delay:g}s) so endpoints update before draining")
            R.check(grace > delay + drain, f"{where}: terminationGracePeriodSeconds {grace} > shutdown delay {delay:g}s "
                    f"+ drain timeout {drain:g}s")
            # Service ports -> container ports
            for svc in variant.find("Service"):
                sports = {p.get("name"): p for p in dig(svc, "spec", "ports", default=[])}
                sname = svc["metadata"]["name"]
                R.check(labels_match(dig(svc, "spec", "selector"), dig(deployment, "spec", "template", "metadata", "labels")),
                        f"{variant.name}: Service/{sname} selects the Deployment's pods")
                for pname, want in (("grpc", grpc_port), ("metrics", metrics_port)):
                    if pname not in sports:
                        if pname == "metrics" and dig(svc, "spec", "clusterIP") == "None":
                            continue
                        R.fail(f"{variant.name}: Service/{sname} has no port named {pname!r}")
                        continue
                    R.check(resolve(sports[pname].get("targetPort")) == want,
                            f"{variant.name}: Service/{sname} port {pname!r} targets the binary's {pname} port {want}")
                if "grpc" in sports:
                    R.check(sports["grpc"].get("appProtocol") == "grpc", f"{variant.name}: Service/{sname} port grpc has appProtocol grpc")


def check_security(variant: Variant) -> None:
    for owner, spec in pod_specs(variant):
        psc = spec.get("securityContext") or {}
        R.check(spec.get("automountServiceAccountToken") is False, f"{variant.name}: {owner} mounts no API token")
        R.check(spec.get("enableServiceLinks") is False,
                f"{variant.name}: {owner} has enableServiceLinks false (a Service named sessionkeeper would inject "
                "SESSIONKEEPER_PORT, SESSIONKEEPER_SERVICE_HOST, ... into the binary's variable prefix)")
        for cname, c in containers_of(spec):
            where = f"{variant.name}: {owner} {cname}"
            sc = c.get("securityContext") or {}
            merged = {**psc, **sc}
            problems = []
            if merged.get("runAsNonRoot") is not True:
                problems.append("runAsNonRoot")
            if merged.get("runAsUser") == 0:
                problems.append("runAsUser 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append("readOnlyRootFilesystem")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append("allowPrivilegeEscalation false")
            if sc.get("privileged"):
                problems.append("privileged")
            if "ALL" not in (dig(sc, "capabilities", "drop") or []) or dig(sc, "capabilities", "add"):
                problems.append("capabilities drop ALL, add none")
            if dig(merged, "seccompProfile", "type") != "RuntimeDefault":
                problems.append("seccompProfile RuntimeDefault")
            R.check(not problems, f"{where}: runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, "
                    "capabilities drop ALL, seccomp RuntimeDefault", "missing: " + ", ".join(problems))
            res = c.get("resources") or {}
            missing = [f"{k}.{r}" for k in ("requests", "limits") for r in ("cpu", "memory") if r not in (res.get(k) or {})]
            ok = not missing and all(parse_quantity(res["requests"][r]) <= parse_quantity(res["limits"][r]) for r in ("cpu", "memory"))
            R.check(ok, f"{where}: cpu and memory requests and limits, requests <= limits", f"missing {missing}" if missing else str(res))
            vols = {v["name"]: v for v in spec.get("volumes") or []}
            tmp = next((m for m in c.get("volumeMounts") or [] if m["mountPath"] == "/tmp"), None)
            R.check(bool(tmp) and "emptyDir" in vols.get(tmp["name"], {}) and not tmp.get("readOnly"),
                    f"{where}: read-only root with a writable /tmp emptyDir")
            for m in c.get("volumeMounts") or []:
                if m["name"] not in vols:
                    R.fail(f"{where}: volumeMount {m['name']} has no volume")


def check_structure(variant: Variant) -> None:
    """What the values promise, derived from the merged values (never hard-coded per variant)."""
    mv = variant.merged
    name = variant.name
    db = bool(dig(mv, "database", "existingSecret"))
    mode = dig(mv, "migrations", "mode") if db else None
    hpa_on = bool(dig(mv, "autoscaling", "enabled"))
    replicas_value = mv.get("replicaCount")
    replicas = replicas_value if replicas_value is not None else (2 if db else 1)
    min_pods = dig(mv, "autoscaling", "minReplicas") if hpa_on else replicas
    pvc_on = not db and bool(dig(mv, "persistence", "enabled"))

    deployments = variant.find("Deployment")
    if not R.check(len(deployments) == 1, f"{name}: exactly one Deployment"):
        return
    d = deployments[0]
    spec = d["spec"]
    pod = dig(spec, "template", "spec")
    pod_labels = dig(spec, "template", "metadata", "labels")
    server = pod["containers"][0]
    args = [str(a) for a in server.get("args") or []]
    R.check(labels_match(dig(spec, "selector", "matchLabels"), pod_labels), f"{name}: Deployment selector matches its pod labels")
    if hpa_on:
        R.check("replicas" not in spec, f"{name}: no Deployment replicas (the HPA owns them)")
    else:
        R.check(spec.get("replicas") == replicas, f"{name}: {replicas} replica(s) "
                f"({'replicaCount' if replicas_value is not None else ('default with a database' if db else 'embedded store default')})",
                f"got {spec.get('replicas')}")
    if pvc_on:
        R.check(dig(spec, "strategy", "type") == "Recreate", f"{name}: Recreate strategy (embedded store on a PVC: never two writers)")
    else:
        R.check(dig(spec, "strategy", "type") == "RollingUpdate" and dig(spec, "strategy", "rollingUpdate", "maxUnavailable") == 0,
                f"{name}: rolling update with maxUnavailable 0")
    tsc = pod.get("topologySpreadConstraints") or []
    R.check(any(t.get("topologyKey") == "kubernetes.io/hostname" and labels_match(dig(t, "labelSelector", "matchLabels"), pod_labels)
                for t in tsc), f"{name}: topology spread across nodes selects the pods")
    if not R.check("checksum/policy" in (dig(spec, "template", "metadata", "annotations") or {}),
                   f"{name}: a policy checksum annotation rolls the pods on a policy change"):
        pass

    # policy ConfigMap: content, mount, --config path
    cms = variant.find("ConfigMap")
    cm = cms[0] if len(cms) == 1 else None
    if R.check(cm is not None, f"{name}: one ConfigMap for the policy"):
        text = dig(cm, "data", "policy.toml", default="")
        try:
            parsed = tomllib.loads(text)
            pol = dig(mv, "policy")
            want = {"default_ttl": pol["defaultTtl"], "unknown_failure_limit": pol["unknownFailureLimit"],
                    "sweep_interval": pol["sweepInterval"]}
            if pol.get("agents"):
                want["agents"] = {a: {"ttl": p["ttl"]} for a, p in pol["agents"].items()}
            R.check(parsed == {"policy": want}, f"{name}: policy.toml is valid TOML and equals values.policy", f"{parsed} != {want}")
        except tomllib.TOMLDecodeError as e:
            R.fail(f"{name}: policy.toml is not TOML: {e}")
        vol = next((v for v in pod.get("volumes") or [] if dig(v, "configMap", "name") == cm["metadata"]["name"]), None)
        mount = next((m for m in server.get("volumeMounts") or [] if vol and m["name"] == vol["name"]), None)
        config_arg = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
        R.check(bool(mount) and config_arg == mount["mountPath"].rstrip("/") + "/policy.toml",
                f"{name}: --config={config_arg} is the mounted ConfigMap's policy.toml")

    # database and migrations
    jobs = variant.find("Job")
    inits = pod.get("initContainers") or []
    for owner, ps in pod_specs(variant):
        for cname, c in containers_of(ps):
            has_db_env = any(e["name"] == "DATABASE_URL" for e in c.get("env") or [])
            R.check(has_db_env == db, f"{name}: {owner} {cname} {'gets' if db else 'has no'} DATABASE_URL")
    if not db:
        R.check(not jobs and not inits, f"{name}: no migration Job or init container on the embedded store")
        R.check(any(a.startswith("--data-dir=") for a in args), f"{name}: --data-dir set for the embedded store")
        data = next((v for v in pod.get("volumes") or [] if v["name"] == "data"), {})
        if pvc_on:
            claim = dig(data, "persistentVolumeClaim", "claimName")
            pvcs = [p["metadata"]["name"] for p in variant.find("PersistentVolumeClaim")]
            existing = dig(mv, "persistence", "existingClaim")
            R.check(bool(claim) and (claim == existing or claim in pvcs), f"{name}: data on PersistentVolumeClaim {claim}")
        else:
            R.check("emptyDir" in data, f"{name}: data on an emptyDir")
        R.check("NO DATABASE CONFIGURED" in variant.notes, f"{name}: NOTES.txt warns that no database is configured")
    else:
        R.check(not any(a.startswith("--data-dir") for a in args), f"{name}: no data dir with Postgres")
        mos = next((a.split("=", 1)[1] for a in args if a.startswith("--migrate-on-start")), "true")
        if mode == "hook":
            ok = len(jobs) == 1
            if R.check(ok, f"{name}: one migration Job"):
                job = jobs[0]
                hooks = set((dig(job, "metadata", "annotations", "helm.sh/hook") or "").split(","))
                R.check({"pre-install", "pre-upgrade"} <= hooks, f"{name}: the Job is a pre-install,pre-upgrade hook ({sorted(hooks)})")
                jargs = dig(job, "spec", "template", "spec", "containers", 0, "args") or []
                R.check(jargs[:1] == ["migrate"], f"{name}: the Job runs `sessionkeeper migrate`")
            R.check(not inits, f"{name}: no migration init container with the hook")
            R.check(mos == "false", f"{name}: servers do not migrate at startup (the hook did)")
        elif mode == "initContainer":
            R.check(not jobs, f"{name}: no hook Job in initContainer mode")
            R.check(len(inits) == 1 and (inits[0].get("args") or [])[:1] == ["migrate"],
                    f"{name}: an init container runs `sessionkeeper migrate` before the server")
            R.check(mos == "false", f"{name}: servers do not migrate at startup (the init container did)")
        else:
            R.check(not jobs and not inits, f"{name}: no Job or init container in startup mode")
            R.check(mos == "true", f"{name}: servers migrate at startup under the database lock")

    # optional objects
    pdbs = variant.find("PodDisruptionBudget")
    if min_pods > 1 and dig(mv, "podDisruptionBudget", "enabled"):
        R.check(len(pdbs) == 1 and labels_match(dig(pdbs[0], "spec", "selector", "matchLabels"), pod_labels),
                f"{name}: a PodDisruptionBudget selects the pods (at least {min_pods} pods)")
        if len(pdbs) == 1:
            want_min = dig(mv, "podDisruptionBudget", "minAvailable")
            got = {k: v for k, v in pdbs[0]["spec"].items() if k in ("minAvailable", "maxUnavailable")}
            want = {"minAvailable": want_min} if want_min is not None else {
                "maxUnavailable": dig(mv, "podDisruptionBudget", "maxUnavailable")}
            R.check(got == want, f"{name}: the PodDisruptionBudget allows {want}", f"got {got}")
    else:
        R.check(not pdbs, f"{name}: no PodDisruptionBudget for {min_pods} pod(s)")
    hpas = variant.find("HorizontalPodAutoscaler")
    if hpa_on:
        R.check(len(hpas) == 1 and dig(hpas[0], "spec", "scaleTargetRef", "name") == d["metadata"]["name"]
                and dig(hpas[0], "spec", "scaleTargetRef", "kind") == "Deployment",
                f"{name}: the HPA scales the Deployment ({dig(mv, 'autoscaling', 'minReplicas')}..{dig(mv, 'autoscaling', 'maxReplicas')})")
    else:
        R.check(not hpas, f"{name}: no HPA")
    sms = variant.find("ServiceMonitor")
    if dig(mv, "metrics", "serviceMonitor", "enabled"):
        svc = next((s for s in variant.find("Service") if dig(s, "spec", "clusterIP") != "None"), None)
        if R.check(len(sms) == 1 and svc is not None, f"{name}: one ServiceMonitor"):
            sm = sms[0]
            R.check(labels_match(dig(sm, "spec", "selector", "matchLabels"), dig(svc, "metadata", "labels")),
                    f"{name}: the ServiceMonitor selects Service/{svc['metadata']['name']}")
            eps = dig(sm, "spec", "endpoints", default=[])
            sports = {p.get("name") for p in dig(svc, "spec", "ports", default=[])}
            R.check(bool(eps) and all(e.get("port") in sports and e.get("path") == "/metrics" for e in eps),
                    f"{name}: the ServiceMonitor scrapes /metrics on a named Service port")
    else:
        R.check(not sms, f"{name}: no ServiceMonitor")
    nps = variant.find("NetworkPolicy")
    if dig(mv, "networkPolicy", "enabled"):
        if R.check(len(nps) == 1 and labels_match(dig(nps[0], "spec", "podSelector", "matchLabels"), pod_labels),
                   f"{name}: a NetworkPolicy selects the pods"):
            cports = {p["name"] for p in server.get("ports") or []}
            named = [p.get("port") for rule in dig(nps[0], "spec", "ingress", default=[]) for p in rule.get("ports") or []]
            R.check(all((p in cports) if isinstance(p, str) else True for p in named) and {"grpc", "metrics"} <= set(named),
                    f"{name}: the NetworkPolicy admits the grpc and metrics container ports ({named})")
            if dig(mv, "networkPolicy", "egress", "enabled"):
                egress = dig(nps[0], "spec", "egress", default=[])
                eports = {p.get("port") for rule in egress for p in rule.get("ports") or []}
                want = {53} | ({dig(mv, "networkPolicy", "egress", "databasePort")} if db else set())
                R.check(want <= eports, f"{name}: egress allows DNS{' and Postgres' if db else ''} ({sorted(map(str, eports))})")
    else:
        R.check(not nps, f"{name}: no NetworkPolicy")

    # TLS, tokens, OTel
    tls = dig(mv, "tls", "enabled")
    has_tls_args = any(a.startswith("--tls-cert=") for a in args) and any(a.startswith("--tls-key=") for a in args)
    R.check(has_tls_args == bool(tls), f"{name}: TLS {'on, from Secret ' + str(dig(mv, 'tls', 'existingSecret')) if tls else 'off'}")
    if tls:
        vol = next((v for v in pod.get("volumes") or [] if dig(v, "secret", "secretName") == dig(mv, "tls", "existingSecret")), None)
        R.check(vol is not None, f"{name}: the TLS Secret is mounted")
        R.check(("--tls-client-ca" in " ".join(args)) == bool(dig(mv, "tls", "clientCA", "enabled")),
                f"{name}: client CA (mutual TLS) {'on' if dig(mv, 'tls', 'clientCA', 'enabled') else 'off'}")
    tokens = dig(mv, "auth", "existingSecret")
    envs = {e["name"]: e for e in server.get("env") or []}
    if tokens:
        path = dig(envs, "SESSIONKEEPER_AUTH_TOKENS", "value")
        vol = next((v for v in pod.get("volumes") or [] if dig(v, "secret", "secretName") == tokens), None)
        mount = next((m for m in server.get("volumeMounts") or [] if vol and m["name"] == vol["name"]), None)
        keys = [i["path"] for i in dig(vol, "secret", "items", default=[])] if vol else []
        R.check(bool(path and mount) and path in [mount["mountPath"].rstrip("/") + "/" + k for k in keys],
                f"{name}: SESSIONKEEPER_AUTH_TOKENS={path} is the mounted Secret {tokens}'s {dig(mv, 'auth', 'key')}")
    else:
        R.check("SESSIONKEEPER_AUTH_TOKENS" not in envs, f"{name}: no tokens file")
    endpoint = dig(mv, "otel", "endpoint")
    R.check((dig(envs, "OTEL_EXPORTER_OTLP_ENDPOINT", "value") or "") == (endpoint or ""),
            f"{name}: OTEL_EXPORTER_OTLP_ENDPOINT {'= ' + endpoint if endpoint else 'unset'} (otel.endpoint)")
    svc_name = next((s["metadata"]["name"] for s in variant.find("Service") if dig(s, "spec", "clusterIP") != "None"), "?")
    R.check(re.search(r"grpcurl .*sessionkeeper\.v1\.SessionService/Get", variant.notes, re.S) is not None
            and f"svc/{svc_name}" in variant.notes, f"{name}: NOTES.txt has the port-forward and grpcurl lines")


# --------------------------------------------------------------------------- runtime smoke test

class FakeSecrets:
    """Material for the Secrets the pods mount: a test CA, a server certificate for localhost, a
    client certificate signed by the CA, and a tokens file in the specification's format."""

    def __init__(self, directory: Path) -> None:
        import datetime  # noqa: PLC0415
        import hashlib  # noqa: PLC0415

        from cryptography import x509  # noqa: PLC0415
        from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

        now = datetime.datetime.now(datetime.timezone.utc)

        def name(cn: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        def pem_key(k: Any) -> bytes:
            return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (x509.CertificateBuilder().subject_name(name("deploy-check CA")).issuer_name(name("deploy-check CA"))
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                           key_encipherment=False, data_encipherment=False, key_agreement=False,
                                           encipher_only=False, decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA256()))

        def leaf(cn: str, usage: Any, sans: list[Any]) -> tuple[bytes, bytes]:
            key = ec.generate_private_key(ec.SECP256R1())
            b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject).public_key(key.public_key())
                 .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                 .not_valid_after(now + datetime.timedelta(days=1))
                 .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                 .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
            if sans:
                b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            cert = b.sign(ca_key, hashes.SHA256())
            return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)

        import ipaddress  # noqa: PLC0415
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM)
        self.server_cert, self.server_key = leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                                                 [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        self.client_cert, self.client_key = leaf("deploy-check client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
        self.token = "deploy-check-token"
        self.tokens_toml = (
            "[[tokens]]\n"
            'name = "deploy-check"\n'
            f'sha256 = "{hashlib.sha256(self.token.encode()).hexdigest()}"\n'
            'namespaces = ["*"]\n'
        ).encode()
        directory.mkdir(parents=True, exist_ok=True)

    def content(self, key: str) -> bytes | None:
        return {"tls.crt": self.server_cert, "tls.key": self.server_key, "ca.crt": self.ca_pem,
                "tokens.toml": self.tokens_toml}.get(key)


def _private_netns() -> None:
    """Bring up loopback in the new network namespace (ioctl: no iproute2 needed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ifr = struct.pack("16sH14s", b"lo", 0, b"\0" * 14)
    flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, ifr)[:18])[1]  # SIOCGIFFLAGS
    fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", flags | 0x1, b"\0" * 14))  # SIOCSIFFLAGS IFF_UP
    s.close()


def _http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def _grpc_health(port: int, service: str, tls: dict[str, bytes] | None = None, timeout: float = 1.0) -> str:
    import grpc  # noqa: PLC0415
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    target = f"127.0.0.1:{port}"
    if tls:
        creds = grpc.ssl_channel_credentials(root_certificates=tls["ca"], private_key=tls.get("key"),
                                             certificate_chain=tls.get("cert"))
        channel = grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "localhost")])
    else:
        channel = grpc.insecure_channel(target)
    try:
        resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    except grpc.RpcError as e:
        return f"rpc error {e.code().name}"
    finally:
        channel.close()


def run_probe(probe: dict[str, Any], ports: dict[str, int]) -> tuple[bool, str]:
    """One probe, as the kubelet runs it: gRPC Health/Check on plaintext, or an HTTP GET (2xx/3xx)."""
    if "grpc" in probe:
        status = _grpc_health(probe["grpc"]["port"], probe["grpc"].get("service", ""),
                              timeout=probe.get("timeoutSeconds", 1))
        return status == "SERVING", f"grpc {probe['grpc']['port']} service {probe['grpc'].get('service', '')!r}: {status}"
    hg = probe["httpGet"]
    port = hg["port"] if isinstance(hg["port"], int) else ports[hg["port"]]
    code = _http_status(port, hg.get("path", "/"), timeout=probe.get("timeoutSeconds", 1))
    return code is not None and 200 <= code < 400, f"http {port}{hg.get('path')}: {code}"


def smoke_one(plan_file: Path) -> int:
    """Runs inside `unshare -n`: the pod's containers in order, then the kubelet's probes, then
    SIGTERM. Prints a JSON list of [ok, message] to stdout."""
    plan = json.loads(plan_file.read_text())
    results: list[tuple[bool, str]] = []
    _private_netns()
    for step in plan["before"]:
        proc = subprocess.run(step["argv"], env=step["env"], cwd=step["cwd"], capture_output=True, text=True, timeout=120)
        results.append((proc.returncode == 0, f"{step['label']} exits 0 (`{' '.join(step['argv'][1:2])}`)"
                        + ("" if proc.returncode == 0 else f": exit {proc.returncode}: {proc.stderr.strip()[-400:]}")))
        if proc.returncode != 0:
            print(json.dumps(results))
            return 0
    main = plan["main"]
    log = open(main["log"], "w")
    proc = subprocess.Popen(main["argv"], env=main["env"], cwd=main["cwd"], stdout=log, stderr=subprocess.STDOUT)
    ports = plan["ports"]
    try:
        deadline = time.monotonic() + plan["startup_budget"]
        pending = {"startupProbe": plan["probes"]["startupProbe"], "readinessProbe": plan["probes"]["readinessProbe"],
                   "livenessProbe": plan["probes"]["livenessProbe"]}
        last: dict[str, str] = {}
        while pending and time.monotonic() < deadline and proc.poll() is None:
            for name, probe in list(pending.items()):
                ok, msg = run_probe(probe, ports)
                last[name] = msg
                if ok:
                    results.append((True, f"{name} passes against the running binary ({msg})"))
                    del pending[name]
            time.sleep(0.2)
        for name in pending:
            why = (f"the binary exited {proc.poll()} first" if proc.poll() is not None
                   else f"not within {plan['startup_budget']}s")
            results.append((False, f"{name} never passed ({why}; last: {last.get(name)}); "
                                   f"log tail: {Path(main['log']).read_text()[-600:].strip()}"))
        if proc.poll() is not None:
            print(json.dumps(results))
            return 0
        # what the ServiceMonitor scrapes is served
        for port, path in plan["scrape"]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                    body = resp.read().decode(errors="replace")
                    ok = resp.status == 200 and "sessionkeeper_" in body
                    results.append((ok, f"the ServiceMonitor's scrape http {port}{path} answers {resp.status} with "
                                    f"{sum(1 for l in body.splitlines() if l.startswith('sessionkeeper_'))} sessionkeeper_* samples"))
            except (OSError, urllib.error.HTTPError) as e:
                results.append((False, f"the ServiceMonitor's scrape http {port}{path} fails: {e}"))
        # the gRPC port answers real calls (over TLS with the mounted material when it is on)
        tls = plan.get("tls")
        tls_bytes = {k: Path(v).read_bytes() for k, v in tls.items()} if tls else None
        status = _grpc_health(ports["grpc"], READINESS_SERVICE, tls=tls_bytes, timeout=2)
        results.append((status == "SERVING", f"gRPC Health/Check({READINESS_SERVICE}) on the grpc port "
                        f"{'over TLS' + (' with a client certificate' if tls and 'cert' in tls else '') if tls else 'plaintext'}: {status}"))
        if tls and "cert" in tls:
            bare = {"ca": tls_bytes["ca"]}
            status = _grpc_health(ports["grpc"], READINESS_SERVICE, tls=bare, timeout=2)
            results.append((status != "SERVING", f"mutual TLS: a client without a certificate is refused ({status})"))
        # SIGTERM: readiness goes at once, the process exits 0 within the grace period
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        went = None
        while time.monotonic() - t0 < 3:
            ok, msg = run_probe(plan["probes"]["readinessProbe"], ports)
            if not ok:
                went = time.monotonic() - t0
                break
            time.sleep(0.1)
        results.append((went is not None, f"after SIGTERM the readinessProbe fails within {went or 3:.1f}s "
                        "(endpoints drop the pod during --shutdown-delay)"))
        try:
            rc = proc.wait(timeout=plan["grace"])
            took = time.monotonic() - t0
            results.append((rc == 0, f"exits {rc} {took:.1f}s after SIGTERM, within terminationGracePeriodSeconds {plan['grace']}"))
        except subprocess.TimeoutExpired:
            results.append((False, f"still running {plan['grace']}s after SIGTERM: the kubelet would SIGKILL it"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    print(json.dumps(results))
    return 0


def postgres_for_smoke() -> tuple[str | None, str]:
    """A trust-auth Postgres on a Unix socket (reachable from a private network namespace)."""
    if os.environ.get("SESSIONKEEPER_DEPLOY_CHECK_NO_PG") == "1":
        return None, "SESSIONKEEPER_DEPLOY_CHECK_NO_PG=1"
    psql = shutil.which("psql")
    if not psql:
        return None, "psql not installed"
    for sockdir in ("/var/run/postgresql", "/run/postgresql", "/tmp"):
        for sock in sorted(Path(sockdir).glob(".s.PGSQL.*")) if Path(sockdir).is_dir() else []:
            port = sock.name.rsplit(".", 1)[1]
            for user in ("postgres", os.environ.get("USER", "root")):
                proc = subprocess.run([psql, "-w", "-X", "-At", "-h", sockdir, "-p", port, "-U", user, "-d", "postgres",
                                       "-c", "select 1"], capture_output=True, text=True, timeout=15,
                                      env={**clean_env(), "PGCONNECT_TIMEOUT": "5"})
                if proc.returncode == 0:
                    return f"{sockdir}|{port}|{user}", f"Postgres on {sockdir} port {port} as {user}"
    return None, "no trust-auth Postgres on a local Unix socket"


def pg_admin(pg: str, *statements: str) -> None:
    sockdir, port, user = pg.split("|")
    cmds = [arg for sql in statements for arg in ("-c", sql)]
    subprocess.run(["psql", "-w", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", sockdir, "-p", port, "-U", user, "-d", "postgres",
                    *cmds], check=True, capture_output=True, text=True, timeout=60, env=clean_env())


def plan_smoke(variant: Variant, binary: Path, work: Path, secrets: FakeSecrets, pg: str | None, index: int) -> dict[str, Any] | str:
    """The pod of `variant` as host processes: every volume mount becomes a directory filled from
    the rendered ConfigMap, the fake Secrets or nothing (emptyDir/PVC), and the container paths in
    args and env are rewritten to it."""
    d = variant.one("Deployment")
    pod = dig(d, "spec", "template", "spec")
    db_name = None
    if any(e["name"] == "DATABASE_URL" for e in pod["containers"][0].get("env") or []):
        if not pg:
            return "needs Postgres"
        db_name = f"sessionkeeper_deploy_check_{os.getpid()}_{index}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    cms = {c["metadata"]["name"]: c for c in variant.find("ConfigMap")}

    def materialise(container: dict[str, Any], tag: str) -> dict[str, str]:
        mapping = {}
        for m in container.get("volumeMounts") or []:
            target = work / tag / m["mountPath"].strip("/").replace("/", "_")
            target.mkdir(parents=True, exist_ok=True)
            vol = volumes[m["name"]]
            if "configMap" in vol:
                for key, text in (cms[vol["configMap"]["name"]].get("data") or {}).items():
                    (target / key).write_text(text)
            elif "secret" in vol:
                items = vol["secret"].get("items") or []
                if not items:
                    raise RuntimeError(f"secret volume {m['name']} without items: cannot tell which keys it needs")
                for item in items:
                    data = secrets.content(item["key"])
                    if data is None:
                        raise RuntimeError(f"no test material for secret key {item['key']!r}")
                    (target / item["path"]).write_bytes(data)
            mapping[m["mountPath"].rstrip("/")] = str(target)
        return mapping

    def rewrite(value: str, mapping: dict[str, str]) -> str:
        # Already a local path (a value rewritten before, e.g. through $(VAR)): a checkout under
        # /tmp must not be mapped again into the pod's /tmp mount.
        if value.startswith(str(work) + "/"):
            return value
        for mount, local in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
            if value == mount or value.startswith(mount + "/"):
                return local + value[len(mount):]
            # One mount per value: a rewritten path under /tmp must not be rewritten again into
            # the pod's /tmp mount (a checkout under /tmp would be mapped twice).
            if "=" + mount + "/" in value:
                return value.replace("=" + mount + "/", "=" + local + "/", 1)
            if value.endswith("=" + mount):
                return value[: -len(mount)] + local
        return value

    def process(container: dict[str, Any], tag: str) -> dict[str, Any]:
        mapping = materialise(container, tag)
        env: dict[str, str] = {"PATH": "/usr/bin:/bin", "HOME": str(work)}
        for e in container.get("env") or []:
            if "value" in e:
                raw = str(e["value"])
                val = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), raw)
                env[e["name"]] = rewrite(val, mapping)
            elif dig(e, "valueFrom", "secretKeyRef"):
                if e["name"] != "DATABASE_URL":
                    raise RuntimeError(f"no test value for secretKeyRef variable {e['name']}")
                sockdir, port, user = pg.split("|")
                env[e["name"]] = f"postgres://{user}@localhost:{port}/{db_name}?host={sockdir}"
            elif dig(e, "valueFrom", "fieldRef"):
                env[e["name"]] = {"metadata.name": "deploy-check-pod", "metadata.namespace": NAMESPACE}.get(
                    e["valueFrom"]["fieldRef"]["fieldPath"], "deploy-check")
            else:
                raise RuntimeError(f"unsupported env source for {e['name']}")
        argv = [str(binary)] + [rewrite(str(a), mapping) for a in container.get("args") or []]
        cwd = work / tag / "cwd"
        cwd.mkdir(parents=True, exist_ok=True)
        return {"argv": argv, "env": env, "cwd": str(cwd), "mapping": mapping}

    before = []
    hook_jobs = [j for j in variant.find("Job") if "pre-install" in (dig(j, "metadata", "annotations", "helm.sh/hook") or "")]
    for job in hook_jobs:
        for c in dig(job, "spec", "template", "spec", "containers"):
            volumes.update({v["name"]: v for v in dig(job, "spec", "template", "spec", "volumes") or []})
            before.append({**process(c, f"job-{c['name']}"), "label": f"hook Job/{job['metadata']['name']}"})
    for c in pod.get("initContainers") or []:
        before.append({**process(c, f"init-{c['name']}"), "label": f"initContainer {c['name']}"})
    server = pod["containers"][0]
    main = process(server, "main")
    main["log"] = str(work / "server.log")
    ports = {p["name"]: p["containerPort"] for p in server.get("ports") or []}
    tls = None
    args = main["argv"]
    if any(a.startswith("--tls-cert=") for a in args):
        tls = {"ca": str(work / "test-ca.crt")}
        Path(tls["ca"]).write_bytes(secrets.ca_pem)
        if any(a.startswith("--tls-client-ca=") for a in args):
            tls["cert"] = str(work / "client.crt")
            tls["key"] = str(work / "client.key")
            Path(tls["cert"]).write_bytes(secrets.client_cert)
            Path(tls["key"]).write_bytes(secrets.client_key)
    scrape = []
    for sm in variant.find("ServiceMonitor"):
        for ep in dig(sm, "spec", "endpoints", default=[]):
            svc = next((x for x in variant.find("Service")
                        if labels_match(dig(sm, "spec", "selector", "matchLabels"), dig(x, "metadata", "labels"))
                        and any(p.get("name") == ep.get("port") for p in dig(x, "spec", "ports", default=[]))), None)
            if svc is None:
                raise RuntimeError(f"ServiceMonitor endpoint port {ep.get('port')!r} is on no selected Service")
            target = next(p for p in svc["spec"]["ports"] if p.get("name") == ep.get("port")).get("targetPort")
            scrape.append([target if isinstance(target, int) else ports[target], ep.get("path", "/metrics")])
    startup = server["startupProbe"]
    return {
        "scrape": scrape,
        "variant": variant.name, "before": before, "main": main, "ports": ports, "tls": tls, "db": db_name,
        "probes": {k: server[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")},
        "startup_budget": min(60, startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)),
        "grace": pod.get("terminationGracePeriodSeconds", 30),
    }


def check_runtime(variants: list[Variant], binary: Path, out: Path) -> None:
    R.start("the binary, started as each rendered pod (private network namespace, rendered ports)")
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare or "unshare", "-n", "true"], capture_output=True, text=True) if unshare else None
    if not probe or probe.returncode != 0:
        R.skip("runtime smoke test: `unshare -n` is not available here (needs root or user namespaces): "
               + (probe.stderr.strip() if probe else "unshare not installed"))
        return
    pg, pg_why = postgres_for_smoke()
    R.note(f"database for variants with database.existingSecret: {pg_why}")
    secrets = FakeSecrets(out / "smoke")
    plans = []
    for i, v in enumerate(variants):
        try:
            plan = plan_smoke(v, binary, out / "smoke" / f"v{i}", secrets, pg, i)
        except Exception as e:  # noqa: BLE001
            R.fail(f"{v.name}: cannot build the pod for the smoke test: {e}")
            continue
        if isinstance(plan, str):
            R.skip(f"{v.name}: {plan} ({pg_why}); set up one to run this variant")
            continue
        plans.append(plan)
    dbs = [plan["db"] for plan in plans if plan["db"]]
    if dbs:
        pg_admin(pg, *[f"DROP DATABASE IF EXISTS {db} WITH (FORCE)" for db in dbs], *[f"CREATE DATABASE {db}" for db in dbs])
    procs = []
    for i, plan in enumerate(plans):
        plan_file = out / "smoke" / f"plan-{i}.json"
        plan_file.write_text(json.dumps(plan))
        procs.append((plan, subprocess.Popen([unshare, "-n", sys.executable, __file__, "--smoke-one", str(plan_file)],
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for plan, proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        try:
            results = json.loads(stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            R.fail(f"{plan['variant']}: smoke runner crashed: {stderr.strip()[-800:]}")
            continue
        for ok, msg in results:
            R.check(ok, f"{plan['variant']}: {msg}")
    if dbs:
        pg_admin(pg, *[f"DROP DATABASE IF EXISTS {db} WITH (FORCE)" for db in dbs])


# ------------------------------------------------------------------------------------------ main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "debug" / "sessionkeeper")
    parser.add_argument("--out", type=Path, default=ROOT / "target" / "deploy-check")
    parser.add_argument("--smoke-one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-runtime", action="store_true", help="skip starting the binary")
    opts = parser.parse_args()
    if opts.smoke_one:
        return smoke_one(opts.smoke_one)

    started = time.monotonic()
    binary = opts.binary.resolve()
    out = opts.out
    (out / "rendered").mkdir(parents=True, exist_ok=True)
    h = helm()
    import kubernetes_validate  # noqa: PLC0415
    print(f"tools: Helm Go SDK {h.helm_sdk_version()} (helm-python-sdk {h.__version__}, libhelm_c {h.helm_c_version()}), "
          f"kubernetes-validate {kubernetes_validate.__version__} (Kubernetes {', '.join(KUBE_VERSIONS)}, strict), "
          f"Python {sys.version.split()[0]}; binary {binary.relative_to(ROOT) if binary.is_relative_to(ROOT) else binary}")

    clis = {sub: parse_help(binary, sub) for sub in ("serve", "migrate")}
    binary_bytes = binary.read_bytes()
    R.start("the binary's command line (`sessionkeeper serve --help`, `migrate --help`)")
    for sub, cli in clis.items():
        R.check(bool(cli.flags), f"`{sub} --help`: {len(cli.flags)} flags, variables: {', '.join(sorted(cli.env_vars))}")

    chart_values = check_chart_metadata(binary)
    check_dockerfile(binary, clis["serve"], chart_values)

    variants = load_variants()
    check_lint(variants)

    R.start("helm template (Helm SDK render, release 'sessionkeeper' in namespace 'sessionkeeper')")
    rendered_ok = []
    for v in variants:
        try:
            render(v)
        except Exception as e:  # noqa: BLE001
            R.fail(f"render {v.name}: {e}")
            continue
        path = write_rendered(v, out / "rendered")
        kinds = ", ".join(f"{o['kind']}/{o['metadata'].get('name')}" for o in v.objects)
        R.ok(f"render {v.name}: {len(v.objects)} objects -> {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ({kinds})")
        rendered_ok.append(v)
    check_invalid_values()

    R.start(f"Kubernetes schema validation (strict: unknown fields are errors) on {', '.join(KUBE_VERSIONS)}")
    for v in rendered_ok:
        validate_objects(v)

    R.start("chart semantics (replicas, strategy, migrations, PDB/HPA/ServiceMonitor/NetworkPolicy, TLS, tokens, OTel)")
    for v in rendered_ok:
        try:
            check_structure(v)
        except Exception as e:  # noqa: BLE001
            R.fail(f"{v.name}: check crashed: {e!r}\n{traceback.format_exc()}")
    R.start("pod security and resources (Deployment and Job pods, every container)")
    for v in rendered_ok:
        check_security(v)
    R.start("chart vs binary: flags, variables, ports, probes, shutdown timing")
    for v in rendered_ok:
        try:
            check_cli_and_ports(v, clis, binary_bytes)
        except Exception as e:  # noqa: BLE001
            R.fail(f"{v.name}: check crashed: {e!r}\n{traceback.format_exc()}")
    if opts.no_runtime:
        R.start("runtime smoke test")
        R.skip("--no-runtime")
    else:
        check_runtime(rendered_ok, binary, out)

    took = time.monotonic() - started
    print(f"\n== summary ({took:.1f}s)")
    if R.failed:
        print(f"{len(R.failed)} check(s) FAILED:")
        for f in R.failed:
            print(f"  - {f}")
    print(f"test-deploy: {R.passed} passed, {len(R.failed)} failed, {R.skipped} skipped")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
