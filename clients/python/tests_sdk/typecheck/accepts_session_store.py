# Must type-check under mypy --strict: SessionKeeperSessionStore is the SDK's SessionStore (its
# Protocol, structurally), built from options or from either client.
from claude_agent_sdk import ClaudeAgentOptions, SessionStore

from sessionkeeper_client import AsyncSessionKeeper, SessionKeeper, SessionKeeperSessionStore

by_options: SessionStore = SessionKeeperSessionStore("sessionkeeper:50051", namespace="acme", token="t")
from_blocking: SessionStore = SessionKeeperSessionStore.from_client(SessionKeeper("sessionkeeper:50051"))
from_async: SessionStore = SessionKeeperSessionStore.from_client(AsyncSessionKeeper("sessionkeeper:50051"))
options = ClaudeAgentOptions(cwd="/srv/repo", session_store=by_options)
