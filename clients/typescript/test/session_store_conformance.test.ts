// The SessionStore conformance contracts, against SessionKeeperSessionStore on a real server, on
// both stores (the embedded SQLite default and Postgres at SESSIONKEEPER_TEST_DATABASE_URL; a
// missing variable fails the Postgres suite, it never skips).
//
// The npm SDK ships no conformance suite. This is a port to node:test of the union of
//   * the SDK repository's bun:test suite, examples/session-stores/shared/conformance.ts
//     (anthropics/claude-agent-sdk-typescript bfa6b845): its 13 tests, by name, assertions as written;
//   * the Python SDK's run_session_store_conformance (claude-agent-sdk 0.2.189,
//     claude_agent_sdk/testing/session_store_conformance.py): each contract's assertions are run in
//     the TS test of the same contract, on a store of their own, and its contract 14 (summaries,
//     folded here with the TypeScript SDK's foldSessionSummary) is the 14th test.
// Where upstream returns early for a store without an optional method, this port fails instead, and
// the 15th test checks that every optional method is there: no contract is skipped silently.
// Every factory call gives a store in a namespace of its own (the contracts reuse the same keys).
import { foldSessionSummary, type SessionStore } from "@anthropic-ai/claude-agent-sdk";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { SessionKeeperSessionStore } from "../src/index";
import { startServer, type Server } from "./harness";

type SessionKey = { projectKey: string; sessionId: string; subpath?: string };
type SessionStoreEntry = { type: string; [k: string]: unknown };
type Factory = () => Promise<SessionKeeperSessionStore>;

const KEY: SessionKey = { projectKey: "proj", sessionId: "sess" };

// --- upstream TS helpers (conformance.ts) ---------------------------------------------------------

const E = (type: string, extra: Record<string, unknown> = {}) => ({ type, ...extra }) as SessionStoreEntry;

