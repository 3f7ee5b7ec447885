"""End to end through the real Claude Code CLI (bundled in claude-agent-sdk), driven by
sessionkeeper_client.claude.run_claude_turn with the SDK's own query() and ClaudeAgentOptions,
against a real sessionkeeper server; the only fake is the model API at the wire (the mock).
Assertions are on structured fields (class, action, ids, subtype, status), never on wording."""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, Optional, TypeVar

from claude_agent_sdk import ClaudeAgentOptions, ResultError

from e2e import MockApi, Worker, claude_binding, quiet_env
from harness import Server
from sessionkeeper_client import (
    Action,
    AsyncSessionKeeper,
    ConversationKey,
    Decision,
    ResultClass,
    TurnOutcome,
)
from sessionkeeper_client.claude import ClaudeRun, run_claude_turn

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def options(mock: MockApi, worker: Worker, *, max_turns: Optional[int] = None) -> ClaudeAgentOptions:
    return ClaudeAgentOptions(cwd=str(worker.cwd), env=quiet_env(mock, worker), max_turns=max_turns)


async def turn(
    server: Server, mock: MockApi, worker: Worker, key: ConversationKey, prompt: str, **kw: Any
) -> TurnOutcome[ClaudeRun]:
    async with AsyncSessionKeeper(server.grpc_addr, timeout=10) as sk:
        return await run_claude_turn(sk, key, claude_binding(worker), prompt, options(mock, worker, **kw))


def test_a_conversation_survives_a_restart_that_loses_the_transcripts(
    e2e_server: Server, mock_api: MockApi, worker: Worker, conversation: ConversationKey
) -> None:
    # turn 1: nothing stored -> fresh run -> STORED
    first = run(turn(e2e_server, mock_api, worker, conversation, "turn one [mock:ok]"))
    assert first.decision.decision == Decision.START_FRESH
    assert len(first.attempts) == 1
    one = first.final
    assert one.output is not None and one.output.result is not None and one.output.error is None
    assert one.report.result_class == ResultClass.SUCCESS and one.report.action == Action.STORED
    sid = one.output.result.session_id
    assert first.session_id == sid
    transcripts = list(worker.config_dir.glob(f"projects/*/{sid}.jsonl"))
    assert transcripts, "the CLI wrote no transcript"

    # turn 2: RESUME, and the CLI really resumed: same id, and the model saw turn one again
    seen_before = len(mock_api.requests())
    second = run(turn(e2e_server, mock_api, worker, conversation, "turn two [mock:ok]"))
    assert second.decision.decision == Decision.RESUME and second.decision.resume == sid
    assert second.final.resumed_session_id == sid
    assert second.final.report.action == Action.STORED and second.session_id == sid
    sent = mock_api.requests()[seen_before:]
    assert any("turn one [mock:ok]" in " ".join(r["user_texts"]) for r in sent), sent

    # the worker restarts and loses its volume: the real lost-transcript failure
    worker.restart_losing_the_volume()
    third = run(turn(e2e_server, mock_api, worker, conversation, "turn three [mock:ok]"))
    assert third.decision.resume == sid
    assert len(third.attempts) == 2, "the gone session must be retried fresh exactly once"
    gone, fresh = third.attempts
    assert gone.output is not None
    # the SDK yielded no ResultMessage and raised ResultError: the frame came from its .data
    assert gone.output.result is None and isinstance(gone.output.error, ResultError)
    assert gone.result.subtype == "error_during_execution" and gone.result.num_turns == 0 and gone.result.is_error
    assert gone.result.errors, "the frame's errors were lost"
    assert gone.report.result_class == ResultClass.SESSION_GONE
    assert gone.report.action == Action.CLEARED and gone.report.retry_fresh
    assert fresh.resumed_session_id is None
    assert fresh.report.result_class == ResultClass.SUCCESS and fresh.report.action == Action.STORED
    new_sid = fresh.report.session_id
    assert new_sid and new_sid != sid and third.session_id == new_sid

    # turn 4 resumes the new session
    fourth = run(turn(e2e_server, mock_api, worker, conversation, "turn four [mock:ok]"))
    assert fourth.decision.resume == new_sid
    assert fourth.final.report.action == Action.STORED and fourth.session_id == new_sid


def test_api_errors_keep_the_stored_session(
    e2e_server: Server, mock_api: MockApi, worker: Worker, conversation: ConversationKey
) -> None:
    sid = run(turn(e2e_server, mock_api, worker, conversation, "hello [mock:ok]")).session_id
    assert sid
    expected = {
        "529": (ResultClass.TRANSIENT, 529),
        "429": (ResultClass.TRANSIENT, 429),
        "500": (ResultClass.TRANSIENT, 500),
        "401": (ResultClass.AUTH, 401),
        "credit": (ResultClass.AUTH, 400),
    }
    for marker, (result_class, status) in expected.items():
        outcome = run(turn(e2e_server, mock_api, worker, conversation, f"call [mock:{marker}]"))
        attempt = outcome.final
        assert outcome.decision.resume == sid, marker
        assert len(outcome.attempts) == 1, marker
        assert attempt.output is not None and attempt.output.result is not None, marker
        # the SDK yielded the error result and then raised: both reach the report
        assert isinstance(attempt.output.error, ResultError), marker
        assert attempt.result.is_error and attempt.result.api_error_status == status, (marker, attempt.result)
        assert attempt.result.exception, marker
        assert (attempt.report.result_class, attempt.report.action) == (result_class, Action.KEPT), (
            marker,
            attempt.result,
            attempt.report,
        )
        assert attempt.report.session_id == sid and not attempt.report.retry_fresh, marker
    # still resumable after all of them
    after = run(turn(e2e_server, mock_api, worker, conversation, "after [mock:ok]"))
    assert after.decision.resume == sid and after.final.report.action == Action.STORED


def test_max_turns_is_limit_reached_and_stored_every_time(
    e2e_server: Server, mock_api: MockApi, worker: Worker, conversation: ConversationKey
) -> None:
    sid = run(turn(e2e_server, mock_api, worker, conversation, "hello [mock:ok]")).session_id
    for n in range(2):
        outcome = run(turn(e2e_server, mock_api, worker, conversation, "use a tool [mock:tool]", max_turns=1))
        attempt = outcome.final
        assert outcome.decision.resume == sid, n
        assert len(outcome.attempts) == 1
        assert attempt.result.subtype == "error_max_turns" and attempt.result.num_turns > 0, attempt.result
        assert attempt.report.result_class == ResultClass.LIMIT_REACHED
        assert attempt.report.action == Action.STORED and attempt.report.session_id == sid
    after = run(turn(e2e_server, mock_api, worker, conversation, "go on [mock:ok]"))
    assert after.decision.resume == sid and after.session_id == sid
