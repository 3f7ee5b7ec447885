"""The binary started as each rendered pod: every container that runs the sessionkeeper image, in
order (hook Job, init containers, server), with the rendered args and env and every volume mount
materialised as a directory, inside a private network namespace (`unshare -n`), where the
rendered probes run against it exactly as the kubelet would, then SIGTERM. Postgres variants get
a database of their own on the local trust-auth Postgres socket. A variant that mounts a CA for
Postgres (extraVolumeMounts) also runs its rendered `migrate` against the local Postgres over TCP
with sslmode=verify-full: it must connect with that CA and be refused with another one."""

from __future__ import annotations

import fcntl
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
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .common import CHECK_DIR, NAMESPACE, READINESS_SERVICE, ROOT, R, Variant, chart_image, clean_env, dig, labels_match

ENTRY = CHECK_DIR / "check_deploy.py"

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


def _grpc_health(port: int, service: str, tls: dict[str, bytes] | None = None, timeout: float = 1.0,
                 host: str = "127.0.0.1") -> str:
    import grpc  # noqa: PLC0415
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    target = f"{host}:{port}"
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
                                    f"{sum(1 for line in body.splitlines() if line.startswith('sessionkeeper_'))} sessionkeeper_* samples"))
            except (OSError, urllib.error.HTTPError) as e:
                results.append((False, f"the ServiceMonitor's scrape http {port}{path} fails: {e}"))
        # the gRPC port answers real calls (over TLS with the mounted material when it is on)
        tls = plan.get("tls")
        tls_bytes = {k: Path(v).read_bytes() for k, v in tls.items()} if tls else None
        status = _grpc_health(ports["grpc"], READINESS_SERVICE, tls=tls_bytes, timeout=2)
        results.append((status == "SERVING", f"gRPC Health/Check({READINESS_SERVICE}) on the grpc port "
                        f"{'over TLS' + (' with a client certificate' if tls and 'cert' in tls else '') if tls else 'plaintext'}: {status}"))
        if plan.get("ipv6"):
            status = _grpc_health(ports["grpc"], READINESS_SERVICE, tls=tls_bytes, timeout=2, host="[::1]")
            results.append((status == "SERVING", f"--listen=[::]: gRPC Health/Check over IPv6 ([::1]): {status}"))
            try:
                with urllib.request.urlopen(f"http://[::1]:{ports['metrics']}/readyz", timeout=2) as resp:
                    results.append((resp.status == 200, f"--metrics-listen=[::]: http [::1]:{ports['metrics']}/readyz {resp.status}"))
            except OSError as e:
                results.append((False, f"--metrics-listen=[::]: http [::1]:{ports['metrics']}/readyz fails: {e}"))
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
            if "configMap" in vol and vol["configMap"]["name"] in cms:
                for key, text in (cms[vol["configMap"]["name"]].get("data") or {}).items():
                    (target / key).write_text(text)
            elif "configMap" in vol:  # the user's own ConfigMap (extraVolumes): test material by key
                for item in vol["configMap"].get("items") or []:
                    data = secrets.content(item["key"])
                    if data is None:
                        raise RuntimeError(f"no test material for configMap key {item['key']!r}")
                    (target / item["path"]).write_bytes(data)
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
        if c.get("image") == chart_image(variant):  # extraInitContainers run other images
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
        "ipv6": ":" in str(dig(variant.merged, "server", "listenHost", default="")),  # the values ask for IPv6
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
        R.fail("runtime smoke test: `unshare -n` is not available here (needs root or user namespaces): "
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
            R.fail(f"{v.name}: {plan} ({pg_why}): a local trust-auth Postgres is needed")
            continue
        plans.append(plan)
    dbs = [plan["db"] for plan in plans if plan["db"]]
    if dbs:
        pg_admin(pg, *[f"DROP DATABASE IF EXISTS {db} WITH (FORCE)" for db in dbs], *[f"CREATE DATABASE {db}" for db in dbs])
    procs = []
    for i, plan in enumerate(plans):
        plan_file = out / "smoke" / f"plan-{i}.json"
        plan_file.write_text(json.dumps(plan))
        procs.append((plan, subprocess.Popen([unshare, "-n", sys.executable, str(ENTRY), "--smoke-one", str(plan_file)],
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




def _pg_show(pg: str, setting: str) -> str:
    sockdir, port, user = pg.split("|")
    return subprocess.run(["psql", "-w", "-X", "-At", "-h", sockdir, "-p", port, "-U", user, "-d", "postgres", "-c",
                           f"SHOW {setting}"], capture_output=True, text=True, timeout=30, env=clean_env()).stdout.strip()


def check_verify_full(variants: list[Variant], binary: Path, out: Path) -> None:
    """The private-CA variant's rendered `migrate` (hook Job or init container) with its
    extraVolumeMounts materialised: the CA it mounts is the local Postgres' certificate, the URL
    has sslmode=verify-full&sslrootcert=<the mounted file>. It must migrate; with an unrelated CA
    in the same place it must be refused (the verification is real)."""
    R.start("Postgres with sslmode=verify-full and sslrootcert from extraVolumes/extraVolumeMounts (local Postgres over TCP)")
    cands = [v for v in variants if v.merged.get("extraVolumeMounts") and dig(v.merged, "database", "existingSecret")]
    if not R.check(bool(cands), f"{len(cands)} variant(s) mount a file for Postgres ({', '.join(v.name for v in cands)})"):
        return
    pg, why = postgres_for_smoke()
    if not R.check(pg is not None and _pg_show(pg, "ssl") == "on", f"the local Postgres serves TLS ({why})"):
        return
    server_cert = Path(_pg_show(pg, "ssl_cert_file")).read_bytes()
    secrets = FakeSecrets(out / "verify-full")
    for i, v in enumerate(cands):
        image = chart_image(v)
        pods = [dig(j, "spec", "template", "spec") for j in v.find("Job")] + [dig(v.one("Deployment"), "spec", "template", "spec")]
        migrate = next((c for p in pods for c in (p.get("initContainers") or []) + (p.get("containers") or [])
                        if c.get("image") == image and (c.get("args") or [])[:1] == ["migrate"]), None)
        if not R.check(migrate is not None, f"{v.name}: renders a `sessionkeeper migrate` container (hook Job or init container)"):
            continue
        volumes = {x["name"]: x for p in pods for x in p.get("volumes") or []}
        work = out / "verify-full" / f"v{i}"
        shutil.rmtree(work, ignore_errors=True)
        ca_path, local = None, {}
        for m in v.merged["extraVolumeMounts"]:
            mounted = any(x["name"] == m["name"] and x["mountPath"] == m["mountPath"] for x in migrate.get("volumeMounts") or [])
            R.check(mounted, f"{v.name}: the migrate container mounts {m['name']} at {m['mountPath']}")
            items = dig(volumes, m["name"], "configMap", "items") or dig(volumes, m["name"], "secret", "items") or []
            for item in items:
                local[item["path"]] = work / m["name"] / item["path"]
                ca_path = ca_path or local[item["path"]]
        if not R.check(ca_path is not None, f"{v.name}: an extra volume with items provides the CA file"):
            continue
        documented = re.search(r"sslrootcert=(\S+)", (ROOT / v.name).read_text())
        mounted = [f"{m['mountPath']}/{p}" for m in v.merged["extraVolumeMounts"] for p in local]
        R.check(bool(documented) and documented.group(1) in mounted,
                f"{v.name}: the URL's sslrootcert={documented.group(1) if documented else '?'} is the mounted file", f"{mounted}")
        db = f"sessionkeeper_verify_full_{os.getpid()}_{i}"
        pg_admin(pg, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", f"CREATE DATABASE {db}")
        _, port, user = pg.split("|")
        url = f"postgres://{user}@localhost:{port}/{db}?sslmode=verify-full&sslrootcert={ca_path}"
        try:
            for ca, want_ok, what in ((server_cert, True, "the mounted CA (the server's issuer)"),
                                      (secrets.ca_pem, False, "an unrelated CA in its place")):
                ca_path.parent.mkdir(parents=True, exist_ok=True)
                ca_path.write_bytes(ca)
                proc = subprocess.run([str(binary), *migrate["args"]], capture_output=True, text=True, timeout=60,
                                      env={**clean_env(), "DATABASE_URL": url}, cwd=work)
                if want_ok:
                    R.check(proc.returncode == 0, f"{v.name}: rendered `migrate` with sslmode=verify-full and {what} connects and migrates",
                            proc.stderr.strip()[-400:])
                else:
                    R.check(proc.returncode != 0 and "certificate" in proc.stderr,
                            f"{v.name}: with {what} the binary refuses the server ({proc.stderr.strip()[-120:]})",
                            f"exit {proc.returncode}")
        finally:
            pg_admin(pg, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
