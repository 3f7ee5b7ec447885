# Must type-check under mypy --strict: the SDK's own ResultMessage and ResultError are what the
# converters take.
from claude_agent_sdk import ResultError, ResultMessage

from sessionkeeper_client import AgentResult, agent_result_from_sdk
from sessionkeeper_client.claude import agent_result_from_claude

message = ResultMessage(
    subtype="success", duration_ms=1, duration_api_ms=1, is_error=False, num_turns=1, session_id="s"
)
a: AgentResult = agent_result_from_claude(message)
b: AgentResult = agent_result_from_claude(None, ResultError("failed", data={"type": "result"}))
c: AgentResult = agent_result_from_sdk(message)
