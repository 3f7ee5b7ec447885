"""The converters from SDK results and raised errors to AgentResult (no server needed)."""

from __future__ import annotations

import json
import subprocess

from frames import ProcessError, ResultMessage, no_conversation, success
from sessionkeeper_client import (
    AgentResult,
    agent_result_from_exception,
    agent_result_from_sdk,
    find_result_frame,
    is_result_message,
)


def test_the_lost_transcript_frame() -> None:
    r = agent_result_from_sdk(no_conversation("new-id", "old-id"))
    assert r == AgentResult(
        is_error=True,
        subtype="error_during_execution",
        session_id="new-id",
        num_turns=0,
        errors=("No conversation found with session ID: old-id",),
    )


def test_a_success_frame_dict_and_its_json() -> None:
    frame = success("sid-1", num_turns=4, text="all done")
    expected = AgentResult(is_error=False, subtype="success", session_id="sid-1", num_turns=4, result_text="all done")
    assert agent_result_from_sdk(frame) == expected
    assert agent_result_from_sdk(json.dumps(frame)) == expected


def test_the_python_sdk_result_message() -> None:
    msg = ResultMessage(subtype="error_max_turns", duration_ms=1, duration_api_ms=1, is_error=True, num_turns=30,
                        session_id="sid-2", terminal_reason="max_turns",
                        errors=["Reached maximum number of turns (30)"])
    r = agent_result_from_sdk(msg)
    assert (r.is_error, r.subtype, r.session_id, r.num_turns, r.terminal_reason) == (
        True, "error_max_turns", "sid-2", 30, "max_turns")
    assert r.errors == ("Reached maximum number of turns (30)",)
    assert is_result_message(msg) and is_result_message(success("x")) and not is_result_message({"type": "assistant"})


def test_an_api_error_rendered_as_result_text() -> None:
    frame = {"type": "result", "subtype": "success", "is_error": True, "num_turns": 1, "session_id": "s",
             "result": "API Error: 529 {\"type\":\"overloaded_error\"}", "api_error_status": 529}
    r = agent_result_from_sdk(frame)
    assert r.is_error and r.result_text.startswith("API Error: 529") and r.api_error_status == 529


def test_odd_values_do_not_raise() -> None:
    r = agent_result_from_sdk({"is_error": "yes", "num_turns": "many", "errors": "one error", "result": {"x": 1}})
    assert r.is_error and r.num_turns == 0 and r.errors == ("one error",) and r.result_text == ""
    assert agent_result_from_sdk({"num_turns": -3}).num_turns == 0
    assert agent_result_from_sdk("not json").result_text == "not json"


def test_no_result_message_is_a_failure() -> None:
    r = agent_result_from_sdk(None)
    assert r.is_error and "no result message" in r.exception and r.session_id == ""


def test_an_agent_result_passes_through() -> None:
    r = AgentResult(is_error=True, exception="boom")
    assert agent_result_from_sdk(r) is r


def test_a_process_error() -> None:
    err = ProcessError("Command failed with exit code 1", exit_code=1,
                       stderr="Error: No conversation found with session ID: abc")
    r = agent_result_from_exception(err)
    assert r.is_error and r.num_turns == 0 and r.session_id == ""
    assert r.exception.startswith("ProcessError: Command failed")
    assert "No conversation found with session ID: abc" in r.exception


def test_a_process_error_after_a_result_frame_keeps_the_frame() -> None:
    err = ProcessError("Command failed", exit_code=1)
    r = agent_result_from_exception(err, no_conversation("new", "old"))
    assert r.subtype == "error_during_execution" and r.errors and r.num_turns == 0
    assert "exit code: 1" in r.exception


def test_an_exit_after_a_success_frame_is_still_a_success() -> None:
    r = agent_result_from_sdk(success("sid"), exception=RuntimeError("exited with code 143"))
    assert not r.is_error and r.subtype == "success" and "143" in r.exception


def test_called_process_error_with_a_result_frame_on_stdout() -> None:
    stdout = "\n".join([
        json.dumps({"type": "system", "subtype": "init", "session_id": "x"}),
        json.dumps(no_conversation("new", "old")),
    ])
    err = subprocess.CalledProcessError(1, ["claude", "-p", "--resume", "old"], output=stdout.encode(), stderr=b"")
    r = agent_result_from_exception(err)
    assert r.subtype == "error_during_execution" and r.errors == ("No conversation found with session ID: old",)
    assert "exit status 1" in r.exception or "exit code 1" in r.exception
    assert find_result_frame(stdout) == no_conversation("new", "old")
    assert find_result_frame("no frames here") is None


def test_an_exception_carrying_its_result_message() -> None:
    class ResultError(Exception):
        def __init__(self, result_message: object) -> None:
            super().__init__("the run ended with an error result")
            self.result_message = result_message

    r = agent_result_from_exception(ResultError(no_conversation("n", "o")))
    assert r.subtype == "error_during_execution" and "ResultError" in r.exception


def test_timeouts_and_causes() -> None:
    try:
        try:
            raise ConnectionResetError("ECONNRESET")
        except ConnectionResetError as inner:
            raise TimeoutError("run timed out") from inner
    except TimeoutError as err:
        r = agent_result_from_exception(err)
    assert "TimeoutError: run timed out" in r.exception and "ECONNRESET" in r.exception
    assert agent_result_from_exception(subprocess.TimeoutExpired(["claude"], 30)).exception.startswith("TimeoutExpired")


def test_huge_texts_are_capped_keeping_the_stderr_tail() -> None:
    err = ProcessError("failed", exit_code=1, stderr="noise\n" * 100_000 + "Error: invalid token")
    r = agent_result_from_exception(err)
    assert len(r.exception.encode()) < 8 * 1024, "under the server's per-text truncation"
    assert r.exception.endswith("Error: invalid token")
    many = agent_result_from_sdk({"is_error": True, "errors": ["x" * 100_000] * 500})
    assert len(many.errors) == 64 and all(len(e.encode()) <= 32 * 1024 + 3 for e in many.errors)
