"""SessionKeeperSessionStore on every runtime the package claims (the oldest grpcio/protobuf too),
against a real server, without the Agent SDK: subagent transcripts (a subpath) need no summary
fold, so every RPC of the store runs here. The SDK's own suite runs in tests_sdk/."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Dict, List

from harness import Server
from sessionkeeper_client import SessionKeeper, SessionKeeperSessionStore


def test_the_store_appends_loads_lists_and_deletes_subagent_transcripts(server: Server) -> None:
    namespace = f"rt-{uuid.uuid4().hex}"
    main: Dict[str, Any] = {"project_key": "proj", "session_id": "sess"}
    one: Dict[str, Any] = {**main, "subpath": "subagents/agent-1"}
    two: Dict[str, Any] = {**main, "subpath": "subagents/agent-2"}
    entries: List[Any] = [{"type": "x", "uuid": "a", "text": "é ✓"}, {"type": "x", "n": 2}]

    async def scenario() -> Dict[str, Any]:
        seen: Dict[str, Any] = {}
        with SessionKeeper(server.grpc_addr) as sk:
            async with SessionKeeperSessionStore.from_client(sk, namespace=namespace) as store:
                seen["before"] = await store.load(one)
                await store.append(one, entries)
                await store.append(one, entries[:1])  # its uuid is held: skipped
                await store.append(two, [{"type": "x"}])
                seen["one"] = await store.load(one)
                seen["subkeys"] = await store.list_subkeys({"project_key": "proj", "session_id": "sess"})
                seen["sessions"] = await store.list_sessions("proj")
                seen["main"] = await store.load(main)
                await store.delete(one)
                seen["after delete"] = (await store.load(one), await store.load(two))
        return seen

    seen = asyncio.run(scenario())
    assert seen["before"] is None
    assert seen["one"] == entries
    assert seen["subkeys"] == ["subagents/agent-1", "subagents/agent-2"]
    assert seen["sessions"] == [], "subagent transcripts are not sessions"
    assert seen["main"] is None
    assert seen["after delete"] == (None, [{"type": "x"}])
