// An orchestrator that survives a lost Claude transcript, with @sessionkeeper/client.
//
// It plays four turns of one conversation against a real sessionkeeper server:
//   1. a fresh session is started and stored;
//   2. the next turn resumes it (the CLI reloads the transcript);
//      -- the worker "restarts" without its home volume: the config dir is emptied --
//   3. the turn resumes the stored id, the CLI answers with its real "No conversation found with
//      session ID" frame (the SDK yields it, then throws a plain Error: the adapter keeps the frame),
//      sessionkeeper clears the id and answers retryFresh, and the same turn runs again as a fresh
//      session, which is stored;
//   4. the next turn resumes the new session: no loop, no dead id.
//
// The agent is the real Claude Agent SDK (@anthropic-ai/claude-agent-sdk): its query() drives the
// Claude Code CLI it installs. The model API is whatever ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY say;
// examples/run points them at the mock model API of the tests on 127.0.0.1, so the example runs
// anywhere without a key.
//
// Run it with one command from the repository root (builds what is missing, starts a server):
//     examples/run typescript
// or against a running server: SESSIONKEEPER_ADDR=host:port node examples/typescript/dist/orchestrator.js
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import type { Options } from "@anthropic-ai/claude-agent-sdk";
import { SessionKeeper, type Binding, type ConversationKey, type TurnOutcome } from "@sessionkeeper/client";
import { runClaudeTurn, type ClaudeQuery, type ClaudeRun } from "@sessionkeeper/client/claude";

const short = (id: string | undefined) => (id ? id.slice(0, 8) : "(none)");
const name = (v: string) => v.replace(/^(RESULT_CLASS|ACTION|FRESH_REASON)_/, "");

const FRAME_FIELDS = ["type", "subtype", "is_error", "num_turns", "session_id", "errors"] as const;

/** Print what runClaudeTurn did, step by step. */
function show(turn: number, outcome: TurnOutcome<ClaudeRun>): void {
  const d = outcome.decision;
  console.log(`turn ${turn}: Get -> ${d.resume ? `RESUME ${short(d.resume)}` : `START_FRESH (${name(d.freshReason)})`}`);
  outcome.attempts.forEach((attempt, i) => {
    let how = attempt.resumedSessionId ? `resumes ${short(attempt.resumedSessionId)}` : "runs fresh";
    if (i > 0) how += " (the one retry)";
    const frame = attempt.output?.result;
    if (frame && !frame.is_error) {
      const text = frame.subtype === "success" ? frame.result : "";
      console.log(`turn ${turn}: agent ${how} -> ${frame.subtype}, session ${short(frame.session_id)}: ${text}`);
    } else if (frame) {
      const shown = Object.fromEntries(FRAME_FIELDS.filter((k) => k in frame).map((k) => [k, frame[k as keyof typeof frame]]));
      console.log(`turn ${turn}: agent ${how} -> ${JSON.stringify(shown)}`);
    } else {
      console.log(`turn ${turn}: agent ${how} -> ${JSON.stringify(attempt.result)}`);
    }
    const r = attempt.report;
    if (!r) {
      console.log(`turn ${turn}: ReportResult skipped (sessionkeeper unreachable)`);
      return;
    }
    const stored = r.sessionId ? ` ${short(r.sessionId)}` : "";
    console.log(`turn ${turn}: ReportResult -> ${name(r.resultClass)}, ${name(r.action)}${stored}${r.retryFresh ? ", retry_fresh" : ""}`);
  });
}

async function main(): Promise<number> {
  const address = process.env.SESSIONKEEPER_ADDR ?? "127.0.0.1:50051";
  // the SDK is an ES module: loaded the way a CommonJS program loads one
  const query: ClaudeQuery = (await import("@anthropic-ai/claude-agent-sdk")).query;
  const home = mkdtempSync(join(tmpdir(), "claude-worker-"));
  const configDir = join(home, ".claude");
  const cwd = join(home, "checkout");
  mkdirSync(configDir);
  mkdirSync(cwd);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  const options: Options = {
    cwd,
    maxTurns: 3,
    env: { ...env, HOME: home, CLAUDE_CONFIG_DIR: configDir, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1" },
  };
  const key: ConversationKey = { namespace: "example", agent: "coder", conversation: `chat-${randomUUID().slice(0, 8)}` };
  const binding: Binding = { provider: "claude", host: "worker-1", configDir, cwd };
  console.log(`sessionkeeper at ${address}; conversation ${key.conversation} on ${binding.host}`);

  const sk = new SessionKeeper({ address, token: process.env.SESSIONKEEPER_TOKEN, timeoutMs: 5000 });
  const turns: TurnOutcome<ClaudeRun>[] = [];
  try {
    for (const prompt of ["hello", "and then?"]) {
      turns.push(await runClaudeTurn(sk, key, binding, { query, prompt, options }));
      show(turns.length, turns[turns.length - 1]);
    }
    const lost = turns[1].sessionId;
    rmSync(configDir, { recursive: true, force: true }); // the container restarts without its home volume
    mkdirSync(configDir);
    console.log(`*** restart: worker-1 comes back without its home volume; transcript ${short(lost)} is gone`);
    for (const prompt of ["still there?", "great"]) {
      turns.push(await runClaudeTurn(sk, key, binding, { query, prompt, options }));
      show(turns.length, turns[turns.length - 1]);
    }

    const [recovery, after] = [turns[2], turns[3]];
    const first = recovery.attempts[0].report;
    const ok =
      recovery.retriedFresh &&
      first?.resultClass === "RESULT_CLASS_SESSION_GONE" &&
      first.action === "ACTION_CLEARED" &&
      !["", lost].includes(recovery.sessionId) &&
      after.decision.resume === recovery.sessionId &&
      !after.retriedFresh;
    if (!ok) {
      console.error("NOT RECOVERED: the turns above did not go as expected");
      return 1;
    }
    console.log(
      `RECOVERED: lost session ${short(lost)} was cleared once, turn 3 ran fresh as ${short(recovery.sessionId)}, ` +
        "turn 4 resumed it; the failed frame's id was never stored",
    );
    return 0;
  } finally {
    sk.close();
    rmSync(home, { recursive: true, force: true });
  }
}

main().then(
  (code) => (process.exitCode = code),
  (err) => {
    console.error(err);
    process.exitCode = 1;
  },
);
