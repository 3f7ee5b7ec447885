"""Real-shaped Claude Agent SDK frames and errors, shared by the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


def success(session_id: str, num_turns: int = 3, text: str = "done") -> dict[str, Any]:
    return {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "duration_ms": 5123,
        "duration_api_ms": 4012,
        "num_turns": num_turns,
        "result": text,
        "session_id": session_id,
        "total_cost_usd": 0.0123,
        "usage": {"input_tokens": 10, "output_tokens": 20},
        "permission_denials": [],
    }


def no_conversation(new_id: str, old_id: str) -> dict[str, Any]:
    """The exact frame Claude Code emits when resuming a transcript that is gone (SPEC §1)."""
    return {
        "type": "result",
        "subtype": "error_during_execution",
        "is_error": True,
        "num_turns": 0,
        "session_id": new_id,
        "errors": [f"No conversation found with session ID: {old_id}"],
    }


@dataclass
class ResultMessage:
    """The shape of claude_agent_sdk.ResultMessage (a dataclass without a `type` field)."""

    subtype: str
    duration_ms: int
    duration_api_ms: int
    is_error: bool
    num_turns: int
    session_id: str
    total_cost_usd: Optional[float] = None
    usage: Optional[dict[str, Any]] = None
    result: Optional[str] = None
    structured_output: Any = None
    terminal_reason: Optional[str] = None
    errors: list[str] = field(default_factory=list)


class ProcessError(Exception):
    """The shape of claude_agent_sdk.ProcessError."""

    def __init__(self, message: str, exit_code: Optional[int] = None, stderr: Optional[str] = None) -> None:
        self.exit_code = exit_code
        self.stderr = stderr
        if exit_code is not None:
            message = f"{message} (exit code: {exit_code})"
        if stderr:
            message = f"{message}\nError output: {stderr}"
        super().__init__(message)
