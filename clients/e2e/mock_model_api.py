#!/usr/bin/env python3
"""A mock of the model APIs the real agent CLIs call, on 127.0.0.1 only: the only fake in the
clients' end-to-end tests (the CLIs, the SDKs, the clients and the sessionkeeper server are real).

* Anthropic Messages API (``POST /v1/messages``, SSE streaming), for the Claude Code CLI bundled in
  the Claude Agent SDKs (``ANTHROPIC_BASE_URL=http://127.0.0.1:<port>``).
* OpenAI Responses API (``POST /v1/responses``, SSE streaming), for ``codex exec`` with a custom
  model provider whose ``base_url`` is ``http://127.0.0.1:<port>/v1``.

What to answer is chosen by a marker in the newest user text of the request, ``[mock:<what>]``:
``ok`` (default: a short text answer), ``tool`` (ask for a harmless tool call, so ``max_turns`` 1
ends the run), ``529``, ``429``, ``500``, ``401`` (API errors with their statuses), ``credit``
(the 400 "credit balance is too low" error). Every request is recorded; ``GET /_requests`` returns
them (path, marker, number of messages, the user texts seen), so a test can check that a resumed
run really sent the earlier turns.

Usage: ``mock_model_api.py [--port-file FILE]``; prints ``listening <port>`` on stdout, serves until
killed. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Tuple

MARKER = re.compile(r"\[mock:([a-z0-9_-]+)\]")

# (HTTP status, error type, message) of the API errors the tests need, as the real API sends them.
ERRORS: Dict[str, Tuple[int, str, str]] = {
    "529": (529, "overloaded_error", "Overloaded"),
    "429": (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    "500": (500, "api_error", "Internal server error"),
    "401": (401, "authentication_error", "invalid x-api-key"),
    "credit": (
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to "
        "upgrade or purchase credits.",
    ),
}

RECORDED: List[Dict[str, Any]] = []
LOCK = threading.Lock()


def _texts(content: Any) -> List[str]:
    """The text parts of a message's content (a string or a list of blocks)."""
    if isinstance(content, str):
        return [content]
    out: List[str] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict):
                if block.get("type") in ("text", "input_text") and isinstance(block.get("text"), str):
                    out.append(block["text"])
    return out


def _has_tool_result(content: Any) -> bool:
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") in ("tool_result", "function_call_output") for b in content
    )


def _sse(events: List[Tuple[str, Dict[str, Any]]]) -> bytes:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


def anthropic_answer(marker: str, follow_up: bool, model: str) -> Tuple[int, Dict[str, str], bytes]:
    if marker in ERRORS and not follow_up:
        status, kind, message = ERRORS[marker]
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"}
        return status, {"content-type": "application/json", "request-id": "req_mock"}, json.dumps(body).encode()
    msg_id = "msg_" + uuid.uuid4().hex[:24]
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    start = {
        "type": "message_start",
        "message": {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        },
    }
    if marker == "tool" and not follow_up:
        # A harmless call: Glob of a pattern that matches nothing in the run's own cwd.
        block = {"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:20], "name": "Glob", "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps({"pattern": "*.nothing-here"})}
        stop = "tool_use"
    else:
        block = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": "ok from the mock"}
        stop = "end_turn"
    events = [
        ("message_start", start),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 5}},
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return 200, {"content-type": "text/event-stream", "request-id": "req_mock"}, _sse(events)


def responses_answer(marker: str) -> Tuple[int, Dict[str, str], bytes]:
    if marker in ERRORS:
        status, kind, message = ERRORS[marker]
        body = {"error": {"type": kind, "message": message, "code": kind}}
        return status, {"content-type": "application/json"}, json.dumps(body).encode()
    resp_id = "resp_" + uuid.uuid4().hex[:24]
    item = {
        "type": "message",
        "role": "assistant",
        "id": "msg_" + uuid.uuid4().hex[:24],
        "status": "completed",
        "content": [{"type": "output_text", "text": "ok from the mock", "annotations": []}],
    }
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    }
    events = [
        ("response.created", {"type": "response.created", "response": {"id": resp_id}}),
        ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item}),
        ("response.completed", {"type": "response.completed", "response": {"id": resp_id, "usage": usage}}),
    ]
    return 200, {"content-type": "text/event-stream"}, _sse(events)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, every answer with a Content-Length

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        sys.stderr.write("mock: " + (format % args) + "\n")

    def _send(self, status: int, headers: Dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._send(200, {}, b"")

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/_requests"):
            with LOCK:
                body = json.dumps(RECORDED).encode()
            self._send(200, {"content-type": "application/json"}, body)
            return
        self._send(404, {"content-type": "application/json"}, b'{"error":"not found"}')

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            request = {}
        path = self.path.split("?")[0]
        if path.endswith("/messages/count_tokens"):
            self._send(200, {"content-type": "application/json"}, b'{"input_tokens": 10}')
            return
        if path.endswith("/messages"):
            messages = request.get("messages") or []
        elif path.endswith("/responses"):
            messages = request.get("input") or []
        else:
            self._send(404, {"content-type": "application/json"}, b'{"error":"not found"}')
            return
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        texts = [t for m in users for t in _texts(m.get("content"))]
        # The marker of the newest user message decides. A newest message without one is the
        # follow-up of a tool call (a tool result): answered with text, so the run can end.
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        last_markers = [k for t in _texts(last.get("content")) for k in MARKER.findall(t)]
        follow_up = not last_markers
        marker = last_markers[-1] if last_markers else "ok"
        if not last_markers and not _has_tool_result(last.get("content")) and last.get("type") != "function_call_output":
            # not a tool follow-up: the newest marker anywhere (a prompt sent as its own item)
            found = [k for t in texts for k in MARKER.findall(t)]
            if found:
                marker, follow_up = found[-1], False
        with LOCK:
            RECORDED.append(
                {"path": path, "marker": marker, "messages": len(messages), "user_texts": texts, "follow_up": follow_up}
            )
        if path.endswith("/messages"):
            status, headers, body = anthropic_answer(marker, follow_up, str(request.get("model") or "claude-mock"))
        else:
            status, headers, body = responses_answer(marker)
        self._send(status, headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", help="also write the port to this file")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file, "w") as f:
            f.write(str(port))
    print(f"listening {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
