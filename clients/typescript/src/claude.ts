// The Claude Agent SDK adapter (@anthropic-ai/claude-agent-sdk): one turn of the orchestrator loop
// with the SDK's own query() and Options, reported without ever losing the result frame.
//
// How the SDK ends a run (0.3.332, CLI 2.1.332): it yields the SDKResultMessage, and after an error
// result (API error, max_turns, a lost transcript) it then throws a plain Error ("Claude Code
// returned an error result: …") that carries no frame. So the report uses the result message kept
// from the stream; only when none arrived, the error's text plus the tail of the CLI's stderr
// (Options.stderr is teed; the caller's own callback still gets every line).
//
// Types only: this module never loads the SDK (pass its `query`), so the client does not depend on
// it at run time. Import it as "@sessionkeeper/client/claude".
import type { Options, SDKMessage, SDKResultMessage } from "@anthropic-ai/claude-agent-sdk";

import type { SessionKeeper } from "./client";
import { agentResultFromSdk, describeError, tail } from "./convert";
import { projectKeyForDirectory } from "./projectKey";
import type { AgentResult, Binding, ConversationKey, TurnOutcome } from "./types";

/** The shape of the SDK's `query` (pass it, or a wrapper with the same signature). */
export type ClaudeQuery = (params: { prompt: string; options?: Options }) => AsyncIterable<SDKMessage>;

const STDERR_LINES = 200;

/**
 * The report of one SDK run: its result message (undefined when none arrived), what it threw
 * (undefined when nothing) and the tail of the CLI's stderr. Typed against the SDK's own
 * SDKResultMessage: an SDKAssistantMessage (even one with `error: "rate_limit"`) does not compile.
 */
export function agentResultFromClaude(
  message: SDKResultMessage | undefined,
  error?: unknown,
  stderr = "",
): AgentResult {
  let exception = "";
  if (error !== undefined) {
    exception = describeError(error);
    if (stderr.trim() && !exception.includes("stderr: ")) exception += `; stderr: ${tail(stderr.trim())}`;
  }
  if (message !== undefined) {
    const result = agentResultFromSdk(message);
    return exception ? { ...result, exception } : result;
  }
  if (error !== undefined) return { isError: true, numTurns: 0, exception };
  return agentResultFromSdk(undefined);
}

/** What one query() run produced. */
export interface ClaudeRun {
  /** The id passed to Options.resume (undefined: a fresh run). */
  resume: string | undefined;
  messages: SDKMessage[];
  /** The run's result message, when the stream yielded one. */
  result: SDKResultMessage | undefined;
  /** What the run threw (undefined when nothing). */
  error: unknown;
  /** The tail of the CLI's stderr. */
  stderr: string;
  /** The report of this run. */
  agentResult: AgentResult;
}

/** Run `query({ prompt, options })` with `resume` set, to the end; never throws for what the run does. */
export async function runClaude(
  query: ClaudeQuery,
  prompt: string,
  options: Options,
  resume: string | undefined,
): Promise<ClaudeRun> {
  const lines: string[] = [];
  const userStderr = options.stderr;
  const opts: Options = {
    ...options,
    resume,
    stderr: (data: string) => {
      lines.push(data);
      if (lines.length > STDERR_LINES) lines.splice(0, lines.length - STDERR_LINES);
      userStderr?.(data);
    },
  };
  if (resume === undefined) delete opts.resume;
  const messages: SDKMessage[] = [];
  let result: SDKResultMessage | undefined;
  let error: unknown;
  try {
    for await (const message of query({ prompt, options: opts })) {
      messages.push(message);
      if (message.type === "result") result = message;
    }
  } catch (e) {
    error = e;
  }
  const stderr = lines.join("");
  return { resume, messages, result, error, stderr, agentResult: agentResultFromClaude(result, error, stderr) };
}

export interface ClaudeTurnOptions {
  /** The SDK's `query`. */
  query: ClaudeQuery;
  prompt: string;
  /** The SDK's Options; `resume` is set from the decision (a value here is replaced). */
  options?: Options;
  reportId?: string;
}

/**
 * One turn: Get → query() (resuming the stored id) → ReportResult → one fresh retry when the server
 * answers retryFresh. `outcome.output` is the last ClaudeRun (its `error` is not rethrown).
 *
 * With `options.sessionStore` (a SessionKeeperSessionStore), Get carries the project key the SDK
 * will load the transcript with, so a session whose transcript sessionkeeper holds under that key
 * resumes on any host or config dir.
 */
export function runClaudeTurn(
  sk: SessionKeeper,
  key: ConversationKey,
  binding: Binding | undefined,
  turn: ClaudeTurnOptions,
): Promise<TurnOutcome<ClaudeRun>> {
  const options = turn.options ?? {};
  return sk.runTurn(key, binding, (resume) => runClaude(turn.query, turn.prompt, options, resume), {
    reportId: turn.reportId,
    toResult: (run) => run.agentResult,
    transcriptProjectKey: options.sessionStore ? projectKeyForDirectory(options.cwd, options.env) : undefined,
  });
}
