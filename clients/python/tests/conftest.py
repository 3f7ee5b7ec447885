"""Fixtures: one real sessionkeeper server for the session, a client, a fresh key per test."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from harness import Certs, Server, make_certs, start_server
from sessionkeeper_client import Binding, SessionKeeper, ConversationKey


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    code = srv.stop()
    assert code == 0, f"server exited {code} on SIGTERM:\n{srv.log()}"


@pytest.fixture
def client(server: Server) -> Iterator[SessionKeeper]:
    with SessionKeeper(server.grpc_addr, timeout=5) as sk:
        yield sk


@pytest.fixture
def key(request: pytest.FixtureRequest) -> ConversationKey:
    """A key no other test uses."""
    return ConversationKey(namespace="pytest", agent="coder", conversation=f"{request.node.name}-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def binding() -> Binding:
    return Binding(provider="claude", host="worker-1", config_dir="/home/agent/.claude", cwd="/srv/repo")


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    try:
        return make_certs(tmp_path_factory.mktemp("certs"))
    except FileNotFoundError:
        pytest.skip("openssl is not installed (scripts/test-clients installs it)")


def pytest_report_header() -> str:
    import google.protobuf
    import grpc

    from harness import server_binary

    return (f"sessionkeeper binary: {server_binary()}; runtime: grpcio {grpc.__version__}, "
            f"protobuf {google.protobuf.__version__}")
