"""SessionKeeperSessionStore: the Claude Agent SDK's ``SessionStore`` over sessionkeeper's
TranscriptService, so a session's transcript lives with its id and a resume works on any host.

It owns the mapping of the SDK's six store methods to the five transcript RPCs (design note
docs/design/transcript-store.md §8.1) and the adapter-side state that mapping needs: the append id
of a failed batch (reused when the SDK retries that batch) and the last summary seen per session
(the base of the next fold). It must not import ``claude_agent_sdk`` at module import (the package
works without the SDK): ``fold_session_summary`` is imported when an append first needs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import grpc
import grpc.aio

from ._client import channel_options
from ._common import (
    ChannelSettings,
    PemSource,
    RetryPolicy,
    SessionKeeperError,
    call_metadata,
    channel_credentials,
)
from ._gen.sessionkeeper.v1 import transcript_pb2 as tpb
from ._gen.sessionkeeper.v1 import transcript_pb2_grpc as tpb_grpc

if TYPE_CHECKING:
    from claude_agent_sdk.types import (
        SessionKey,
        SessionListSubkeysKey,
        SessionStoreEntry,
        SessionStoreListEntry,
        SessionSummaryEntry,
    )

    from ._aio import AsyncSessionKeeper
    from ._client import SessionKeeper

LOG = logging.getLogger("sessionkeeper_client")

STORE_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.1, max_backoff=1.0, max_elapsed=20.0)
"""Retries of one store call: UNAVAILABLE and RESOURCE_EXHAUSTED, at most 4 attempts."""

DEFAULT_BUDGET = 40.0
"""Seconds one SDK call (``append``, ``load``, …) may take in all, every attempt, retry, split
part and stream resume included: under the SDK's 60 s per-call timeout, because the SDK never
retries a call that timed out (it may still land), while it does retry one that raised."""

MAX_BUDGET = 55.0

SPLIT_BYTES = 4 * 1024 * 1024 - 64 * 1024
"""An append request encoded larger than this (~4 MiB) is sent as sequential parts ``<id>.0``,
``<id>.1``, … (the server accepts up to 8 MiB; one entry is at most ~4 MiB)."""

MAX_RECEIVE_BYTES = 16 * 1024 * 1024
"""A load chunk holds ~1 MiB, or one entry when it is larger: never near this."""

MAX_LOAD_ATTEMPTS = 6


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_hash(entries: Sequence[Any]) -> str:
    """The identity of a batch: the SDK retries a failed append with the same list."""
    return hashlib.sha256(json.dumps(entries, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def split_entries(texts: Sequence[str], limit: int = SPLIT_BYTES) -> List[List[str]]:
    """Consecutive runs of ``texts`` whose request stays under ``limit`` encoded bytes (each run
    holds at least one entry; an entry is never split)."""
    parts: List[List[str]] = [[]]
    size = 0
    for text in texts:
        # a repeated string field: tag (1 byte) + varint length + the bytes
        n = len(text.encode())
        cost = 1 + len(_varint(n)) + n
        if parts[-1] and size + cost > limit:
            parts.append([])
            size = 0
        parts[-1].append(text)
        size += cost
    return parts


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@dataclass(frozen=True)
class _Failed:
    """The last append to a key that did not return: the SDK retries it with the same list."""

    content_hash: str
    append_id: str


@dataclass(frozen=True)
class _CachedSummary:
    version: int
    entry: "SessionSummaryEntry"


TranscriptPath = Tuple[str, str, str]  # (project_key, session_id, subpath)


class SessionKeeperSessionStore:
    """The Claude Agent SDK's ``SessionStore`` (``ClaudeAgentOptions(session_store=...)``), kept by
    sessionkeeper's TranscriptService in the same store as the session ids and with their
    lifecycle: a transcript is deleted when its session id is cleared, forgotten, expired or swept.

    Built from the same options as :class:`SessionKeeper` plus the ``namespace`` the transcripts
    live in (the one of the conversations' keys), or with :meth:`from_client`. All six store
    methods are implemented, so the SDK uses every optional one (listing, summaries, delete,
    subagent transcripts). Errors raise :class:`SessionKeeperError`, so the SDK retries a failed
    append (with the same append id: stored once) and fails a resume whose load failed.

    ``timeout`` is each attempt's deadline; ``retry`` retries UNAVAILABLE and RESOURCE_EXHAUSTED;
    ``budget`` caps one SDK call in all (under the SDK's 60 s per-call timeout). The gRPC channel
    is opened in the event loop of the first call, and again for a call in another loop.
    """

    def __init__(
        self,
        target: str,
        *,
        namespace: str = "",
        token: Optional[str] = None,
        tls: bool = False,
        root_certificates: Optional[PemSource] = None,
        client_cert: Optional[PemSource] = None,
        client_key: Optional[PemSource] = None,
        timeout: float = 10.0,
        retry: RetryPolicy = STORE_RETRY,
        budget: float = DEFAULT_BUDGET,
        metadata: Sequence[Tuple[str, str]] = (),
        options: Sequence[Tuple[str, Any]] = (),
    ) -> None:
        creds = channel_credentials(tls, root_certificates, client_cert, client_key)
        self._init(
            ChannelSettings(target, creds, call_metadata(token, metadata), tuple(options), timeout, retry),
            namespace,
            budget,
        )

    def _init(self, settings: ChannelSettings, namespace: str, budget: float) -> None:
        if not 0 < budget <= MAX_BUDGET:
            raise ValueError(f"budget must be in (0, {MAX_BUDGET}] seconds (the SDK times a call out at 60 s)")
        if settings.timeout <= 0:
            raise ValueError("timeout must be positive")
        self.namespace = namespace
        self.target = settings.target
        self._settings = settings
        self._budget = budget
        self._options = channel_options(settings.retry, settings.options) + [
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        ]
        self._channel: Any = None
        self._stub: Any = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._rng = random.Random()
        self._failed: Dict[TranscriptPath, _Failed] = {}
        self._summaries: Dict[Tuple[str, str], _CachedSummary] = {}

    @classmethod
    def from_client(
        cls,
        client: Union["SessionKeeper", "AsyncSessionKeeper"],
        *,
        namespace: str = "",
        budget: float = DEFAULT_BUDGET,
    ) -> "SessionKeeperSessionStore":
        """A store that reaches the same server as ``client`` (blocking or async) with the same
        token, TLS, metadata, channel options, deadline and retries, on a channel of its own."""
        store = cls.__new__(cls)
        store._init(client._settings, namespace, budget)
        return store

    # ------------------------------------------------------------------ transport

    def _stub_for_this_loop(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._stub is None or self._loop is not loop:
            s = self._settings
            self._channel = (
                grpc.aio.secure_channel(s.target, s.credentials, options=self._options)
                if s.credentials is not None
                else grpc.aio.insecure_channel(s.target, options=self._options)
            )
            self._stub = tpb_grpc.TranscriptServiceStub(self._channel)
            self._loop = loop
        return self._stub

    async def close(self) -> None:
        channel, self._channel, self._stub, self._loop = self._channel, None, None, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> "SessionKeeperSessionStore":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _deadline(self) -> float:
        return time.monotonic() + self._budget

    def _attempt_timeout(self, deadline: float) -> float:
        return max(0.001, min(self._settings.timeout, deadline - time.monotonic()))

    async def _backoff_or_raise(
        self,
        name: str,
        err: grpc.aio.AioRpcError,
        attempt: int,
        started: float,
        deadline: float,
        retryable: Sequence[grpc.StatusCode],
    ) -> None:
        """Wait before the next attempt, or raise when the code, the policy or the budget says so."""
        policy = self._settings.retry
        delay = policy.backoff(attempt, self._rng)
        now = time.monotonic()
        if (
            err.code() not in retryable
            or attempt >= policy.max_attempts
            or now - started + delay > policy.max_elapsed
            or now + delay >= deadline
        ):
            raise SessionKeeperError.from_rpc_error(name, err, attempt) from None
        await asyncio.sleep(delay)

    async def _unary(self, name: str, request: Any, deadline: float) -> Any:
        method = getattr(self._stub_for_this_loop(), name)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await method(
                    request, timeout=self._attempt_timeout(deadline), metadata=self._settings.metadata
                )
            except grpc.aio.AioRpcError as err:
                await self._backoff_or_raise(name, err, attempt, started, deadline, self._settings.retry.retryable)

    def _key(self, project_key: str, session_id: str, subpath: str = "") -> tpb.TranscriptKey:
        return tpb.TranscriptKey(
            namespace=self.namespace, project_key=project_key, session_id=session_id, subpath=subpath
        )

    # ------------------------------------------------------------------ SessionStore

    async def append(self, key: "SessionKey", entries: "List[SessionStoreEntry]") -> None:
        """AppendEntries: the batch, atomically, in call order; entries whose ``uuid`` the
        transcript holds are skipped. A batch equal to this key's last failed one (the SDK's
        retry) reuses its append id, so it is stored once. The main transcript's summary is
        folded with ``claude_agent_sdk.fold_session_summary`` and written in the same call
        (compare-and-set on its version; a lost race is folded again over the stored one)."""
        if not entries:
            return
        project_key, session_id, subpath = key["project_key"], key["session_id"], key.get("subpath") or ""
        path: TranscriptPath = (project_key, session_id, subpath)
        digest = content_hash(entries)
        failed = self._failed.get(path)
        append_id = failed.append_id if failed is not None and failed.content_hash == digest else uuid.uuid4().hex
        texts = [_json(entry) for entry in entries]
        summary: Optional["SessionSummaryEntry"] = None
        cached = self._summaries.get((project_key, session_id))
        if not subpath:
            summary = _fold(cached.entry if cached else None, key, entries)
        deadline = self._deadline()
        # Recorded before the call: a call that raises, or is cancelled by the SDK's timeout, leaves
        # it behind for the retry of the same batch.
        self._failed[path] = _Failed(digest, append_id)
        parts = split_entries(texts)
        response: Any = None
        for index, part in enumerate(parts):
            request = tpb.AppendEntriesRequest(
                key=self._key(project_key, session_id, subpath),
                append_id=append_id if len(parts) == 1 else f"{append_id}.{index}",
                entries=part,
            )
            if summary is not None and index == len(parts) - 1:
                request.summary.CopyFrom(
                    tpb.SummaryWrite(
                        dialect=tpb.SUMMARY_DIALECT_CLAUDE_PYTHON,
                        data_json=_json(summary["data"]),
                        if_version=cached.version if cached else 0,
                    )
                )
            response = await self._unary("AppendEntries", request, deadline)
        if summary is not None:
            base = cached.version if cached else 0
            await self._settle_summary(key, entries, summary, base, response, append_id, deadline)
        self._failed.pop(path, None)

    async def _settle_summary(
        self,
        key: "SessionKey",
        entries: "List[SessionStoreEntry]",
        summary: "SessionSummaryEntry",
        base_version: int,
        response: Any,
        append_id: str,
        deadline: float,
    ) -> None:
        """Cache the written summary, or fold once more over the stored one when the CAS was lost
        (another writer, or a cold cache) and write that alone."""
        project_key, session_id = key["project_key"], key["session_id"]
        cache_key = (project_key, session_id)
        if response.summary_written:
            self._summaries[cache_key] = _CachedSummary(
                base_version + 1,  # a compare-and-set writes one above the version it matched
                {"session_id": summary["session_id"], "mtime": int(response.mtime_ms), "data": summary["data"]},
            )
            return
        current = _from_summary(session_id, response.current_summary) if response.HasField("current_summary") else None
        refolded = _fold(current.entry if current else None, key, entries)
        request = tpb.AppendEntriesRequest(
            key=self._key(project_key, session_id),
            append_id=f"{append_id}.summary",
            summary=tpb.SummaryWrite(
                dialect=tpb.SUMMARY_DIALECT_CLAUDE_PYTHON,
                data_json=_json(refolded["data"]),
                if_version=current.version if current else 0,
            ),
        )
        again = await self._unary("AppendEntries", request, deadline)
        if again.summary_written:
            self._summaries[cache_key] = _CachedSummary(
                (current.version if current else 0) + 1,
                {"session_id": refolded["session_id"], "mtime": int(again.mtime_ms), "data": refolded["data"]},
            )
            return
        # Lost twice: leave the summary to the other writer. Its mtime is older than this append's,
        # so the SDK's listing sees it as stale and reads the transcript instead.
        LOG.debug("summary of %s/%s: compare-and-set lost twice, left to the other writer", project_key, session_id)
        self._summaries.pop(cache_key, None)

    async def load(self, key: "SessionKey") -> "Optional[List[SessionStoreEntry]]":
        """LoadTranscript: every entry in order, None when the transcript does not exist. A stream
        broken by UNAVAILABLE or RESOURCE_EXHAUSTED resumes after the last entry received; one
        ended by ABORTED (deleted meanwhile) starts over."""
        project_key, session_id, subpath = key["project_key"], key["session_id"], key.get("subpath") or ""
        deadline = self._deadline()
        stub = self._stub_for_this_loop()
        policy = self._settings.retry
        retryable = policy.retryable
        entries: List[Any] = []
        after_seq = 0
        attempt = 0
        started = time.monotonic()
        while True:
            attempt += 1
            request = tpb.LoadTranscriptRequest(
                key=self._key(project_key, session_id, subpath),
                after_seq=after_seq,
                summary_dialect=tpb.SUMMARY_DIALECT_UNSPECIFIED if subpath else tpb.SUMMARY_DIALECT_CLAUDE_PYTHON,
            )
            progressed = False
            try:
                call = stub.LoadTranscript(
                    request, timeout=max(0.001, deadline - time.monotonic()), metadata=self._settings.metadata
                )
                first = True
                async for chunk in call:
                    if not chunk.found:
                        # never written, or deleted (also between a broken stream and its resume)
                        return None
                    if first and after_seq == 0 and not subpath and chunk.HasField("summary"):
                        self._summaries[(project_key, session_id)] = _from_summary(session_id, chunk.summary)
                    first = False
                    entries.extend(json.loads(text) for text in chunk.entries)
                    if chunk.entries:
                        after_seq = int(chunk.last_seq)
                        progressed = True
                return entries
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.ABORTED and attempt < MAX_LOAD_ATTEMPTS:
                    # the transcript was deleted during the stream: start over (it may be gone)
                    entries, after_seq = [], 0
                    continue
                if progressed and err.code() in retryable + (grpc.StatusCode.DEADLINE_EXCEEDED,):
                    # a resumed stream is new progress, not another try at the same thing
                    attempt = 0
                    started = time.monotonic()
                    if time.monotonic() < deadline:
                        continue
                await self._backoff_or_raise("LoadTranscript", err, attempt, started, deadline, retryable)

    async def list_sessions(self, project_key: str) -> "List[SessionStoreListEntry]":
        """ListTranscriptSessions: the project's main transcripts, ``mtime`` in epoch ms."""
        response = await self._unary(
            "ListTranscriptSessions",
            tpb.ListTranscriptSessionsRequest(namespace=self.namespace, project_key=project_key),
            self._deadline(),
        )
        return [{"session_id": s.session_id, "mtime": int(s.mtime_ms)} for s in response.sessions]

    async def list_session_summaries(self, project_key: str) -> "List[SessionSummaryEntry]":
        """The summaries this adapter folded (Python dialect), for the project's sessions that
        have one; ``mtime`` is the transcript's mtime when the summary was written."""
        response = await self._unary(
            "ListTranscriptSessions",
            tpb.ListTranscriptSessionsRequest(
                namespace=self.namespace,
                project_key=project_key,
                summary_dialect=tpb.SUMMARY_DIALECT_CLAUDE_PYTHON,
            ),
            self._deadline(),
        )
        return [
            _from_summary(s.session_id, s.summary).entry for s in response.sessions if s.HasField("summary")
        ]

    async def delete(self, key: "SessionKey") -> None:
        """DeleteTranscript: the main key deletes every subpath of the session too."""
        project_key, session_id, subpath = key["project_key"], key["session_id"], key.get("subpath") or ""
        await self._unary(
            "DeleteTranscript",
            tpb.DeleteTranscriptRequest(key=self._key(project_key, session_id, subpath)),
            self._deadline(),
        )
        if not subpath:
            self._summaries.pop((project_key, session_id), None)
            for path in [p for p in self._failed if p[:2] == (project_key, session_id)]:
                del self._failed[path]
        else:
            self._failed.pop((project_key, session_id, subpath), None)

    async def list_subkeys(self, key: "SessionListSubkeysKey") -> List[str]:
        """ListSubkeys: the session's subpaths, never the main transcript."""
        response = await self._unary(
            "ListSubkeys",
            tpb.ListSubkeysRequest(namespace=self.namespace, project_key=key["project_key"], session_id=key["session_id"]),
            self._deadline(),
        )
        return list(response.subpaths)


def _fold(
    prev: "Optional[SessionSummaryEntry]", key: "SessionKey", entries: "List[SessionStoreEntry]"
) -> "SessionSummaryEntry":
    from claude_agent_sdk import fold_session_summary  # the SDK is only needed once it calls us

    main: "SessionKey" = {"project_key": key["project_key"], "session_id": key["session_id"]}
    return fold_session_summary(prev, main, entries)


def _from_summary(session_id: str, summary: tpb.Summary) -> _CachedSummary:
    data = json.loads(summary.data_json) if summary.data_json else {}
    return _CachedSummary(
        int(summary.version), {"session_id": session_id, "mtime": int(summary.mtime_ms), "data": data}
    )

