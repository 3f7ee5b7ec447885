// When sessionkeeper is down: the fail-open / fail-turn option. And the exported names: none
// clashes with the Agent SDK's (it exports a SessionKey type).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { describe, it } from "node:test";

import { SessionKeeper, SessionKeeperError, type SDKResultMessageLike } from "../src/index";

const key = { namespace: "node-test", agent: "coder", conversation: "down" };
const success = (id: string): SDKResultMessageLike => ({ type: "result", subtype: "success", is_error: false, session_id: id });

async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe("when sessionkeeper is unreachable", () => {
  it("fails the turn by default: the agent never runs", async () => {
    const sk = new SessionKeeper({ address: `127.0.0.1:${await closedPort()}`, timeoutMs: 1000, retry: { maxAttempts: 1 } });
    assert.equal(sk.whenUnavailable, "fail-turn");
    const calls: (string | undefined)[] = [];
    await assert.rejects(
      sk.runTurn(key, undefined, async (resume) => (calls.push(resume), success("s"))),
      (e: unknown) => e instanceof SessionKeeperError && e.codeName === "UNAVAILABLE",
    );
    assert.deepEqual(calls, []);
    sk.close();
  });

  it("fails open when asked: runs fresh, skips the report, warns", async () => {
    const sk = new SessionKeeper({
      address: `127.0.0.1:${await closedPort()}`,
      timeoutMs: 1000,
      retry: { maxAttempts: 1 },
      whenUnavailable: "fail-open",
    });
    const warnings: string[] = [];
    const warn = console.warn;
    console.warn = (msg: string) => warnings.push(msg);
    const calls: (string | undefined)[] = [];
    try {
      const turn = await sk.runTurn(key, undefined, async (resume) => (calls.push(resume), success("s")));
      assert.deepEqual(calls, [undefined]);
      assert.equal(turn.decision.decision, "DECISION_START_FRESH");
      assert.equal(turn.final.report, undefined);
      assert.equal(turn.sessionId, "");
      assert.ok(turn.unreachable instanceof SessionKeeperError);
      assert.ok(warnings.some((w) => w.includes("failing open")));
    } finally {
      console.warn = warn;
      sk.close();
    }
  });

  it("rejects an unknown option value", () => {
    assert.throws(() => new SessionKeeper({ address: "127.0.0.1:1", whenUnavailable: "maybe" as "fail-open" }), TypeError);
  });
});

describe("exported names", () => {
  it("do not include the Agent SDK's SessionKey", () => {
    const dts = readFileSync(join(__dirname, "..", "src", "types.d.ts"), "utf8");
    assert.ok(!/\bSessionKey\b/.test(dts), "types.d.ts exports a SessionKey");
    assert.ok(/export interface ConversationKey\b/.test(dts));
    const sdk = readFileSync(join(__dirname, "..", "..", "node_modules", "@anthropic-ai", "claude-agent-sdk", "sdk.d.ts"), "utf8");
    assert.ok(/export declare type SessionKey\b/.test(sdk), "the SDK's own SessionKey (the clash this guards against)");
  });
});
