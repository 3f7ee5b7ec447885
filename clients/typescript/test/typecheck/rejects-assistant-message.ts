// Must NOT compile under tsc --strict: an assistant message (here one carrying
// error: "rate_limit") is not a result. Every line marked `expect-error` must be reported.
import type { SDKAssistantMessage } from "@anthropic-ai/claude-agent-sdk";

import { agentResultFromClaude } from "../../src/claude";
import { SessionKeeper, agentResultFromSdk } from "../../src/index";

export function wrong(message: SDKAssistantMessage & { error: "rate_limit" }, sk: SessionKeeper): void {
  agentResultFromClaude(message); // expect-error
  agentResultFromSdk(message); // expect-error
  void sk.report({ agent: "a", conversation: "c" }, undefined, undefined, message); // expect-error
}
