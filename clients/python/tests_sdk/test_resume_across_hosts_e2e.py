"""Resume across hosts, end to end through the real Claude Code CLI (bundled in claude-agent-sdk)
with SessionKeeperSessionStore as the SDK's session_store, against a real server on both stores;
the only fake is the model API at the wire (the mock on 127.0.0.1).

Worker A runs a turn (its transcript is mirrored into sessionkeeper as the CLI writes it), then
loses its config dir. Worker B (another host and config dir, the same cwd) asks Get: RESUME, from
anywhere, because sessionkeeper holds the transcript; the SDK materialises it and the CLI really
resumes (the model sees turn one in the request). Forget deletes the transcripts with the session:
the next Get starts fresh and the store holds nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from claude_agent_sdk import ClaudeAgentOptions, SessionKey, project_key_for_directory

from e2e import MockApi, Worker, quiet_env
from harness import Server
from sessionkeeper_client import (
    Action,
    AsyncSessionKeeper,
    Binding,
    ConversationKey,
    Decision,
    FreshReason,
    ResultClass,
    SessionKeeperSessionStore,
)
from sessionkeeper_client.claude import run_claude_turn, transcript_project_key_of


def make_worker(root: Path, name: str, cwd: Path) -> Worker:
    home = root / name / "home"
    worker = Worker(root / name, home, home / ".claude", cwd)
    worker.config_dir.mkdir(parents=True)
    return worker


def binding_of(worker: Worker, host: str) -> Binding:
    return Binding(provider="claude", host=host, config_dir=str(worker.config_dir), cwd=str(worker.cwd))


def test_a_conversation_resumes_on_another_worker_from_sessionkeepers_store(
    store_server: Server, mock_api: MockApi, tmp_path: Path, conversation: ConversationKey
) -> None:
    checkout = tmp_path / "checkout"  # the same path on both workers (a shared volume, or the same layout)
    checkout.mkdir()
    a = make_worker(tmp_path, "worker-a", checkout)
    b = make_worker(tmp_path, "worker-b", checkout)
    project_key = project_key_for_directory(checkout)

    async def scenario() -> None:
        async with AsyncSessionKeeper(store_server.grpc_addr, timeout=10) as sk:
            store = SessionKeeperSessionStore.from_client(sk, namespace=conversation.namespace)

            def options(worker: Worker) -> ClaudeAgentOptions:
                return ClaudeAgentOptions(cwd=str(checkout), env=quiet_env(mock_api, worker), session_store=store)

            assert transcript_project_key_of(options(a)) == project_key

            # worker A: a fresh turn, mirrored into the store before the result is yielded
            first = await run_claude_turn(sk, conversation, binding_of(a, "host-a"), "the word is PAPAYA [mock:ok]", options(a))
            assert first.decision.decision == Decision.START_FRESH and not first.decision.resumable_anywhere
            report = first.final.report
            assert report is not None and (report.result_class, report.action) == (ResultClass.SUCCESS, Action.STORED)
            sid = first.session_id
            key: SessionKey = {"project_key": project_key, "session_id": sid}
            held = await store.load(key)
            assert held is not None and "the word is PAPAYA" in json.dumps(held)

            # worker A's container restarts without its volume
            a.restart_losing_the_volume()
            assert not any(a.config_dir.iterdir()) and not any(b.config_dir.iterdir())

            # worker B: another host and config dir, the same cwd → RESUME from anywhere
            seen_before = len(mock_api.requests())
            second = await run_claude_turn(sk, conversation, binding_of(b, "host-b"), "and the word was? [mock:ok]", options(b))
            decision = second.decision
            assert (decision.decision, decision.resume) == (Decision.RESUME, sid), decision
            assert decision.resumable_anywhere and decision.transcript_project_key == project_key
            assert len(second.attempts) == 1, "the resume failed and ran fresh"
            run = second.final.output
            assert run is not None and run.error is None and run.result is not None and not run.result.is_error
            report = second.final.report
            assert report is not None and (report.result_class, report.action) == (ResultClass.SUCCESS, Action.STORED)
            # the CLI really resumed: the model got turn one again with turn two
            sent = mock_api.requests()[seen_before:]
            assert sent and all("the word is PAPAYA [mock:ok]" in r["user_texts"] for r in sent), sent
            # the resumed run keeps the session id, and its entries go to the same transcript
            assert run.result.session_id == sid and second.session_id == sid
            after = await store.load(key)
            assert after is not None and len(after) > len(held) and after[: len(held)] == held
            assert "and the word was?" in json.dumps(after[len(held):])
            assert [s["session_id"] for s in await store.list_sessions(project_key)] == [sid]
            # worker B's own config dir was never needed: the SDK materialised into a temp dir
            assert not list(b.config_dir.glob("projects/*/*.jsonl"))

            # the session now lives on worker B; worker A (wiped) resumes it from the store too, but
            # not with a cwd that maps to another project key: then the binding rule decides
            back_on_a = await sk.decide(conversation, binding_of(a, "host-a"), transcript_project_key=project_key)
            assert (back_on_a.decision, back_on_a.resume, back_on_a.resumable_anywhere) == (Decision.RESUME, sid, True)
            elsewhere = await sk.decide(
                conversation, binding_of(a, "host-a"), transcript_project_key=project_key + "-other"
            )
            assert (elsewhere.decision, elsewhere.fresh_reason) == (Decision.START_FRESH, FreshReason.BINDING_MISMATCH)
            assert not elsewhere.resumable_anywhere

            # the user resets the conversation: the transcripts go with the session
            forgot = await sk.forget_outcome(conversation)
            assert forgot.existed and forgot.transcripts_deleted > 0
            fresh = await sk.decide(conversation, binding_of(b, "host-b"), transcript_project_key=project_key)
            assert (fresh.decision, fresh.fresh_reason) == (Decision.START_FRESH, FreshReason.CLEARED)
            assert await store.load(key) is None
            assert await store.list_sessions(project_key) == []
            await store.close()

    asyncio.run(scenario())
