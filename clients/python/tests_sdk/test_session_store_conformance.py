"""SessionKeeperSessionStore passes the Claude Agent SDK's own SessionStore conformance suite
(claude_agent_sdk.testing.run_session_store_conformance, as pinned in requirements-dev.txt), every
contract including the optional ones, against a real server on both stores (the embedded SQLite
and Postgres). Each make_store call gets a fresh namespace: the suite reuses its keys ("proj",
"sess") in every contract, so that is the isolation it asks for."""

from __future__ import annotations

import asyncio
import itertools
from typing import List

from claude_agent_sdk import SessionStore
from claude_agent_sdk._internal.session_store_validation import _store_implements
from claude_agent_sdk.testing import run_session_store_conformance
from claude_agent_sdk.testing.session_store_conformance import _OPTIONAL_METHODS, _has_optional

from e2e import fresh_namespace
from harness import Server
from sessionkeeper_client import SessionKeeperSessionStore

OPTIONAL = {"list_sessions", "list_session_summaries", "delete", "list_subkeys"}

# One probe, six required contracts, then the optional ones: 7-8 (list_sessions), 14 (summaries),
# 9-11 (delete), 12-13 (list_subkeys). Each contract asks make_store for a fresh store, so the
# count proves that no optional contract was skipped.
STORES_MADE_BY_THE_FULL_SUITE = 1 + 6 + 2 + 1 + 3 + 2


def test_the_sdk_conformance_suite_passes_with_every_optional_contract(store_server: Server) -> None:
    run = fresh_namespace("conf")[:40]
    numbers = itertools.count()
    made: List[SessionKeeperSessionStore] = []

    def make_store() -> SessionStore:
        store = SessionKeeperSessionStore(store_server.grpc_addr, namespace=f"{run}-{next(numbers)}")
        made.append(store)
        return store

    async def scenario() -> None:
        try:
            await run_session_store_conformance(make_store, skip_optional=frozenset())
        finally:
            for store in made:
                await store.close()

    asyncio.run(scenario())
    assert len(made) == STORES_MADE_BY_THE_FULL_SUITE, "a contract of the suite did not run"


def test_every_optional_method_counts_as_implemented() -> None:
    """The suite and the SDK decide "implemented" by the class's own attribute (not the
    Protocol's raising default): all four must be, or their contracts are skipped silently."""
    assert set(_OPTIONAL_METHODS) == OPTIONAL, "the SDK's list of optional methods changed: review the adapter"
    store = SessionKeeperSessionStore("127.0.0.1:1", namespace="guard")
    for method in sorted(OPTIONAL):
        assert method in vars(SessionKeeperSessionStore), f"{method} is not defined on the class itself"
        assert _has_optional(store, method, frozenset()), method
        assert _store_implements(store, method), method
    for method in ("append", "load"):
        assert method in vars(SessionKeeperSessionStore), method
