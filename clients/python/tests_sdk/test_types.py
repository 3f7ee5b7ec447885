"""The converters are typed against the SDK's own types (claude-agent-sdk as pinned in
requirements-dev.txt): mypy --strict accepts a ResultMessage and rejects an AssistantMessage.

The negative check fails when the code accepts the wrong message: it requires an error from mypy
on exactly the lines marked ``# expect-error``, and no other error."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "typecheck"
CACHE = Path(__file__).resolve().parents[3] / "target" / "mypy-typecheck-cache"


def mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(CACHE), "--show-error-codes", "--no-error-summary", str(path)],
        capture_output=True,
        text=True,
        cwd=HERE,
    )


def test_the_sdk_result_message_and_result_error_type_check() -> None:
    done = mypy(HERE / "accepts_result_message.py")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_session_store_type_checks_as_the_sdks_session_store() -> None:
    done = mypy(HERE / "accepts_session_store.py")
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_assistant_message_passed_to_a_converter_fails_to_type_check() -> None:
    path = HERE / "rejects_assistant_message.py"
    expected = {n for n, line in enumerate(path.read_text().splitlines(), 1) if line.endswith("# expect-error")}
    assert expected, "the negative file marks no line"
    done = mypy(path)
    assert done.returncode == 1, f"mypy accepted an AssistantMessage:\n{done.stdout}{done.stderr}"
    reported = {
        int(m.group(1)) for m in re.finditer(rf"^{re.escape(path.name)}:(\d+): error: .*\[arg-type\]$", done.stdout, re.M)
    }
    assert reported == expected, done.stdout


def test_the_generic_converter_reads_the_frame_of_a_real_result_error() -> None:
    """run_turn with a plain run function: the SDK's ResultError (no ResultMessage was yielded for
    a lost transcript) still reports the frame it carries."""
    from claude_agent_sdk import ResultError

    from sessionkeeper_client import agent_result_from_exception

    frame = {
        "type": "result",
        "subtype": "error_during_execution",
        "is_error": True,
        "num_turns": 0,
        "session_id": "dead",
        "errors": ["No conversation found with session ID: dead"],
    }
    r = agent_result_from_exception(ResultError("Claude Code returned an error result: …", data=frame, exit_code=1))
    assert (r.subtype, r.num_turns, r.is_error, tuple(r.errors)) == (
        "error_during_execution",
        0,
        True,
        ("No conversation found with session ID: dead",),
    )
    assert r.exception.startswith("ResultError: ")
