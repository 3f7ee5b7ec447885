"""The synchronous client: SessionKeeper."""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Optional, Sequence, Tuple, TypeVar, cast

import grpc

from ._common import (
    DEFAULT_RETRY,
    ChannelSettings,
    PemSource,
    RetryPolicy,
    SessionKeeperError,
    WhenUnavailable,
    call_metadata,
    channel_credentials,
    fails_open,
    fresh_report_id,
    get_request,
    new_report_id,
    report_request,
)
from ._convert import SdkResult, agent_result_from_exception, agent_result_from_sdk
from ._gen.sessionkeeper.v1 import session_pb2 as pb
from ._gen.sessionkeeper.v1 import session_pb2_grpc as pb_grpc
from ._types import (
    AgentResult,
    Attempt,
    Binding,
    ReportOutcome,
    SessionDecision,
    ConversationKey,
    ForgetOutcome,
    SweepOutcome,
    TurnOutcome,
)

R = TypeVar("R")


def channel_options(retry: RetryPolicy, extra: Sequence[Tuple[str, Any]]) -> list[Tuple[str, Any]]:
    """gRPC channel arguments: reconnect backoff on the scale of the retry policy, then ``extra``.

    Without them gRPC waits 1 s, then up to 120 s, between reconnects after a refused connection, so
    a retried call would keep failing fast while the server is already back.
    """
    options: list[Tuple[str, Any]] = [
        ("grpc.initial_reconnect_backoff_ms", max(50, int(retry.initial_backoff * 1000))),
        ("grpc.max_reconnect_backoff_ms", max(100, int(retry.max_backoff * 1000))),
    ]
    return options + list(extra)


