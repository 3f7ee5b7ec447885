"""decide / report / forget / sweep against the real server (SPEC §2-§4 through the Python client)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import grpc
import pytest

from frames import no_conversation, success
from sessionkeeper_client import (
    Action,
    AgentResult,
    Binding,
    Decision,
    FreshReason,
    ResultClass,
    SessionKeeper,
    SessionKeeperError,
    ConversationKey,
)


def new_id() -> str:
    return str(uuid.uuid4())


def test_no_session_starts_fresh(client: SessionKeeper, key: ConversationKey, binding: Binding) -> None:
    d = client.decide(key, binding)
    assert d.decision == Decision.START_FRESH
    assert d.fresh_reason == FreshReason.NO_SESSION
    assert d.resume is None
    assert d.binding is None and d.last_used_at is None and d.expires_at is None


def test_success_is_stored_then_resumed(client: SessionKeeper, key: ConversationKey, binding: Binding) -> None:
    sid = new_id()
    r = client.report(key, None, binding, success(sid))
    assert (r.result_class, r.action, r.session_id, r.retry_fresh) == (ResultClass.SUCCESS, Action.STORED, sid, False)
    d = client.decide(key, binding)
    assert d.decision == Decision.RESUME
    assert d.resume == sid
    assert d.binding == binding
    assert d.last_used_at is not None and d.expires_at is not None
    assert d.last_used_at <= datetime.now(timezone.utc) < d.expires_at


def test_binding_mismatch_starts_fresh_and_describes_the_kept_row(
    client: SessionKeeper, key: ConversationKey, binding: Binding
) -> None:
    sid = new_id()
    client.report(key, None, binding, success(sid))
    elsewhere = Binding(provider="claude", host="worker-2", config_dir=binding.config_dir, cwd=binding.cwd)
    d = client.decide(key, elsewhere)
    assert (d.decision, d.fresh_reason, d.resume) == (Decision.START_FRESH, FreshReason.BINDING_MISMATCH, None)
    assert d.binding == binding, "the row is kept and described so a router can go to worker-1"
    assert client.decide(key, binding).resume == sid
    assert client.decide(key).resume == sid, "no binding in the request matches any row"


def test_the_lost_transcript_frame_clears_and_asks_for_a_fresh_retry(
    client: SessionKeeper, key: ConversationKey, binding: Binding
) -> None:
    old = new_id()
    client.report(key, None, binding, success(old))
    dead_frame_id = new_id()
    r = client.report(key, old, binding, no_conversation(dead_frame_id, old))
    assert (r.result_class, r.action, r.retry_fresh, r.session_id) == (
        ResultClass.SESSION_GONE,
        Action.CLEARED,
        True,
        "",
    )
    d = client.decide(key, binding)
    assert (d.decision, d.fresh_reason) == (Decision.START_FRESH, FreshReason.CLEARED)
    assert d.session_id != dead_frame_id, "the failed frame's session id is never stored"


def test_a_failed_results_session_id_is_never_stored(client: SessionKeeper, key: ConversationKey) -> None:
    sid = new_id()
    client.report(key, None, None, success(sid))
    failed = AgentResult(is_error=True, subtype="error_during_execution", session_id=new_id(), num_turns=2,
                         errors=["API Error: 529 overloaded"])
    r = client.report(key, sid, None, failed)
    assert (r.result_class, r.action, r.session_id) == (ResultClass.TRANSIENT, Action.KEPT, sid)
    assert client.decide(key).resume == sid


def test_limit_reached_stores_the_session(client: SessionKeeper, key: ConversationKey) -> None:
    sid = new_id()
    r = client.report(key, None, None, {"type": "result", "subtype": "error_max_turns", "is_error": True,
                                        "num_turns": 12, "session_id": sid})
    assert (r.result_class, r.action, r.session_id) == (ResultClass.LIMIT_REACHED, Action.STORED, sid)


def test_a_report_id_is_generated_per_report(client: SessionKeeper, key: ConversationKey) -> None:
    first = client.report(key, None, None, success(new_id()))
    second = client.report(key, None, None, success(new_id()))
    assert first.report_id and second.report_id and first.report_id != second.report_id
    assert second.action == Action.STORED, "distinct reports are both applied"


def test_a_repeated_report_id_returns_the_first_answer_and_changes_nothing(
    client: SessionKeeper, key: ConversationKey, binding: Binding
) -> None:
    old, newer = new_id(), new_id()
    client.report(key, None, binding, success(old))
    gone = client.report(key, old, binding, no_conversation(new_id(), old), report_id="dispatch-42")
    assert gone.action == Action.CLEARED
    client.report(key, None, binding, success(newer))
    replay = client.report(key, old, binding, no_conversation(new_id(), old), report_id="dispatch-42")
    assert replay == gone, "the first response, verbatim"
    assert client.decide(key, binding).resume == newer, "the replay did not clear the newer session"


def test_a_report_id_reused_for_another_key_is_already_exists(client: SessionKeeper, key: ConversationKey) -> None:
    rid = f"dispatch-{uuid.uuid4().hex}"
    client.report(key, None, None, success(new_id()), report_id=rid)
    other = ConversationKey(namespace=key.namespace, agent=key.agent, conversation=key.conversation + "-other")
    with pytest.raises(SessionKeeperError) as info:
        client.report(other, None, None, success(new_id()), report_id=rid)
    assert info.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert info.value.attempts == 1, "ALREADY_EXISTS is not retried"


@pytest.mark.parametrize(
    ("bad_key", "field"),
    [
        (ConversationKey(agent="", conversation="c"), "key.agent"),
        (ConversationKey(agent="coder", conversation=""), "key.conversation"),
        (ConversationKey(agent="coder", conversation="c", namespace="bad namespace!"), "key.namespace"),
    ],
)
def test_invalid_argument_names_the_field(client: SessionKeeper, bad_key: ConversationKey, field: str) -> None:
    with pytest.raises(SessionKeeperError) as info:
        client.decide(bad_key)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.field == field, info.value.details
    assert field in str(info.value)


def test_success_without_a_session_id_is_invalid(client: SessionKeeper, key: ConversationKey) -> None:
    with pytest.raises(SessionKeeperError) as info:
        client.report(key, None, None, AgentResult(subtype="success"))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.field is not None and "session_id" in info.value.field


def test_long_texts_are_reported_not_rejected(client: SessionKeeper, key: ConversationKey) -> None:
    sid = new_id()
    client.report(key, None, None, success(sid))
    huge = AgentResult(is_error=True, num_turns=0, exception="x" * 200_000 + " ECONNRESET",
                       errors=["e" * 20_000] * 10, result_text="r" * 100_000)
    r = client.report(key, sid, None, huge)
    assert r.action == Action.KEPT


def test_forget(client: SessionKeeper, key: ConversationKey) -> None:
    client.report(key, None, None, success(new_id()))
    assert client.forget(key) is True
    assert client.forget(key) is False
    assert client.decide(key).fresh_reason == FreshReason.CLEARED


def test_sweep(client: SessionKeeper) -> None:
    out = client.sweep(namespace="pytest", dry_run=True)
    assert out.deleted == 0, "nothing here is older than the 24 h default TTL"
    assert out.took_seconds >= 0
