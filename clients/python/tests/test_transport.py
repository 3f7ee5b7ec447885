"""Deadlines, UNAVAILABLE retries, bearer token and TLS options.

The metadata and retry tests use an in-process fake SessionService that records what the client
sent; deadlines, refused connections, a late server, bearer tokens (--auth-tokens) and TLS / mutual
TLS use the real server.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest

from frames import success
from harness import Certs, Server, free_port, serve_help, start_server
from sessionkeeper_client import (
    NO_RETRY,
    AsyncSessionKeeper,
    Decision,
    RetryPolicy,
    SessionKeeper,
    SessionKeeperError,
    ConversationKey,
)
from sessionkeeper_client._gen.sessionkeeper.v1 import session_pb2 as pb
from sessionkeeper_client._gen.sessionkeeper.v1 import session_pb2_grpc as pb_grpc

KEY = ConversationKey(agent="coder", conversation="transport")
FAST = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


class FakeService(pb_grpc.SessionServiceServicer):  # type: ignore[misc]
    """Fails the first `failures` calls with `code`, then answers; records every call."""

    def __init__(self) -> None:
        self.failures = 0
        self.code = grpc.StatusCode.UNAVAILABLE
        self.calls: list[tuple[str, Any, dict[str, str]]] = []

    def _record(self, name: str, request: Any, context: grpc.ServicerContext) -> None:
        self.calls.append((name, request, dict(context.invocation_metadata())))
        if self.failures > 0:
            self.failures -= 1
            context.abort(self.code, "fake failure")

    def Get(self, request: pb.GetRequest, context: grpc.ServicerContext) -> pb.GetResponse:
        self._record("Get", request, context)
        return pb.GetResponse(decision=pb.DECISION_START_FRESH, fresh_reason=pb.FRESH_REASON_NO_SESSION)

    def ReportResult(self, request: pb.ReportResultRequest, context: grpc.ServicerContext) -> pb.ReportResultResponse:
        self._record("ReportResult", request, context)
        return pb.ReportResultResponse(result_class=pb.RESULT_CLASS_SUCCESS, action=pb.ACTION_STORED,
                                       session_id=request.result.session_id)


@pytest.fixture
def fake() -> Iterator[tuple[FakeService, str]]:
    service = FakeService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_SessionServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield service, f"127.0.0.1:{port}"
    server.stop(None)


def test_the_bearer_token_and_extra_metadata_are_sent(fake: tuple[FakeService, str]) -> None:
    service, addr = fake
    with SessionKeeper(addr, token="s3cret", metadata=[("x-request-id", "r-1")]) as sk:
        sk.decide(KEY)
    metadata = service.calls[0][2]
    assert metadata["authorization"] == "Bearer s3cret"
    assert metadata["x-request-id"] == "r-1"


def test_no_token_no_authorization_header(fake: tuple[FakeService, str]) -> None:
    service, addr = fake
    with SessionKeeper(addr) as sk:
        sk.decide(KEY)
    assert "authorization" not in service.calls[0][2]


def test_unavailable_is_retried_with_the_same_report_id(fake: tuple[FakeService, str]) -> None:
    service, addr = fake
    service.failures = 2
    with SessionKeeper(addr, retry=FAST) as sk:
        out = sk.report(KEY, None, None, success("sid-1"))
    ids = [request.report_id for name, request, _ in service.calls]
    assert len(ids) == 3 and len(set(ids)) == 1 and ids[0] == out.report_id


def test_retries_are_bounded(fake: tuple[FakeService, str]) -> None:
    service, addr = fake
    service.failures = 100
    with SessionKeeper(addr, retry=FAST) as sk:
        with pytest.raises(SessionKeeperError) as info:
            sk.decide(KEY)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.attempts == 4 and len(service.calls) == 4


def test_overload_shedding_is_retried(fake: tuple[FakeService, str]) -> None:
    service, addr = fake
    service.failures, service.code = 2, grpc.StatusCode.RESOURCE_EXHAUSTED
    with SessionKeeper(addr, retry=FAST) as sk:
        assert sk.decide(KEY).decision == Decision.START_FRESH
    assert len(service.calls) == 3


def test_other_codes_are_not_retried(fake: tuple[FakeService, str]) -> None:
    service, addr = fake
    service.failures, service.code = 5, grpc.StatusCode.INTERNAL
    with SessionKeeper(addr, retry=FAST) as sk:
        with pytest.raises(SessionKeeperError) as info:
            sk.decide(KEY)
    assert info.value.code == grpc.StatusCode.INTERNAL and len(service.calls) == 1


def test_async_client_retries_with_the_same_report_id(fake: tuple[FakeService, str]) -> None:
    service, addr = fake
    service.failures = 1

    async def main() -> str:
        async with AsyncSessionKeeper(addr, token="t", retry=FAST) as sk:
            return (await sk.report(KEY, None, None, success("sid-2"))).report_id

    rid = asyncio.run(main())
    assert [c[1].report_id for c in service.calls] == [rid, rid]
    assert service.calls[0][2]["authorization"] == "Bearer t"


def test_nothing_listening_fails_unavailable_after_bounded_retries() -> None:
    started = time.monotonic()
    with SessionKeeper(f"127.0.0.1:{free_port()}", retry=FAST, timeout=2) as sk:
        with pytest.raises(SessionKeeperError) as info:
            sk.decide(KEY)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.attempts == 4
    assert time.monotonic() - started < 5


def test_a_server_that_comes_up_late_is_reached_by_retrying(tmp_path: Path) -> None:
    port = free_port()
    started: list[Server] = []

    def start_late() -> None:
        time.sleep(1.0)
        started.append(start_server(tmp_path, listen=f"127.0.0.1:{port}", wait_ready=False))

    thread = threading.Thread(target=start_late)
    thread.start()
    try:
        policy = RetryPolicy(max_attempts=30, initial_backoff=0.05, max_backoff=0.5, max_elapsed=30)
        with SessionKeeper(f"127.0.0.1:{port}", retry=policy) as sk:
            assert sk.decide(KEY).decision == Decision.START_FRESH
    finally:
        thread.join()
        for server in started:
            server.stop()


def test_every_call_has_a_deadline() -> None:
    with socket.socket() as black_hole:  # accepts TCP, never speaks HTTP/2
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(8)
        addr = "127.0.0.1:%d" % black_hole.getsockname()[1]
        started = time.monotonic()
        with SessionKeeper(addr, timeout=0.3, retry=FAST) as sk:
            with pytest.raises(SessionKeeperError) as info:
                sk.decide(KEY)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert info.value.attempts == 1 and time.monotonic() - started < 3


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError):
        SessionKeeper("127.0.0.1:1", client_cert=b"-----BEGIN CERTIFICATE-----")


def test_a_server_without_tokens_ignores_the_header(client: SessionKeeper, server: Server) -> None:
    with SessionKeeper(server.grpc_addr, token="any-token") as sk:
        assert sk.decide(ConversationKey(agent="coder", conversation="token")).decision == Decision.START_FRESH


needs_tokens = pytest.mark.skipif("--auth-tokens" not in serve_help(), reason="this server build has no --auth-tokens")


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("tokens")
    digest = hashlib.sha256(b"team-a-secret").hexdigest()
    (work / "tokens.toml").write_text(
        f'[[tokens]]\nname = "team-a"\nsha256 = "{digest}"\nnamespaces = ["team-a"]\n')
    srv = start_server(work, ["--auth-tokens", str(work / "tokens.toml")])
    yield srv
    srv.stop()


@needs_tokens
def test_the_bearer_token_authenticates(token_server: Server) -> None:
    key = ConversationKey(namespace="team-a", agent="coder", conversation="auth")
    with SessionKeeper(token_server.grpc_addr, token="team-a-secret") as sk:
        r = sk.report(key, None, None, success("sid-auth"))
        assert sk.decide(key).resume == r.session_id == "sid-auth"
        with pytest.raises(SessionKeeperError) as info:
            sk.decide(ConversationKey(namespace="team-b", agent="coder", conversation="auth"))
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED and info.value.attempts == 1
    for token in (None, "wrong"):
        with SessionKeeper(token_server.grpc_addr, token=token) as sk:
            with pytest.raises(SessionKeeperError) as info:
                sk.decide(key)
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED and info.value.attempts == 1


needs_tls = pytest.mark.skipif("--tls-cert" not in serve_help(), reason="this server build has no --tls-cert")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("tls"),
                       ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("mtls"), [
        "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key), "--tls-client-ca", str(certs.ca)])
    yield srv
    srv.stop()


@needs_tls
def test_tls_with_a_root_certificate(tls_server: Server, certs: Certs) -> None:
    with SessionKeeper(tls_server.grpc_addr, root_certificates=certs.ca, token="t") as sk:
        assert sk.decide(KEY).decision == Decision.START_FRESH
    with SessionKeeper(tls_server.grpc_addr, root_certificates=certs.ca.read_bytes()) as sk:
        assert sk.decide(KEY).decision == Decision.START_FRESH


@needs_tls
def test_tls_refuses_an_unknown_server_and_plaintext(tls_server: Server, certs: Certs) -> None:
    with SessionKeeper(tls_server.grpc_addr, root_certificates=certs.other_ca, retry=NO_RETRY) as sk:
        with pytest.raises(SessionKeeperError) as info:
            sk.decide(KEY)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    with SessionKeeper(tls_server.grpc_addr, retry=NO_RETRY, timeout=2) as sk:
        with pytest.raises(SessionKeeperError):
            sk.decide(KEY)


@needs_tls
def test_mutual_tls(mtls_server: Server, certs: Certs) -> None:
    with SessionKeeper(mtls_server.grpc_addr, root_certificates=certs.ca, client_cert=certs.client_cert,
                       client_key=certs.client_key) as sk:
        assert sk.decide(KEY).decision == Decision.START_FRESH
    with SessionKeeper(mtls_server.grpc_addr, root_certificates=certs.ca, retry=NO_RETRY) as sk:
        with pytest.raises(SessionKeeperError) as info:
            sk.decide(KEY)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
