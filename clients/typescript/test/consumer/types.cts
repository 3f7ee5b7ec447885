// Type-checks as a CommonJS consumer (tsc, module NodeNext): the types of the CommonJS entry.
import { SessionKeeper, agentResultFromSdk, type AgentResult, type ConversationKey } from "@sessionkeeper/client";

const key: ConversationKey = { namespace: "acme", agent: "coder", conversation: "thread-42" };
const result: AgentResult = agentResultFromSdk({ type: "result", subtype: "success", is_error: false, session_id: "s" });
export const pending: Promise<unknown> = new SessionKeeper({ address: "localhost:50051" }).report(key, undefined, {}, result);
