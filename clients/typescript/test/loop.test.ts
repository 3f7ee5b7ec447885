// decide / report / forget / sweep against the real server (SPEC §2-§4 through the TS client).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";

import { SessionKeeper, SessionKeeperError, type Binding, type ConversationKey } from "../src/index";
import { noConversation, startServer, success, type Server } from "./harness";

let server: Server;
let sk: SessionKeeper;
const binding: Binding = { provider: "claude", host: "worker-1", configDir: "/home/agent/.claude", cwd: "/srv/repo" };
const newKey = (): ConversationKey => ({ namespace: "node-test", agent: "coder", conversation: `c-${randomUUID()}` });

before(async () => {
  server = await startServer();
  sk = new SessionKeeper({ address: server.grpcAddr, timeoutMs: 5000 });
});

after(async () => {
  sk.close();
  const code = await server.stop();
  assert.equal(code, 0, `server exited ${code} on SIGTERM:\n${server.log()}`);
});

describe("decide and report", () => {
  it("starts fresh when nothing is stored", async () => {
    const d = await sk.decide(newKey(), binding);
    assert.equal(d.decision, "DECISION_START_FRESH");
    assert.equal(d.freshReason, "FRESH_REASON_NO_SESSION");
    assert.equal(d.resume, undefined);
    assert.equal(d.binding, undefined);
    assert.equal(d.lastUsedAt, undefined);
  });

  it("stores a success and resumes it", async () => {
    const key = newKey();
    const sid = randomUUID();
    const r = await sk.report(key, undefined, binding, success(sid));
    assert.deepEqual(
      [r.resultClass, r.action, r.sessionId, r.retryFresh],
      ["RESULT_CLASS_SUCCESS", "ACTION_STORED", sid, false],
    );
    const d = await sk.decide(key, binding);
    assert.equal(d.decision, "DECISION_RESUME");
    assert.equal(d.resume, sid);
    assert.deepEqual(d.binding, binding);
    assert.ok(d.lastUsedAt && d.expiresAt && d.lastUsedAt <= new Date() && new Date() < d.expiresAt);
  });

  it("starts fresh on another host and describes the kept row", async () => {
    const key = newKey();
    const sid = randomUUID();
    await sk.report(key, "", binding, success(sid));
    const d = await sk.decide(key, { ...binding, host: "worker-2" });
    assert.equal(d.decision, "DECISION_START_FRESH");
    assert.equal(d.freshReason, "FRESH_REASON_BINDING_MISMATCH");
    assert.deepEqual(d.binding, binding);
    assert.equal((await sk.decide(key)).resume, sid);
  });

  it("clears on the lost-transcript frame and asks for a fresh retry", async () => {
    const key = newKey();
    const old = randomUUID();
    await sk.report(key, undefined, binding, success(old));
    const frameId = randomUUID();
    const r = await sk.report(key, old, binding, noConversation(frameId, old));
    assert.deepEqual(
      [r.resultClass, r.action, r.retryFresh, r.sessionId],
      ["RESULT_CLASS_SESSION_GONE", "ACTION_CLEARED", true, ""],
    );
    const d = await sk.decide(key, binding);
    assert.equal(d.freshReason, "FRESH_REASON_CLEARED");
    assert.notEqual(d.sessionId, frameId);
  });

  it("never stores a failed result's session id", async () => {
    const key = newKey();
    const sid = randomUUID();
    await sk.report(key, undefined, undefined, success(sid));
    const r = await sk.report(key, sid, undefined, {
      isError: true,
      subtype: "error_during_execution",
      sessionId: randomUUID(),
      numTurns: 2,
      errors: ["API Error: 529 overloaded"],
    });
    assert.deepEqual([r.resultClass, r.action, r.sessionId], ["RESULT_CLASS_TRANSIENT", "ACTION_KEPT", sid]);
    assert.equal((await sk.decide(key)).resume, sid);
  });

  it("generates a report id per report", async () => {
    const key = newKey();
    const a = await sk.report(key, undefined, undefined, success(randomUUID()));
    const b = await sk.report(key, undefined, undefined, success(randomUUID()));
    assert.ok(a.reportId && b.reportId && a.reportId !== b.reportId);
    assert.equal(b.action, "ACTION_STORED");
  });

  it("answers a repeated report id with the first answer and changes nothing", async () => {
    const key = newKey();
    const old = randomUUID();
    const newer = randomUUID();
    await sk.report(key, undefined, binding, success(old));
    const gone = await sk.report(key, old, binding, noConversation(randomUUID(), old), "dispatch-1");
    await sk.report(key, undefined, binding, success(newer));
    const replay = await sk.report(key, old, binding, noConversation(randomUUID(), old), "dispatch-1");
    assert.deepEqual(replay, gone);
    assert.equal((await sk.decide(key, binding)).resume, newer);
  });

  it("rejects a report id reused for another key with ALREADY_EXISTS", async () => {
    const key = newKey();
    const rid = `dispatch-${randomUUID()}`;
    await sk.report(key, undefined, undefined, success(randomUUID()), rid);
    await assert.rejects(
      sk.report({ ...key, conversation: `${key.conversation}-other` }, undefined, undefined, success("x"), rid),
      (err: unknown) => err instanceof SessionKeeperError && err.codeName === "ALREADY_EXISTS" && err.attempts === 1,
    );
  });

  for (const [bad, field] of [
    [{ agent: "", conversation: "c" }, "key.agent"],
    [{ agent: "coder", conversation: "" }, "key.conversation"],
    [{ agent: "coder", conversation: "c", namespace: "bad namespace!" }, "key.namespace"],
  ] as const) {
    it(`names the field of an INVALID_ARGUMENT (${field})`, async () => {
      await assert.rejects(sk.decide(bad), (err: unknown) => {
        assert.ok(err instanceof SessionKeeperError);
        assert.equal(err.codeName, "INVALID_ARGUMENT");
        assert.equal(err.field, field, err.details);
        return true;
      });
    });
  }

  it("reports long texts without rejection", async () => {
    const key = newKey();
    const sid = randomUUID();
    await sk.report(key, undefined, undefined, success(sid));
    const r = await sk.report(key, sid, undefined, {
      isError: true,
      exception: "x".repeat(200_000) + " ECONNRESET",
      errors: Array(10).fill("e".repeat(20_000)),
      resultText: "r".repeat(100_000),
    });
    assert.equal(r.action, "ACTION_KEPT");
  });

  it("forgets and sweeps", async () => {
    const key = newKey();
    await sk.report(key, undefined, undefined, success(randomUUID()));
    assert.equal(await sk.forget(key), true);
    assert.equal(await sk.forget(key), false);
    const out = await sk.sweep({ namespace: "node-test", dryRun: true });
    assert.equal(out.deleted, 0);
    assert.ok(out.tookMs >= 0);
  });
});
