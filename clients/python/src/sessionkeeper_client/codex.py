"""The Codex CLI adapter: ``codex exec --json`` output lines, exit code and stderr → the report.

What ``codex exec --json`` (``@openai/codex`` 0.163.0) prints, one JSON event a line:
``thread.started`` (``thread_id``: the id to resume with ``codex exec resume <id>``),
``turn.started``, ``item.*`` (``agent_message`` items carry the answer; ``error`` items are
warnings), then ``turn.completed`` or ``turn.failed`` (``error.message``), and top-level ``error``
events. A lost thread (a ``CODEX_HOME`` without its rollout) prints **no** event at all: only exit
code 1 and ``Error: thread/resume: … no rollout found for thread id …`` on stderr.

Mapping: a run whose last turn completed and whose exit code is 0 is a success with the thread id
as ``session_id``. Anything else is an error: ``num_turns`` is the number of turns that started (0
when none did, so a resume that never started a turn can count as gone), ``errors`` the failure
messages, ``exception`` the exit code and the stderr's error lines and tail. No frame field is
invented: the server classifies from these texts and counts.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from ._aio import AsyncSessionKeeper
from ._convert import STDERR_TAIL_BYTES, _cap
from ._types import AgentResult, Binding, ConversationKey, TurnOutcome

__all__ = ["CodexExecRun", "agent_result_from_codex_exec", "codex_exec_args", "run_codex_exec", "run_codex_exec_turn"]


def _events(stdout: Union[str, bytes, Iterable[str]]) -> List[Mapping[str, Any]]:
    if isinstance(stdout, bytes):
        stdout = stdout.decode("utf-8", "replace")
    lines = stdout.splitlines() if isinstance(stdout, str) else list(stdout)
    events: List[Mapping[str, Any]] = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("type"), str):
            events.append(event)
    return events


def _stderr_summary(stderr: str) -> str:
    """The stderr's error lines first (a Rust backtrace can follow them), then its tail."""
    text = stderr.strip()
    if not text:
        return ""
    errors = [line.strip() for line in text.splitlines() if line.lstrip().lower().startswith("error")]
    tail = _cap(text, STDERR_TAIL_BYTES, tail=True)
    head = "; ".join(e for e in errors[:5] if e not in tail)
    return f"{head}; {tail}" if head else tail


def agent_result_from_codex_exec(
    stdout: Union[str, bytes, Iterable[str]],
    exit_code: Optional[int],
    stderr: str = "",
) -> AgentResult:
    """The report of one ``codex exec --json`` run from its stdout (text or lines), its exit code
    (None when it was killed or never ran) and its stderr."""
    events = _events(stdout)
    thread_id = ""
    turns = 0
    completed = False
    answer = ""
    errors: List[str] = []
    for event in events:
        kind = event.get("type")
        if kind == "thread.started":
            thread_id = str(event.get("thread_id") or "")
        elif kind == "turn.started":
            turns += 1
            completed = False
        elif kind == "turn.completed":
            completed = True
        elif kind == "turn.failed":
            completed = False
            error = event.get("error")
            message = error.get("message") if isinstance(error, Mapping) else None
            errors.append(str(message or "turn failed"))
        elif kind == "error":
            message = str(event.get("message") or "")
            if message and message not in errors:
                errors.append(message)
        elif kind == "item.completed":
            item = event.get("item")
            if isinstance(item, Mapping) and item.get("type") == "agent_message":
                answer = str(item.get("text") or "")
    if completed and exit_code == 0:
        return AgentResult(
            is_error=False, subtype="success", session_id=thread_id, num_turns=turns, result_text=_cap(answer)
        )
    parts = [f"codex exec exited with code {exit_code}" if exit_code is not None else "codex exec did not exit"]
    summary = _stderr_summary(stderr)
    if summary:
        parts.append("stderr: " + summary)
    return AgentResult(
        is_error=True,
        session_id=thread_id,
        num_turns=turns,
        errors=tuple(_cap(e) for e in errors),
        exception="; ".join(parts),
        result_text=_cap(answer),
    )


def codex_exec_args(prompt: str, resume: Optional[str], extra_args: Sequence[str] = ()) -> List[str]:
    """``exec --json [extra…] [resume <id>] <prompt>`` (the arguments after the codex binary)."""
    args = ["exec", "--json", *extra_args]
    if resume:
        args += ["resume", resume]
    return args + [prompt]


@dataclass
class CodexExecRun:
    """One ``codex exec --json`` process: its output and the report built from it."""

    resume: Optional[str]
    stdout: str
    stderr: str
    exit_code: Optional[int]
    agent_result: AgentResult = field(init=False)

    def __post_init__(self) -> None:
        self.agent_result = agent_result_from_codex_exec(self.stdout, self.exit_code, self.stderr)


async def run_codex_exec(
    prompt: str,
    resume: Optional[str],
    *,
    codex: str = "codex",
    extra_args: Sequence[str] = (),
    cwd: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    timeout: Optional[float] = None,
) -> CodexExecRun:
    """Run ``codex exec --json`` once (stdin closed); never raises for what the process does."""
    args = codex_exec_args(prompt, resume, extra_args)
    try:
        process = await asyncio.create_subprocess_exec(
            codex,
            *args,
            cwd=cwd,
            env=env if env is not None else dict(os.environ),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        return CodexExecRun(resume, "", f"error: could not start {codex}: {exc}", None)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        out, err = await process.communicate()
        return CodexExecRun(resume, out.decode("utf-8", "replace"), err.decode("utf-8", "replace") + "\nerror: timeout", None)
    return CodexExecRun(resume, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), process.returncode)


async def run_codex_exec_turn(
    sk: AsyncSessionKeeper,
    key: ConversationKey,
    binding: Optional[Binding],
    prompt: str,
    *,
    codex: str = "codex",
    extra_args: Sequence[str] = (),
    cwd: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    timeout: Optional[float] = None,
    report_id: Optional[str] = None,
) -> TurnOutcome[CodexExecRun]:
    """One turn with ``codex exec --json``: Get → run (``resume <id>`` from the decision) →
    ReportResult → one fresh retry on ``retry_fresh``."""

    async def run(resume: Optional[str]) -> CodexExecRun:
        return await run_codex_exec(
            prompt, resume, codex=codex, extra_args=extra_args, cwd=cwd, env=env, timeout=timeout
        )

    return await sk.run_turn(key, binding, run, report_id=report_id, to_result=lambda r: r.agent_result)
