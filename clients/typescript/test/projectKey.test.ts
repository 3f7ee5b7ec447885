// projectKeyForDirectory against the Claude Agent SDK itself (the version package.json pins): the
// project key the SDK computes is read from the SessionStore calls it makes. query() with `resume`
// and a store loads the transcript before it starts the CLI (the key of Options.cwd and
// Options.env); the store's load throws, so no CLI ever runs. deleteSession({ dir, sessionStore })
// deletes under the key of `dir` with process.env. Plus known values, as an anchor.
import { deleteSession, query, type SessionStore } from "@anthropic-ai/claude-agent-sdk";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";

import { projectKeyForDirectory } from "../src/index";
import { sanitizePath } from "../src/projectKey";

class KeyRecorder {
  keys: string[] = [];
  readonly store: SessionStore = {
    append: async () => {},
    load: async (key) => {
      this.keys.push(key.projectKey);
      throw new Error("stop before the CLI starts");
    },
    delete: async (key) => {
      this.keys.push(key.projectKey);
    },
  };
}

/** The key the SDK loads a resumed session with, for these options. */
async function sdkKeyForQuery(cwd: string | undefined, env: Record<string, string | undefined> | undefined): Promise<string> {
  const recorder = new KeyRecorder();
  const q = query({ prompt: "hi", options: { cwd, env, resume: randomUUID(), sessionStore: recorder.store } });
  await assert.rejects(async () => {
    for await (const _ of q) {
      // the load fails first: nothing is yielded
    }
  }, /stop before the CLI starts/);
  assert.equal(recorder.keys.length, 1);
  return recorder.keys[0];
}

/** The key the SDK deletes a session under, for `dir` (process.env applies). */
async function sdkKeyForDir(dir: string): Promise<string> {
  const recorder = new KeyRecorder();
  await deleteSession(randomUUID(), { dir, sessionStore: recorder.store });
  assert.equal(recorder.keys.length, 1);
  return recorder.keys[0];
}

const root = mkdtempSync(join(tmpdir(), "sk-project-key-"));
const real = join(root, "my repo (v2)", "src");
mkdirSync(real, { recursive: true });
const link = join(root, "link");
symlinkSync(real, link);
const unicode = join(root, "über-проект-🚀");
mkdirSync(unicode);
const long = join(root, "x".repeat(120), "y".repeat(120)); // over 200 characters, not created
const config = join(root, ".claude");

const cases: Array<[string, string | undefined, Record<string, string | undefined> | undefined]> = [
  ["a plain directory", root, {}],
  ["spaces and brackets", real, {}],
  ["a symlink (its real path)", link, {}],
  ["non-ASCII and an astral character", unicode, {}],
  ["a path over 200 characters (cut and hashed)", long, {}],
  ["a relative path", ".", {}],
  ["no cwd (the process's)", undefined, {}],
  ["CLAUDE_CODE_PROJECT_DIR_NAME with CLAUDE_CONFIG_DIR", real, { CLAUDE_CONFIG_DIR: config, CLAUDE_CODE_PROJECT_DIR_NAME: "my_project-1" }],
  ["CLAUDE_CODE_PROJECT_DIR_NAME without CLAUDE_CONFIG_DIR", real, { CLAUDE_CODE_PROJECT_DIR_NAME: "my_project-1" }],
  ["an invalid CLAUDE_CODE_PROJECT_DIR_NAME", real, { CLAUDE_CONFIG_DIR: config, CLAUDE_CODE_PROJECT_DIR_NAME: "a/b" }],
  ["a reserved CLAUDE_CODE_PROJECT_DIR_NAME", real, { CLAUDE_CONFIG_DIR: config, CLAUDE_CODE_PROJECT_DIR_NAME: "COM1" }],
  ["a CLAUDE_CODE_PROJECT_DIR_NAME over 64 characters", real, { CLAUDE_CONFIG_DIR: config, CLAUDE_CODE_PROJECT_DIR_NAME: "p".repeat(65) }],
];

describe("projectKeyForDirectory", () => {
  for (const [name, cwd, env] of cases) {
    it(`matches the SDK's key: ${name}`, async () => {
      assert.equal(projectKeyForDirectory(cwd, env), await sdkKeyForQuery(cwd, env));
    });
  }

  it("matches the SDK's key without options.env (process.env applies)", async () => {
    const saved = { dir: process.env.CLAUDE_CONFIG_DIR, name: process.env.CLAUDE_CODE_PROJECT_DIR_NAME };
    try {
      delete process.env.CLAUDE_CONFIG_DIR;
      delete process.env.CLAUDE_CODE_PROJECT_DIR_NAME;
      for (const dir of [real, link, long]) assert.equal(projectKeyForDirectory(dir), await sdkKeyForDir(dir));
      process.env.CLAUDE_CONFIG_DIR = config;
      process.env.CLAUDE_CODE_PROJECT_DIR_NAME = "from-process-env";
      assert.equal(projectKeyForDirectory(real), "from-process-env");
      assert.equal(await sdkKeyForDir(real), "from-process-env");
    } finally {
      for (const [k, v] of [["CLAUDE_CONFIG_DIR", saved.dir], ["CLAUDE_CODE_PROJECT_DIR_NAME", saved.name]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it("gives known values", () => {
    assert.equal(sanitizePath("/home/agent/my repo"), "-home-agent-my-repo");
    assert.equal(sanitizePath("/srv/über"), "-srv--ber");
    assert.equal(sanitizePath("/a/🚀"), "-a---");
    // 200 characters, '-', then the path's Java-style 32-bit hash (h * 31 + c) in base 36, computed
    // independently (Python) for this anchor
    assert.equal(sanitizePath(`/${"a".repeat(250)}`), `-${"a".repeat(199)}-feo44x`);
  });
});
