"""The binding rule (SPEC §4 Get rule 3, as amended), checked against the real Claude Code CLI
(2.1.332, bundled in claude-agent-sdk 0.2.189): the config dir decides where a session can be
resumed, the cwd does not. The server's answer and the CLI's behaviour must agree."""

from __future__ import annotations

import asyncio
from pathlib import Path

from claude_agent_sdk import ClaudeAgentOptions, ResultError

from e2e import MockApi, Worker, quiet_env
from harness import Server
from sessionkeeper_client import Action, AsyncSessionKeeper, Binding, ConversationKey, Decision, FreshReason
from sessionkeeper_client.claude import run_claude, run_claude_turn


def test_the_config_dir_decides_and_the_cwd_does_not(
    e2e_server: Server, mock_api: MockApi, worker: Worker, conversation: ConversationKey
) -> None:
    other_cwd = worker.root / "another-checkout"
    other_cwd.mkdir()

    def binding(cwd: Path, config_dir: Path) -> Binding:
        return Binding(provider="claude", host="e2e-worker", config_dir=str(config_dir), cwd=str(cwd))

    def options(cwd: Path, config_dir: Path) -> ClaudeAgentOptions:
        env = dict(quiet_env(mock_api, worker), CLAUDE_CONFIG_DIR=str(config_dir))
        return ClaudeAgentOptions(cwd=str(cwd), env=env)

    async def scenario() -> None:
        async with AsyncSessionKeeper(e2e_server.grpc_addr, timeout=10) as sk:
            first = await run_claude_turn(
                sk, conversation, binding(worker.cwd, worker.config_dir), "at home [mock:ok]",
                options(worker.cwd, worker.config_dir),
            )
            sid = first.session_id
            assert sid and first.final.report is not None and first.final.report.action == Action.STORED

            # another cwd, same config dir: the server says RESUME and the CLI really resumes
            moved = await run_claude_turn(
                sk, conversation, binding(other_cwd, worker.config_dir), "from elsewhere [mock:ok]",
                options(other_cwd, worker.config_dir),
            )
            assert moved.decision.decision == Decision.RESUME and moved.decision.resume == sid
            assert len(moved.attempts) == 1 and moved.session_id == sid
            run = moved.final.output
            assert run is not None and run.result is not None and run.result.session_id == sid
            assert not run.result.is_error

            # another config dir: the server says BINDING_MISMATCH (and keeps the row) ...
            other_config = worker.root / "other-config"
            other_config.mkdir()
            d = await sk.decide(conversation, binding(worker.cwd, other_config))
            assert (d.decision, d.fresh_reason) == (Decision.START_FRESH, FreshReason.BINDING_MISMATCH)
            assert d.binding is not None and d.binding.config_dir == str(worker.config_dir)
            # ... and the CLI agrees: a resume there finds no conversation
            there = await run_claude("hello [mock:ok]", options(worker.cwd, other_config), sid)
            assert there.result is None and isinstance(there.error, ResultError)
            assert there.agent_result.subtype == "error_during_execution" and there.agent_result.num_turns == 0

            # the row is still there for the config dir that holds the transcript
            back = await sk.decide(conversation, binding(other_cwd, worker.config_dir))
            assert back.resume == sid

    asyncio.run(scenario())
