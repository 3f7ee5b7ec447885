// End to end through the real Claude Code CLI (the native binary the SDK installs), driven by
// runClaudeTurn with the SDK's own query() and Options, against a real sessionkeeper server; the
// only fake is the model API at the wire. Assertions are on structured fields, never on wording.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import type { Options } from "@anthropic-ai/claude-agent-sdk";

import { SessionKeeper, type ConversationKey } from "../src/index";
import { runClaudeTurn, type ClaudeQuery } from "../src/claude";
import { claudeBinding, newWorker, quietEnv, startE2eServer, startMock, type MockApi, type Worker } from "./e2e";
import type { Server } from "./harness";

let server: Server;
let mock: MockApi;
let sk: SessionKeeper;
let query: ClaudeQuery;

before(async () => {
  // the SDK is an ES module: loaded the way a CommonJS program loads one
  query = (await import("@anthropic-ai/claude-agent-sdk")).query;
  [server, mock] = await Promise.all([startE2eServer(), startMock()]);
  sk = new SessionKeeper({ address: server.grpcAddr, timeoutMs: 10_000 });
});

after(async () => {
  sk.close();
  mock.stop();
  assert.equal(await server.stop(), 0, server.log());
});

const newKey = (): ConversationKey => ({ namespace: "e2e-ts", agent: "coder", conversation: `c-${randomUUID()}` });

function turn(worker: Worker, key: ConversationKey, prompt: string, extra: Options = {}) {
  const options: Options = { cwd: worker.cwd, env: quietEnv(mock, worker), ...extra };
  return runClaudeTurn(sk, key, claudeBinding(worker), { query, prompt, options });
}

describe("Claude Code CLI end to end (TypeScript SDK)", () => {
  it("survives a restart that loses the transcripts", async () => {
    const worker = newWorker();
    const key = newKey();
    const first = await turn(worker, key, "turn one [mock:ok]");
    assert.equal(first.decision.decision, "DECISION_START_FRESH");
    assert.equal(first.attempts.length, 1);
    assert.equal(first.final.report!.resultClass, "RESULT_CLASS_SUCCESS");
    assert.equal(first.final.report!.action, "ACTION_STORED");
    const sid = first.output!.result!.session_id;
    assert.equal(first.sessionId, sid);
    const projects = join(worker.configDir, "projects");
    assert.ok(
      readdirSync(projects).some((p) => readdirSync(join(projects, p)).includes(`${sid}.jsonl`)),
      "the CLI wrote no transcript",
    );

    const before = (await mock.requests()).length;
    const second = await turn(worker, key, "turn two [mock:ok]");
    assert.equal(second.decision.resume, sid);
    assert.equal(second.final.report!.action, "ACTION_STORED");
    assert.equal(second.sessionId, sid);
    const sent = (await mock.requests()).slice(before);
    assert.ok(sent.some((r) => r.user_texts.join(" ").includes("turn one [mock:ok]")), "the CLI did not resume");

    worker.restartLosingTheVolume();
    const third = await turn(worker, key, "turn three [mock:ok]");
    assert.equal(third.decision.resume, sid);
    assert.equal(third.attempts.length, 2, "the gone session must be retried fresh exactly once");
    const [gone, fresh] = third.attempts;
    // the SDK yielded the error result and then threw a plain Error: the frame came from the stream
    assert.ok(gone.output!.result, "the result message was lost");
    assert.ok(gone.output!.error instanceof Error);
    assert.equal(gone.result.subtype, "error_during_execution");
    assert.equal(gone.result.numTurns, 0);
    assert.ok(gone.result.errors && gone.result.errors.length > 0);
    assert.equal(gone.report!.resultClass, "RESULT_CLASS_SESSION_GONE");
    assert.equal(gone.report!.action, "ACTION_CLEARED");
    assert.equal(gone.report!.retryFresh, true);
    assert.equal(fresh.resumedSessionId, undefined);
    assert.equal(fresh.report!.resultClass, "RESULT_CLASS_SUCCESS");
    assert.equal(fresh.report!.action, "ACTION_STORED");
    const newSid = fresh.report!.sessionId;
    assert.ok(newSid && newSid !== sid);

    const fourth = await turn(worker, key, "turn four [mock:ok]");
    assert.equal(fourth.decision.resume, newSid);
    assert.equal(fourth.sessionId, newSid);
  });

  it("keeps the stored session through API errors", async () => {
    const worker = newWorker();
    const key = newKey();
    const sid = (await turn(worker, key, "hello [mock:ok]")).sessionId;
    assert.ok(sid);
    const expected: [string, string, number][] = [
      ["529", "RESULT_CLASS_TRANSIENT", 529],
      ["429", "RESULT_CLASS_TRANSIENT", 429],
      ["500", "RESULT_CLASS_TRANSIENT", 500],
      ["401", "RESULT_CLASS_AUTH", 401],
      ["credit", "RESULT_CLASS_AUTH", 400],
    ];
    for (const [marker, resultClass, status] of expected) {
      const outcome = await turn(worker, key, `call [mock:${marker}]`);
      const a = outcome.final;
      assert.equal(outcome.decision.resume, sid, marker);
      assert.equal(outcome.attempts.length, 1, marker);
      assert.ok(a.output!.result, marker);
      assert.ok(a.output!.error instanceof Error, marker);
      assert.equal(a.result.isError, true, marker);
      assert.equal(a.result.apiErrorStatus, status, marker);
      assert.equal(a.report!.resultClass, resultClass, `${marker}: ${JSON.stringify(a.result)}`);
      assert.equal(a.report!.action, "ACTION_KEPT", marker);
      assert.equal(a.report!.sessionId, sid, marker);
      assert.equal(a.report!.retryFresh, false, marker);
    }
    const afterAll = await turn(worker, key, "after [mock:ok]");
    assert.equal(afterAll.decision.resume, sid);
    assert.equal(afterAll.final.report!.action, "ACTION_STORED");
  });

  it("stores max_turns as LIMIT_REACHED every time, never clears it", async () => {
    const worker = newWorker();
    const key = newKey();
    const sid = (await turn(worker, key, "hello [mock:ok]")).sessionId;
    for (let n = 0; n < 2; n++) {
      const outcome = await turn(worker, key, "use a tool [mock:tool]", { maxTurns: 1 });
      const a = outcome.final;
      assert.equal(outcome.decision.resume, sid);
      assert.equal(outcome.attempts.length, 1);
      assert.equal(a.result.subtype, "error_max_turns");
      assert.ok((a.result.numTurns ?? 0) > 0);
      assert.equal(a.report!.resultClass, "RESULT_CLASS_LIMIT_REACHED");
      assert.equal(a.report!.action, "ACTION_STORED");
      assert.equal(a.report!.sessionId, sid);
    }
    const next = await turn(worker, key, "go on [mock:ok]");
    assert.equal(next.decision.resume, sid);
    assert.equal(next.sessionId, sid);
  });
});
