// The converters from SDKResultMessage and thrown errors to AgentResult (no server needed).
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { agentResultFromError, agentResultFromSdk, findResultFrame, isResultMessage } from "../src/index";
import { noConversation, success } from "./harness";

describe("agentResultFromSdk", () => {
  it("converts the lost-transcript frame", () => {
    assert.deepEqual(agentResultFromSdk(noConversation("new-id", "old-id")), {
      isError: true,
      subtype: "error_during_execution",
      sessionId: "new-id",
      numTurns: 0,
      errors: ["No conversation found with session ID: old-id"],
      terminalReason: "",
      apiErrorStatus: 0,
      exception: "",
      resultText: "",
    });
  });

  it("converts a success message and its JSON text", () => {
    const r = agentResultFromSdk(success("sid-1", 4, "all done"));
    assert.deepEqual([r.isError, r.subtype, r.sessionId, r.numTurns, r.resultText], [false, "success", "sid-1", 4, "all done"]);
    assert.deepEqual(agentResultFromSdk(JSON.stringify(success("sid-1", 4, "all done"))), r);
  });

  it("reads terminal_reason and api_error_status", () => {
    const r = agentResultFromSdk({
      type: "result", subtype: "error_max_turns", is_error: true, num_turns: 30, session_id: "s",
      terminal_reason: "max_turns", errors: ["Reached maximum number of turns (30)"], api_error_status: null,
    });
    assert.equal(r.terminalReason, "max_turns");
    assert.equal(r.apiErrorStatus, 0);
    const api = agentResultFromSdk({ type: "result", subtype: "success", is_error: true, num_turns: 1, session_id: "s",
      result: "API Error: 529 overloaded", api_error_status: 529 });
    assert.equal(api.apiErrorStatus, 529);
    assert.ok(api.resultText?.startsWith("API Error: 529"));
  });

  it("reports a missing result message as a failure", () => {
    const r = agentResultFromSdk(undefined);
    assert.equal(r.isError, true);
    assert.match(r.exception!, /no result message/);
  });

  it("passes an AgentResult through and survives odd values", () => {
    const own = { isError: true, exception: "boom" };
    assert.equal(agentResultFromSdk(own), own);
    const odd = agentResultFromSdk(JSON.parse(JSON.stringify({ is_error: true, num_turns: -3, errors: "one error", result: { x: 1 } })));
    assert.deepEqual([odd.numTurns, odd.errors, odd.resultText], [0, ["one error"], ""]);
    assert.equal(agentResultFromSdk("not json").resultText, "not json");
    assert.ok(isResultMessage(success("x")) && !isResultMessage({ type: "assistant" }));
  });

  it("keeps a success frame's verdict when the process exits afterwards", () => {
    const r = agentResultFromSdk(success("sid"), { error: new Error("exited with code 143") });
    assert.equal(r.isError, false);
    assert.match(r.exception ?? "", /143/);
  });

  it("caps huge errors", () => {
    const r = agentResultFromSdk({ is_error: true, errors: Array(500).fill("x".repeat(100_000)) });
    assert.equal(r.errors?.length, 64);
    assert.ok(r.errors!.every((e) => Buffer.byteLength(e) <= 32 * 1024 + 3));
  });
});

describe("agentResultFromError", () => {
  it("converts the SDK's process exit error", () => {
    const err = Object.assign(new Error("Claude Code process exited with code 1"), {
      stderr: "Error: No conversation found with session ID: abc",
    });
    const r = agentResultFromError(err);
    assert.equal(r.isError, true);
    assert.equal(r.numTurns, 0);
    assert.match(r.exception!, /^Error: Claude Code process exited with code 1/);
    assert.match(r.exception!, /No conversation found with session ID: abc/);
    assert.doesNotMatch(r.exception!, /exit code 1; exit code/);
  });

  it("uses the result frame received before the error", () => {
    const r = agentResultFromError(new Error("Claude Code process exited with code 1"), noConversation("n", "o"));
    assert.equal(r.subtype, "error_during_execution");
    assert.deepEqual(r.errors, ["No conversation found with session ID: o"]);
    assert.match(r.exception!, /exited with code 1/);
  });

  it("finds a result frame on a child process error's stdout", () => {
    const stdout = [JSON.stringify({ type: "system", subtype: "init" }), JSON.stringify(noConversation("n", "o"))].join("\n");
    const err = Object.assign(new Error("Command failed: claude -p --resume o"), {
      status: 1, signal: null, stdout: Buffer.from(stdout), stderr: Buffer.from(""),
    });
    const r = agentResultFromError(err);
    assert.equal(r.subtype, "error_during_execution");
    assert.match(r.exception!, /exit code 1/);
    assert.equal(r.apiErrorStatus, 0, "an exit status is not an HTTP status");
    assert.deepEqual(findResultFrame(stdout), noConversation("n", "o"));
    assert.equal(findResultFrame("nothing"), undefined);
  });

  it("describes errno codes, signals, causes, aborts and non-errors", () => {
    const reset = agentResultFromError(Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }));
    assert.match(reset.exception!, /ECONNRESET/);
    const killed = agentResultFromError(Object.assign(new Error("Command failed"), { signal: "SIGKILL", code: null }));
    assert.match(killed.exception!, /signal SIGKILL/);
    const caused = agentResultFromError(new Error("run failed", { cause: new Error("ETIMEDOUT") }));
    assert.match(caused.exception!, /caused by Error: ETIMEDOUT/);
    const abort = new Error("Claude Code process aborted by user");
    abort.name = "AbortError";
    assert.match(agentResultFromError(abort).exception!, /^AbortError: /);
    assert.equal(agentResultFromError("plain string").exception, "thrown: plain string");
    const withStatus = agentResultFromError(Object.assign(new Error("Too Many Requests"), { status: 429 }));
    assert.equal(withStatus.apiErrorStatus, 429);
  });

  it("uses a result message carried by the error", () => {
    const err = Object.assign(new Error("the run ended with an error result"), { resultMessage: noConversation("n", "o") });
    assert.equal(agentResultFromError(err).subtype, "error_during_execution");
  });

  it("keeps the tail of a huge stderr under the server's 8 KiB", () => {
    const err = Object.assign(new Error("failed"), { exitCode: 1, stderr: "noise\n".repeat(100_000) + "Error: invalid token" });
    const r = agentResultFromError(err);
    assert.ok(Buffer.byteLength(r.exception!) < 8 * 1024);
    assert.ok(r.exception!.endsWith("Error: invalid token"));
  });
});
