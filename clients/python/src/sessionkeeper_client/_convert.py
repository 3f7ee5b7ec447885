"""Turn what an agent run produced (a Claude Agent SDK result message, a raw stream-json frame, a
raised exception, a failed process) into an :class:`AgentResult` for ReportResult.

The converters never raise on odd input: a report is worth more than a perfect one. Texts are capped
client-side (far above the server's own truncation) so a report never hits the gRPC size limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Callable, List, Optional, Protocol, Union

from ._types import AgentResult


class ResultMessageLike(Protocol):
    """What a result message has: the Claude Agent SDK's ``ResultMessage`` matches, an
    ``AssistantMessage`` (no ``is_error``, ``num_turns``, ``subtype``) does not, so a type checker
    rejects it where a result is expected."""

    @property
    def subtype(self) -> str: ...

    @property
    def is_error(self) -> bool: ...

    @property
    def num_turns(self) -> int: ...

    @property
    def session_id(self) -> str: ...


SdkResult = Union[ResultMessageLike, Mapping[str, Any], AgentResult, str, bytes, None]
"""What the converters and ``report`` accept: a result message, a raw ``{"type": "result"}`` frame
(a mapping or its JSON text), an :class:`AgentResult`, or None (no result arrived)."""

# The server truncates each text to 8 KiB; the client only makes sure a request stays far below the
# 4 MiB message limit, and keeps the tail of stderr (where the error usually is).
MAX_TEXT_BYTES = 32 * 1024
MAX_ERRORS = 64
STDERR_TAIL_BYTES = 5 * 1024
MESSAGE_HEAD_BYTES = 2 * 1024
CAUSE_BYTES = 512


def _cap(text: str, limit: int = MAX_TEXT_BYTES, *, tail: bool = False) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    cut = data[-limit:] if tail else data[:limit]
    clipped = cut.decode("utf-8", "ignore")
    return "…" + clipped if tail else clipped + "…"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _int(value: Any) -> int:
    try:
        number = int(value or 0)
    except (TypeError, ValueError):
        return 0
    return max(0, min(number, 2**32 - 1))


def _getter(message: Any) -> Callable[[str], Any]:
    if isinstance(message, Mapping):
        return lambda name: message.get(name)
    return lambda name: getattr(message, name, None)


def is_result_message(message: Any) -> bool:
    """Whether ``message`` looks like an SDK result (a ResultMessage or a ``"type": "result"`` frame)."""
    if message is None or isinstance(message, (str, bytes)):
        return False
    get = _getter(message)
    kind = get("type")
    if kind is not None:
        return bool(kind == "result")
    return get("subtype") is not None and get("is_error") is not None


def agent_result_from_sdk(message: SdkResult, *, exception: Optional[BaseException] = None) -> AgentResult:
    """An :class:`AgentResult` from a Claude Agent SDK result message.

    Accepts the Python SDK's ``ResultMessage`` (or any object with its attributes), a dict such as a
    ``{"type": "result", ...}`` stream-json frame or the TypeScript SDK's ``SDKResultMessage``
    shape, a JSON string of such a frame, or an :class:`AgentResult` (returned as is). Reads
    ``is_error``, ``subtype``, ``session_id``, ``num_turns``, ``errors``, ``terminal_reason``,
    ``api_error_status`` and ``result``. ``None`` (no result message arrived) is a failure. When
    the run also raised (the CLI exits non-zero after an
    error frame), pass the exception too: its text lands in ``exception``.
    """
    if isinstance(message, AgentResult):
        result = message
    elif message is None:
        # the run ended without a result message (the stream stopped early): a failure, not a success
        result = AgentResult(is_error=True, exception="the run produced no result message")
    else:
        value: Any = message
        if isinstance(value, (str, bytes)):
            try:
                value = json.loads(value)
            except ValueError:
                value = {"is_error": True, "result": _text(value)}
        get = _getter(value)
        errors_value = get("errors")
        if errors_value is None:
            errors: List[str] = []
        elif isinstance(errors_value, (str, bytes)):
            errors = [_text(errors_value)]
        else:
            errors = [_cap(_text(e)) for e in list(errors_value)[:MAX_ERRORS]]
        result_value = get("result")
        result = AgentResult(
            is_error=bool(get("is_error")),
            subtype=_text(get("subtype")),
            session_id=_text(get("session_id")),
            num_turns=_int(get("num_turns")),
            errors=tuple(errors),
            terminal_reason=_text(get("terminal_reason")),
            api_error_status=_int(get("api_error_status")),
            result_text=_cap(result_value) if isinstance(result_value, str) else "",
        )
    if exception is None:
        return result
    # The result frame is the SDK's own verdict: an exit after a success frame does not make the
    # run a failure (its session is valid), but its text is still reported.
    return AgentResult(
        is_error=result.is_error,
        subtype=result.subtype,
        session_id=result.session_id,
        num_turns=result.num_turns,
        errors=result.errors,
        terminal_reason=result.terminal_reason,
        api_error_status=result.api_error_status or _status_of(exception),
        exception=describe_exception(exception),
        result_text=result.result_text,
    )


def find_result_frame(output: Any) -> Optional[Mapping[str, Any]]:
    """The last ``{"type": "result", ...}`` frame in a process's stdout (stream-json or json)."""
    text = _text(output)
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not (line.startswith("{") and '"result"' in line):
            continue
        try:
            frame = json.loads(line)
        except ValueError:
            continue
        if isinstance(frame, Mapping) and frame.get("type") == "result":
            return frame
    return None


