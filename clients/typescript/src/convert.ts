// Turn what an agent run produced (the Claude Agent SDK's SDKResultMessage, a raw stream-json
// frame, a thrown Error, a failed child process) into an AgentResult for ReportResult.
// The converters never throw on odd input: a report is worth more than a perfect one.

import type { AgentResult } from "./types";

/**
 * A Claude Agent SDK result: the fields of its `SDKResultMessage` (and of a `{"type":"result"}`
 * stream-json frame) that sessionkeeper reads. The SDK's type is assignable to it (so it can be
 * passed without importing the SDK here); its other messages are not (`type` is not "result").
 */
export interface SDKResultMessageLike {
  type: "result";
  subtype: string;
  is_error: boolean;
  session_id: string;
  num_turns?: number;
  errors?: readonly string[] | string;
  terminal_reason?: string | null;
  api_error_status?: number | null;
  result?: unknown;
  [other: string]: unknown;
}

/** The server truncates each text to 8 KiB; the client only keeps requests far below 4 MiB. */
export const MAX_TEXT_BYTES = 32 * 1024;
export const MAX_ERRORS = 64;
const MESSAGE_HEAD_BYTES = 2 * 1024;
const STDERR_TAIL_BYTES = 5 * 1024;
const CAUSE_BYTES = 512;

function cap(text: string, limit = MAX_TEXT_BYTES, tail = false): string {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= limit) return text;
  const cut = tail ? bytes.subarray(bytes.length - limit) : bytes.subarray(0, limit);
  // drop a split multi-byte character at the cut
  const clipped = cut.toString("utf8").replace(tail ? /^\uFFFD+/ : /\uFFFD+$/, "");
  return tail ? `…${clipped}` : `${clipped}…`;
}

function text(value: unknown): string {
  if (value === undefined || value === null) return "";
  if (Buffer.isBuffer(value)) return value.toString("utf8");
  if (value instanceof Uint8Array) return Buffer.from(value).toString("utf8");
  return String(value);
}

