"""When sessionkeeper is down: the fail-open / fail-turn option; the async client created at import
time; result classes and actions as the proto enum names (the strings the TypeScript client uses)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import uuid
from typing import Any, Optional

import grpc
import pytest

from harness import Server, free_port
from sessionkeeper_client import (
    NO_RETRY,
    Action,
    AsyncSessionKeeper,
    ConversationKey,
    Decision,
    FreshReason,
    ResultClass,
    SessionKeeper,
    SessionKeeperError,
)
from sessionkeeper_client._gen.sessionkeeper.v1 import session_pb2 as pb

KEY = ConversationKey(namespace="pytest", agent="coder", conversation="down")


def success(session_id: str) -> dict[str, Any]:
    return {"type": "result", "subtype": "success", "is_error": False, "num_turns": 1, "session_id": session_id}


def test_fail_turn_is_the_default_and_the_agent_never_runs(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[Optional[str]] = []
    with SessionKeeper(f"127.0.0.1:{free_port()}", timeout=1, retry=NO_RETRY) as sk:
        assert sk.when_unavailable == "fail_turn"
        with pytest.raises(SessionKeeperError) as info:
            sk.run_turn(KEY, None, lambda resume: calls.append(resume) or success("s"))
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert calls == []


def test_fail_open_runs_the_turn_fresh_skips_the_report_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[Optional[str]] = []
    caplog.set_level(logging.WARNING, logger="sessionkeeper_client")
    with SessionKeeper(f"127.0.0.1:{free_port()}", timeout=1, retry=NO_RETRY, when_unavailable="fail_open") as sk:
        turn = sk.run_turn(KEY, None, lambda resume: calls.append(resume) or success("s"))
    assert calls == [None], "the turn runs once, fresh"
    assert turn.decision.decision == Decision.START_FRESH and turn.decision.fresh_reason == FreshReason.UNSPECIFIED
    assert isinstance(turn.unreachable, SessionKeeperError) and turn.unreachable.code == grpc.StatusCode.UNAVAILABLE
    assert len(turn.attempts) == 1 and turn.final.report is None and turn.session_id == ""
    assert any("failing open" in r.getMessage() for r in caplog.records)


def test_fail_open_async() -> None:
    calls: list[Optional[str]] = []

    async def run(resume: Optional[str]) -> dict[str, Any]:
        calls.append(resume)
        return success("s")

    async def main() -> None:
        async with AsyncSessionKeeper(
            f"127.0.0.1:{free_port()}", timeout=1, retry=NO_RETRY, when_unavailable="fail_open"
        ) as sk:
            turn = await sk.run_turn(KEY, None, run)
        assert turn.final.report is None and turn.unreachable is not None

    asyncio.run(main())
    assert calls == [None]


def test_fail_open_does_not_hide_a_rejected_request(server: Server) -> None:
    """Only an unreachable server fails open: a bad request still fails the turn."""
    with SessionKeeper(server.grpc_addr, timeout=5, when_unavailable="fail_open") as sk:
        with pytest.raises(SessionKeeperError) as info:
            sk.run_turn(ConversationKey(agent="bad agent!", conversation="c"), None, lambda resume: success("s"))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_an_unknown_option_value_is_rejected() -> None:
    with pytest.raises(ValueError):
        SessionKeeper("127.0.0.1:1", when_unavailable="maybe")  # type: ignore[arg-type]


def test_the_async_client_works_when_created_at_import_time(server: Server) -> None:
    """Created at module level (no event loop running), then used from two asyncio.run loops."""
    script = textwrap.dedent(
        f"""
        import asyncio
        from sessionkeeper_client import AsyncSessionKeeper, ConversationKey

        SK = AsyncSessionKeeper({server.grpc_addr!r}, timeout=5)
        KEY = ConversationKey(namespace="pytest", agent="coder", conversation={uuid.uuid4().hex!r})

        async def report():
            out = await SK.report(KEY, None, None, {{"type": "result", "subtype": "success", "is_error": False,
                                                   "num_turns": 1, "session_id": "import-time"}})
            return out.action

        async def decide():
            return (await SK.decide(KEY)).resume

        print(asyncio.run(report()))
        print(asyncio.run(decide()))
        asyncio.run(SK.close())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ACTION_STORED", "import-time"]


def test_classes_and_actions_are_the_proto_enum_names() -> None:
    assert {m.value for m in ResultClass} == set(pb.ResultClass.keys())
    assert {m.value for m in Action} == set(pb.Action.keys())
    assert {m.value for m in Decision} == set(pb.Decision.keys())
    assert {m.value for m in FreshReason} == set(pb.FreshReason.keys())
    assert ResultClass.SESSION_GONE == "RESULT_CLASS_SESSION_GONE" and str(Action.CLEARED) == "ACTION_CLEARED"
    assert f"{ResultClass.TRANSIENT}" == "RESULT_CLASS_TRANSIENT" and ResultClass.TRANSIENT.name == "TRANSIENT"
