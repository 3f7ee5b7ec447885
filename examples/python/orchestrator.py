"""An orchestrator that survives a lost Claude transcript, with sessionkeeper_client and the real
Claude Agent SDK (``claude-agent-sdk``: its ``query()`` drives the Claude Code CLI it bundles).

It plays four turns of one conversation against a real sessionkeeper server:

  1. a fresh session is started and stored;
  2. the next turn resumes it (the CLI reloads the transcript);
     -- the worker "restarts" without its home volume: the config dir is emptied --
  3. the turn resumes the stored id, the CLI answers with its real "No conversation found with
     session ID" frame (the SDK raises ResultError and yields no result message: the adapter takes
     the frame from the exception), sessionkeeper clears the id and answers retry_fresh, and the same
     turn runs again as a fresh session, which is stored;
  4. the next turn resumes the new session: no loop, no dead id.

The model API is whatever ``ANTHROPIC_BASE_URL`` / ``ANTHROPIC_API_KEY`` say; ``examples/run``
points them at the mock model API of the tests on 127.0.0.1 (clients/e2e/mock_model_api.py), so
the example runs anywhere without a key. Run it from the repository root:

    examples/run python

or against a running server: ``SESSIONKEEPER_ADDR=host:port python examples/python/orchestrator.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from claude_agent_sdk import ClaudeAgentOptions, ResultError

from sessionkeeper_client import AsyncSessionKeeper, Binding, ConversationKey, TurnOutcome
from sessionkeeper_client.claude import ClaudeRun, run_claude_turn

# The frame fields the story prints, in this order.
FRAME_FIELDS = ("type", "subtype", "is_error", "num_turns", "session_id", "errors")


def short(session_id: str) -> str:
    return session_id[:8] if session_id else "(none)"


def show(turn: int, outcome: TurnOutcome[ClaudeRun]) -> None:
    """Print what run_claude_turn did, step by step."""
    d = outcome.decision
    if d.resume:
        print(f"turn {turn}: Get -> RESUME {short(d.resume)}")
    else:
        print(f"turn {turn}: Get -> START_FRESH ({d.fresh_reason.name})")
    for i, attempt in enumerate(outcome.attempts):
        how = f"resumes {short(attempt.resumed_session_id)}" if attempt.resumed_session_id else "runs fresh"
        if i > 0:
            how += " (the one retry)"
        run = attempt.output
        if run is not None and run.result is not None and not run.result.is_error:
            print(f"turn {turn}: agent {how} -> {run.result.subtype}, session {short(run.result.session_id)}: "
                  f"{run.result.result}")
        elif run is not None and isinstance(run.error, ResultError):
            frame = {k: run.error.data.get(k) for k in FRAME_FIELDS if k in run.error.data}
            print(f"turn {turn}: agent {how} -> {json.dumps(frame, separators=(',', ':'))}")
        else:
            print(f"turn {turn}: agent {how} -> {attempt.result}")
        r = attempt.report
        if r is None:
            print(f"turn {turn}: ReportResult skipped (sessionkeeper unreachable)")
            continue
        stored = f" {short(r.session_id)}" if r.session_id else ""
        retry = ", retry_fresh" if r.retry_fresh else ""
        print(f"turn {turn}: ReportResult -> {r.result_class.name}, {r.action.name}{stored}{retry}")


async def main() -> int:
    address = os.environ.get("SESSIONKEEPER_ADDR", "127.0.0.1:50051")
    home = Path(tempfile.mkdtemp(prefix="claude-worker-"))
    config_dir, cwd = home / ".claude", home / "checkout"
    config_dir.mkdir()
    cwd.mkdir()
    options = ClaudeAgentOptions(
        cwd=str(cwd),
        max_turns=3,
        env={"HOME": str(home), "CLAUDE_CONFIG_DIR": str(config_dir), "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"},
    )
    key = ConversationKey(namespace="example", agent="coder", conversation=f"chat-{uuid.uuid4().hex[:8]}")
    binding = Binding(provider="claude", host="worker-1", config_dir=str(config_dir), cwd=str(cwd))
    print(f"sessionkeeper at {address}; conversation {key.conversation} on {binding.host}")

    turns: list[TurnOutcome[ClaudeRun]] = []
    async with AsyncSessionKeeper(address, token=os.environ.get("SESSIONKEEPER_TOKEN"), timeout=5) as sk:
        for n, prompt in enumerate(["hello", "and then?"], start=1):
            turns.append(await run_claude_turn(sk, key, binding, prompt, options))
            show(n, turns[-1])

        lost = turns[-1].session_id
        shutil.rmtree(config_dir)  # the container restarts without its home volume
        config_dir.mkdir()
        print(f"*** restart: worker-1 comes back without its home volume; transcript {short(lost)} is gone")

        for n, prompt in enumerate(["still there?", "great"], start=3):
            turns.append(await run_claude_turn(sk, key, binding, prompt, options))
            show(n, turns[-1])

    recovery, after = turns[2], turns[3]
    first = recovery.attempts[0].report
    ok = (
        recovery.retried_fresh
        and first is not None
        and first.result_class.name == "SESSION_GONE"
        and first.action.name == "CLEARED"
        and recovery.session_id not in ("", lost)
        and after.decision.resume == recovery.session_id
        and not after.retried_fresh
    )
    shutil.rmtree(home, ignore_errors=True)
    if not ok:
        print("NOT RECOVERED: the turns above did not go as expected", file=sys.stderr)
        return 1
    print(f"RECOVERED: lost session {short(lost)} was cleared once, turn 3 ran fresh as {short(recovery.session_id)}, "
          "turn 4 resumed it; the failed frame's id was never stored")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
