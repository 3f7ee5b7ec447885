// The converters are typed against the SDKs' own types (the versions package.json pins): tsc
// --strict accepts the SDK's result message and rejects an assistant message. The negative check
// fails when the code accepts the wrong message: it requires a type error on exactly the lines
// marked `expect-error`, and no other error.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

const PACKAGE_DIR = join(__dirname, "..", "..");
const DIR = join(PACKAGE_DIR, "test", "typecheck");
const TSC = join(PACKAGE_DIR, "node_modules", "typescript", "bin", "tsc");

function tsc(file: string) {
  const args = [TSC, "--strict", "--noEmit", "--module", "NodeNext", "--moduleResolution", "NodeNext",
    "--target", "ES2022", "--types", "node", "--skipLibCheck", "--pretty", "false", join(DIR, file)];
  return spawnSync(process.execPath, args, { cwd: PACKAGE_DIR, encoding: "utf8" });
}

describe("types", () => {
  it("accepts the SDK's result message and thread events", () => {
    const done = tsc("accepts-result-message.ts");
    assert.equal(done.status, 0, done.stdout + done.stderr);
  });

  it("SessionKeeperSessionStore is the SDK's SessionStore, every optional method included", () => {
    const done = tsc("session-store-is-an-sdk-session-store.ts");
    assert.equal(done.status, 0, done.stdout + done.stderr);
  });

  it("rejects an assistant message passed where a result is expected", () => {
    const file = "rejects-assistant-message.ts";
    const lines = readFileSync(join(DIR, file), "utf8").split("\n");
    const expected = lines.flatMap((l, i) => (l.endsWith("// expect-error") ? [i + 1] : []));
    assert.ok(expected.length > 0);
    const done = tsc(file);
    assert.notEqual(done.status, 0, `tsc accepted an assistant message:\n${done.stdout}`);
    const reported = [...done.stdout.matchAll(/rejects-assistant-message\.ts\((\d+),\d+\): error TS(\d+)/g)];
    assert.deepEqual(
      [...new Set(reported.map((m) => Number(m[1])))].sort((a, b) => a - b),
      expected,
      done.stdout,
    );
    for (const m of reported) assert.ok(["2345", "2559", "2353", "2322"].includes(m[2]), done.stdout);
  });
});
