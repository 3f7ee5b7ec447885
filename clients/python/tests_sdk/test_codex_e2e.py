"""End to end through the real Codex CLI (`codex exec --json`, the pinned @openai/codex), driven by
sessionkeeper_client.codex.run_codex_exec_turn against a real sessionkeeper server; the only fake
is the model API (the mock's Responses API). Success, resume (from another cwd: the binding rule),
lost thread."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from e2e import MockApi, Worker, codex_binary, codex_env, codex_home
from harness import Server
from sessionkeeper_client import Action, AsyncSessionKeeper, Binding, ConversationKey, Decision, ResultClass, TurnOutcome
from sessionkeeper_client.codex import CodexExecRun, run_codex_exec_turn


def test_codex_exec_success_resume_and_lost_thread(
    e2e_server: Server, mock_api: MockApi, worker: Worker, conversation: ConversationKey
) -> None:
    other_cwd = worker.root / "another-checkout"
    other_cwd.mkdir()

    async def turn(prompt: str, cwd: Path = worker.cwd) -> TurnOutcome[CodexExecRun]:
        # the binding rule: CODEX_HOME is the config dir; the cwd does not decide for codex
        binding = Binding(provider="codex", host="e2e-worker", config_dir=str(worker.root / "codex-home"), cwd=str(cwd))
        async with AsyncSessionKeeper(e2e_server.grpc_addr, timeout=10) as sk:
            return await run_codex_exec_turn(
                sk,
                conversation,
                binding,
                prompt,
                codex=codex_binary(),
                extra_args=["--skip-git-repo-check"],
                cwd=str(cwd),
                env=codex_env(mock_api, worker),
                timeout=120,
            )

    first = asyncio.run(turn("codex one [mock:ok]"))
    assert first.decision.decision == Decision.START_FRESH
    run = first.final.output
    assert run is not None and run.exit_code == 0, (run.stderr if run else None)
    thread_id = first.final.result.session_id
    assert thread_id and first.final.report.action == Action.STORED and first.session_id == thread_id

    seen = len(mock_api.requests())
    second = asyncio.run(turn("codex two [mock:ok]", other_cwd))  # resumed from another cwd
    assert second.decision.resume == thread_id and second.final.resumed_session_id == thread_id
    assert second.final.report.result_class == ResultClass.SUCCESS and second.session_id == thread_id
    sent = mock_api.requests()[seen:]
    assert any("codex one [mock:ok]" in " ".join(r["user_texts"]) for r in sent), sent

    # the worker loses CODEX_HOME's sessions: the real lost-thread failure (exit 1, stderr only)
    shutil.rmtree(codex_home(mock_api, worker) / "sessions")
    third = asyncio.run(turn("codex three [mock:ok]"))
    assert third.decision.resume == thread_id
    assert len(third.attempts) == 2
    gone, fresh = third.attempts
    assert gone.output is not None and gone.output.exit_code not in (0, None)
    assert gone.output.stdout.strip() == "" or gone.result.num_turns == 0
    assert gone.result.is_error and gone.result.num_turns == 0 and gone.result.exception
    assert (gone.report.result_class, gone.report.action, gone.report.retry_fresh) == (
        ResultClass.SESSION_GONE,
        Action.CLEARED,
        True,
    ), gone.result
    assert fresh.resumed_session_id is None and fresh.report.action == Action.STORED
    assert fresh.report.session_id and fresh.report.session_id != thread_id
    fourth = asyncio.run(turn("codex four [mock:ok]"))
    assert fourth.decision.resume == fresh.report.session_id
