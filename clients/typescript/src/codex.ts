// The Codex adapters: over @openai/codex-sdk thread events (runCodexTurn), and over the output of
// `codex exec --json` (agentResultFromCodexExec: its JSON lines, exit code and stderr).
//
// What Codex emits (@openai/codex 0.163.0): `thread.started` (thread_id: the id to resume),
// `turn.started`, `item.*` (agent_message items carry the answer; error items are warnings), then
// `turn.completed` or `turn.failed` (error.message), and top-level `error` events. A lost thread (a
// CODEX_HOME without its rollout) emits no event at all: `codex exec` exits 1 with
// "… no rollout found for thread id …" on stderr, and the SDK throws "Codex Exec exited with code
// 1: <stderr>".
//
// Mapping: a run whose last turn completed (and, for exec, exited 0) is a success with the thread
// id as sessionId. Anything else is an error: numTurns is the number of turns that started (0 when
// none did), errors the failure messages, exception the thrown error or the exit code and stderr.
//
// Types only: this module never loads the SDK (pass your Codex instance). Import it as
// "@sessionkeeper/client/codex".
import type { Codex, Input, ThreadEvent, ThreadOptions, TurnOptions } from "@openai/codex-sdk";

import type { SessionKeeper } from "./client";
import { describeError, tail } from "./convert";
import type { AgentResult, Binding, ConversationKey, TurnOutcome } from "./types";

/** The fields of the Codex events this adapter reads (the SDK's ThreadEvent matches it). */
type CodexEventLike =
  | { type: "thread.started"; thread_id: string }
  | { type: "turn.started" }
  | { type: "turn.completed" }
  | { type: "turn.failed"; error: { message: string } }
  | { type: "error"; message: string }
  | { type: "item.completed"; item: { type: string; text?: string } }
  | { type: "item.started" | "item.updated" };

function fromEvents(events: readonly CodexEventLike[]): {
  threadId: string;
  turns: number;
  completed: boolean;
  answer: string;
  errors: string[];
} {
  let threadId = "";
  let turns = 0;
  let completed = false;
  let answer = "";
  const errors: string[] = [];
  for (const e of events) {
    switch (e.type) {
      case "thread.started":
        threadId = e.thread_id;
        break;
      case "turn.started":
        turns += 1;
        completed = false;
        break;
      case "turn.completed":
        completed = true;
        break;
      case "turn.failed":
        completed = false;
        errors.push(e.error?.message || "turn failed");
        break;
      case "error":
        if (e.message && !errors.includes(e.message)) errors.push(e.message);
        break;
      case "item.completed":
        if (e.item.type === "agent_message") answer = e.item.text ?? "";
        break;
      default:
        break;
    }
  }
  return { threadId, turns, completed, answer, errors };
}

/**
 * The report of one @openai/codex-sdk turn from its streamed events (typed against the SDK's
 * ThreadEvent), what it threw (undefined when nothing), and the thread's id when known
 * (`thread.id`, for a resumed thread that emitted no thread.started).
 */
export function agentResultFromCodexEvents(
  events: readonly ThreadEvent[],
  error?: unknown,
  threadId?: string | null,
): AgentResult {
  const r = fromEvents(events as readonly CodexEventLike[]);
  const sessionId = r.threadId || threadId || "";
  if (r.completed && error === undefined) {
    return { isError: false, subtype: "success", sessionId, numTurns: r.turns, resultText: r.answer };
  }
  return {
    isError: true,
    sessionId,
    numTurns: r.turns,
    errors: r.errors,
    exception: error === undefined ? "" : describeError(error),
    resultText: r.answer,
  };
}

function events(stdout: string | readonly string[]): CodexEventLike[] {
  const lines = typeof stdout === "string" ? stdout.split(/\r?\n/) : stdout;
  const out: CodexEventLike[] = [];
  for (const raw of lines) {
    const line = raw.trim();
    if (!line.startsWith("{")) continue;
    try {
      const value: unknown = JSON.parse(line);
      if (typeof value === "object" && value !== null && typeof (value as { type?: unknown }).type === "string") {
        out.push(value as CodexEventLike);
      }
    } catch {
      // not an event
    }
  }
  return out;
}

function stderrSummary(stderr: string): string {
  const text = stderr.trim();
  if (!text) return "";
  const t = tail(text);
  // the error lines first: a Rust backtrace can follow them and push them out of the tail
  const head = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => /^error/i.test(l) && !t.includes(l))
    .slice(0, 5);
  return head.length ? `${head.join("; ")}; ${t}` : t;
}

/** The report of one `codex exec --json` run: its stdout (text or lines), exit code (null when killed) and stderr. */
export function agentResultFromCodexExec(
  stdout: string | readonly string[],
  exitCode: number | null,
  stderr = "",
): AgentResult {
  const r = fromEvents(events(stdout));
  if (r.completed && exitCode === 0) {
    return { isError: false, subtype: "success", sessionId: r.threadId, numTurns: r.turns, resultText: r.answer };
  }
  const parts = [exitCode === null ? "codex exec did not exit" : `codex exec exited with code ${exitCode}`];
  const summary = stderrSummary(stderr);
  if (summary) parts.push(`stderr: ${summary}`);
  return {
    isError: true,
    sessionId: r.threadId,
    numTurns: r.turns,
    errors: r.errors,
    exception: parts.join("; "),
    resultText: r.answer,
  };
}

/** `exec --json [extra…] [resume <id>] <prompt>`: the arguments after the codex binary. */
export function codexExecArgs(prompt: string, resume: string | undefined, extraArgs: readonly string[] = []): string[] {
  return ["exec", "--json", ...extraArgs, ...(resume ? ["resume", resume] : []), prompt];
}

/** What one Codex SDK turn produced. */
export interface CodexRun {
  resume: string | undefined;
  events: ThreadEvent[];
  /** The thread's id after the run (null when it never started). */
  threadId: string | null;
  error: unknown;
  agentResult: AgentResult;
}

/** Run one turn on a new thread (resume undefined) or a resumed one; never throws for what the run does. */
export async function runCodex(
  codex: Codex,
  input: Input,
  resume: string | undefined,
  threadOptions?: ThreadOptions,
  turnOptions?: TurnOptions,
): Promise<CodexRun> {
  const thread = resume ? codex.resumeThread(resume, threadOptions) : codex.startThread(threadOptions);
  const seen: ThreadEvent[] = [];
  let error: unknown;
  try {
    const { events: stream } = await thread.runStreamed(input, turnOptions);
    for await (const event of stream) seen.push(event);
  } catch (e) {
    error = e;
  }
  return {
    resume,
    events: seen,
    threadId: thread.id,
    error,
    agentResult: agentResultFromCodexEvents(seen, error, thread.id),
  };
}

export interface CodexTurnOptions {
  /** Your Codex instance (`new Codex({...})`). */
  codex: Codex;
  input: Input;
  threadOptions?: ThreadOptions;
  turnOptions?: TurnOptions;
  reportId?: string;
}

/** One turn with @openai/codex-sdk: Get → startThread/resumeThread + runStreamed → ReportResult → one fresh retry. */
export function runCodexTurn(
  sk: SessionKeeper,
  key: ConversationKey,
  binding: Binding | undefined,
  turn: CodexTurnOptions,
): Promise<TurnOutcome<CodexRun>> {
  return sk.runTurn(
    key,
    binding,
    (resume) => runCodex(turn.codex, turn.input, resume, turn.threadOptions, turn.turnOptions),
    { reportId: turn.reportId, toResult: (run) => run.agentResult },
  );
}
