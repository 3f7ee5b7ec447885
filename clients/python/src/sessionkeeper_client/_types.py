"""Typed values of the sessionkeeper.v1 contract, independent of the generated protobuf classes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Generic, List, Optional, Sequence, TypeVar

from ._gen.sessionkeeper.v1 import session_pb2 as pb


class _ProtoEnum(str, enum.Enum):
    """An enum whose values are the proto enum value names (``"RESULT_CLASS_SESSION_GONE"``): the
    same strings the TypeScript client uses, so logs and dashboards of both read alike. Members
    compare equal to those strings; ``.name`` is the short name (``SESSION_GONE``)."""

    def __str__(self) -> str:
        return str(self.value)


class Decision(_ProtoEnum):
    """Get's answer (proto ``sessionkeeper.v1.Decision``)."""

    UNSPECIFIED = "DECISION_UNSPECIFIED"
    RESUME = "DECISION_RESUME"
    START_FRESH = "DECISION_START_FRESH"


class FreshReason(_ProtoEnum):
    """Why Get answered START_FRESH (proto ``sessionkeeper.v1.FreshReason``)."""

    UNSPECIFIED = "FRESH_REASON_UNSPECIFIED"
    NO_SESSION = "FRESH_REASON_NO_SESSION"
    EXPIRED = "FRESH_REASON_EXPIRED"
    BINDING_MISMATCH = "FRESH_REASON_BINDING_MISMATCH"
    #: No session is stored, and the key's tombstone says one was cleared (see ``Inspect``).
    CLEARED = "FRESH_REASON_CLEARED"


class ResultClass(_ProtoEnum):
    """How the server classified a reported result (proto ``sessionkeeper.v1.ResultClass``)."""

    UNSPECIFIED = "RESULT_CLASS_UNSPECIFIED"
    SUCCESS = "RESULT_CLASS_SUCCESS"
    SESSION_GONE = "RESULT_CLASS_SESSION_GONE"
    INVALID_SESSION_ID = "RESULT_CLASS_INVALID_SESSION_ID"
    LIMIT_REACHED = "RESULT_CLASS_LIMIT_REACHED"
    TRANSIENT = "RESULT_CLASS_TRANSIENT"
    QUOTA = "RESULT_CLASS_QUOTA"
    AUTH = "RESULT_CLASS_AUTH"
    UNKNOWN_FAILURE = "RESULT_CLASS_UNKNOWN_FAILURE"


class Action(_ProtoEnum):
    """What ReportResult did to the stored row (proto ``sessionkeeper.v1.Action``)."""

    UNSPECIFIED = "ACTION_UNSPECIFIED"
    STORED = "ACTION_STORED"
    CLEARED = "ACTION_CLEARED"
    KEPT = "ACTION_KEPT"
    SUPERSEDED = "ACTION_SUPERSEDED"


def _enum(cls: Any, proto_enum: Any, value: int) -> Any:
    """The member for a wire number, or the proto name (``"<ENUM>_<n>"`` when the server is newer
    than this client and the number has no name here)."""
    try:
        return cls(proto_enum.Name(value))
    except ValueError:
        try:
            return proto_enum.Name(value)
        except ValueError:
            return f"{cls.__name__.upper()}_{value}"


@dataclass(frozen=True)
class ConversationKey:
    """One conversation of one agent in one namespace (namespace "" means "default")."""

    agent: str
    conversation: str
    namespace: str = ""

    def to_proto(self) -> pb.SessionKey:
        return pb.SessionKey(namespace=self.namespace, agent=self.agent, conversation=self.conversation)


@dataclass(frozen=True)
class Binding:
    """Where a session can be resumed: compared as exact strings; an empty field matches anything."""

    provider: str = ""
    host: str = ""
    config_dir: str = ""
    cwd: str = ""

    @property
    def is_set(self) -> bool:
        return bool(self.provider or self.host or self.config_dir or self.cwd)

    def to_proto(self) -> pb.Binding:
        return pb.Binding(provider=self.provider, host=self.host, config_dir=self.config_dir, cwd=self.cwd)

    @classmethod
    def from_proto(cls, msg: pb.Binding) -> "Binding":
        return cls(provider=msg.provider, host=msg.host, config_dir=msg.config_dir, cwd=msg.cwd)


@dataclass(frozen=True)
class AgentResult:
    """A run's result as the SDK reported it (proto ``sessionkeeper.v1.AgentResult``).

    Build one with :func:`sessionkeeper_client.agent_result_from_sdk` (from a result message) or
    :func:`sessionkeeper_client.agent_result_from_exception` (from a raised error).
    """

    is_error: bool = False
    subtype: str = ""
    session_id: str = ""
    num_turns: int = 0
    errors: Sequence[str] = ()
    terminal_reason: str = ""
    api_error_status: int = 0
    exception: str = ""
    result_text: str = ""

    def to_proto(self) -> pb.AgentResult:
        return pb.AgentResult(
            is_error=self.is_error,
            subtype=self.subtype,
            session_id=self.session_id,
            num_turns=max(0, min(int(self.num_turns), 2**32 - 1)),
            errors=list(self.errors),
            terminal_reason=self.terminal_reason,
            api_error_status=max(0, min(int(self.api_error_status), 2**32 - 1)),
            exception=self.exception,
            result_text=self.result_text,
        )


