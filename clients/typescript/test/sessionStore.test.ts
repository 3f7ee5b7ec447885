// SessionKeeperSessionStore's own rules, against a real server (embedded SQLite; the conformance
// suite covers both stores): the append id the SDK's retry of a batch reuses, the summary folded
// again after a lost compare-and-set, the split of an append over 4 MiB, a load resumed after its
// stream broke, the client's options (fromClient, the token), and runClaudeTurn's project key.
// The failures are real: a response dropped by a client interceptor after the server answered, a
// TCP connection cut mid-stream by a proxy, a second writer on the same session.
import { foldSessionSummary, type Options, type SDKMessage } from "@anthropic-ai/claude-agent-sdk";
import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { connect, createServer, type Server as NetServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import { runClaudeTurn } from "../src/claude";
import {
  SessionKeeper,
  SessionKeeperError,
  SessionKeeperSessionStore,
  projectKeyForDirectory,
  type SessionStoreOptions,
  type TranscriptEntry,
} from "../src/index";
import { startServer, success, type Server } from "./harness";

let server: Server;
const stores: SessionKeeperSessionStore[] = [];
const run = randomUUID().slice(0, 8);
let n = 0;
const newNamespace = () => `store-${run}-${n++}`;

function store(options: Partial<SessionStoreOptions> = {}): SessionKeeperSessionStore {
  const s = new SessionKeeperSessionStore({ address: server.grpcAddr, namespace: newNamespace(), ...options });
  stores.push(s);
  return s;
}

/** What an interceptor saw of one call: its method (the last path segment) and request. */
interface Seen {
  method: string;
  request: Record<string, unknown>;
}

/**
 * A client interceptor that records every request and, while `dropNext` says so, lets a call reach
 * the server but replaces its answer with UNAVAILABLE: the response was lost on the way back.
 */
class Wire {
  seen: Seen[] = [];
  dropNext: (s: Seen) => boolean = () => false;
  readonly interceptor: grpc.Interceptor = (options, nextCall) => {
    const method = options.method_definition.path.split("/").pop()!;
    let seen: Seen | undefined;
    let drop = false;
    return new grpc.InterceptingCall(nextCall(options), {
      sendMessage: (message: Record<string, unknown>, next: (m: unknown) => void) => {
        seen = { method, request: message };
        this.seen.push(seen);
        drop = this.dropNext(seen);
        next(message);
      },
      start: (metadata, listener, next) => {
        next(metadata, {
          // the message goes on (grpc-js holds the status until it does); the status decides
          onReceiveMessage: (message: unknown, nextMessage: (m: unknown) => void) => nextMessage(message),
          onReceiveStatus: (status: grpc.StatusObject, nextStatus: (s: grpc.StatusObject) => void) => {
            nextStatus(
              drop && status.code === grpc.status.OK
                ? { ...status, code: grpc.status.UNAVAILABLE, details: "response lost (test)" }
                : status,
            );
          },
        });
      },
    });
  };
  appends(): Seen[] {
    return this.seen.filter((s) => s.method === "AppendEntries");
  }
}

function wired(wire: Wire, options: Partial<SessionStoreOptions> = {}): SessionKeeperSessionStore {
  return store({ channelOptions: { interceptors: [wire.interceptor] }, ...options });
}

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const s of stores) s.close();
  assert.equal(await server.stop(), 0);
});

const KEY = { projectKey: "proj", sessionId: "sess" };
/** A subagent's transcript: its appends carry no summary, so every AppendEntries is the batch's. */
const SUB = { ...KEY, subpath: "subagents/agent-1" };

