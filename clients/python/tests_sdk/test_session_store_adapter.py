"""SessionKeeperSessionStore's own rules, beyond the SDK's conformance suite, each against a real
server on both stores: a batch the SDK retries after a failure is stored once (same append id),
and only then; a lost summary race is folded again over the stored summary; a batch over the
request limit is split and loads back whole; a broken load stream resumes after the last entry it
delivered; an empty append sends nothing; from_client reaches the server with the client's token.
Network failures come from a TCP proxy in front of the real server (proxy.py), never a fake."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import grpc
import pytest
from claude_agent_sdk import SessionKey, fold_session_summary

from e2e import fresh_namespace
from harness import Server, start_server
from proxy import CuttingProxy
from sessionkeeper_client import (
    NO_RETRY,
    AsyncSessionKeeper,
    RetryPolicy,
    SessionKeeper,
    SessionKeeperError,
    SessionKeeperSessionStore,
)
from sessionkeeper_client._gen.sessionkeeper.v1 import transcript_pb2 as tpb
from sessionkeeper_client._gen.sessionkeeper.v1 import transcript_pb2_grpc as tpb_grpc
from sessionkeeper_client._session_store import split_entries

KIB = 1024
MIB = 1024 * KIB


def mode_markers(*ns: int) -> List[Any]:
    """Entries without a uuid (like the CLI's mode markers): only the append id can dedup them."""
    return [{"type": "mode", "n": n} for n in ns]


def big_entries(count: int, size: int) -> List[Any]:
    return [{"type": "x", "uuid": f"u{i}", "pad": f"{i:06d}" + "y" * (size - 6)} for i in range(count)]


@pytest.fixture
def proxy(store_server: Server) -> Iterator[CuttingProxy]:
    p = CuttingProxy(store_server.grpc_addr)
    yield p
    p.close()


def test_a_batch_the_sdk_retries_after_a_lost_response_is_stored_once(
    store_server: Server, proxy: CuttingProxy
) -> None:
    namespace = fresh_namespace("retry")
    key: SessionKey = {"project_key": "proj", "session_id": "sess"}

    async def scenario() -> None:
        async with SessionKeeperSessionStore(proxy.addr, namespace=namespace, timeout=3.0) as via_proxy, \
                SessionKeeperSessionStore(store_server.grpc_addr, namespace=namespace) as direct:
            await via_proxy.append(key, mode_markers(0))  # the connection is up
            batch = mode_markers(1, 2)

            proxy.swallow_responses()
            with pytest.raises(SessionKeeperError) as lost:
                await via_proxy.append(key, batch)
            assert lost.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            proxy.cut_everything()
            # the request landed: the server stored the batch, only its answer was lost
            assert await direct.load(key) == mode_markers(0, 1, 2)

            # the SDK retries the same list: the same append id, replayed, nothing added
            await via_proxy.append(key, batch)
            assert await direct.load(key) == mode_markers(0, 1, 2)

            # once an append of it succeeded, the same content again is a new batch
            await via_proxy.append(key, batch)
            assert await direct.load(key) == mode_markers(0, 1, 2, 1, 2)

            # a failed batch followed by another one: the other one is new, and stored
            proxy.swallow_responses()
            with pytest.raises(SessionKeeperError):
                await via_proxy.append(key, mode_markers(3))
            proxy.cut_everything()
            await via_proxy.append(key, mode_markers(4))
            assert await direct.load(key) == mode_markers(0, 1, 2, 1, 2, 3, 4)

    asyncio.run(scenario())


def test_a_lost_summary_race_is_folded_again_over_the_stored_summary(store_server: Server) -> None:
    namespace = fresh_namespace("cas")
    key: SessionKey = {"project_key": "proj", "session_id": "raced"}
    first = [{"type": "x", "timestamp": "2024-01-01T00:00:00.000Z", "customTitle": "by A", "gitBranch": "main"}]
    second = [{"type": "x", "timestamp": "2024-01-01T00:00:05.000Z", "customTitle": "by B"}]
    third = [{"type": "x", "timestamp": "2024-01-01T00:00:09.000Z", "aiTitle": "A again"}]
    expected = None
    for batch in (first, second, third):
        expected = fold_session_summary(expected, key, batch)
    assert expected is not None

    async def scenario() -> None:
        # two workers with one session: each adapter caches the summary it wrote
        async with SessionKeeperSessionStore(store_server.grpc_addr, namespace=namespace) as a, \
                SessionKeeperSessionStore(store_server.grpc_addr, namespace=namespace) as b:
            await a.append(key, first)
            await b.append(key, second)  # cold cache: version 0 loses, folded over A's summary
            await a.append(key, third)  # A's cached version is stale: loses, folded over B's
            (summary,) = await b.list_session_summaries("proj")
            assert summary["session_id"] == "raced"
            assert summary["data"] == expected["data"]
            (listed,) = await b.list_sessions("proj")
            assert summary["mtime"] >= listed["mtime"] > 1e12
            # the winner's cache is current: its next append writes at once, still folded right
            fourth = [{"type": "x", "lastPrompt": "last"}]
            await a.append(key, fourth)
            (summary,) = await a.list_session_summaries("proj")
            assert summary["data"] == fold_session_summary(expected, key, fourth)["data"]

    asyncio.run(scenario())


def test_a_batch_over_the_request_limit_is_split_and_loads_back_whole(store_server: Server) -> None:
    namespace = fresh_namespace("split")
    key: SessionKey = {"project_key": "proj", "session_id": "large"}
    entries = big_entries(20, 512 * KIB)  # 10 MiB: over the server's 8 MiB request limit

    # sent as one request, the server refuses it
    with grpc.insecure_channel(store_server.grpc_addr) as channel:
        raw = tpb_grpc.TranscriptServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            raw.AppendEntries(tpb.AppendEntriesRequest(
                key=tpb.TranscriptKey(namespace=namespace, project_key="proj", session_id="large"),
                append_id="one-request", entries=[json.dumps(e) for e in entries]), timeout=30)
        assert refused.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE)

    async def scenario() -> None:
        async with SessionKeeperSessionStore(store_server.grpc_addr, namespace=namespace) as store:
            await store.append(key, entries)
            assert await store.load(key) == entries
            (summary,) = await store.list_session_summaries("proj")
            assert summary["data"] == fold_session_summary(None, key, entries)["data"]

    asyncio.run(scenario())


