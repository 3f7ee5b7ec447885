// Must compile under tsc --strict: the SDK's own result message and thread events.
import type { SDKResultMessage } from "@anthropic-ai/claude-agent-sdk";
import type { ThreadEvent } from "@openai/codex-sdk";

import { agentResultFromClaude } from "../../src/claude";
import { agentResultFromCodexEvents } from "../../src/codex";
import { agentResultFromSdk, type AgentResult } from "../../src/index";

export function fromResult(message: SDKResultMessage): AgentResult[] {
  return [agentResultFromClaude(message), agentResultFromClaude(undefined, new Error("x")), agentResultFromSdk(message)];
}
export function fromEvents(events: ThreadEvent[]): AgentResult {
  return agentResultFromCodexEvents(events);
}
