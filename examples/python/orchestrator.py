"""An orchestrator that survives a lost Claude transcript, with sessionkeeper_client.

It plays four turns of one conversation against a real sessionkeeper server:

  1. a fresh session is started and stored;
  2. the next turn resumes it;
     -- the worker "restarts" without its home volume: the transcript file is gone --
  3. the turn resumes the stored id, the agent answers with Claude Code's exact
     "No conversation found with session ID" frame, sessionkeeper clears the id and answers
     retry_fresh, and the same turn runs again as a fresh session, which is stored;
  4. the next turn resumes the new session: no loop, no dead id.

The agent is a stand-in for the Claude Agent SDK's ``query()``: it keeps transcripts as files under
a config dir the way Claude Code does (``<config_dir>/projects/<cwd>/<id>.jsonl``) and yields SDK-like
messages. Swap ``fake_query`` for ``claude_agent_sdk.query`` and nothing else changes.

Run it with one command from the repository root (builds what is missing, starts a server):

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
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

from sessionkeeper_client import AsyncSessionKeeper, Binding, SessionKey, TurnOutcome, is_result_message


class FakeClaude:
    """A stand-in for one Claude Code host: transcripts are files under its config dir."""

    def __init__(self, config_dir: Path, cwd: str) -> None:
        self.config_dir = config_dir
        self.cwd = cwd

    def _transcript(self, session_id: str) -> Path:
        return self.config_dir / "projects" / self.cwd.replace("/", "-") / f"{session_id}.jsonl"

    async def query(self, prompt: str, resume: Optional[str]) -> AsyncIterator[dict[str, Any]]:
        """Yields SDK-like messages: system init, then an assistant reply, then the result frame."""
        if resume is not None and not self._transcript(resume).exists():
            # Exactly what Claude Code emits when the transcript of `resume` is missing: note the
            # brand-new session_id on the failed frame, which must never be stored.
            yield {"type": "result", "subtype": "error_during_execution", "is_error": True, "num_turns": 0,
                   "session_id": str(uuid.uuid4()),
                   "errors": [f"No conversation found with session ID: {resume}"]}
            return
        session_id = resume or str(uuid.uuid4())
        path = self._transcript(session_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as transcript:
            transcript.write(json.dumps({"prompt": prompt}) + "\n")
        turns = sum(1 for _ in path.open())
        yield {"type": "system", "subtype": "init", "session_id": session_id, "cwd": self.cwd}
        yield {"type": "assistant", "session_id": session_id,
               "message": {"content": [{"type": "text", "text": f"reply #{turns} to {prompt!r}"}]}}
        yield {"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
               "session_id": session_id, "result": f"reply #{turns} to {prompt!r}"}


def short(session_id: str) -> str:
    return session_id[:8] if session_id else "(none)"


def show(turn: int, outcome: TurnOutcome[Any]) -> None:
    """Print what run_turn did, step by step."""
    d = outcome.decision
    if d.resume:
        print(f"turn {turn}: Get -> RESUME {short(d.resume)}")
    else:
        print(f"turn {turn}: Get -> START_FRESH ({d.fresh_reason.name})")
    for i, attempt in enumerate(outcome.attempts):
        how = f"resumes {short(attempt.resumed_session_id)}" if attempt.resumed_session_id else "runs fresh"
        if i > 0:
            how += " (the one retry)"
        frame = attempt.output or {}
        if frame.get("is_error"):
            print(f"turn {turn}: agent {how} -> {json.dumps(frame, separators=(',', ':'))}")
        else:
            print(f"turn {turn}: agent {how} -> {frame.get('subtype')}, session {short(frame.get('session_id', ''))}: "
                  f"{frame.get('result')}")
        r = attempt.report
        stored = f" {short(r.session_id)}" if r.session_id else ""
        retry = ", retry_fresh" if r.retry_fresh else ""
        print(f"turn {turn}: ReportResult -> {r.result_class.name}, {r.action.name}{stored}{retry}")


async def main() -> int:
    address = os.environ.get("SESSIONKEEPER_ADDR", "127.0.0.1:50051")
    home = Path(tempfile.mkdtemp(prefix="fake-claude-home-"))
    config_dir = home / ".claude"
    cwd = "/srv/checkout"
    agent = FakeClaude(config_dir, cwd)
    key = SessionKey(namespace="example", agent="coder", conversation=f"chat-{uuid.uuid4().hex[:8]}")
    binding = Binding(provider="claude", host="worker-1", config_dir=str(config_dir), cwd=cwd)
    print(f"sessionkeeper at {address}; conversation {key.conversation} on {binding.host}")

    async with AsyncSessionKeeper(address, token=os.environ.get("SESSIONKEEPER_TOKEN"), timeout=5) as sk:

        def run_with(prompt: str) -> Callable[[Optional[str]], Awaitable[Optional[dict[str, Any]]]]:
            async def run(resume: Optional[str]) -> Optional[dict[str, Any]]:
                result = None
                async for message in agent.query(prompt, resume=resume):
                    if is_result_message(message):
                        result = message
                return result

            return run

        turns: list[TurnOutcome[Any]] = []
        for n, prompt in enumerate(["hello", "and then?"], start=1):
            turns.append(await sk.run_turn(key, binding, run_with(prompt)))
            show(n, turns[-1])

        lost = turns[-1].session_id
        shutil.rmtree(config_dir)  # the container restarts without its home volume
        print(f"*** restart: worker-1 comes back without its home volume; transcript {short(lost)} is gone")

        for n, prompt in enumerate(["still there?", "great"], start=3):
            turns.append(await sk.run_turn(key, binding, run_with(prompt)))
            show(n, turns[-1])

    recovery, after = turns[2], turns[3]
    dead_frame_id = recovery.attempts[0].output["session_id"] if recovery.attempts[0].output else ""
    ok = (
        recovery.retried_fresh
        and recovery.attempts[0].report.result_class.name == "SESSION_GONE"
        and recovery.attempts[0].report.action.name == "CLEARED"
        and recovery.session_id not in ("", lost, dead_frame_id)
        and after.decision.resume == recovery.session_id
        and not after.retried_fresh
    )
    shutil.rmtree(home, ignore_errors=True)
    if not ok:
        print("NOT RECOVERED: the turns above did not go as expected", file=sys.stderr)
        return 1
    print(f"RECOVERED: lost session {short(lost)} was cleared once, turn 3 ran fresh as {short(recovery.session_id)}, "
          f"turn 4 resumed it; the failed frame's id {short(dead_frame_id)} was never stored")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