describe("append ids", () => {
  it("an append the SDK retries after a lost response reuses its append id: stored once", async () => {
    const wire = new Wire();
    // no retry inside the store: the rejection goes to the SDK, which retries with the same batch
    const s = wired(wire, { retry: { maxAttempts: 1 } });
    const batch: TranscriptEntry[] = [
      { type: "x", n: 1, nested: { a: 1, b: 2 } },
      { type: "x", n: 2 },
    ];
    wire.dropNext = () => true;
    await assert.rejects(s.append(SUB, batch), (e: unknown) => e instanceof SessionKeeperError && e.code === grpc.status.UNAVAILABLE);
    wire.dropNext = () => false;
    // the SDK's retry: the same entries (here rebuilt with another key order)
    await s.append(SUB, [
      { n: 1, type: "x", nested: { b: 2, a: 1 } },
      { type: "x", n: 2 },
    ]);
    const [first, retry] = wire.appends();
    assert.ok(first.request.appendId, "an append id is sent");
    assert.equal(retry.request.appendId, first.request.appendId, "the retry reuses the failed call's id");
    // entries without uuid: only the append id keeps them from being stored twice
    assert.deepEqual(await s.load(SUB), batch);
    // the next batch gets an id of its own
    await s.append(SUB, [{ type: "x", n: 3 }]);
    const third = wire.appends()[2];
    assert.notEqual(third.request.appendId, first.request.appendId);
    assert.equal((await s.load(SUB))!.length, 3);
  });

  it("another batch after a failure gets a new id; append([]) sends nothing", async () => {
    const wire = new Wire();
    const s = wired(wire, { retry: { maxAttempts: 1 } });
    wire.dropNext = () => true;
    await assert.rejects(s.append(SUB, [{ type: "x", n: 1 }]));
    wire.dropNext = () => false;
    await s.append(SUB, [{ type: "x", n: 2 }]);
    await s.append(SUB, []);
    const ids = wire.appends().map((a) => a.request.appendId);
    assert.equal(ids.length, 2, "append([]) makes no call");
    assert.notEqual(ids[0], ids[1]);
    // the failed call had reached the server: its batch is there, and the other one once
    assert.deepEqual(await s.load(SUB), [
      { type: "x", n: 1 },
      { type: "x", n: 2 },
    ]);
  });
});

describe("summaries", () => {
  const prompt = (text: string, at: string): TranscriptEntry => ({
    type: "user",
    uuid: randomUUID(),
    timestamp: at,
    cwd: "/srv/repo",
    message: { role: "user", content: text },
  });
  const title = (t: string): TranscriptEntry => ({ type: "custom-title", customTitle: t });

  it("a lost compare-and-set is folded again over the stored summary", async () => {
    const namespace = newNamespace();
    const wireA = new Wire();
    const wireB = new Wire();
    const a = wired(wireA, { namespace });
    const b = wired(wireB, { namespace });
    const batch1 = [prompt("first question", "2026-01-01T00:00:00.000Z"), title("one")];
    const batch2 = [prompt("second question", "2026-01-01T00:01:00.000Z"), title("two")];
    const batch3 = [prompt("third question", "2026-01-01T00:02:00.000Z")];
    await a.append(KEY, batch1);
    await b.append(KEY, batch2); // b has never seen the summary: its CAS (if_version 0) loses
    await a.append(KEY, batch3); // a's cached version is stale now: loses too
    const expected = foldSessionSummary(undefined, KEY, [...batch1, ...batch2, ...batch3]).data;
    const [summary] = await a.listSessionSummaries(KEY.projectKey);
    assert.deepEqual(summary.data, expected, "the stored summary folds every batch, in order");
    assert.equal(summary.sessionId, KEY.sessionId);
    // each lost CAS cost exactly one summary-only write over the version it was shown
    const summaryOnly = (w: Wire) =>
      w.appends().filter((s) => (s.request.entries as string[]).length === 0).map((s) => s.request.summary);
    assert.deepEqual(
      summaryOnly(wireB).map((x) => (x as { ifVersion: number }).ifVersion),
      [1],
    );
    assert.deepEqual(
      summaryOnly(wireA).map((x) => (x as { ifVersion: number }).ifVersion),
      [2],
    );
    // a's cache is warm again: the next append writes in one call
    const before = wireA.appends().length;
    await a.append(KEY, [title("four")]);
    assert.equal(wireA.appends().length, before + 1);
    const [latest] = await b.listSessionSummaries(KEY.projectKey);
    assert.equal(latest.data.customTitle, "four");
  });

  it("a subpath append sends no summary; a load warms the cache", async () => {
    const namespace = newNamespace();
    const writer = store({ namespace });
    await writer.append(KEY, [prompt("hello", "2026-01-01T00:00:00.000Z")]);
    const wire = new Wire();
    const reader = wired(wire, { namespace });
    await reader.append({ ...KEY, subpath: "subagents/agent-1" }, [title("sub")]);
    assert.equal(wire.appends()[0].request.summary, null);
    await reader.load(KEY); // the first chunk carries the summary
    await reader.append(KEY, [title("main")]);
    const appends = wire.appends();
    assert.equal(appends.length, 2, "no lost compare-and-set after a load");
    assert.equal((appends[1].request.summary as { ifVersion: number }).ifVersion, 1);
  });
});

