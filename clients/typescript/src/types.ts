// The client's public types: plain objects in camelCase, enums as their proto names.
import type { Action, Decision, FreshReason, ResultClass } from "./proto";

export type { Action, Decision, FreshReason, ResultClass };

/** One conversation of one agent in one namespace (namespace "" or absent means "default"). */
export interface ConversationKey {
  namespace?: string;
  agent: string;
  conversation: string;
}

/** Where a session can be resumed: compared as exact strings; an empty field matches anything. */
export interface Binding {
  provider?: string;
  host?: string;
  configDir?: string;
  cwd?: string;
}

/** A run's result as the SDK reported it (proto sessionkeeper.v1.AgentResult). */
export interface AgentResult {
  isError?: boolean;
  subtype?: string;
  sessionId?: string;
  /** 0 when unknown. */
  numTurns?: number;
  errors?: string[];
  terminalReason?: string;
  /** HTTP status of the API error behind the failure, 0 when none or unknown. */
  apiErrorStatus?: number;
  /** Text of an exception or exit (message, exit code, stderr) when no result frame arrived. */
  exception?: string;
  /** The result frame's `result` text. */
  resultText?: string;
}

/** Get's answer. */
export interface SessionDecision {
  decision: Decision;
  /** The stored id; set only with DECISION_RESUME. */
  sessionId: string;
  freshReason: FreshReason;
  /** The id to pass to the SDK's `resume`, undefined for a fresh start. */
  resume: string | undefined;
  /** The stored row's binding, last use and expiry, when there is a row. */
  binding?: Binding;
  lastUsedAt?: Date;
  expiresAt?: Date;
  /**
   * RESUME despite a host or config-dir mismatch: the stored session's transcript is held by
   * sessionkeeper (SessionKeeperSessionStore), and an SDK with that store resumes it anywhere.
   * False on a RESUME whose binding matches (the transcript is not looked up then).
   */
  resumableAnywhere: boolean;
  /** With resumableAnywhere: the project key the transcript is held under ("" otherwise). */
  transcriptProjectKey: string;
}

/** ReportResult's answer, with the report id that was sent (generated when none was given). */
export interface ReportOutcome {
  resultClass: ResultClass;
  action: Action;
  /** The session id stored after this report ("" when none). */
  sessionId: string;
  /** Run this turn once more without resume, then report again. */
  retryFresh: boolean;
  reportId: string;
}

export interface SweepOutcome {
  deleted: number;
  tookMs: number;
}

/** One run of the agent inside runTurn. */
export interface Attempt<R> {
  /** The id passed to the SDK's resume; undefined for a fresh run. */
  resumedSessionId: string | undefined;
  /** What `run` returned (undefined when it threw). */
  output: R | undefined;
  /** What `run` threw (undefined when it returned). */
  error: unknown;
  /** What was reported. */
  result: AgentResult;
  /** The server's answer; undefined when sessionkeeper was unreachable and the client fails open. */
  report: ReportOutcome | undefined;
}

/** Everything runTurn did: the decision and one or two attempts. */
export interface TurnOutcome<R> {
  decision: SessionDecision;
  attempts: Attempt<R>[];
  /** The last attempt (the fresh retry when there was one). */
  final: Attempt<R>;
  /** What the last run returned. */
  output: R | undefined;
  /** The session id stored after the turn ("" when none). */
  sessionId: string;
  /** The first run's session was gone and the turn ran again without resume. */
  retriedFresh: boolean;
  /** The error that made the client fail open (whenUnavailable: "fail-open"). */
  unreachable?: Error;
}
