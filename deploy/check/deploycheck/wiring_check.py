"""The chart against the binary, per rendered container that runs the sessionkeeper image: the
binary's own parser accepts the rendered command line (`sessionkeeper <args> --help`), every
variable is one the command reads, every path it opens is mounted, the ports it listens on are
the container, probe and Service ports, and the pod's grace period outlasts the shutdown."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import binary as cli
from .common import LIVENESS_SERVICE, READINESS_SERVICE, R, Variant, dig, labels_match, port_of, sessionkeeper_containers

# Variables read by the OpenTelemetry SDK or the log filter, not by clap: the chart may set these
# when the binary holds their names (it reads them by name).
NON_CLAP_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "RUST_LOG"}


def flag_values(args: list[str]) -> dict[str, str | None]:
    """`--flag=value` -> {flag: value}; the chart renders every flag in this one form."""
    return {a[2:].partition("=")[0]: (a.partition("=")[2] if "=" in a else None) for a in args if a.startswith("--")}


def check_container(v: Variant, where: str, c: dict[str, Any], binary: Path, binary_bytes: bytes) -> None:
    if c.get("command"):
        R.fail(f"{where}: overrides the image ENTRYPOINT with command {c['command']}")
    args = [str(a) for a in c.get("args") or []]
    sub = args[0] if args else "serve"
    refusal = cli.args_refusal(binary, args)
    R.check(refusal is None, f"{where}: the binary's parser accepts `sessionkeeper {' '.join(args)}`", refusal or "")
    flags = flag_values(args[1:])
    R.check("database-url" not in flags, f"{where}: no --database-url flag (the URL stays in the Secret)")
    env = c.get("env") or []
    names = [e["name"] for e in env]
    known = cli.env_vars(binary, sub)
    referenced = set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(str(e.get("value", "")) for e in env)))
    for e in env:
        n = e["name"]
        if n in known:
            R.ok(f"{where}: env {n} is in `sessionkeeper {sub} --help`")
        elif n in NON_CLAP_ENV:
            R.check(n.encode() in binary_bytes, f"{where}: env {n} is read by the binary (its name is in the binary)")
        elif "fieldRef" in (e.get("valueFrom") or {}) and n in referenced:
            R.ok(f"{where}: env {n} (downward API) only feeds $({n}) in another variable")
        else:
            R.fail(f"{where}: env {n} is not a variable of `sessionkeeper {sub} --help` nor one of {sorted(NON_CLAP_ENV)}: "
                   "the binary would silently ignore it")
    R.check(len(names) == len(set(names)), f"{where}: no variable set twice")
    for e in env:
        if e["name"] == "DATABASE_URL":
            ref = dig(e, "valueFrom", "secretKeyRef")
            R.check(bool(ref) and "value" not in e, f"{where}: DATABASE_URL comes only from secretKeyRef",
                    "a literal value would put the password in the pod spec")
            if ref:
                R.check(ref.get("name") == dig(v.merged, "database", "existingSecret")
                        and ref.get("key") == dig(v.merged, "database", "secretKey"),
                        f"{where}: DATABASE_URL from Secret {ref.get('name')} key {ref.get('key')} (database.existingSecret/secretKey)")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
    paths = {f"--{k}": x for k, x in flags.items() if x and x.startswith("/")}
    paths.update({e["name"]: str(e["value"]) for e in env if str(e.get("value", "")).startswith("/")})
    for label, value in paths.items():
        mount = next((m for p, m in mounts.items() if value == p or value.startswith(p.rstrip("/") + "/")), None)
        needs_write = label == "--data-dir"
        R.check(mount is not None and not (needs_write and mount.get("readOnly")),
                f"{where}: {label}={value} is on a {'writable ' if needs_write else ''}volume mount"
                + (f" ({mount['name']})" if mount else ""),
                "not under any volumeMount" if mount is None else "mounted read-only")


def check_server(v: Variant, c: dict[str, Any], spec: dict[str, Any], binary: Path) -> None:
    where = f"{v.name}: server"
    flags = flag_values([str(a) for a in c.get("args") or []][1:])
    ports = {p.get("name"): p for p in c.get("ports") or []}
    listen = flags.get("listen") or cli.default_of(binary, "serve", "listen")
    metrics = flags.get("metrics-listen") or cli.default_of(binary, "serve", "metrics-listen")
    for label, addr, pname in (("gRPC", listen, "grpc"), ("metrics", metrics, "metrics")):
        R.check(addr.rsplit(":", 1)[0] in ("0.0.0.0", "[::]"), f"{where}: {label} listens on all interfaces ({addr})",
                "the kubelet and the Service reach the pod IP, not loopback")
        R.check(dig(ports, pname, "containerPort") == port_of(addr),
                f"{where}: containerPort {pname!r} is the port the binary listens on for {label} ({port_of(addr)})",
                f"containerPort {dig(ports, pname, 'containerPort')}")
    grpc_port, metrics_port = port_of(listen), port_of(metrics)
    tls_on = "tls-cert" in flags

    def resolve(port: Any) -> int | None:
        return port if isinstance(port, int) else dig(ports, port, "containerPort")

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
            R.check(resolve(hg.get("port")) == metrics_port and hg.get("path") == want_path and hg.get("scheme", "HTTP") == "HTTP",
                    f"{where}: {probe_name} GETs http {want_path} on the metrics port {metrics_port}", f"got {hg}")
        else:
            R.fail(f"{where}: {probe_name} is neither grpc nor httpGet")
    delay, drain = dig(v.merged, "server", "shutdownDelaySeconds"), dig(v.merged, "server", "drainTimeoutSeconds")
    R.check(flags.get("shutdown-delay") == f"{delay}s" and flags.get("drain-timeout") == f"{drain}s" and delay > 0,
            f"{where}: --shutdown-delay={delay}s (endpoints update before draining) and --drain-timeout={drain}s",
            f"args say {flags.get('shutdown-delay')} / {flags.get('drain-timeout')}")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    R.check(grace > delay + drain, f"{where}: terminationGracePeriodSeconds {grace} > shutdown delay {delay}s + drain timeout {drain}s")
    pod_labels = dig(v.one("Deployment"), "spec", "template", "metadata", "labels")
    for svc in v.find("Service"):
        sports = {p.get("name"): p for p in dig(svc, "spec", "ports", default=[])}
        sname = svc["metadata"]["name"]
        R.check(labels_match(dig(svc, "spec", "selector"), pod_labels), f"{v.name}: Service/{sname} selects the Deployment's pods")
        for pname, want in (("grpc", grpc_port), ("metrics", metrics_port)):
            if pname not in sports:
                if not (pname == "metrics" and dig(svc, "spec", "clusterIP") == "None"):
                    R.fail(f"{v.name}: Service/{sname} has no port named {pname!r}")
                continue
            R.check(resolve(sports[pname].get("targetPort")) == want,
                    f"{v.name}: Service/{sname} port {pname!r} targets the binary's {pname} port {want}")
        if "grpc" in sports:
            R.check(sports["grpc"].get("appProtocol") == "grpc", f"{v.name}: Service/{sname} port grpc has appProtocol grpc")


def check_wiring(v: Variant, binary: Path, binary_bytes: bytes) -> None:
    server = dig(v.one("Deployment"), "spec", "template", "spec", "containers", 0)
    for where, c, spec in sessionkeeper_containers(v):
        check_container(v, f"{v.name}: {where}", c, binary, binary_bytes)
        if c is server:
            check_server(v, c, spec, binary)


def self_test(binary: Path) -> None:
    """The parser check can fail: a misspelt flag and a bad duration are refused."""
    for args in (["serve", "--listen-adress=0.0.0.0:1"], ["serve", "--db-acquire-timeout=5 parsecs"], ["migrate", "--listen=nowhere"]):
        R.check(cli.args_refusal(binary, args) is not None, f"self-test: the binary refuses `sessionkeeper {' '.join(args)}`")
