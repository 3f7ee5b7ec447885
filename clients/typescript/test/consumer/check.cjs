// The check both consumer projects run (scripts/test-clients, step typescript): the installed
// @sessionkeeper/client, loaded the project's way (ESM import or CommonJS require), against a real
// server: a fresh start is stored, resumed, and a lost transcript is cleared with retryFresh; a
// SessionKeeperSessionStore keeps a transcript.
// SK_TS_HARNESS is the client's compiled test harness (it starts the server).
"use strict";

const assert = require("node:assert/strict");

module.exports = async function check(client, how) {
  const { startServer } = require(process.env.SK_TS_HARNESS);
  const server = await startServer();
  const sk = new client.SessionKeeper({ address: server.grpcAddr });
  try {
    const key = { namespace: "consumer", agent: "coder", conversation: `${how}-${Date.now()}` };
    const where = { provider: "claude", host: "worker-1", cwd: "/srv/repo" };
    assert.equal((await sk.decide(key, where)).resume, undefined, "nothing stored yet");
    const stored = await sk.report(key, undefined, where, {
      type: "result", subtype: "success", is_error: false, num_turns: 1, session_id: "s-1",
    });
    assert.equal(stored.sessionId, "s-1");
    assert.equal((await sk.decide(key, where)).resume, "s-1");
    const lost = client.agentResultFromSdk({
      type: "result", subtype: "error_during_execution", is_error: true, num_turns: 0, session_id: "s-1",
      errors: ["No conversation found with session ID: s-1"],
    });
    const cleared = await sk.report(key, "s-1", where, lost);
    assert.equal(cleared.retryFresh, true, "a lost transcript is cleared and retried fresh");
    // the SDK's SessionStore, from the same package entry
    const store = client.SessionKeeperSessionStore.fromClient(sk, { namespace: "consumer" });
    const sub = { projectKey: "proj", sessionId: `${how}-${Date.now()}`, subpath: "subagents/agent-1" };
    await store.append(sub, [{ type: "x", n: 1 }]);
    assert.deepEqual(await store.load(sub), [{ type: "x", n: 1 }]);
    assert.deepEqual(await store.listSubkeys(sub), ["subagents/agent-1"]);
    console.log(`ok: @sessionkeeper/client loaded with ${how} ran the loop against ${server.grpcAddr}`);
  } finally {
    sk.close();
    assert.equal(await server.stop(), 0);
  }
};
