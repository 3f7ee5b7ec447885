// runTurn (Get → run → ReportResult → one fresh retry) against the real server.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";

import { SessionKeeper, type ConversationKey, type SDKResultMessageLike } from "../src/index";
import { noConversation, startServer, success, type Server } from "./harness";

let server: Server;
let sk: SessionKeeper;
const newKey = (): ConversationKey => ({ namespace: "node-test", agent: "coder", conversation: `t-${randomUUID()}` });
const binding = { provider: "claude", host: "worker-1", cwd: "/srv/repo" };

/** A fake agent host: resumes only the transcripts it has on its "disk". */
class FakeClaude {
  transcripts = new Set<string>();
  calls: (string | undefined)[] = [];
  run = async (resume: string | undefined): Promise<SDKResultMessageLike> => {
    this.calls.push(resume);
    if (resume !== undefined && !this.transcripts.has(resume)) return noConversation(randomUUID(), resume);
    const sid = resume ?? randomUUID();
    this.transcripts.add(sid);
    return success(sid);
  };
}

before(async () => {
  server = await startServer();
  sk = new SessionKeeper(server.grpcAddr);
});

after(async () => {
  sk.close();
  await server.stop();
});

describe("runTurn", () => {
  it("starts fresh, stores, then resumes on the next turn", async () => {
    const key = newKey();
    const agent = new FakeClaude();
    const first = await sk.runTurn(key, binding, agent.run);
    assert.equal(first.decision.decision, "DECISION_START_FRESH");
    assert.equal(first.final.report!.action, "ACTION_STORED");
    assert.equal(first.sessionId, first.output?.session_id);
    const second = await sk.runTurn(key, binding, agent.run);
    assert.deepEqual(agent.calls, [undefined, first.sessionId]);
    assert.equal(second.decision.resume, first.sessionId);
    assert.equal(second.retriedFresh, false);
  });

  it("recovers from a lost transcript with one fresh retry", async () => {
    const key = newKey();
    const agent = new FakeClaude();
    const old = (await sk.runTurn(key, binding, agent.run)).sessionId;
    agent.transcripts.clear(); // the container restarted without its home volume
    const turn = await sk.runTurn(key, binding, agent.run, { reportId: "dispatch-9" });
    assert.deepEqual(agent.calls.slice(1), [old, undefined]);
    const [gone, fresh] = turn.attempts;
    assert.deepEqual(
      [gone.report!.resultClass, gone.report!.action, gone.report!.retryFresh],
      ["RESULT_CLASS_SESSION_GONE", "ACTION_CLEARED", true],
    );
    assert.deepEqual([fresh.report!.resultClass, fresh.report!.action], ["RESULT_CLASS_SUCCESS", "ACTION_STORED"]);
    assert.deepEqual([gone.report!.reportId, fresh.report!.reportId], ["dispatch-9", "dispatch-9:fresh"]);
    assert.ok(turn.retriedFresh);
    assert.notEqual(turn.sessionId, old);
    assert.notEqual(turn.sessionId, gone.result.sessionId);
    const next = await sk.runTurn(key, binding, agent.run);
    assert.equal(agent.calls.at(-1), turn.sessionId);
    assert.equal(next.retriedFresh, false);
  });

  it("recovers when the SDK throws a process error about the session", async () => {
    const key = newKey();
    const old = (await sk.runTurn(key, undefined, () => success(randomUUID()))).sessionId;
    const calls: (string | undefined)[] = [];
    const turn = await sk.runTurn(key, undefined, async (resume) => {
      calls.push(resume);
      if (resume) {
        throw Object.assign(new Error("Claude Code process exited with code 1"), {
          exitCode: 1,
          stderr: `No conversation found with session ID: ${resume}`,
        });
      }
      return success(`fresh-${randomUUID()}`);
    });
    assert.deepEqual(calls, [old, undefined]);
    assert.ok(turn.attempts[0].error instanceof Error);
    assert.equal(turn.attempts[0].report!.resultClass, "RESULT_CLASS_SESSION_GONE");
    assert.ok(turn.sessionId.startsWith("fresh-"));
  });

  it("reports an unrelated failure, keeps the session and rethrows", async () => {
    const key = newKey();
    const sid = (await sk.runTurn(key, undefined, () => success(randomUUID()))).sessionId;
    const boom = () => {
      throw Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" });
    };
    await assert.rejects(sk.runTurn(key, undefined, boom), /ECONNRESET/);
    assert.equal((await sk.decide(key)).resume, sid);
    const turn = await sk.runTurn(key, undefined, boom, { throwErrors: false });
    assert.equal(turn.final.report!.resultClass, "RESULT_CLASS_TRANSIENT");
    assert.equal(turn.final.report!.action, "ACTION_KEPT");
  });

  it("clears after repeated zero-turn failures of a resume", async () => {
    const key = newKey();
    await sk.runTurn(key, undefined, () => success(randomUUID()));
    const run = (resume: string | undefined) => {
      if (resume) throw new Error("Claude Code process exited with code 1");
      return success(randomUUID());
    };
    const first = await sk.runTurn(key, undefined, run, { throwErrors: false });
    assert.deepEqual([first.final.report!.resultClass, first.final.report!.action], ["RESULT_CLASS_UNKNOWN_FAILURE", "ACTION_KEPT"]);
    const second = await sk.runTurn(key, undefined, run, { throwErrors: false });
    assert.ok(second.retriedFresh);
    assert.equal(second.attempts[0].report!.action, "ACTION_CLEARED");
    assert.equal(second.final.report!.action, "ACTION_STORED");
  });

  it("reports a run without a result message as a failure", async () => {
    const key = newKey();
    const sid = (await sk.runTurn(key, undefined, () => success(randomUUID()))).sessionId;
    const turn = await sk.runTurn(key, undefined, async () => undefined);
    assert.deepEqual([turn.final.report!.resultClass, turn.final.report!.action], ["RESULT_CLASS_UNKNOWN_FAILURE", "ACTION_KEPT"]);
    assert.equal(turn.sessionId, sid);
  });

  it("stores the new id of a fork", async () => {
    const key = newKey();
    const first = await sk.runTurn(key, undefined, () => success(randomUUID()));
    const forked = randomUUID();
    const turn = await sk.runTurn(key, undefined, () => success(forked));
    assert.equal(turn.final.resumedSessionId, first.sessionId);
    assert.equal(turn.sessionId, forked);
  });
});
