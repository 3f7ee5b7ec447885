"""The client's exported names do not clash with the Agent SDK's (it exports SessionKey)."""

import claude_agent_sdk

import sessionkeeper_client
import sessionkeeper_client.claude


def test_no_exported_name_clashes_with_the_sdk() -> None:
    sdk = set(claude_agent_sdk.__all__)
    assert "SessionKey" in sdk, "the SDK's own SessionKey (the clash this guards against)"
    assert not (set(sessionkeeper_client.__all__) & sdk) - {"__version__"}
    assert not (set(sessionkeeper_client.claude.__all__) & sdk) - {"__version__"}
