"""What the end-to-end tests through the real agent CLIs share (conftest.py re-exports the
fixtures): a real sessionkeeper server (the release build that scripts/test-clients names in
$SESSIONKEEPER_BIN; Postgres when $SESSIONKEEPER_TEST_DATABASE_URL is set, else the embedded store),
the mock model API (the only fake: clients/e2e/mock_model_api.py on 127.0.0.1), and a private HOME,
config dir and cwd per run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import REPO_ROOT, Server, start_server  # noqa: E402

from sessionkeeper_client import AsyncSessionKeeper, Binding, ConversationKey  # noqa: E402

MOCK = REPO_ROOT / "clients" / "e2e" / "mock_model_api.py"


@dataclass
class MockApi:
    process: "subprocess.Popen[str]"
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> List[Dict[str, Any]]:
        with urllib.request.urlopen(f"{self.base_url}/_requests", timeout=5) as response:
            data: List[Dict[str, Any]] = json.load(response)
            return data


@pytest.fixture(scope="session")
def e2e_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    extra: List[str] = []
    database_url = os.environ.get("SESSIONKEEPER_TEST_DATABASE_URL")
    if database_url:
        extra = ["--database-url", database_url]
    srv = start_server(tmp_path_factory.mktemp("e2e-server"), extra)
    yield srv
    assert srv.stop() == 0, srv.log()


STORES = ("sqlite", "postgres")


def start_store_server(work_dir: Path, store: str, extra: Sequence[str] = ()) -> Server:
    """A real server on the embedded SQLite store or on Postgres ($SESSIONKEEPER_TEST_DATABASE_URL,
    which scripts/test sets: without it the Postgres tests fail, they never skip)."""
    args = list(extra)
    if store == "postgres":
        url = os.environ.get("SESSIONKEEPER_TEST_DATABASE_URL")
        if not url:
            pytest.fail("the Postgres store's tests need SESSIONKEEPER_TEST_DATABASE_URL (scripts/test sets it)")
        args += ["--database-url", url]
    return start_server(work_dir, args)


@pytest.fixture(scope="session", params=STORES)
def store_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server per store (the transcript tests run on both); state on Postgres outlives the
    run, so the tests use fresh namespaces (:func:`fresh_namespace`)."""
    srv = start_store_server(tmp_path_factory.mktemp(f"store-{request.param}"), request.param)
    yield srv
    assert srv.stop() == 0, srv.log()


def fresh_namespace(prefix: str) -> str:
    """A namespace no other test or run uses (at most 64 bytes of [A-Za-z0-9._-])."""
    return f"{prefix}-{uuid.uuid4().hex}"[:64]


@pytest.fixture(scope="session")
def mock_api() -> Iterator[MockApi]:
    process = subprocess.Popen(
        [sys.executable, str(MOCK)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline().split()
    assert line[:1] == ["listening"], line
    yield MockApi(process, int(line[1]))
    process.kill()
    process.wait()


@dataclass
class Worker:
    """One agent host: its HOME, its config dir and its working directory (all private)."""

    root: Path
    home: Path
    config_dir: Path
    cwd: Path

    def restart_losing_the_volume(self) -> None:
        """The container restarted without its home volume: the config dir is empty again."""
        import shutil

        shutil.rmtree(self.config_dir)
        self.config_dir.mkdir()


@pytest.fixture
def worker(tmp_path: Path) -> Worker:
    home, config, cwd = tmp_path / "home", tmp_path / "home" / ".claude", tmp_path / "work"
    for d in (home, config, cwd):
        d.mkdir(parents=True, exist_ok=True)
    return Worker(tmp_path, home, config, cwd)


@pytest.fixture
def conversation(request: pytest.FixtureRequest) -> ConversationKey:
    return ConversationKey(namespace="e2e", agent="coder", conversation=f"{request.node.name}-{uuid.uuid4().hex[:8]}")


def quiet_env(mock: MockApi, worker: Worker) -> Dict[str, str]:
    """The environment that keeps the CLI on loopback, quick, and inside the worker's dirs."""
    return {
        "HOME": str(worker.home),
        "CLAUDE_CONFIG_DIR": str(worker.config_dir),
        "ANTHROPIC_BASE_URL": mock.base_url,
        "ANTHROPIC_API_KEY": "sk-ant-mock-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "API_TIMEOUT_MS": "30000",
        # the mock is on loopback: never through a proxy
        "NO_PROXY": "127.0.0.1,localhost",
        "HTTP_PROXY": "",
        "HTTPS_PROXY": "",
        "http_proxy": "",
        "https_proxy": "",
    }


def claude_binding(worker: Worker) -> Binding:
    return Binding(provider="claude", host="e2e-worker", config_dir=str(worker.config_dir), cwd=str(worker.cwd))


async def new_client(server: Server) -> AsyncSessionKeeper:
    return AsyncSessionKeeper(server.grpc_addr, timeout=10)


def codex_binary() -> str:
    """The codex CLI the tests drive: $SK_E2E_CODEX (scripts/test-clients points it at the pinned
    @openai/codex that clients/typescript installs), never a global one."""
    path = os.environ.get("SK_E2E_CODEX") or str(
        REPO_ROOT / "clients" / "typescript" / "node_modules" / "@openai" / "codex" / "bin" / "codex.js"
    )
    assert Path(path).exists(), f"the pinned codex CLI is missing: {path} (run scripts/test-clients setup typescript)"
    return path


def codex_home(mock: MockApi, worker: Worker) -> Path:
    """A CODEX_HOME whose config sends every model call to the mock (Responses API), no retries."""
    home = worker.root / "codex-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(
        'model = "mock-model"\n'
        'model_provider = "mock"\n'
        "[model_providers.mock]\n"
        'name = "mock"\n'
        f'base_url = "{mock.base_url}/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "MOCK_API_KEY"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
    )
    return home


def codex_env(mock: MockApi, worker: Worker) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HOME": str(worker.home),
            "CODEX_HOME": str(codex_home(mock, worker)),
            "MOCK_API_KEY": "mock-key",
            "RUST_BACKTRACE": "0",
            "NO_PROXY": "127.0.0.1,localhost",
            "HTTP_PROXY": "",
            "HTTPS_PROXY": "",
            "http_proxy": "",
            "https_proxy": "",
        }
    )
    return env