def test_split_parts_stay_under_the_limit_and_keep_the_order() -> None:
    texts = [json.dumps(e) for e in big_entries(40, 300 * KIB)]
    parts = split_entries(texts)
    assert len(parts) == 4  # 13 entries of 300 KiB fit under ~3.94 MiB, 14 do not
    assert [t for part in parts for t in part] == texts
    for part in parts:
        request = tpb.AppendEntriesRequest(
            key=tpb.TranscriptKey(namespace="n" * 64, project_key="p" * 256, session_id="s" * 256, subpath=""),
            append_id="a" * 40 + ".10", entries=part,
            summary=tpb.SummaryWrite(dialect=tpb.SUMMARY_DIALECT_CLAUDE_PYTHON, data_json="{}", if_version=1))
        assert request.ByteSize() < 4 * MIB
    assert split_entries(["{}"] * 3) == [["{}"] * 3]


def test_a_broken_load_stream_resumes_after_the_last_entry_it_delivered(
    store_server: Server, proxy: CuttingProxy
) -> None:
    namespace = fresh_namespace("resume")
    key: SessionKey = {"project_key": "proj", "session_id": "long"}
    entries = big_entries(32, 128 * KIB)  # 4 MiB: four chunks of ~1 MiB
    total = sum(len(e["pad"]) for e in entries)

    async def scenario() -> None:
        async with SessionKeeperSessionStore(store_server.grpc_addr, namespace=namespace) as direct, \
                SessionKeeperSessionStore(proxy.addr, namespace=namespace) as via_proxy:
            await direct.append(key, entries)
            assert await via_proxy.list_sessions("proj")  # the connection is up
            proxy.cut_after(int(1.6 * MIB))  # mid-way through the second chunk
            assert await via_proxy.load(key) == entries

    asyncio.run(scenario())
    first, *later = proxy.connections
    assert first.cut, "the stream was not broken"
    assert later, "no second connection: the load did not go on after the break"
    resumed = sum(c.downstream_bytes for c in later)
    # from the start, the second stream would carry all 4 MiB again; resumed, it skips the ~1 MiB
    # chunk that arrived before the break
    assert resumed < total - 512 * KIB, (resumed, total)