def _status_of(exc: BaseException) -> int:
    for name in ("status_code", "api_error_status"):
        value = getattr(exc, name, None)
        if isinstance(value, int) and 400 <= value <= 599:  # HTTP error statuses only
            return value
    return 0


def describe_exception(exc: BaseException) -> str:
    """One text for ``AgentResult.exception``: type, message, exit code and the tail of stderr.

    It stays under the server's 8 KiB per text, so the end of stderr (where the CLI prints its
    error, e.g. "No conversation found with session ID: …") is never cut off by the server.
    """
    stderr = _text(getattr(exc, "stderr", None)).strip()
    message = str(exc)
    if stderr and stderr in message:  # the SDK's ProcessError embeds stderr in its message
        message = message.replace(stderr, "").rstrip()
    parts = [_cap(f"{type(exc).__name__}: {message}".rstrip(": "), MESSAGE_HEAD_BYTES)]
    exit_code = getattr(exc, "exit_code", None)
    if exit_code is None:
        exit_code = getattr(exc, "returncode", None)
    if exit_code is not None and not re.search(rf"(exit|code|status)\D{{0,8}}{exit_code}\b", parts[0]):
        parts.append(f"exit code {exit_code}")
    if stderr:
        parts.append("stderr: " + _cap(stderr, STDERR_TAIL_BYTES, tail=True))
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        parts.append(_cap(f"caused by {type(cause).__name__}: {cause}", CAUSE_BYTES))
    return "; ".join(parts)


def agent_result_from_exception(exc: BaseException, result: Any = None) -> AgentResult:
    """An :class:`AgentResult` for a run that raised instead of (or after) returning a result.

    Handles the SDK's ``ResultError`` (its ``data`` is the result frame), ``ProcessError``
    (``exit_code``, ``stderr``), ``subprocess.CalledProcessError``
    (``returncode``, ``stderr``; a result frame in its ``stdout``/``output`` is used when present),
    timeouts and any other exception. ``result`` is the result message the run produced before it
    raised, if any; an exception that carries one (``exc.result_message`` or a result-like
    ``exc.result``) is used too. ``num_turns`` stays 0 (unknown) when no result frame is known.
    """
    if result is None:
        # claude_agent_sdk.ResultError carries the raw result frame in ``data`` (for a lost
        # transcript it is the only copy of the frame: no ResultMessage was yielded)
        for name in ("data", "result_message", "result"):
            candidate = getattr(exc, name, None)
            if is_result_message(candidate):
                result = candidate
                break
    if result is None:
        for name in ("stdout", "output"):
            frame = find_result_frame(getattr(exc, name, None))
            if frame is not None:
                result = frame
                break
    if result is not None:
        return agent_result_from_sdk(result, exception=exc)
    return AgentResult(is_error=True, exception=describe_exception(exc), api_error_status=_status_of(exc))
