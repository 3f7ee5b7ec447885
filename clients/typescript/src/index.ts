// @sessionkeeper/client: ask before each agent run whether to resume a stored SDK session id or
// start fresh, and report what the run did (sessionkeeper.v1 over gRPC); keep the Claude Agent SDK's
// transcripts in sessionkeeper (SessionKeeperSessionStore), so a session resumes on any host.
export {
  DEFAULT_RETRY,
  SessionKeeper,
  SessionKeeperError,
  newReportId,
  type CallOptions,
  type DecideOptions,
  type PemSource,
  type RetryPolicy,
  type RunTurnOptions,
  type SessionKeeperOptions,
  type TlsOptions,
  type WhenUnavailable,
} from "./client";
export {
  agentResultFromError,
  agentResultFromSdk,
  describeError,
  findResultFrame,
  isResultMessage,
  type SDKResultMessageLike,
} from "./convert";
export { PROTO_DIR, PROTO_FILE, sessionkeeperProto } from "./proto";
export type * from "./types";
export { projectKeyForDirectory } from "./projectKey";
export {
  SessionKeeperSessionStore,
  type SessionStoreOptions,
  type TranscriptEntry,
  type TranscriptSessionKey,
  type TranscriptSummary,
} from "./sessionStore";
