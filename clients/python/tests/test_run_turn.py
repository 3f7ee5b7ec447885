"""run_turn (Get → run → ReportResult → one fresh retry) against the real server, sync and async."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from typing import Any, Optional

import pytest

from frames import ProcessError, ResultMessage, no_conversation, success
from harness import Server
from sessionkeeper_client import (
    Action,
    AsyncSessionKeeper,
    Binding,
    Decision,
    ResultClass,
    SessionKeeper,
    ConversationKey,
)


class FakeClaude:
    """A fake agent host: resumes only the transcripts it has on its 'disk'."""

    def __init__(self) -> None:
        self.transcripts: set[str] = set()
        self.calls: list[Optional[str]] = []

    def run(self, resume: Optional[str]) -> dict[str, Any]:
        self.calls.append(resume)
        if resume is not None and resume not in self.transcripts:
            return no_conversation(str(uuid.uuid4()), resume)
        sid = resume or str(uuid.uuid4())
        self.transcripts.add(sid)
        return success(sid)


def test_first_turn_starts_fresh_and_stores(client: SessionKeeper, key: ConversationKey, binding: Binding) -> None:
    agent = FakeClaude()
    turn = client.run_turn(key, binding, agent.run)
    assert agent.calls == [None]
    assert turn.decision.decision == Decision.START_FRESH
    assert not turn.retried_fresh
    assert turn.final.report.action == Action.STORED
    assert turn.session_id == turn.output["session_id"]  # type: ignore[index]


def test_next_turn_resumes_the_stored_session(client: SessionKeeper, key: ConversationKey, binding: Binding) -> None:
    agent = FakeClaude()
    first = client.run_turn(key, binding, agent.run)
    second = client.run_turn(key, binding, agent.run)
    assert agent.calls == [None, first.session_id]
    assert second.decision.resume == first.session_id
    assert second.final.resumed_session_id == first.session_id
    assert second.session_id == first.session_id


def test_lost_transcript_recovers_with_one_fresh_retry(
    client: SessionKeeper, key: ConversationKey, binding: Binding
) -> None:
    agent = FakeClaude()
    old = client.run_turn(key, binding, agent.run).session_id
    agent.transcripts.clear()  # the container restarted without its home volume
    turn = client.run_turn(key, binding, agent.run, report_id="dispatch-7")
    assert agent.calls[1:] == [old, None]
    gone, fresh = turn.attempts
    assert (gone.report.result_class, gone.report.action, gone.report.retry_fresh) == (
        ResultClass.SESSION_GONE, Action.CLEARED, True)
    assert (fresh.report.result_class, fresh.report.action) == (ResultClass.SUCCESS, Action.STORED)
    assert (gone.report.report_id, fresh.report.report_id) == ("dispatch-7", "dispatch-7:fresh")
    assert turn.session_id not in (old, gone.result.session_id)
    assert client.decide(key, binding).resume == turn.session_id
    # and the turn after that resumes the new session: no loop
    after = client.run_turn(key, binding, agent.run)
    assert agent.calls[-1] == turn.session_id and not after.retried_fresh


def test_a_fork_stores_the_new_id(client: SessionKeeper, key: ConversationKey) -> None:
    first = client.run_turn(key, None, lambda resume: success(str(uuid.uuid4())))
    forked = str(uuid.uuid4())
    turn = client.run_turn(key, None, lambda resume: success(forked))
    assert turn.final.resumed_session_id == first.session_id
    assert turn.session_id == forked


def test_a_process_error_about_the_session_recovers(client: SessionKeeper, key: ConversationKey) -> None:
    old = client.run_turn(key, None, lambda resume: success(str(uuid.uuid4()))).session_id
    calls: list[Optional[str]] = []

    def run(resume: Optional[str]) -> ResultMessage:
        calls.append(resume)
        if resume:
            raise ProcessError("Command failed", exit_code=1,
                               stderr=f"Error: No conversation found with session ID: {resume}")
        return ResultMessage(subtype="success", duration_ms=1, duration_api_ms=1, is_error=False, num_turns=1,
                             session_id="fresh-" + uuid.uuid4().hex, result="ok")

    turn = client.run_turn(key, None, run)
    assert calls == [old, None]
    assert turn.attempts[0].error is not None
    assert turn.attempts[0].report.result_class == ResultClass.SESSION_GONE
    assert turn.session_id.startswith("fresh-")


def test_an_unrelated_failure_is_reported_and_reraised(client: SessionKeeper, key: ConversationKey) -> None:
    sid = client.run_turn(key, None, lambda resume: success(str(uuid.uuid4()))).session_id

    def run(resume: Optional[str]) -> dict[str, Any]:
        raise subprocess.CalledProcessError(1, ["claude", "-p"], output="", stderr="Error: socket hang up")

    with pytest.raises(subprocess.CalledProcessError):
        client.run_turn(key, None, run)
    assert client.decide(key).resume == sid, "a transient failure keeps the session"
    turn = client.run_turn(key, None, run, raise_errors=False)
    assert turn.final.report.result_class == ResultClass.TRANSIENT
    assert turn.final.report.action == Action.KEPT
    assert isinstance(turn.final.error, subprocess.CalledProcessError)


def test_a_run_without_a_result_message_is_a_failure(client: SessionKeeper, key: ConversationKey) -> None:
    sid = client.run_turn(key, None, lambda resume: success(str(uuid.uuid4()))).session_id
    turn = client.run_turn(key, None, lambda resume: None)
    assert (turn.final.report.result_class, turn.final.report.action) == (ResultClass.UNKNOWN_FAILURE, Action.KEPT)
    assert turn.session_id == sid


def test_repeated_zero_turn_failures_of_a_resume_clear_it(client: SessionKeeper, key: ConversationKey) -> None:
    sid = client.run_turn(key, None, lambda resume: success(str(uuid.uuid4()))).session_id

    def run(resume: Optional[str]) -> dict[str, Any]:
        if resume:  # a crash without a result frame: UNKNOWN_FAILURE, zero turns
            raise RuntimeError("Claude Code process exited with code 1")
        return success(str(uuid.uuid4()))

    first = client.run_turn(key, None, run, raise_errors=False)
    assert (first.final.report.result_class, first.final.report.action) == (ResultClass.UNKNOWN_FAILURE, Action.KEPT)
    assert first.session_id == sid
    second = client.run_turn(key, None, run, raise_errors=False)
    assert second.retried_fresh, "the second zero-turn failure reaches unknown_failure_limit (2)"
    assert second.attempts[0].report.action == Action.CLEARED
    assert second.final.report.action == Action.STORED


def test_async_client_runs_the_same_loop(server: Server, key: ConversationKey, binding: Binding) -> None:
    agent = FakeClaude()

    async def run(resume: Optional[str]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return agent.run(resume)

    async def main() -> None:
        async with AsyncSessionKeeper(server.grpc_addr) as sk:
            first = await sk.run_turn(key, binding, run)
            assert first.final.report.action == Action.STORED
            agent.transcripts.clear()
            turn = await sk.run_turn(key, binding, run)
            assert turn.retried_fresh
            assert turn.attempts[0].report.result_class == ResultClass.SESSION_GONE
            assert (await sk.decide(key, binding)).resume == turn.session_id
            r = await sk.report(key, turn.session_id, binding, success(turn.session_id))
            assert r.action == Action.STORED and r.report_id
            assert await sk.forget(key) is True
            assert (await sk.sweep(namespace="pytest", dry_run=True)).deleted == 0

    asyncio.run(main())
    assert agent.calls[0] is None and agent.calls[-1] is None and len(agent.calls) == 3
