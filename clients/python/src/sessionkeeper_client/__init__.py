"""sessionkeeper client: ask before each agent run whether to resume a stored SDK session id or
start fresh, and report what the run did (sessionkeeper.v1 over gRPC).

    from sessionkeeper_client import SessionKeeper, ConversationKey, Binding

    with SessionKeeper("sessionkeeper:50051", token=TOKEN) as sk:
        outcome = sk.run_turn(key, binding, lambda resume: run_claude(prompt, resume=resume))

SessionKeeperSessionStore is the Claude Agent SDK's SessionStore over the same server, so a session
resumes on any host: ClaudeAgentOptions(session_store=SessionKeeperSessionStore.from_client(sk)).
"""

from ._aio import AsyncSessionKeeper
from ._client import SessionKeeper
from ._session_store import SessionKeeperSessionStore
from ._common import DEFAULT_RETRY, NO_RETRY, RetryPolicy, SessionKeeperError, new_report_id
from ._convert import (
    agent_result_from_exception,
    agent_result_from_sdk,
    describe_exception,
    find_result_frame,
    is_result_message,
)
from ._types import (
    Action,
    AgentResult,
    Attempt,
    Binding,
    Decision,
    FreshReason,
    ReportOutcome,
    ResultClass,
    SessionDecision,
    ConversationKey,
    ForgetOutcome,
    SweepOutcome,
    TurnOutcome,
)

__version__ = "0.1.0"

__all__ = [
    "Action",
    "AgentResult",
    "AsyncSessionKeeper",
    "Attempt",
    "Binding",
    "DEFAULT_RETRY",
    "Decision",
    "ForgetOutcome",
    "FreshReason",
    "NO_RETRY",
    "ReportOutcome",
    "ResultClass",
    "RetryPolicy",
    "SessionDecision",
    "ConversationKey",
    "SessionKeeper",
    "SessionKeeperError",
    "SessionKeeperSessionStore",
    "SweepOutcome",
    "TurnOutcome",
    "__version__",
    "agent_result_from_exception",
    "agent_result_from_sdk",
    "describe_exception",
    "find_result_frame",
    "is_result_message",
    "new_report_id",
]