describe("large appends", () => {
  it("an append over 4 MiB is split into <id>.0, <id>.1, … under 4 MiB each, retried part by part", async () => {
    const wire = new Wire();
    const s = wired(wire, { retry: { maxAttempts: 1 } });
    const big = (i: number): TranscriptEntry => ({ type: "x", i, text: String(i % 10).repeat(900 * 1024) });
    const batch = Array.from({ length: 6 }, (_, i) => big(i)); // ~5.4 MB, each entry under 1 MiB
    // the second part's answer is lost: the SDK retries the whole batch
    wire.dropNext = (seen) => String(seen.request.appendId).endsWith(".1") && wire.appends().length === 2;
    await assert.rejects(s.append(KEY, batch));
    wire.dropNext = () => false;
    await s.append(KEY, batch);
    // (a summary-only write after a lost compare-and-set would carry no entries)
    const parts = wire.appends().filter((p) => (p.request.entries as string[]).length > 0);
    const id = String(parts[0].request.appendId).replace(/\.0$/, "");
    assert.deepEqual(
      parts.map((p) => p.request.appendId),
      [`${id}.0`, `${id}.1`, `${id}.0`, `${id}.1`],
    );
    for (const p of parts) {
      const bytes = (p.request.entries as string[]).reduce((sum, e) => sum + Buffer.byteLength(e), 0);
      assert.ok(bytes < 4 * 1024 * 1024, `a part of ${bytes} bytes`);
    }
    assert.equal(parts[0].request.summary, null, "only the last part carries the summary");
    assert.ok(parts[1].request.summary);
    const loaded = await s.load(KEY);
    assert.deepEqual(
      loaded!.map((e) => e.i),
      [0, 1, 2, 3, 4, 5],
    );
    assert.deepEqual(loaded, batch);
  });
});

/** A TCP proxy to the server that cuts its first connection once `cutAfter` bytes came back. */
class CuttingProxy {
  address = "";
  downstream: number[] = [];
  private server: NetServer;
  private sockets = new Set<Socket>();