class SessionKeeper:
    """A blocking sessionkeeper client: ``decide`` before a run, ``report`` after it, or ``run_turn``.

    ``target`` is ``host:port``. Every call has a deadline (``timeout`` seconds per attempt);
    UNAVAILABLE and RESOURCE_EXHAUSTED are retried with jittered backoff as ``retry`` says. ``token`` is sent as
    ``authorization: Bearer <token>``; ``tls=True`` (implied by any certificate option) dials TLS
    with the system roots or ``root_certificates``, and ``client_cert`` + ``client_key`` present a
    client certificate (mutual TLS). PEM options take bytes or a file path. Use as a context
    manager, or call :meth:`close`.
    """

    def __init__(
        self,
        target: str,
        *,
        token: Optional[str] = None,
        tls: bool = False,
        root_certificates: Optional[PemSource] = None,
        client_cert: Optional[PemSource] = None,
        client_key: Optional[PemSource] = None,
        timeout: float = 5.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        metadata: Sequence[Tuple[str, str]] = (),
        options: Sequence[Tuple[str, Any]] = (),
        when_unavailable: WhenUnavailable = "fail_turn",
    ) -> None:
        if when_unavailable not in ("fail_turn", "fail_open"):
            raise ValueError(f"when_unavailable must be 'fail_turn' or 'fail_open', not {when_unavailable!r}")
        self.when_unavailable: WhenUnavailable = when_unavailable
        creds = channel_credentials(tls, root_certificates, client_cert, client_key)
        opts = channel_options(retry, options)
        self._channel: Any = (
            grpc.secure_channel(target, creds, options=opts)
            if creds is not None
            else grpc.insecure_channel(target, options=opts)
        )
        self._stub: Any = pb_grpc.SessionServiceStub(self._channel)
        self._metadata = call_metadata(token, metadata)
        self._timeout = timeout
        self._retry = retry
        self._rng = random.Random()
        self.target = target
        self._settings = ChannelSettings(target, creds, self._metadata, tuple(options), timeout, retry)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "SessionKeeper":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, name: str, request: Any, timeout: Optional[float]) -> Any:
        method = getattr(self._stub, name)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(request, timeout=timeout or self._timeout, metadata=self._metadata)
            except grpc.RpcError as err:
                code = err.code()
                delay = self._retry.backoff(attempt, self._rng)
                if (
                    code not in self._retry.retryable
                    or attempt >= self._retry.max_attempts
                    or time.monotonic() - started + delay > self._retry.max_elapsed
                ):
                    raise SessionKeeperError.from_rpc_error(name, err, attempt) from None
                time.sleep(delay)

    def decide(
        self,
        key: ConversationKey,
        binding: Optional[Binding] = None,
        *,
        transcript_project_key: str = "",
        timeout: Optional[float] = None,
    ) -> SessionDecision:
        """Get: resume the stored session (``decision.resume`` is its id) or start fresh.

        ``transcript_project_key``: the project key the SDK's SessionStore will load the transcript
        with (``claude_agent_sdk.project_key_for_directory(cwd)``); when the session's transcript is
        held under it, a host or config-dir mismatch still resumes (``decision.resumable_anywhere``).
        """
        request = get_request(key, binding, transcript_project_key)
        return SessionDecision.from_proto(self._call("Get", request, timeout))

    def report(
        self,
        key: ConversationKey,
        resumed_session_id: Optional[str],
        binding: Optional[Binding],
        result: SdkResult,
        report_id: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
    ) -> ReportOutcome:
        """ReportResult: what the run did. ``result`` is an :class:`AgentResult` or an SDK result
        message (converted with :func:`agent_result_from_sdk`). ``resumed_session_id`` is the id
        passed to the SDK's resume (None/"" for a fresh run). Without ``report_id`` one is generated
        and reused by every retry of this report, so a retried report is applied once.
        """
        rid = report_id or new_report_id()
        agent_result = agent_result_from_sdk(result)
        request = report_request(key, resumed_session_id, binding, agent_result, rid)
        return ReportOutcome.from_proto(self._call("ReportResult", request, timeout), rid)

    def forget(self, key: ConversationKey, *, timeout: Optional[float] = None) -> bool:
        """Forget: delete the key's stored session (the user reset the conversation)."""
        return self.forget_outcome(key, timeout=timeout).existed

    def forget_outcome(self, key: ConversationKey, *, timeout: Optional[float] = None) -> ForgetOutcome:
        """Forget, with the whole answer: whether a session was stored, and how many transcripts
        (SessionStore data) were deleted with it."""
        response = self._call("Forget", pb.ForgetRequest(key=key.to_proto()), timeout)
        return ForgetOutcome(existed=bool(response.existed), transcripts_deleted=int(response.transcripts_deleted))

    def sweep(
        self, namespace: str = "", agent: str = "", *, dry_run: bool = False, timeout: Optional[float] = None
    ) -> SweepOutcome:
        """Sweep: delete expired sessions now (empty filters mean all)."""
        response = self._call("Sweep", pb.SweepRequest(namespace=namespace, agent=agent, dry_run=dry_run), timeout)
        return SweepOutcome(
            deleted=int(response.deleted),
            took_seconds=response.took.ToTimedelta().total_seconds(),
            transcripts_deleted=int(response.transcripts_deleted),
        )

    def run_turn(
        self,
        key: ConversationKey,
        binding: Optional[Binding],
        run: Callable[[Optional[str]], R],
        *,
        report_id: Optional[str] = None,
        to_result: Optional[Callable[[R], AgentResult]] = None,
        raise_errors: bool = True,
        transcript_project_key: str = "",
    ) -> TurnOutcome[R]:
        """The orchestrator loop of one turn: Get → run → ReportResult → one fresh retry.

        ``run(resume)`` runs the agent, resuming ``resume`` when it is not None, and returns its
        result message (anything ``to_result`` converts; by default an SDK result message, a
        stream-json frame dict or an :class:`AgentResult`). If ``run`` raises, the exception is
        reported (:func:`agent_result_from_exception`). When the server answers ``retry_fresh``
        (the resumed session is gone), ``run(None)`` runs once more and is reported under
        ``report_id + ":fresh"``. If the last run raised, its exception is re-raised after the
        report unless ``raise_errors`` is False. ``transcript_project_key`` goes to Get (see
        :meth:`decide`).
        """
        convert = to_result or cast("Callable[[R], AgentResult]", agent_result_from_sdk)
        unreachable: Optional[SessionKeeperError] = None
        try:
            decision = self.decide(key, binding, transcript_project_key=transcript_project_key)
        except SessionKeeperError as err:
            if not fails_open(self.when_unavailable, err, "Get: the turn runs fresh, unreported"):
                raise
            decision, unreachable = SessionDecision.unreachable(), err
        outcome: TurnOutcome[R] = TurnOutcome(decision=decision, unreachable=unreachable)
        rid = report_id or new_report_id()
        resume = decision.resume
        while True:
            output: Optional[R] = None
            error: Optional[BaseException] = None
            try:
                output = run(resume)
                result = convert(output)
            except Exception as exc:  # noqa: BLE001 - reported, then re-raised below
                error = exc
                result = agent_result_from_exception(exc)
            report: Optional[ReportOutcome] = None
            if outcome.unreachable is None:
                try:
                    report = self.report(key, resume, binding, result, rid)
                except SessionKeeperError as err:
                    if not fails_open(self.when_unavailable, err, "ReportResult: the report is skipped"):
                        raise
                    outcome.unreachable = err
            outcome.attempts.append(Attempt(resume, output, error, result, report))
            if report is not None and report.retry_fresh and resume is not None:
                resume, rid = None, fresh_report_id(rid)
                continue
            if error is not None and raise_errors:
                raise error
            return outcome
