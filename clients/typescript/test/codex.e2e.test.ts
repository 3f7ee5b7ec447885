// End to end through the real Codex CLI (the pinned @openai/codex that @openai/codex-sdk runs),
// driven by runCodexTurn over the SDK's thread events and by agentResultFromCodexExec over
// `codex exec --json` output, against a real sessionkeeper server; the only fake is the model API
// (the mock's Responses API). Success, resume, lost thread.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import type { Codex } from "@openai/codex-sdk";

import { SessionKeeper, type Binding, type ConversationKey } from "../src/index";
import { agentResultFromCodexExec, codexExecArgs, runCodexTurn } from "../src/codex";
import { codexEnv, codexHome, newWorker, startE2eServer, startMock, type MockApi, type Worker } from "./e2e";
import type { Server } from "./harness";

let server: Server;
let mock: MockApi;
let sk: SessionKeeper;
let CodexClass: typeof Codex;

const CODEX_BIN = join(__dirname, "..", "..", "node_modules", "@openai", "codex", "bin", "codex.js");

before(async () => {
  CodexClass = (await import("@openai/codex-sdk")).Codex;
  [server, mock] = await Promise.all([startE2eServer(), startMock()]);
  sk = new SessionKeeper({ address: server.grpcAddr, timeoutMs: 10_000 });
});

after(async () => {
  sk.close();
  mock.stop();
  assert.equal(await server.stop(), 0, server.log());
});

const newKey = (): ConversationKey => ({ namespace: "e2e-ts", agent: "codex", conversation: `x-${randomUUID()}` });
const bindingOf = (w: Worker): Binding => ({ provider: "codex", host: "e2e-worker", configDir: join(w.root, "codex-home"), cwd: w.cwd });

describe("Codex end to end", () => {
  it("@openai/codex-sdk: success, resume, lost thread", async () => {
    const worker = newWorker();
    const key = newKey();
    const codex = new CodexClass({ env: codexEnv(mock, worker) });
    const turn = (input: string) =>
      runCodexTurn(sk, key, bindingOf(worker), {
        codex,
        input,
        threadOptions: { workingDirectory: worker.cwd, skipGitRepoCheck: true },
      });

    const first = await turn("sdk one [mock:ok]");
    assert.equal(first.decision.decision, "DECISION_START_FRESH");
    assert.equal(first.final.output!.error, undefined, String(first.final.output!.error));
    const threadId = first.final.result.sessionId!;
    assert.ok(threadId);
    assert.equal(first.final.report!.action, "ACTION_STORED");
    assert.equal(first.sessionId, threadId);

    const seen = (await mock.requests()).length;
    const second = await turn("sdk two [mock:ok]");
    assert.equal(second.decision.resume, threadId);
    assert.equal(second.final.report!.resultClass, "RESULT_CLASS_SUCCESS");
    assert.equal(second.sessionId, threadId);
    const sent = (await mock.requests()).slice(seen);
    assert.ok(sent.some((r) => r.user_texts.join(" ").includes("sdk one [mock:ok]")), "codex did not resume");

    rmSync(join(codexHome(mock, worker), "sessions"), { recursive: true, force: true });
    const third = await turn("sdk three [mock:ok]");
    assert.equal(third.decision.resume, threadId);
    assert.equal(third.attempts.length, 2);
    const [gone, fresh] = third.attempts;
    assert.ok(gone.output!.error instanceof Error);
    assert.equal(gone.result.isError, true);
    assert.equal(gone.result.numTurns, 0);
    assert.equal(gone.report!.resultClass, "RESULT_CLASS_SESSION_GONE", JSON.stringify(gone.result));
    assert.equal(gone.report!.action, "ACTION_CLEARED");
    assert.equal(gone.report!.retryFresh, true);
    assert.equal(fresh.report!.action, "ACTION_STORED");
    assert.ok(fresh.report!.sessionId && fresh.report!.sessionId !== threadId);
  });

  it("codex exec --json: success, resume, lost thread", async () => {
    const worker = newWorker();
    const key = newKey();
    const env = codexEnv(mock, worker);
    const run = async (resume: string | undefined, prompt: string) => {
      const done = spawnSync(process.execPath, [CODEX_BIN, ...codexExecArgs(prompt, resume, ["--skip-git-repo-check"])], {
        cwd: worker.cwd,
        env,
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
        timeout: 120_000,
      });
      return agentResultFromCodexExec(done.stdout, done.status, done.stderr);
    };
    const turn = (prompt: string) => sk.runTurn(key, bindingOf(worker), (resume) => run(resume, prompt));

    const first = await turn("exec one [mock:ok]");
    const threadId = first.final.result.sessionId!;
    assert.ok(threadId && !first.final.result.isError, JSON.stringify(first.final.result));
    assert.equal(first.final.report!.action, "ACTION_STORED");

    const second = await turn("exec two [mock:ok]");
    assert.equal(second.decision.resume, threadId);
    assert.equal(second.sessionId, threadId);

    rmSync(join(codexHome(mock, worker), "sessions"), { recursive: true, force: true });
    const third = await turn("exec three [mock:ok]");
    assert.equal(third.attempts.length, 2);
    const [gone, fresh] = third.attempts;
    assert.equal(gone.result.numTurns, 0);
    assert.equal(gone.report!.resultClass, "RESULT_CLASS_SESSION_GONE", JSON.stringify(gone.result));
    assert.equal(gone.report!.action, "ACTION_CLEARED");
    assert.equal(fresh.report!.action, "ACTION_STORED");
    assert.notEqual(fresh.report!.sessionId, threadId);
  });
});