/** Sorted-key stringify so deep-equal ignores object-key order (JSONB-safe). */
function canon(v: unknown): string {
  return JSON.stringify(v, (_k, val) =>
    val && typeof val === "object" && !Array.isArray(val)
      ? Object.fromEntries(
          Object.entries(val as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
        )
      : val,
  );
}

function expectEntries(actual: unknown, expected: SessionStoreEntry[]) {
  assert.equal(canon(actual), canon(expected));
}

// --- upstream Python helper (_e) --------------------------------------------------------------------

/** A test entry: `type` is irrelevant to the contracts. */
const e = (d: Record<string, unknown>): SessionStoreEntry => ({ type: "x", ...d });

/** Fails (instead of skipping) when the store lacks an optional method. */
function need<T>(method: T | undefined, name: string): T {
  assert.ok(method, `SessionKeeperSessionStore must implement ${name}`);
  return method;
}

function contracts(factory: Factory) {
  test("append then load returns same entries in same order", async () => {
    // TS
    {
      const store = await factory();
      const entries = [E("a", { n: 1, nested: { x: [1, 2] } }), E("b", { n: 2 })];
      await store.append(KEY, entries);
      expectEntries(await store.load(KEY), entries);
    }
    // Python 1
    {
      const store = await factory();
      await store.append(KEY, [e({ uuid: "b", n: 1 }), e({ uuid: "a", n: 2 })]);
      assert.deepEqual(await store.load(KEY), [e({ uuid: "b", n: 1 }), e({ uuid: "a", n: 2 })]);
    }
  });

  test("load unknown key returns null", async () => {
    // TS
    {
      const store = await factory();
      assert.equal(await store.load(KEY), null);
      assert.equal(await store.load({ ...KEY, subpath: "subagents/a" }), null);
    }
    // Python 2: also an unknown subpath of a session that was written
    {
      const store = await factory();
      assert.equal(await store.load({ projectKey: "proj", sessionId: "nope" }), null);
      await store.append(KEY, [e({ uuid: "x", n: 1 })]);
      assert.equal(await store.load({ ...KEY, subpath: "nope" }), null);
    }
  });

  test("multiple append calls preserve call order", async () => {
    // TS
    {
      const store = await factory();
      await store.append(KEY, [E("a")]);
      await store.append(KEY, [E("b"), E("c")]);
      await store.append(KEY, [E("d")]);
      expectEntries(await store.load(KEY), [E("a"), E("b"), E("c"), E("d")]);
    }
    // Python 3
    {
      const store = await factory();
      await store.append(KEY, [e({ uuid: "z", n: 1 })]);
      await store.append(KEY, [e({ uuid: "a", n: 2 }), e({ uuid: "m", n: 3 })]);
      await store.append(KEY, [e({ uuid: "b", n: 4 })]);
      assert.deepEqual(await store.load(KEY), [
        e({ uuid: "z", n: 1 }),
        e({ uuid: "a", n: 2 }),
        e({ uuid: "m", n: 3 }),
        e({ uuid: "b", n: 4 }),
      ]);
    }
  });

  test("append([]) is a no-op", async () => {
    // TS
    {
      const store = await factory();
      await store.append(KEY, []);
      assert.equal(await store.load(KEY), null);
      await store.append(KEY, [E("a")]);
      await store.append(KEY, []);
      expectEntries(await store.load(KEY), [E("a")]);
    }
    // Python 4
    {
      const store = await factory();
      await store.append(KEY, [e({ uuid: "a", n: 1 })]);
      await store.append(KEY, []);
      assert.deepEqual(await store.load(KEY), [e({ uuid: "a", n: 1 })]);
    }
  });

  test("subpath keys are stored independently of main", async () => {
    // TS
    {
      const store = await factory();
      await store.append(KEY, [E("main")]);
      await store.append({ ...KEY, subpath: "subagents/x" }, [E("sub")]);
      expectEntries(await store.load(KEY), [E("main")]);
      expectEntries(await store.load({ ...KEY, subpath: "subagents/x" }), [E("sub")]);
    }
    // Python 5
    {
      const store = await factory();
      const sub: SessionKey = { ...KEY, subpath: "subagents/agent-1" };
      await store.append(KEY, [e({ uuid: "m", n: 1 })]);
      await store.append(sub, [e({ uuid: "s", n: 1 })]);
      assert.deepEqual(await store.load(KEY), [e({ uuid: "m", n: 1 })]);
      assert.deepEqual(await store.load(sub), [e({ uuid: "s", n: 1 })]);
    }
  });

  test("projectKey isolation", async () => {
    // TS
    {
      const store = await factory();
      const A = { projectKey: "A", sessionId: "s" };
      const B = { projectKey: "B", sessionId: "s" };
      await store.append(A, [E("a")]);
      await store.append(B, [E("b")]);
      expectEntries(await store.load(A), [E("a")]);
      expectEntries(await store.load(B), [E("b")]);
    }
    // Python 6, with its list_sessions counts
    {
      const store = await factory();
      await store.append({ projectKey: "A", sessionId: "s1" }, [e({ from: "A" })]);
      await store.append({ projectKey: "B", sessionId: "s1" }, [e({ from: "B" })]);
      assert.deepEqual(await store.load({ projectKey: "A", sessionId: "s1" }), [e({ from: "A" })]);
      assert.deepEqual(await store.load({ projectKey: "B", sessionId: "s1" }), [e({ from: "B" })]);
      const listSessions = need(store.listSessions, "listSessions").bind(store);
      assert.equal((await listSessions("A")).length, 1);
      assert.equal((await listSessions("B")).length, 1);
    }
  });

  test("listSessions returns sessionIds for project", async () => {
    // TS
    {
      const store = await factory();
      const listSessions = need(store.listSessions, "listSessions").bind(store);
      await store.append({ projectKey: "P", sessionId: "s1" }, [E("a")]);
      await store.append({ projectKey: "P", sessionId: "s2" }, [E("b")]);
      await store.append({ projectKey: "Q", sessionId: "s3" }, [E("c")]);
      const ids = (await listSessions("P")).map((s) => s.sessionId).sort();
      assert.deepEqual(ids, ["s1", "s2"]);
      const r = await listSessions("P");
      assert.equal(
        r.every((s) => s.mtime > 1e12),
        true,
      );
      assert.deepEqual(await listSessions("never-seen"), []);
    }
    // Python 7
    {
      const store = await factory();
      const listSessions = need(store.listSessions, "listSessions").bind(store);
      await store.append({ projectKey: "proj", sessionId: "a" }, [e({ n: 1 })]);
      await store.append({ projectKey: "proj", sessionId: "b" }, [e({ n: 1 })]);
      await store.append({ projectKey: "other", sessionId: "c" }, [e({ n: 1 })]);
      const sessions = await listSessions("proj");
      assert.deepEqual(sessions.map((s) => s.sessionId).sort(), ["a", "b"]);
      // mtime must be epoch-ms; >1e12 rules out epoch-seconds (≈2001 in ms).
      assert.ok(sessions.every((s) => Number.isFinite(s.mtime) && s.mtime > 1e12));
      assert.deepEqual(await listSessions("never-appended-project"), []);
    }
  });

  test("listSessions excludes subagent subpaths", async () => {
    // TS: only a subpath appended
    {
      const store = await factory();
      const listSessions = need(store.listSessions, "listSessions").bind(store);
      await store.append({ projectKey: "P", sessionId: "s1", subpath: "subagents/x" }, [E("sub")]);
      const ids = (await listSessions("P")).map((s) => s.sessionId);
      assert.ok(!ids.includes("s1"));
    }
    // Python 8: main and subpath appended, the session listed once
    {
      const store = await factory();
      const listSessions = need(store.listSessions, "listSessions").bind(store);
      await store.append({ projectKey: "proj", sessionId: "main" }, [e({ n: 1 })]);
      await store.append({ projectKey: "proj", sessionId: "main", subpath: "subagents/agent-1" }, [e({ n: 1 })]);
      const sessions = await listSessions("proj");
      assert.deepEqual(
        sessions.map((s) => s.sessionId),
        ["main"],
      );
    }
  });

  test("delete main then load returns null", async () => {
    // TS
    {
      const store = await factory();
      const del = need(store.delete, "delete").bind(store);
      await store.append(KEY, [E("a")]);
      await del(KEY);
      assert.equal(await store.load(KEY), null);
      await del({ projectKey: "x", sessionId: "never" });
    }
    // Python 9
    {
      const store = await factory();
      const del = need(store.delete, "delete").bind(store);
      await del({ projectKey: "proj", sessionId: "never-written" });
      await store.append(KEY, [e({ n: 1 })]);
      await del(KEY);
      assert.equal(await store.load(KEY), null);
    }
  });

  test("delete main cascades to subkeys", async () => {
    // TS
    {
      const store = await factory();
      const del = need(store.delete, "delete").bind(store);
      await store.append(KEY, [E("main")]);
      await store.append({ ...KEY, subpath: "subagents/a" }, [E("sa")]);
      await store.append({ ...KEY, subpath: "subagents/b" }, [E("sb")]);
      await store.append({ projectKey: "proj", sessionId: "other" }, [E("o")]);
      await store.append({ projectKey: "proj2", sessionId: "sess" }, [E("p2")]);
      await del(KEY);
      assert.equal(await store.load(KEY), null);
      assert.equal(await store.load({ ...KEY, subpath: "subagents/a" }), null);
      assert.equal(await store.load({ ...KEY, subpath: "subagents/b" }), null);
      expectEntries(await store.load({ projectKey: "proj", sessionId: "other" }), [E("o")]);
      expectEntries(await store.load({ projectKey: "proj2", sessionId: "sess" }), [E("p2")]);
      assert.deepEqual(await need(store.listSubkeys, "listSubkeys").call(store, KEY), []);
    }
    // Python 10
    {
      const store = await factory();
      const del = need(store.delete, "delete").bind(store);
      const sub1: SessionKey = { ...KEY, subpath: "subagents/agent-1" };
      const sub2: SessionKey = { ...KEY, subpath: "subagents/agent-2" };
      const other: SessionKey = { projectKey: "proj", sessionId: "sess2" };
      const otherProj: SessionKey = { projectKey: "other-proj", sessionId: KEY.sessionId };
      await store.append(KEY, [e({ n: 1 })]);
      await store.append(sub1, [e({ n: 1 })]);
      await store.append(sub2, [e({ n: 1 })]);
      await store.append(other, [e({ n: 1 })]);
      await store.append(otherProj, [e({ n: 1 })]);

      await del(KEY);

      assert.equal(await store.load(KEY), null);
      assert.equal(await store.load(sub1), null);
      assert.equal(await store.load(sub2), null);
      const loadedOther = await store.load(other);
      assert.ok(loadedOther !== null && loadedOther.length === 1);
      const loadedOtherProj = await store.load(otherProj);
      assert.ok(loadedOtherProj !== null && loadedOtherProj.length === 1);
      assert.deepEqual(await need(store.listSubkeys, "listSubkeys").call(store, KEY), []);
      const listed = await need(store.listSessions, "listSessions").call(store, KEY.projectKey);
      assert.ok(!listed.map((s) => s.sessionId).includes(KEY.sessionId));
    }
  });

  test("delete with subpath removes only that subkey", async () => {
    // TS
    {
      const store = await factory();
      const del = need(store.delete, "delete").bind(store);
      await store.append(KEY, [E("main")]);
      await store.append({ ...KEY, subpath: "subagents/a" }, [E("sa")]);
      await store.append({ ...KEY, subpath: "subagents/b" }, [E("sb")]);
      await del({ ...KEY, subpath: "subagents/a" });
      expectEntries(await store.load(KEY), [E("main")]);
      assert.equal(await store.load({ ...KEY, subpath: "subagents/a" }), null);
      expectEntries(await store.load({ ...KEY, subpath: "subagents/b" }), [E("sb")]);
    }
    // Python 11
    {
      const store = await factory();
      const del = need(store.delete, "delete").bind(store);
      const sub1: SessionKey = { ...KEY, subpath: "subagents/agent-1" };
      const sub2: SessionKey = { ...KEY, subpath: "subagents/agent-2" };
      await store.append(KEY, [e({ n: 1 })]);
      await store.append(sub1, [e({ n: 1 })]);
      await store.append(sub2, [e({ n: 1 })]);

      await del(sub1);

      assert.equal(await store.load(sub1), null);
      const loadedSub2 = await store.load(sub2);
      assert.ok(loadedSub2 !== null && loadedSub2.length === 1);
      const loadedMain = await store.load(KEY);
      assert.ok(loadedMain !== null && loadedMain.length === 1);
      assert.deepEqual(await need(store.listSubkeys, "listSubkeys").call(store, KEY), ["subagents/agent-2"]);
    }
  });

  test("listSubkeys returns subpaths for the session", async () => {
    // TS
    {
      const store = await factory();
      const listSubkeys = need(store.listSubkeys, "listSubkeys").bind(store);
      await store.append({ ...KEY, subpath: "subagents/a" }, [E("sa")]);
      await store.append({ ...KEY, subpath: "subagents/b" }, [E("sb")]);
      await store.append({ projectKey: "proj", sessionId: "other", subpath: "subagents/c" }, [E("sc")]);
      const subs = (await listSubkeys(KEY)).sort();
      assert.deepEqual(subs, ["subagents/a", "subagents/b"]);
    }
    // Python 12
    {
      const store = await factory();
      const listSubkeys = need(store.listSubkeys, "listSubkeys").bind(store);
      await store.append(KEY, [e({ n: 1 })]);
      await store.append({ ...KEY, subpath: "subagents/agent-1" }, [e({ n: 1 })]);
      await store.append({ ...KEY, subpath: "subagents/agent-2" }, [e({ n: 1 })]);
      await store.append({ projectKey: KEY.projectKey, sessionId: "other-sess", subpath: "subagents/agent-x" }, [
        e({ n: 1 }),
      ]);
      const subkeys = await listSubkeys(KEY);
      assert.deepEqual([...subkeys].sort(), ["subagents/agent-1", "subagents/agent-2"]);
      assert.ok(!subkeys.includes("subagents/agent-x"));
    }
  });

  test("listSubkeys excludes main transcript", async () => {
    // TS
    {
      const store = await factory();
      const listSubkeys = need(store.listSubkeys, "listSubkeys").bind(store);
      await store.append(KEY, [E("main")]);
      assert.deepEqual(await listSubkeys(KEY), []);
      assert.deepEqual(await listSubkeys({ projectKey: "x", sessionId: "never" }), []);
    }
    // Python 13
    {
      const store = await factory();
      const listSubkeys = need(store.listSubkeys, "listSubkeys").bind(store);
      await store.append(KEY, [e({ n: 1 })]);
      assert.deepEqual(await listSubkeys(KEY), []);
      assert.deepEqual(await listSubkeys({ projectKey: "proj", sessionId: "never-appended" }), []);
    }
  });

  test("listSessionSummaries returns persisted fold output", async () => {
    // Python 14, with the TypeScript SDK's foldSessionSummary. Stores must not interpret `data`,
    // only persist it verbatim.
    const store = await factory();
    const listSummaries = need(store.listSessionSummaries, "listSessionSummaries").bind(store);
    const key: SessionKey = { projectKey: "proj", sessionId: "summ-sess" };
    await store.append(key, [
      e({ timestamp: "2024-01-01T00:00:00.000Z", customTitle: "first" }),
      e({ timestamp: "2024-01-01T00:00:01.000Z" }),
    ]);
    await store.append(key, [e({ timestamp: "2024-01-01T00:00:02.000Z", customTitle: "second" })]);
    await store.append({ projectKey: "other", sessionId: "elsewhere" }, [e({ timestamp: "2024-01-01T00:00:00.000Z" })]);
    const summaries = await listSummaries("proj");
    const byId = new Map(summaries.map((s) => [s.sessionId, s]));
    assert.deepEqual([...byId.keys()], ["summ-sess"]);
    const summ = byId.get("summ-sess")!;
    // mtime must be epoch-ms; >1e12 rules out epoch-seconds.
    assert.ok(Number.isFinite(summ.mtime) && summ.mtime > 1e12);
    // Clock alignment: the sidecar's mtime is the storage write time and shares a clock with
    // listSessions().mtime for the same session.
    const lsById = new Map(
      (await need(store.listSessions, "listSessions").call(store, "proj")).map((s) => [s.sessionId, s.mtime]),
    );
    assert.ok(summ.mtime >= lsById.get("summ-sess")!, `${summ.mtime} < ${lsById.get("summ-sess")}`);
    // data is opaque; the contract is that it round-trips into the fold.
    assert.ok(summ.data !== null && typeof summ.data === "object" && !Array.isArray(summ.data));
    const refolded = foldSessionSummary(summ, key, [e({ timestamp: "2024-01-01T00:00:03.000Z" })]);
    assert.equal(refolded.sessionId, "summ-sess");
    // The fold preserves prev.mtime verbatim: mtime is stamped by the adapter, not by the fold.
    assert.equal(refolded.mtime, summ.mtime);
    // Subagent appends must not affect the main session's summary.
    await store.append({ ...key, subpath: "subagents/agent-1" }, [
      e({ timestamp: "2024-01-01T00:00:09.000Z", customTitle: "subagent" }),
    ]);
    const afterSub = new Map((await listSummaries("proj")).map((s) => [s.sessionId, s]));
    assert.deepEqual(afterSub.get("summ-sess")!.data, summ.data);
    assert.deepEqual(await listSummaries("never-appended-project"), []);
    await need(store.delete, "delete").call(store, key);
    assert.deepEqual(await listSummaries("proj"), []);
  });

  test("implements every optional method (no contract is skipped)", async () => {
    const store: SessionStore = await factory();
    for (const method of ["listSessions", "listSessionSummaries", "delete", "listSubkeys"] as const) {
      assert.equal(typeof store[method], "function", `${method} is not implemented`);
    }
  });
}

/** Runs the contracts against a server on one store; every factory call gets a fresh namespace. */
function suite(name: string, serverArgs: () => string[]) {
  describe(`SessionStore conformance: ${name}`, () => {
    let server: Server;
    const stores: SessionKeeperSessionStore[] = [];
    const run = randomUUID().slice(0, 8);
    let n = 0;
    before(async () => {
      server = await startServer({ args: serverArgs() });
    });
    after(async () => {
      for (const s of stores) s.close();
      assert.equal(await server.stop(), 0);
    });
    contracts(async () => {
      const store = new SessionKeeperSessionStore({ address: server.grpcAddr, namespace: `conf-${run}-${n++}` });
      stores.push(store);
      return store;
    });
  });
}

suite("embedded SQLite", () => []);
suite("Postgres", () => {
  const url = process.env.SESSIONKEEPER_TEST_DATABASE_URL;
  assert.ok(
    url,
    "SESSIONKEEPER_TEST_DATABASE_URL is not set: the Postgres conformance suite needs a real Postgres (scripts/test finds or starts one)",
  );
  return ["--database-url", url];
});
