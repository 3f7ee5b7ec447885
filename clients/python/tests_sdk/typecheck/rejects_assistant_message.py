# Must NOT type-check under mypy --strict: an AssistantMessage (here one carrying
# error="rate_limit") is not a result. Each line marked `# expect-error` must be reported.
from claude_agent_sdk import AssistantMessage, TextBlock

from sessionkeeper_client import agent_result_from_sdk
from sessionkeeper_client.claude import agent_result_from_claude

message = AssistantMessage(content=[TextBlock(text="API Error: 429")], model="m", error="rate_limit")
agent_result_from_claude(message)  # expect-error
agent_result_from_sdk(message)  # expect-error
