// An orchestrator that survives a lost Claude transcript, with @sessionkeeper/client.
//
// It plays four turns of one conversation against a real sessionkeeper server:
//   1. a fresh session is started and stored;
//   2. the next turn resumes it;
//      -- the worker "restarts" without its home volume: the transcript file is gone --
//   3. the turn resumes the stored id, the agent answers with Claude Code's exact
//      "No conversation found with session ID" frame, sessionkeeper clears the id and answers
//      retryFresh, and the same turn runs again as a fresh session, which is stored;
//   4. the next turn resumes the new session: no loop, no dead id.
//
// The agent is a stand-in for the Claude Agent SDK's query(): it keeps transcripts as files under a
// config dir the way Claude Code does (<configDir>/projects/<cwd>/<id>.jsonl) and yields SDK-like
// messages. Swap fakeQuery for `query` from @anthropic-ai/claude-agent-sdk and nothing else changes.
//
// Run it with one command from the repository root (builds what is missing, starts a server):
//     examples/run typescript
// or against a running server: SESSIONKEEPER_ADDR=host:port node examples/typescript/dist/orchestrator.js
import { randomUUID } from "node:crypto";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

import {
  SessionKeeper,
  isResultMessage,
  type Binding,
  type SDKResultMessageLike,
  type SessionKey,
  type TurnOutcome,
} from "@sessionkeeper/client";

type Message = SDKResultMessageLike | { type: "system" | "assistant"; [k: string]: unknown };

/** A stand-in for one Claude Code host: transcripts are files under its config dir. */
class FakeClaude {
  constructor(
    readonly configDir: string,
    readonly cwd: string,
  ) {}

  private transcript(sessionId: string): string {
    return join(this.configDir, "projects", this.cwd.replace(/\//g, "-"), `${sessionId}.jsonl`);
  }

  /** Yields SDK-like messages: system init, an assistant reply, then the result frame. */
  async *query(prompt: string, options: { resume?: string }): AsyncGenerator<Message> {
    const resume = options.resume;
    if (resume !== undefined && !existsSync(this.transcript(resume))) {
      // Exactly what Claude Code emits when the transcript of `resume` is missing: note the
      // brand-new session_id on the failed frame, which must never be stored.
      yield {
        type: "result",
        subtype: "error_during_execution",
        is_error: true,
        num_turns: 0,
        session_id: randomUUID(),
        errors: [`No conversation found with session ID: ${resume}`],
      };
      return;
    }
    const sessionId = resume ?? randomUUID();
    const path = this.transcript(sessionId);
    mkdirSync(dirname(path), { recursive: true });
    appendFileSync(path, JSON.stringify({ prompt }) + "\n");
    const turns = readFileSync(path, "utf8").trim().split("\n").length;
    const text = `reply #${turns} to ${JSON.stringify(prompt)}`;
    yield { type: "system", subtype: "init", session_id: sessionId, cwd: this.cwd };
    yield { type: "assistant", session_id: sessionId, message: { content: [{ type: "text", text }] } };
    yield { type: "result", subtype: "success", is_error: false, num_turns: 1, session_id: sessionId, result: text };
  }
}

const short = (id: string | undefined) => (id ? id.slice(0, 8) : "(none)");
const name = (v: string) => v.replace(/^(RESULT_CLASS|ACTION|FRESH_REASON)_/, "");

/** Print what runTurn did, step by step. */
function show(turn: number, outcome: TurnOutcome<SDKResultMessageLike | undefined>): void {
  const d = outcome.decision;
  console.log(`turn ${turn}: Get -> ${d.resume ? `RESUME ${short(d.resume)}` : `START_FRESH (${name(d.freshReason)})`}`);
  outcome.attempts.forEach((attempt, i) => {
    let how = attempt.resumedSessionId ? `resumes ${short(attempt.resumedSessionId)}` : "runs fresh";
    if (i > 0) how += " (the one retry)";
    const frame = attempt.output ?? {};
    if (frame.is_error) console.log(`turn ${turn}: agent ${how} -> ${JSON.stringify(frame)}`);
    else console.log(`turn ${turn}: agent ${how} -> ${frame.subtype}, session ${short(frame.session_id)}: ${frame.result}`);
    const r = attempt.report;
    const stored = r.sessionId ? ` ${short(r.sessionId)}` : "";
    console.log(`turn ${turn}: ReportResult -> ${name(r.resultClass)}, ${name(r.action)}${stored}${r.retryFresh ? ", retry_fresh" : ""}`);
  });
}

async function main(): Promise<number> {
  const address = process.env.SESSIONKEEPER_ADDR ?? "127.0.0.1:50051";
  const home = mkdtempSync(join(tmpdir(), "fake-claude-home-"));
  const configDir = join(home, ".claude");
  const cwd = "/srv/checkout";
  const agent = new FakeClaude(configDir, cwd);
  const key: SessionKey = { namespace: "example", agent: "coder", conversation: `chat-${randomUUID().slice(0, 8)}` };
  const binding: Binding = { provider: "claude", host: "worker-1", configDir, cwd };
  console.log(`sessionkeeper at ${address}; conversation ${key.conversation} on ${binding.host}`);

  const sk = new SessionKeeper({ address, token: process.env.SESSIONKEEPER_TOKEN, timeoutMs: 5000 });
  const runWith = (prompt: string) => async (resume: string | undefined) => {
    let result: SDKResultMessageLike | undefined;
    for await (const message of agent.query(prompt, { resume })) {
      if (isResultMessage(message)) result = message;
    }
    return result;
  };

  const turns: TurnOutcome<SDKResultMessageLike | undefined>[] = [];
  try {
    for (const prompt of ["hello", "and then?"]) {
      turns.push(await sk.runTurn(key, binding, runWith(prompt)));
      show(turns.length, turns[turns.length - 1]);
    }
    const lost = turns[1].sessionId;
    rmSync(configDir, { recursive: true, force: true }); // the container restarts without its home volume
    console.log(`*** restart: worker-1 comes back without its home volume; transcript ${short(lost)} is gone`);
    for (const prompt of ["still there?", "great"]) {
      turns.push(await sk.runTurn(key, binding, runWith(prompt)));
      show(turns.length, turns[turns.length - 1]);
    }

    const [recovery, after] = [turns[2], turns[3]];
    const deadFrameId = recovery.attempts[0].output?.session_id ?? "";
    const ok =
      recovery.retriedFresh &&
      recovery.attempts[0].report.resultClass === "RESULT_CLASS_SESSION_GONE" &&
      recovery.attempts[0].report.action === "ACTION_CLEARED" &&
      !["", lost, deadFrameId].includes(recovery.sessionId) &&
      after.decision.resume === recovery.sessionId &&
      !after.retriedFresh;
    if (!ok) {
      console.error("NOT RECOVERED: the turns above did not go as expected");
      return 1;
    }
    console.log(
      `RECOVERED: lost session ${short(lost)} was cleared once, turn 3 ran fresh as ${short(recovery.sessionId)}, ` +
        `turn 4 resumed it; the failed frame's id ${short(deadFrameId)} was never stored`,
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