def dead_port() -> int:
    """A port nothing listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_empty_append_sends_nothing() -> None:
    key: SessionKey = {"project_key": "proj", "session_id": "sess"}

    async def scenario() -> None:
        # nothing listens there: any RPC fails
        async with SessionKeeperSessionStore(
            f"127.0.0.1:{dead_port()}", namespace="dead", timeout=2.0, retry=NO_RETRY
        ) as dead:
            await dead.append(key, [])
            with pytest.raises(SessionKeeperError) as failed:
                await dead.append(key, mode_markers(1))
            assert failed.value.code == grpc.StatusCode.UNAVAILABLE

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("store-tokens")
    digest = hashlib.sha256(b"team-a-secret").hexdigest()
    (work / "tokens.toml").write_text(f'[[tokens]]\nname = "team-a"\nsha256 = "{digest}"\nnamespaces = ["team-a"]\n')
    srv = start_server(work, ["--auth-tokens", str(work / "tokens.toml")])
    yield srv
    assert srv.stop() == 0, srv.log()


def test_from_client_reaches_the_server_with_the_clients_token(token_server: Server, tmp_path: Path) -> None:
    key: SessionKey = {"project_key": "proj", "session_id": fresh_namespace("s")}
    retry = RetryPolicy(max_attempts=2)

    async def scenario() -> Dict[str, Any]:
        seen: Dict[str, Any] = {}
        blocking = SessionKeeper(token_server.grpc_addr, token="team-a-secret", retry=retry)
        aio = AsyncSessionKeeper(token_server.grpc_addr, token="team-a-secret", retry=retry)
        try:
            async with SessionKeeperSessionStore.from_client(blocking, namespace="team-a") as one, \
                    SessionKeeperSessionStore.from_client(aio, namespace="team-a") as two:
                await one.append(key, mode_markers(1))
                await two.append(key, mode_markers(2))
                seen["loaded"] = await one.load(key)
            async with SessionKeeperSessionStore.from_client(aio, namespace="team-b") as elsewhere:
                with pytest.raises(SessionKeeperError) as denied:
                    await elsewhere.load(key)
                seen["other namespace"] = denied.value.code
            async with SessionKeeperSessionStore(token_server.grpc_addr, namespace="team-a") as anonymous:
                with pytest.raises(SessionKeeperError) as unauthenticated:
                    await anonymous.load(key)
                seen["no token"] = unauthenticated.value.code
            async with SessionKeeperSessionStore(
                token_server.grpc_addr, namespace="team-a", token="team-a-secret"
            ) as by_options:
                seen["by options"] = await by_options.load(key)
        finally:
            blocking.close()
            await aio.close()
        return seen

    seen = asyncio.run(scenario())
    assert seen["loaded"] == mode_markers(1, 2)
    assert seen["by options"] == mode_markers(1, 2)
    assert seen["other namespace"] == grpc.StatusCode.PERMISSION_DENIED
    assert seen["no token"] == grpc.StatusCode.UNAUTHENTICATED


def test_a_call_ends_within_its_budget_whatever_the_attempt_timeout(
    store_server: Server, proxy: CuttingProxy
) -> None:
    """The SDK abandons a store call at 60 s and never retries it then: the adapter must give up
    first, with an error the SDK does retry."""
    key: SessionKey = {"project_key": "proj", "session_id": "slow"}

    async def scenario() -> float:
        async with SessionKeeperSessionStore(
            proxy.addr, namespace=fresh_namespace("budget"), timeout=30.0, budget=2.0
        ) as store:
            await store.list_sessions("proj")  # the connection is up
            proxy.swallow_responses()
            started = time.monotonic()
            with pytest.raises(SessionKeeperError) as late:
                await store.append(key, mode_markers(1))
            elapsed = time.monotonic() - started
            assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            proxy.cut_everything()
            return elapsed

    elapsed = asyncio.run(scenario())
    assert 1.9 < elapsed < 5.0, elapsed


def test_the_budget_must_stay_under_the_sdks_call_timeout() -> None:
    with pytest.raises(ValueError):
        SessionKeeperSessionStore("127.0.0.1:1", budget=60.0)
    with SessionKeeper("127.0.0.1:1") as client, pytest.raises(ValueError):
        SessionKeeperSessionStore.from_client(client, budget=0)
