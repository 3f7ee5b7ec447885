"""The Claude Agent SDK adapter (PyPI ``claude-agent-sdk``): one turn of the orchestrator loop with
the SDK's own ``query()`` and ``ClaudeAgentOptions``, reported without ever losing the result frame.

How the SDK ends a run (``claude-agent-sdk`` 0.2.189, CLI 2.1.332):

* success: yields a ``ResultMessage`` (``subtype="success"``, ``is_error=False``);
* an error result (API error, ``max_turns``, …): yields the ``ResultMessage`` **and then raises**
  ``ResultError`` (a ``ProcessError``), whose ``.data`` is the same raw frame;
* a lost transcript (resume of an id the config dir does not hold): yields **no** ``ResultMessage``
  and raises ``ResultError`` at start-up, with the ``error_during_execution`` frame in ``.data``;
* a crash: raises ``ProcessError`` (``exit_code``; its ``stderr`` is a placeholder, the real stderr
  only reaches ``ClaudeAgentOptions.stderr``, which :func:`run_claude_turn` tees).

So the report uses, in this order: the ``ResultMessage`` from the stream, else the exception's frame
(``ResultError.data``), else the exception's text plus the tail of the process's stderr.

This module imports ``claude_agent_sdk``: install it next to this package
(``pip install claude-agent-sdk``). Nothing else in ``sessionkeeper_client`` needs it.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Deque, List, Optional, Protocol

from claude_agent_sdk import ClaudeAgentOptions, ResultError, ResultMessage, project_key_for_directory
from claude_agent_sdk.types import Message

from ._aio import AsyncSessionKeeper
from ._convert import STDERR_TAIL_BYTES, _cap, agent_result_from_sdk, describe_exception
from ._types import AgentResult, Binding, ConversationKey, TurnOutcome

__all__ = [
    "ClaudeQuery",
    "ClaudeRun",
    "agent_result_from_claude",
    "run_claude",
    "run_claude_turn",
    "transcript_project_key_of",
]

STDERR_LINES = 200


class ClaudeQuery(Protocol):
    """The shape of ``claude_agent_sdk.query`` (pass it, or a wrapper with the same signature)."""

    def __call__(self, *, prompt: str, options: ClaudeAgentOptions) -> AsyncIterator[Message]: ...


def agent_result_from_claude(
    message: Optional[ResultMessage],
    error: Optional[BaseException] = None,
    *,
    stderr: str = "",
) -> AgentResult:
    """The report of one SDK run: its ``ResultMessage`` (None when none arrived), what it raised
    (None when nothing), and the tail of the CLI's stderr when known.

    Typed against the SDK's own ``ResultMessage``: any other message type (an ``AssistantMessage``,
    even one carrying ``error="rate_limit"``) is rejected by ``mypy --strict``.
    """
    exception_text = ""
    if error is not None:
        exception_text = describe_exception(error)
        if stderr.strip() and "stderr: " not in exception_text:
            exception_text += "; stderr: " + _cap(stderr.strip(), STDERR_TAIL_BYTES, tail=True)
    if message is not None:
        result = agent_result_from_sdk(message)
    elif isinstance(error, ResultError) and error.data:
        # the lost-transcript case: the frame only exists on the exception
        result = agent_result_from_sdk(error.data)
    elif error is not None:
        status = error.api_error_status if isinstance(error, ResultError) else None
        return AgentResult(is_error=True, exception=exception_text, api_error_status=status or 0)
    else:
        result = agent_result_from_sdk(None)
    if not exception_text:
        return result
    return dataclasses.replace(result, exception=exception_text)


@dataclass
class ClaudeRun:
    """What one ``query()`` run produced: every message, the result message, what it raised."""

    resume: Optional[str]
    """The id passed to ``ClaudeAgentOptions.resume`` (None: a fresh run)."""
    messages: List[Message] = field(default_factory=list)
    result: Optional[ResultMessage] = None
    """The run's ``ResultMessage``, when the stream yielded one."""
    error: Optional[BaseException] = None
    """What the run raised (``ResultError`` after an error result), None when nothing."""
    stderr_lines: Deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_LINES))

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    @property
    def agent_result(self) -> AgentResult:
        """The report of this run (see :func:`agent_result_from_claude`)."""
        return agent_result_from_claude(self.result, self.error, stderr=self.stderr)

    @property
    def result_text(self) -> Optional[str]:
        return self.result.result if self.result is not None else None


async def run_claude(
    prompt: str,
    options: ClaudeAgentOptions,
    resume: Optional[str],
    *,
    query: Optional[ClaudeQuery] = None,
) -> ClaudeRun:
    """Run ``query(prompt=prompt, options=options)`` with ``resume`` set, to the end; never raises
    for what the run does (the exception is kept in :attr:`ClaudeRun.error`). The options' own
    ``stderr`` callback, if any, still gets every line."""
    if query is None:
        from claude_agent_sdk import query as sdk_query

        query = sdk_query
    run = ClaudeRun(resume=resume)
    user_stderr: Optional[Callable[[str], None]] = options.stderr

    def tee(line: str) -> None:
        run.stderr_lines.append(line)
        if user_stderr is not None:
            user_stderr(line)

    opts = dataclasses.replace(options, resume=resume, stderr=tee)
    try:
        async for message in query(prompt=prompt, options=opts):
            run.messages.append(message)
            if isinstance(message, ResultMessage):
                run.result = message
    except Exception as exc:  # noqa: BLE001 - kept and reported, never lost
        run.error = exc
    return run


async def run_claude_turn(
    sk: AsyncSessionKeeper,
    key: ConversationKey,
    binding: Optional[Binding],
    prompt: str,
    options: ClaudeAgentOptions,
    *,
    query: Optional[ClaudeQuery] = None,
    report_id: Optional[str] = None,
) -> TurnOutcome[ClaudeRun]:
    """One turn: Get → ``query()`` (resuming the stored id) → ReportResult → one fresh retry when
    the server answers ``retry_fresh``. ``options.resume`` is set from the decision (any value the
    caller put there is replaced). Returns every attempt; ``outcome.output`` is the last
    :class:`ClaudeRun` (its ``error`` is what the SDK raised, if anything: not re-raised).

    With ``options.session_store`` set (e.g. a :class:`SessionKeeperSessionStore`), Get carries
    the transcript project key of ``options.cwd``, so a session whose transcript sessionkeeper holds
    resumes on this host even when another host or config dir ran it
    (``outcome.decision.resumable_anywhere``)."""

    async def run(resume: Optional[str]) -> ClaudeRun:
        return await run_claude(prompt, options, resume, query=query)

    return await sk.run_turn(
        key,
        binding,
        run,
        report_id=report_id,
        to_result=lambda r: r.agent_result,
        transcript_project_key=transcript_project_key_of(options),
    )


def transcript_project_key_of(options: ClaudeAgentOptions) -> str:
    """The project key the SDK loads a resumed transcript with when ``options`` carry a
    ``session_store`` (``project_key_for_directory(options.cwd)``, the process's cwd when None);
    "" without a store (Get then applies the plain binding rule)."""
    if options.session_store is None:
        return ""
    return project_key_for_directory(options.cwd)
