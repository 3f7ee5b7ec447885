// The README's SessionKeeperSessionStore example compiles (tsc --strict) as an ES module of a
// project that installed the package: "@sessionkeeper/client" resolves to this package by its own
// name (its "exports"), the SDK's types are the pinned ones.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

const PACKAGE_DIR = join(__dirname, "..", "..");
const TSC = join(PACKAGE_DIR, "node_modules", "typescript", "bin", "tsc");

function snippets(marker: string): string[] {
  const readme = readFileSync(join(PACKAGE_DIR, "README.md"), "utf8");
  return [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]).filter((code) => code.includes(marker));
}

describe("README", () => {
  it("the SessionKeeperSessionStore example compiles under tsc --strict", () => {
    const found = snippets("SessionKeeperSessionStore");
    assert.equal(found.length, 1, "one example of the session store");
    const dir = join(PACKAGE_DIR, "dist", "readme-check");
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const file = join(dir, "session-store.mts");
    writeFileSync(file, `${found[0]}\nexport {};\n`);
    const args = [TSC, "--strict", "--noEmit", "--module", "NodeNext", "--moduleResolution", "NodeNext",
      "--target", "ES2022", "--types", "node", "--skipLibCheck", "--pretty", "false", file];
    const done = spawnSync(process.execPath, args, { cwd: PACKAGE_DIR, encoding: "utf8" });
    assert.equal(done.status, 0, done.stdout + done.stderr);
  });
});
