"""The fixtures of tests_sdk/ (defined in e2e.py, which the tests also import helpers from)."""

from e2e import conversation, e2e_server, mock_api, store_server, worker  # noqa: F401
