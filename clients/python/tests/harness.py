"""Start and stop a real sessionkeeper server for the tests, and make test certificates.

The server binary is $SESSIONKEEPER_BIN, or target/release/sessionkeeper of this repository (built with
`cargo build --release --locked -p sessionkeeper` when missing). It runs on port 0 with the embedded SQLite store in a temp
dir; the test learns the ports from its JSON "sessionkeeper listening" log line and waits for
/readyz on the metrics port.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[3]


def server_binary() -> Path:
    explicit = os.environ.get("SESSIONKEEPER_BIN")
    if explicit:
        return Path(explicit)
    binary = REPO_ROOT / "target" / "release" / "sessionkeeper"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "sessionkeeper"], cwd=REPO_ROOT, check=True)
    return binary


def server_env() -> dict[str, str]:
    """The environment without anything that would point the server elsewhere (Postgres, tokens)."""
    return {k: v for k, v in os.environ.items() if not (k.startswith("SESSIONKEEPER_") or k == "DATABASE_URL")}


_STARTED: list[subprocess.Popen[bytes]] = []


@atexit.register
def _stop_leftovers() -> None:
    """A test run that ends without stopping a server (an error in a fixture) still takes it down.
    (Not PR_SET_PDEATHSIG: that fires when the *thread* that started the server ends.)"""
    for process in _STARTED:
        if process.poll() is None:
            process.kill()


def serve_help() -> str:
    return subprocess.run(
        [str(server_binary()), "serve", "--help"], capture_output=True, text=True, env=server_env()
    ).stdout


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    grpc_addr: str
    metrics_addr: str
    data_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.metrics_addr}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> int:
        """SIGTERM, then wait for the drain; SIGKILL only if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    work_dir: Path,
    extra_args: Sequence[str] = (),
    *,
    listen: str = "127.0.0.1:0",
    wait_ready: bool = True,
    timeout: float = 60.0,
) -> Server:
    work_dir.mkdir(parents=True, exist_ok=True)
    data_dir = work_dir / "data"
    log_path = work_dir / "server.log"
    log_file = open(log_path, "wb")
    process = subprocess.Popen(
        [
            str(server_binary()),
            "serve",
            "--listen",
            listen,
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
            "--log-format",
            "json",
            *extra_args,
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=server_env(),
    )
    _STARTED.append(process)
    log_file.close()
    deadline = time.monotonic() + timeout
    server: Optional[Server] = None
    while server is None:
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("message") == "sessionkeeper listening":
                server = Server(process, record["grpc_addr"], record["metrics_addr"], data_dir, log_path)
                break
        if server is not None:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"sessionkeeper did not start:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.05)
    while wait_ready and not server.ready():
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"sessionkeeper did not become ready:\n{server.log()}")
        time.sleep(0.05)
    return server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def make_certs(directory: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and an unrelated CA."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl")
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        run("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN={ca}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    leaves = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        "client": "subjectAltName=DNS:orchestrator.test\nextendedKeyUsage=clientAuth\n",
    }
    for name, ext in leaves.items():
        (directory / f"{name}.ext").write_text("basicConstraints=CA:FALSE\n" + ext)
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return Certs(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
    )