  constructor(target: string, cutAfter: number) {
    const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
    this.server = createServer((client) => {
      const index = this.downstream.push(0) - 1;
      const upstream = connect(port, host);
      for (const sock of [client, upstream]) {
        this.sockets.add(sock);
        sock.on("error", () => {});
        sock.on("close", () => this.sockets.delete(sock));
      }
      client.pipe(upstream);
      upstream.on("data", (data: Buffer) => {
        this.downstream[index] += data.length;
        client.write(data);
        if (index === 0 && this.downstream[index] >= cutAfter) {
          client.destroy();
          upstream.destroy();
        }
      });
      upstream.on("close", () => client.destroy());
      client.on("close", () => upstream.destroy());
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const addr = this.server.address();
    this.address = `127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
  }

  stop(): void {
    for (const s of this.sockets) s.destroy();
    this.server.close();
  }
}

describe("loads", () => {
  it("a load whose stream breaks resumes after the last entry received", async () => {
    const namespace = newNamespace();
    const writer = store({ namespace });
    const entries = Array.from({ length: 40 }, (_, i): TranscriptEntry => ({ type: "x", i, text: "y".repeat(100_000) }));
    for (let i = 0; i < entries.length; i += 10) await writer.append(KEY, entries.slice(i, i + 10));
    const total = entries.reduce((sum, e) => sum + JSON.stringify(e).length, 0); // ~4 MB: 4 chunks or so

    const proxy = new CuttingProxy(server.grpcAddr, 1_600_000);
    await proxy.start();
    try {
      const wire = new Wire();
      const reader = store({
        address: proxy.address,
        namespace,
        channelOptions: { interceptors: [wire.interceptor] },
        retry: { initialBackoffMs: 10, maxBackoffMs: 50 },
      });
      assert.deepEqual(await reader.load(KEY), entries);
      const loads = wire.seen.filter((s) => s.method === "LoadTranscript").map((s) => s.request);
      assert.equal(loads.length, 2, "one broken stream, one resumed");
      assert.equal(String(loads[0].afterSeq), "0");
      const resumedAfter = Number(loads[1].afterSeq);
      assert.ok(resumedAfter > 0 && resumedAfter < entries.length, `resumed after seq ${resumedAfter}`);
      assert.ok(proxy.downstream.length >= 2, "a second connection");
      const secondPass = proxy.downstream.slice(1).reduce((a, b) => a + b, 0);
      // a load started over would send all of it again
      assert.ok(secondPass < total - 500_000, `the resumed stream sent ${secondPass} of ${total} bytes again`);
    } finally {
      proxy.stop();
    }
  });

  it("a transcript that was never written loads as null, and so does a deleted one", async () => {
    const s = store();
    assert.equal(await s.load(KEY), null);
    await s.append(KEY, [{ type: "x" }]);
    await s.delete(KEY);
    assert.equal(await s.load(KEY), null);
  });
});

describe("construction", () => {
  it("fromClient shares the client's channel, token and namespace rule", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sessionkeeper-tokens-"));
    const digest = createHash("sha256").update("secret-token").digest("hex");
    writeFileSync(join(dir, "tokens.toml"), `[[tokens]]\nname = "acme"\nsha256 = "${digest}"\nnamespaces = ["acme"]\n`);
    const tokenServer = await startServer({ args: ["--auth-tokens", join(dir, "tokens.toml")] });
    try {
      const sk = new SessionKeeper({ address: tokenServer.grpcAddr, token: "secret-token" });
      const s = SessionKeeperSessionStore.fromClient(sk, { namespace: "acme" });
      await s.append(KEY, [{ type: "x", n: 1 }]);
      assert.deepEqual(await s.load(KEY), [{ type: "x", n: 1 }]);
      const outside = SessionKeeperSessionStore.fromClient(sk, { namespace: "other" });
      await assert.rejects(outside.load(KEY), (e: unknown) => e instanceof SessionKeeperError && e.code === grpc.status.PERMISSION_DENIED);
      const anonymous = new SessionKeeperSessionStore({ address: tokenServer.grpcAddr, namespace: "acme" });
      await assert.rejects(anonymous.load(KEY), (e: unknown) => e instanceof SessionKeeperError && e.code === grpc.status.UNAUTHENTICATED);
      anonymous.close();
      s.close(); // the client's channel stays open
      assert.equal((await sk.decide({ namespace: "acme", agent: "a", conversation: "c" })).decision, "DECISION_START_FRESH");
      sk.close();
    } finally {
      assert.equal(await tokenServer.stop(), 0);
    }
  });
});

describe("runClaudeTurn", () => {
  async function* answer(sessionId: string): AsyncGenerator<SDKMessage> {
    yield success(sessionId) as unknown as SDKMessage;
  }

  it("sends the SDK's project key with Get when the options carry a sessionStore, none otherwise", async () => {
    const wire = new Wire();
    const sk = new SessionKeeper({ address: server.grpcAddr, channelOptions: { interceptors: [wire.interceptor] } });
    try {
      const cwd = mkdtempSync(join(tmpdir(), "sk project dir-"));
      const env = { CLAUDE_CONFIG_DIR: join(cwd, ".claude") };
      const key = { namespace: newNamespace(), agent: "coder", conversation: "c1" };
      const sessionStore = SessionKeeperSessionStore.fromClient(sk, { namespace: key.namespace });
      const options: Options = { cwd, env, sessionStore };
      await runClaudeTurn(sk, key, undefined, { query: () => answer(randomUUID()), prompt: "hi", options });
      await runClaudeTurn(sk, key, undefined, { query: () => answer(randomUUID()), prompt: "hi", options: { cwd, env } });
      const gets = wire.seen.filter((s) => s.method === "Get").map((s) => s.request.transcriptProjectKey);
      assert.deepEqual(gets, [projectKeyForDirectory(cwd, env), ""]);
      assert.match(String(gets[0]), /^-tmp-sk-project-dir-/);
      const named = { ...env, CLAUDE_CODE_PROJECT_DIR_NAME: "my-project" };
      await runClaudeTurn(sk, key, undefined, {
        query: () => answer(randomUUID()),
        prompt: "hi",
        options: { cwd, env: named, sessionStore },
      });
      assert.equal(wire.seen.filter((s) => s.method === "Get").pop()!.request.transcriptProjectKey, "my-project");
    } finally {
      sk.close();
    }
  });
});
