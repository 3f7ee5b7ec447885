// Resume across hosts, end to end through the real Claude Code CLI (the binary the SDK installs),
// the SDK's own query() with Options.sessionStore = SessionKeeperSessionStore, runClaudeTurn, and a
// real sessionkeeper server (Postgres when SESSIONKEEPER_TEST_DATABASE_URL is set); the only fake is
// the model API at the wire. A conversation runs on worker A (its own HOME and config dir), A's
// config dir is wiped, the next turn runs on worker B: sessionkeeper answers RESUME (the transcript
// is held, so another host and config dir do not matter), the SDK materialises the transcript and
// the CLI resumes with the earlier turns (the mock sees them). Forget deletes the transcript.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import type { Options } from "@anthropic-ai/claude-agent-sdk";

import { SessionKeeper, SessionKeeperSessionStore, projectKeyForDirectory, type ConversationKey } from "../src/index";
import { runClaudeTurn, type ClaudeQuery } from "../src/claude";
import { newWorker, quietEnv, startE2eServer, startMock, type MockApi, type Worker } from "./e2e";
import type { Server } from "./harness";

let server: Server;
let mock: MockApi;
let sk: SessionKeeper;
let query: ClaudeQuery;

before(async () => {
  query = (await import("@anthropic-ai/claude-agent-sdk")).query;
  [server, mock] = await Promise.all([startE2eServer(), startMock()]);
  sk = new SessionKeeper({ address: server.grpcAddr, timeoutMs: 10_000 });
});

after(async () => {
  sk.close();
  mock.stop();
  assert.equal(await server.stop(), 0, server.log());
});

describe("resume across hosts with SessionKeeperSessionStore (TypeScript SDK, real CLI)", () => {
  it("a turn on worker B resumes worker A's conversation after A lost its config dir; Forget deletes the transcript", async () => {
    const namespace = `e2e-store-${randomUUID().slice(0, 8)}`;
    const key: ConversationKey = { namespace, agent: "coder", conversation: `c-${randomUUID()}` };
    const sessionStore = SessionKeeperSessionStore.fromClient(sk, { namespace });
    // the same checkout path on both workers (the project key is derived from it)
    const cwd = mkdtempSync(join(tmpdir(), "sk-e2e-repo-"));
    const workerA = newWorker();
    const workerB = newWorker();
    const turn = (worker: Worker, host: string, prompt: string) => {
      const options: Options = { cwd, env: quietEnv(mock, worker), sessionStore };
      return runClaudeTurn(sk, key, { provider: "claude", host, configDir: worker.configDir, cwd }, { query, prompt, options });
    };
    const projectKey = projectKeyForDirectory(cwd, quietEnv(mock, workerA));

    const first = await turn(workerA, "worker-a", "turn one on A [mock:ok]");
    assert.equal(first.decision.decision, "DECISION_START_FRESH");
    assert.equal(first.final.report!.action, "ACTION_STORED");
    const sid = first.sessionId;
    assert.ok(sid);
    // the SDK flushed the mirror before it yielded the result: the transcript is held already
    const mirrored = await sessionStore.load({ projectKey, sessionId: sid });
    assert.ok(mirrored && mirrored.length > 0, "the SDK mirrored no entry under the project key");

    workerA.restartLosingTheVolume();
    const before = (await mock.requests()).length;
    const second = await turn(workerB, "worker-b", "turn two on B [mock:ok]");
    assert.equal(second.decision.decision, "DECISION_RESUME", JSON.stringify(second.decision));
    assert.equal(second.decision.resume, sid);
    assert.equal(second.decision.resumableAnywhere, true);
    assert.equal(second.decision.transcriptProjectKey, projectKey);
    assert.equal(second.attempts.length, 1, "no fresh retry: the CLI found the session");
    assert.equal(second.final.report!.resultClass, "RESULT_CLASS_SUCCESS");
    const sent = (await mock.requests()).slice(before);
    assert.ok(
      sent.some((r) => r.user_texts.join(" ").includes("turn one on A [mock:ok]")),
      `the CLI on B did not resume A's conversation: ${JSON.stringify(sent.map((r) => r.user_texts))}`,
    );
    const resumedSid = second.sessionId;
    assert.ok(resumedSid);
    const grown = await sessionStore.load({ projectKey, sessionId: resumedSid });
    assert.ok(
      grown && JSON.stringify(grown).includes("turn two on B [mock:ok]"),
      "B's turn was mirrored to the store",
    );

    assert.equal(await sk.forget(key), true);
    assert.equal(await sessionStore.load({ projectKey, sessionId: resumedSid }), null, "Forget deletes the transcript");
    const third = await sk.decide(key, undefined, { transcriptProjectKey: projectKey });
    assert.equal(third.decision, "DECISION_START_FRESH");
  });
});