function uint32(value: unknown): number {
  const n = typeof value === "number" ? value : Number(value ?? 0);
  if (!Number.isFinite(n) || n <= 0) return 0;
  return Math.min(Math.floor(n), 0xffffffff);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// Keys only an SDK message has, and keys only an AgentResult has (subtype and errors are shared).
const SDK_KEYS = ["type", "is_error", "session_id", "num_turns", "terminal_reason", "api_error_status", "result"];
const AGENT_RESULT_KEYS = ["isError", "sessionId", "numTurns", "terminalReason", "apiErrorStatus", "exception", "resultText"];

/** Whether `value` looks like an SDK result (an SDKResultMessage or a `"type": "result"` frame). */
export function isResultMessage(value: unknown): value is SDKResultMessageLike {
  if (!isObject(value)) return false;
  if ("type" in value) return value.type === "result";
  return "subtype" in value && "is_error" in value;
}

function isAgentResult(value: unknown): value is AgentResult {
  if (!isObject(value)) return false;
  return AGENT_RESULT_KEYS.some((k) => k in value) || !SDK_KEYS.some((k) => k in value);
}

/**
 * An AgentResult from a Claude Agent SDK result message: an `SDKResultMessage` (success or error
 * subtype), a stream-json `{"type":"result"}` frame or its JSON text, or an AgentResult (returned
 * as is); undefined (no result message arrived) is a failure. When the run also threw (the CLI exits non-zero after an error frame), pass the error:
 * its text lands in `exception`.
 */
export function agentResultFromSdk(
  message: SDKResultMessageLike | AgentResult | string | undefined | null,
  options: { error?: unknown } = {},
): AgentResult {
  let result: AgentResult;
  let value: unknown = message;
  if (typeof value === "string") {
    try {
      value = JSON.parse(value);
    } catch {
      value = { is_error: true, result: value };
    }
  }
  if (value === undefined || value === null) {
    // the run ended without a result message (the stream stopped early): a failure, not a success
    result = { isError: true, numTurns: 0, exception: "the run produced no result message" };
  } else if (isAgentResult(value)) {
    result = value;
  } else {
    const m = (isObject(value) ? value : {}) as SDKResultMessageLike;
    const errors =
      m.errors === undefined || m.errors === null
        ? []
        : typeof m.errors === "string"
          ? [m.errors]
          : Array.from(m.errors as readonly unknown[])
              .slice(0, MAX_ERRORS)
              .map((e) => cap(text(e)));
    result = {
      isError: Boolean(m.is_error),
      subtype: text(m.subtype),
      sessionId: text(m.session_id),
      numTurns: uint32(m.num_turns),
      errors,
      terminalReason: text(m.terminal_reason),
      apiErrorStatus: uint32(m.api_error_status),
      exception: "",
      resultText: typeof m.result === "string" ? cap(m.result) : "",
    };
  }
  if (options.error === undefined) return result;
  // The result frame is the SDK's own verdict: an exit after a success frame does not make the run
  // a failure (its session is valid), but the error's text is still reported.
  return {
    ...result,
    apiErrorStatus: result.apiErrorStatus || statusOf(options.error),
    exception: describeError(options.error),
  };
}

/** The last `{"type":"result"}` frame in a process's stdout (stream-json or json output). */
export function findResultFrame(output: unknown): SDKResultMessageLike | undefined {
  const lines = text(output).split(/\r?\n/).reverse();
  for (const raw of lines) {
    const line = raw.trim();
    if (!line.startsWith("{") || !line.includes('"result"')) continue;
    try {
      const frame: unknown = JSON.parse(line);
      if (isObject(frame) && frame.type === "result") return frame as SDKResultMessageLike;
    } catch {
      // not JSON: keep looking
    }
  }
  return undefined;
}

function statusOf(err: unknown): number {
  if (!isObject(err)) return 0;
  for (const name of ["status", "statusCode", "api_error_status"]) {
    const v = err[name];
    // HTTP error statuses only: process exit codes (also called `status`) stay below 256
    if (typeof v === "number" && v >= 400 && v <= 599) return v;
  }
  return 0;
}

/** One text for AgentResult.exception: name, message, exit code, signal, errno, the tail of stderr. */
export function describeError(err: unknown): string {
  if (!(err instanceof Error) && !isObject(err)) return cap(`thrown: ${text(err)}`, MESSAGE_HEAD_BYTES);
  const e = err as Record<string, unknown> & { name?: unknown; message?: unknown };
  const stderr = text(e.stderr).trim();
  let message = text(e.message);
  if (stderr && message.includes(stderr)) message = message.replace(stderr, "").trimEnd();
  const name = text(e.name) || "Error";
  const parts = [cap(message ? `${name}: ${message}` : name, MESSAGE_HEAD_BYTES)];
  // child_process: `status` (execSync/spawnSync) or a numeric `code` (exec); the SDK: `exitCode`
  const exit = [e.exitCode, e.status, e.code].find((v) => typeof v === "number");
  if (exit !== undefined && !new RegExp(`(exit|code|status)\\D{0,8}${exit}\\b`).test(parts[0])) {
    parts.push(`exit code ${exit}`);
  }
  if (typeof e.signal === "string" && e.signal) parts.push(`signal ${e.signal}`);
  if (typeof e.code === "string" && e.code && !parts[0].includes(e.code)) parts.push(e.code);
  if (stderr) parts.push(`stderr: ${cap(stderr, STDERR_TAIL_BYTES, true)}`);
  const cause = e.cause;
  if (cause !== undefined && cause !== null && cause !== err) {
    const c = cause instanceof Error ? `${cause.name}: ${cause.message}` : text(cause);
    parts.push(cap(`caused by ${c}`, CAUSE_BYTES));
  }
  return parts.join("; ");
}

/**
 * An AgentResult for a run that threw instead of (or after) producing a result: the SDK's
 * "Claude Code process exited with code 1" Error, an AbortError, a child_process error (`code`,
 * `status`, `signal`, `stderr`; a result frame on its `stdout` is used), a timeout, anything.
 * `result` is the result message the run produced before it threw, if any; an error carrying one
 * (`err.resultMessage` or a result-like `err.result`) is used too. numTurns stays 0 (unknown)
 * when no result frame is known.
 */
export function agentResultFromError(err: unknown, result?: SDKResultMessageLike): AgentResult {
  let frame: SDKResultMessageLike | undefined = result;
  if (!frame && isObject(err)) {
    for (const name of ["resultMessage", "result"]) {
      if (isResultMessage(err[name])) {
        frame = err[name] as SDKResultMessageLike;
        break;
      }
    }
    if (!frame) frame = findResultFrame(err.stdout);
  }
  if (frame) return agentResultFromSdk(frame, { error: err });
  return {
    isError: true,
    numTurns: 0,
    exception: describeError(err),
    apiErrorStatus: statusOf(err),
  };
}

/** The tail of a process's stderr, as it goes into AgentResult.exception. */
export function tail(stderr: string): string {
  return cap(stderr, STDERR_TAIL_BYTES, true);
}
