"""The asyncio client: AsyncSessionKeeper (the Claude Agent SDK for Python is async)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Awaitable, Callable, Optional, Sequence, Tuple, TypeVar, cast

import grpc
import grpc.aio

from ._client import channel_options
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


class AsyncSessionKeeper:
    """The asyncio twin of :class:`SessionKeeper` (same options, same methods, awaitable).

    It can be created anywhere, also at import time with no event loop running: the gRPC channel is
    opened on the first call, in the loop that makes it, and opened again when a later call runs in
    another loop (each ``asyncio.run`` has its own), since a grpc.aio channel belongs to one loop.
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
        self._creds = channel_credentials(tls, root_certificates, client_cert, client_key)
        self._options = channel_options(retry, options)
        self._channel: Any = None
        self._stub: Any = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._metadata = call_metadata(token, metadata)
        self._timeout = timeout
        self._retry = retry
        self._rng = random.Random()
        self.target = target
        self._settings = ChannelSettings(target, self._creds, self._metadata, tuple(options), timeout, retry)

    def _stub_for_this_loop(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._stub is None or self._loop is not loop:
            # a channel of a loop that is gone cannot be closed from here; it is dropped
            self._channel = (
                grpc.aio.secure_channel(self.target, self._creds, options=self._options)
                if self._creds is not None
                else grpc.aio.insecure_channel(self.target, options=self._options)
            )
            self._stub = pb_grpc.SessionServiceStub(self._channel)
            self._loop = loop
        return self._stub

    async def close(self) -> None:
        channel, self._channel, self._stub, self._loop = self._channel, None, None, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> "AsyncSessionKeeper":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, name: str, request: Any, timeout: Optional[float]) -> Any:
        method = getattr(self._stub_for_this_loop(), name)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await method(request, timeout=timeout or self._timeout, metadata=self._metadata)
            except grpc.aio.AioRpcError as err:
                code = err.code()
                delay = self._retry.backoff(attempt, self._rng)
                if (
                    code not in self._retry.retryable
                    or attempt >= self._retry.max_attempts
                    or time.monotonic() - started + delay > self._retry.max_elapsed
                ):
                    raise SessionKeeperError.from_rpc_error(name, err, attempt) from None
                await asyncio.sleep(delay)

    async def decide(
        self,
        key: ConversationKey,
        binding: Optional[Binding] = None,
        *,
        transcript_project_key: str = "",
        timeout: Optional[float] = None,
    ) -> SessionDecision:
        """Get; see :meth:`SessionKeeper.decide`."""
        request = get_request(key, binding, transcript_project_key)
        return SessionDecision.from_proto(await self._call("Get", request, timeout))

    async def report(
        self,
        key: ConversationKey,
        resumed_session_id: Optional[str],
        binding: Optional[Binding],
        result: SdkResult,
        report_id: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
    ) -> ReportOutcome:
        """ReportResult; see :meth:`SessionKeeper.report`."""
        rid = report_id or new_report_id()
        request = report_request(key, resumed_session_id, binding, agent_result_from_sdk(result), rid)
        return ReportOutcome.from_proto(await self._call("ReportResult", request, timeout), rid)

    async def forget(self, key: ConversationKey, *, timeout: Optional[float] = None) -> bool:
        """Forget: delete the key's stored session (the user reset the conversation)."""
        return (await self.forget_outcome(key, timeout=timeout)).existed

    async def forget_outcome(self, key: ConversationKey, *, timeout: Optional[float] = None) -> ForgetOutcome:
        """Forget, with the whole answer; see :meth:`SessionKeeper.forget_outcome`."""
        response = await self._call("Forget", pb.ForgetRequest(key=key.to_proto()), timeout)
        return ForgetOutcome(existed=bool(response.existed), transcripts_deleted=int(response.transcripts_deleted))

    async def sweep(
        self, namespace: str = "", agent: str = "", *, dry_run: bool = False, timeout: Optional[float] = None
    ) -> SweepOutcome:
        """Sweep: delete expired sessions now (empty filters mean all)."""
        request = pb.SweepRequest(namespace=namespace, agent=agent, dry_run=dry_run)
        response = await self._call("Sweep", request, timeout)
        return SweepOutcome(
            deleted=int(response.deleted),
            took_seconds=response.took.ToTimedelta().total_seconds(),
            transcripts_deleted=int(response.transcripts_deleted),
        )

    async def run_turn(
        self,
        key: ConversationKey,
        binding: Optional[Binding],
        run: Callable[[Optional[str]], Awaitable[R]],
        *,
        report_id: Optional[str] = None,
        to_result: Optional[Callable[[R], AgentResult]] = None,
        raise_errors: bool = True,
        transcript_project_key: str = "",
    ) -> TurnOutcome[R]:
        """Get → ``await run(resume)`` → ReportResult → one fresh retry; see :meth:`SessionKeeper.run_turn`."""
        convert = to_result or cast("Callable[[R], AgentResult]", agent_result_from_sdk)
        unreachable: Optional[SessionKeeperError] = None
        try:
            decision = await self.decide(key, binding, transcript_project_key=transcript_project_key)
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
                output = await run(resume)
                result = convert(output)
            except Exception as exc:  # noqa: BLE001 - reported, then re-raised below
                error = exc
                result = agent_result_from_exception(exc)
            report: Optional[ReportOutcome] = None
            if outcome.unreachable is None:
                try:
                    report = await self.report(key, resume, binding, result, rid)
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
