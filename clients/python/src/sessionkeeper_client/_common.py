"""What the sync and async clients share: options, channel credentials, retries, errors, requests."""

from __future__ import annotations

import logging
import random
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Tuple, Union

import grpc

from ._gen.sessionkeeper.v1 import session_pb2 as pb
from ._types import AgentResult, Binding, ConversationKey

PemSource = Union[bytes, str, Path]
"""PEM data as bytes, or a path to a PEM file (str or Path)."""

MAX_REPORT_ID_BYTES = 128
FRESH_SUFFIX = ":fresh"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of retryable status codes with bounded, jittered backoff.

    By default UNAVAILABLE (the store is down or not migrated yet, or no connection) and
    RESOURCE_EXHAUSTED (the server sheds load: "too many calls in flight, retry with backoff").
    Retrying a report is safe: its report_id makes the server apply it once.

    Attempt n (from 1) waits a random time in [0, min(max_backoff, initial_backoff * multiplier**(n-1))]
    before the next one ("full jitter"), and no retry starts after ``max_elapsed`` seconds.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    max_elapsed: float = 30.0
    retryable: Tuple[grpc.StatusCode, ...] = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(0, attempt - 1))
        return rng.uniform(0, ceiling)


DEFAULT_RETRY = RetryPolicy()

WhenUnavailable = Literal["fail_turn", "fail_open"]
"""What ``run_turn`` does when sessionkeeper cannot be reached (after the retries): ``"fail_turn"``
(the default) raises :class:`SessionKeeperError` before the agent runs, or after it when the report
fails; ``"fail_open"`` logs a warning, runs the turn fresh (no resume) and skips the report."""

UNREACHABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
LOG = logging.getLogger("sessionkeeper_client")


def fails_open(policy: str, err: "SessionKeeperError", what: str) -> bool:
    """Whether ``err`` is sessionkeeper being unreachable and the policy says to go on without it."""
    if policy != "fail_open" or err.code not in UNREACHABLE_CODES:
        return False
    LOG.warning("sessionkeeper unreachable, failing open (%s): %s", what, err)
    return True
NO_RETRY = RetryPolicy(max_attempts=1)


class SessionKeeperError(Exception):
    """A failed sessionkeeper call: ``code`` is the gRPC status code, ``details`` the server's text.

    For INVALID_ARGUMENT, ``field`` names the offending request field (e.g. ``key.agent``).
    """

    def __init__(self, method: str, code: grpc.StatusCode, details: str, attempts: int = 1) -> None:
        self.method = method
        self.code = code
        self.details = details
        self.attempts = attempts
        match = re.match(r"([A-Za-z0-9_.\[\]]+): ", details) if code == grpc.StatusCode.INVALID_ARGUMENT else None
        self.field: Optional[str] = match.group(1) if match else None
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"sessionkeeper {method}: {code.name}: {details}{tries}")

    @classmethod
    def from_rpc_error(cls, method: str, err: Any, attempts: int) -> "SessionKeeperError":
        code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
        details = err.details() if callable(getattr(err, "details", None)) else str(err)
        return cls(method, code or grpc.StatusCode.UNKNOWN, details or "", attempts)


def _pem(source: Optional[PemSource]) -> Optional[bytes]:
    if source is None:
        return None
    if isinstance(source, bytes):
        return source
    text = str(source)
    if "-----BEGIN" in text:
        return text.encode()
    return Path(text).read_bytes()


def channel_credentials(
    tls: bool,
    root_certificates: Optional[PemSource],
    client_cert: Optional[PemSource],
    client_key: Optional[PemSource],
) -> Optional[grpc.ChannelCredentials]:
    """TLS credentials, or None for plaintext. Any certificate option implies TLS."""
    if not (tls or root_certificates or client_cert or client_key):
        return None
    if bool(client_cert) != bool(client_key):
        raise ValueError("client_cert and client_key go together (mutual TLS)")
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(root_certificates),
        private_key=_pem(client_key),
        certificate_chain=_pem(client_cert),
    )


def call_metadata(token: Optional[str], extra: Sequence[Tuple[str, str]]) -> Tuple[Tuple[str, str], ...]:
    """Per-call metadata: ``authorization: Bearer <token>`` plus the caller's extra pairs.

    The token travels as plain metadata (not call credentials), so it is sent on plaintext channels
    too, e.g. behind a TLS-terminating proxy on localhost.
    """
    pairs = list(extra)
    if token:
        pairs.append(("authorization", f"Bearer {token}"))
    return tuple(pairs)


def new_report_id() -> str:
    """A fresh idempotency key for one report (reused across that report's retries)."""
    return uuid.uuid4().hex


def fresh_report_id(report_id: str) -> str:
    """The report id of a turn's fresh retry, derived from the first report's id."""
    base = report_id
    while len((base + FRESH_SUFFIX).encode()) > MAX_REPORT_ID_BYTES:
        base = base[:-1]
    return base + FRESH_SUFFIX


@dataclass(frozen=True)
class ChannelSettings:
    """What a client was built from, so another channel can be opened the same way
    (``SessionKeeperSessionStore.from_client``)."""

    target: str
    credentials: Optional[grpc.ChannelCredentials]
    """TLS credentials, None for plaintext."""
    metadata: Tuple[Tuple[str, str], ...]
    """Per-call metadata, the bearer token included."""
    options: Tuple[Tuple[str, Any], ...]
    """The caller's extra channel arguments (before :func:`channel_options` adds its own)."""
    timeout: float
    retry: RetryPolicy


def get_request(
    key: ConversationKey, binding: Optional[Binding], transcript_project_key: str = ""
) -> pb.GetRequest:
    request = pb.GetRequest(key=key.to_proto(), transcript_project_key=transcript_project_key)
    if binding is not None:
        request.binding.CopyFrom(binding.to_proto())
    return request


def report_request(
    key: ConversationKey,
    resumed_session_id: Optional[str],
    binding: Optional[Binding],
    result: AgentResult,
    report_id: str,
) -> pb.ReportResultRequest:
    request = pb.ReportResultRequest(
        key=key.to_proto(),
        resumed_session_id=resumed_session_id or "",
        result=result.to_proto(),
        report_id=report_id,
    )
    if binding is not None:
        request.binding.CopyFrom(binding.to_proto())
    return request