def _timestamp(msg: Any, name: str) -> Optional[datetime]:
    if not msg.HasField(name):
        return None
    ts = getattr(msg, name)
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=timezone.utc)


@dataclass(frozen=True)
class SessionDecision:
    """Get's answer: resume ``session_id``, or start fresh for ``fresh_reason``.

    ``binding``, ``last_used_at`` and ``expires_at`` describe the stored row when there is one
    (with BINDING_MISMATCH: where the kept session lives, so a router can send the run there).
    """

    decision: Decision
    session_id: str
    fresh_reason: FreshReason
    binding: Optional[Binding]
    last_used_at: Optional[datetime]
    expires_at: Optional[datetime]
    resumable_anywhere: bool = False
    """The session's transcript is held by sessionkeeper (the SDK's SessionStore): the SDK
    materialises it on any host or config dir, so a host or config-dir mismatch does not start
    fresh. The run's cwd must still map to ``transcript_project_key``."""
    transcript_project_key: str = ""
    """With ``resumable_anywhere``: the project key the transcript is held under."""

    @property
    def resume(self) -> Optional[str]:
        """The id to pass to the SDK's ``resume``, or None for a fresh start."""
        return self.session_id if self.decision == Decision.RESUME and self.session_id else None

    @classmethod
    def unreachable(cls) -> "SessionDecision":
        """The stand-in decision when sessionkeeper is unreachable and the client fails open."""
        return cls(Decision.START_FRESH, "", FreshReason.UNSPECIFIED, None, None, None)

    @classmethod
    def from_proto(cls, msg: pb.GetResponse) -> "SessionDecision":
        return cls(
            decision=_enum(Decision, pb.Decision, msg.decision),
            session_id=msg.session_id,
            fresh_reason=_enum(FreshReason, pb.FreshReason, msg.fresh_reason),
            binding=Binding.from_proto(msg.binding) if msg.HasField("binding") else None,
            last_used_at=_timestamp(msg, "last_used_at"),
            expires_at=_timestamp(msg, "expires_at"),
            resumable_anywhere=msg.resumable_anywhere,
            transcript_project_key=msg.transcript_project_key,
        )


@dataclass(frozen=True)
class ReportOutcome:
    """ReportResult's answer, with the report_id that was sent (generated when none was given)."""

    result_class: ResultClass
    action: Action
    session_id: str
    retry_fresh: bool
    report_id: str
    transcripts_deleted: int = 0
    """Transcripts deleted because this report cleared the session id."""

    @classmethod
    def from_proto(cls, msg: pb.ReportResultResponse, report_id: str) -> "ReportOutcome":
        return cls(
            result_class=_enum(ResultClass, pb.ResultClass, msg.result_class),
            action=_enum(Action, pb.Action, msg.action),
            session_id=msg.session_id,
            retry_fresh=msg.retry_fresh,
            report_id=report_id,
            transcripts_deleted=int(msg.transcripts_deleted),
        )


@dataclass(frozen=True)
class SweepOutcome:
    """Sweep's answer: rows deleted (or that would be, with dry_run) and how long it took."""

    deleted: int
    took_seconds: float
    transcripts_deleted: int = 0
    """Transcripts deleted: those of the deleted rows, and those no row holds that are past
    ``default_ttl`` since their last append."""


@dataclass(frozen=True)
class ForgetOutcome:
    """Forget's answer: whether a session was stored for the key, and the transcripts deleted
    with it."""

    existed: bool
    transcripts_deleted: int


R = TypeVar("R")


@dataclass
class Attempt(Generic[R]):
    """One run of the agent inside :meth:`SessionKeeper.run_turn`."""

    resumed_session_id: Optional[str]
    """The id passed to the SDK's resume; None for a fresh run."""
    output: Optional[R]
    """What ``run`` returned (None when it raised)."""
    error: Optional[BaseException]
    """What ``run`` raised (None when it returned)."""
    result: AgentResult
    """What was reported."""
    report: Optional[ReportOutcome]
    """The server's answer to the report (None when sessionkeeper was unreachable and the client
    fails open: the report was skipped)."""


@dataclass
class TurnOutcome(Generic[R]):
    """Everything :meth:`SessionKeeper.run_turn` did: the decision and one or two attempts."""

    decision: SessionDecision
    attempts: List[Attempt[R]] = field(default_factory=list)
    unreachable: Optional[BaseException] = None
    """The SessionKeeperError that made the client fail open (``when_unavailable="fail_open"``)."""

    @property
    def final(self) -> Attempt[R]:
        """The last attempt (the fresh retry when there was one)."""
        return self.attempts[-1]

    @property
    def output(self) -> Optional[R]:
        """What the last run returned."""
        return self.final.output

    @property
    def session_id(self) -> str:
        """The session id stored after the turn ("" when none, or when the report was skipped)."""
        report = self.final.report
        return report.session_id if report is not None else ""

    @property
    def retried_fresh(self) -> bool:
        """The first run's session was gone and the turn ran again without resume."""
        return len(self.attempts) > 1
