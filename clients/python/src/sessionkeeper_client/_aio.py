"""The asyncio client: AsyncSessionKeeper (the Claude Agent SDK for Python is async)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Awaitable, Callable, Optional, Sequence, Tuple, TypeVar

import grpc
import grpc.aio

from ._client import channel_options
from ._common import (
    DEFAULT_RETRY,
    PemSource,
    RetryPolicy,
    SessionKeeperError,
    call_metadata,
    channel_credentials,
    fresh_report_id,
    get_request,
    new_report_id,
    report_request,
)
from ._convert import agent_result_from_exception, agent_result_from_sdk
from ._gen.sessionkeeper.v1 import session_pb2 as pb
from ._gen.sessionkeeper.v1 import session_pb2_grpc as pb_grpc
from ._types import (
    AgentResult,
    Attempt,
    Binding,
    ReportOutcome,
    SessionDecision,
    SessionKey,
    SweepOutcome,
    TurnOutcome,
)

R = TypeVar("R")


class AsyncSessionKeeper:
    """The asyncio twin of :class:`SessionKeeper` (same options, same methods, awaitable).

    Create it inside the running event loop, e.g. ``async with AsyncSessionKeeper(...) as sk``.
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
    ) -> None:
        creds = channel_credentials(tls, root_certificates, client_cert, client_key)
        opts = channel_options(retry, options)
        self._channel: Any = (
            grpc.aio.secure_channel(target, creds, options=opts)
            if creds is not None
            else grpc.aio.insecure_channel(target, options=opts)
        )
        self._stub: Any = pb_grpc.SessionServiceStub(self._channel)
        self._metadata = call_metadata(token, metadata)
        self._timeout = timeout
        self._retry = retry
        self._rng = random.Random()
        self.target = target

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncSessionKeeper":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, name: str, request: Any, timeout: Optional[float]) -> Any:
        method = getattr(self._stub, name)
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
        self, key: SessionKey, binding: Optional[Binding] = None, *, timeout: Optional[float] = None
    ) -> SessionDecision:
        """Get: resume the stored session (``decision.resume`` is its id) or start fresh."""
        return SessionDecision.from_proto(await self._call("Get", get_request(key, binding), timeout))

    async def report(
        self,
        key: SessionKey,
        resumed_session_id: Optional[str],
        binding: Optional[Binding],
        result: Any,
        report_id: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
    ) -> ReportOutcome:
        """ReportResult; see :meth:`SessionKeeper.report`."""
        rid = report_id or new_report_id()
        request = report_request(key, resumed_session_id, binding, agent_result_from_sdk(result), rid)
        return ReportOutcome.from_proto(await self._call("ReportResult", request, timeout), rid)

    async def forget(self, key: SessionKey, *, timeout: Optional[float] = None) -> bool:
        """Forget: delete the key's stored session (the user reset the conversation)."""
        return bool((await self._call("Forget", pb.ForgetRequest(key=key.to_proto()), timeout)).existed)

    async def sweep(
        self, namespace: str = "", agent: str = "", *, dry_run: bool = False, timeout: Optional[float] = None
    ) -> SweepOutcome:
        """Sweep: delete expired sessions now (empty filters mean all)."""
        request = pb.SweepRequest(namespace=namespace, agent=agent, dry_run=dry_run)
        response = await self._call("Sweep", request, timeout)
        return SweepOutcome(deleted=int(response.deleted), took_seconds=response.took.ToTimedelta().total_seconds())

    async def run_turn(
        self,
        key: SessionKey,
        binding: Optional[Binding],
        run: Callable[[Optional[str]], Awaitable[R]],
        *,
        report_id: Optional[str] = None,
        to_result: Callable[[R], AgentResult] = agent_result_from_sdk,
        raise_errors: bool = True,
    ) -> TurnOutcome[R]:
        """Get → ``await run(resume)`` → ReportResult → one fresh retry; see :meth:`SessionKeeper.run_turn`."""
        decision = await self.decide(key, binding)
        outcome: TurnOutcome[R] = TurnOutcome(decision=decision)
        rid = report_id or new_report_id()
        resume = decision.resume
        while True:
            output: Optional[R] = None
            error: Optional[BaseException] = None
            try:
                output = await run(resume)
                result = to_result(output)
            except Exception as exc:  # noqa: BLE001 - reported, then re-raised below
                error = exc
                result = agent_result_from_exception(exc)
            report = await self.report(key, resume, binding, result, rid)
            outcome.attempts.append(Attempt(resume, output, error, result, report))
            if report.retry_fresh and resume is not None:
                resume, rid = None, fresh_report_id(rid)
                continue
            if error is not None and raise_errors:
                raise error
            return outcome
