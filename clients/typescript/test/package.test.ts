// The package itself: the shipped proto is the repository's contract, the generated types and the
// loaded service agree with it, and `npm pack` ships the compiled client (its CommonJS and ES module
// entries) and the proto. Installing it into ESM and CommonJS projects is scripts/test-clients' job.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

import { PROTO_DIR, PROTO_FILE, sessionkeeperProto } from "../src/index";
import { TRANSCRIPT_PROTO_FILE } from "../src/proto";
import { REPO_ROOT } from "./harness";

const PACKAGE_DIR = join(__dirname, "..", "..");

describe("package", () => {
  it("ships the repository's protos", () => {
    for (const file of [PROTO_FILE, TRANSCRIPT_PROTO_FILE]) {
      assert.equal(
        readFileSync(join(PROTO_DIR, file), "utf8"),
        readFileSync(join(REPO_ROOT, "proto", file), "utf8"),
        "run `npm run build` to copy the protos and regenerate the types",
      );
    }
  });

  it("loads every RPC of the contract", () => {
    const service = sessionkeeperProto().sessionkeeper.v1.SessionService.service;
    assert.deepEqual(Object.keys(service).sort(), ["Forget", "Get", "Inspect", "ReportResult", "Sweep"]);
    assert.equal(service.Get.path, "/sessionkeeper.v1.SessionService/Get");
    const transcripts = sessionkeeperProto().sessionkeeper.v1.TranscriptService.service;
    assert.deepEqual(Object.keys(transcripts).sort(), [
      "AppendEntries",
      "DeleteTranscript",
      "ListSubkeys",
      "ListTranscriptSessions",
      "LoadTranscript",
    ]);
    assert.equal(transcripts.LoadTranscript.responseStream, true);
  });

  it("packs the compiled client and the proto", () => {
    const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
      cwd: PACKAGE_DIR,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });
    const files = new Set<string>(JSON.parse(out)[0].files.map((f: { path: string }) => f.path));
    const entries = ["dist/src/index.js", "dist/src/index.d.ts", "dist/esm/index.mjs", "dist/esm/index.d.mts"];
    const shipped = [...entries, "dist/src/client.js", "dist/src/sessionStore.js", `proto/${PROTO_FILE}`, `proto/${TRANSCRIPT_PROTO_FILE}`];
    for (const f of [...shipped, "package.json"]) {
      assert.ok(files.has(f), `${f} is not in the package`);
    }
    assert.ok(![...files].some((f) => f.startsWith("dist/test/")), "tests are not shipped");
  });
});
