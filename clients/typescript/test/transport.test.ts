// Deadlines, UNAVAILABLE retries, bearer token and TLS options. The metadata and retry tests use an
// in-process fake SessionService that records what the client sent; deadlines, refused
// connections, a late server, bearer tokens (--auth-tokens) and (mutual) TLS use the real server.
import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";

import { SessionKeeper, SessionKeeperError, sessionkeeperProto } from "../src/index";
import { freePort, makeCerts, serveHelp, startServer, success, type Server } from "./harness";

const KEY = { agent: "coder", conversation: "transport" };
// The test certificate names 127.0.0.1 and localhost; naming the server "localhost" avoids Node's
// warning about an IP address as TLS ServerName (real deployments dial a DNS name anyway).
const SNI = { "grpc.ssl_target_name_override": "localhost" };
const FAST = { maxAttempts: 4, initialBackoffMs: 10, maxBackoffMs: 50 };

interface Call {
  method: string;
  request: Record<string, unknown>;
  metadata: Record<string, unknown>;
}

/** Fails the first `failures` calls with `code`, then answers; records every call. */
class Fake {
  failures = 0;
  code = grpc.status.UNAVAILABLE;
  calls: Call[] = [];
  address = "";
  private server = new grpc.Server();

  async start(): Promise<void> {
    const handle =
      (method: string, answer: (req: Record<string, unknown>) => object) =>
      (call: grpc.ServerUnaryCall<Record<string, unknown>, object>, cb: grpc.sendUnaryData<object>) => {
        this.calls.push({ method, request: call.request, metadata: call.metadata.getMap() });
        if (this.failures > 0) {
          this.failures--;
          cb({ code: this.code, details: "fake failure" });
          return;
        }
        cb(null, answer(call.request));
      };
    this.server.addService(sessionkeeperProto().sessionkeeper.v1.SessionService.service, {
      Get: handle("Get", () => ({ decision: "DECISION_START_FRESH", freshReason: "FRESH_REASON_NO_SESSION" })),
      ReportResult: handle("ReportResult", (req) => ({
        resultClass: "RESULT_CLASS_SUCCESS",
        action: "ACTION_STORED",
        sessionId: (req.result as { sessionId: string }).sessionId,
      })),
      Sweep: handle("Sweep", () => ({ deleted: "0" })),
      Forget: handle("Forget", () => ({ existed: false })),
    });
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    this.address = `127.0.0.1:${port}`;
  }

  stop(): void {
    this.server.forceShutdown();
  }
}

describe("metadata and retries (fake server)", () => {
  let fake: Fake;
  before(async () => {
    fake = new Fake();
    await fake.start();
  });
  after(() => fake.stop());

  it("sends the bearer token and extra metadata", async () => {
    fake.calls = [];
    const sk = new SessionKeeper({ address: fake.address, token: "s3cret", metadata: { "x-request-id": "r-1" } });
    await sk.decide(KEY);
    sk.close();
    assert.equal(fake.calls[0].metadata.authorization, "Bearer s3cret");
    assert.equal(fake.calls[0].metadata["x-request-id"], "r-1");
  });

  it("sends no authorization header without a token", async () => {
    fake.calls = [];
    const sk = new SessionKeeper(fake.address);
    await sk.decide(KEY);
    sk.close();
    assert.equal(fake.calls[0].metadata.authorization, undefined);
  });

  it("retries UNAVAILABLE with the same report id", async () => {
    fake.calls = [];
    fake.failures = 2;
    const sk = new SessionKeeper({ address: fake.address, retry: FAST });
    const out = await sk.report(KEY, undefined, undefined, success("sid-1"));
    sk.close();
    const ids = fake.calls.map((c) => c.request.reportId);
    assert.equal(ids.length, 3);
    assert.deepEqual(new Set(ids), new Set([out.reportId]));
  });

  it("bounds the retries", async () => {
    fake.calls = [];
    fake.failures = 100;
    const sk = new SessionKeeper({ address: fake.address, retry: FAST });
    await assert.rejects(sk.decide(KEY), (err: unknown) => {
      assert.ok(err instanceof SessionKeeperError);
      assert.equal(err.codeName, "UNAVAILABLE");
      assert.equal(err.attempts, 4);
      return true;
    });
    sk.close();
    assert.equal(fake.calls.length, 4);
    fake.failures = 0;
  });

  it("retries overload shedding (RESOURCE_EXHAUSTED)", async () => {
    fake.calls = [];
    fake.failures = 2;
    fake.code = grpc.status.RESOURCE_EXHAUSTED;
    const sk = new SessionKeeper({ address: fake.address, retry: FAST });
    assert.equal((await sk.decide(KEY)).decision, "DECISION_START_FRESH");
    sk.close();
    assert.equal(fake.calls.length, 3);
    fake.code = grpc.status.UNAVAILABLE;
  });

  it("does not retry other codes", async () => {
    fake.calls = [];
    fake.failures = 5;
    fake.code = grpc.status.INTERNAL;
    const sk = new SessionKeeper({ address: fake.address, retry: FAST });
    await assert.rejects(sk.decide(KEY), (err: unknown) => err instanceof SessionKeeperError && err.codeName === "INTERNAL");
    sk.close();
    assert.equal(fake.calls.length, 1);
    fake.failures = 0;
    fake.code = grpc.status.UNAVAILABLE;
  });
});

describe("deadlines and connection failures (real server)", () => {
  it("fails UNAVAILABLE after bounded retries when nothing listens", async () => {
    const started = Date.now();
    const sk = new SessionKeeper({ address: `127.0.0.1:${await freePort()}`, retry: FAST, timeoutMs: 2000 });
    await assert.rejects(sk.decide(KEY), (err: unknown) => err instanceof SessionKeeperError && err.codeName === "UNAVAILABLE" && err.attempts === 4);
    sk.close();
    assert.ok(Date.now() - started < 5000);
  });

  it("reaches a server that comes up late by retrying", async () => {
    const port = await freePort();
    let late: Server | undefined;
    const starting = new Promise<void>((resolve, reject) =>
      setTimeout(() => startServer({ listen: `127.0.0.1:${port}`, waitReady: false }).then((s) => { late = s; resolve(); }, reject), 1000),
    );
    const sk = new SessionKeeper({
      address: `127.0.0.1:${port}`,
      retry: { maxAttempts: 30, initialBackoffMs: 50, maxBackoffMs: 500, maxElapsedMs: 30_000 },
    });
    try {
      const d = await sk.decide(KEY);
      assert.equal(d.decision, "DECISION_START_FRESH");
    } finally {
      sk.close();
      await starting;
      await late?.stop();
    }
  });

  it("puts a deadline on every call", async () => {
    const sockets: Socket[] = [];
    const blackHole = createServer((s) => sockets.push(s)); // accepts TCP, never speaks HTTP/2
    await new Promise<void>((r) => blackHole.listen(0, "127.0.0.1", r));
    const addr = blackHole.address();
    const port = typeof addr === "object" && addr ? addr.port : 0;
    const sk = new SessionKeeper({ address: `127.0.0.1:${port}`, timeoutMs: 300, retry: FAST });
    const started = Date.now();
    await assert.rejects(sk.decide(KEY), (err: unknown) => err instanceof SessionKeeperError && err.codeName === "DEADLINE_EXCEEDED" && err.attempts === 1);
    assert.ok(Date.now() - started < 3000);
    sk.close();
    sockets.forEach((s) => s.destroy());
    blackHole.close();
  });

  it("requires a client key with a client certificate", () => {
    assert.throws(() => new SessionKeeper({ address: "127.0.0.1:1", tls: { certChain: "-----BEGIN CERTIFICATE-----" } }), TypeError);
  });

  it("is accepted with a token by a server that requires none", async () => {
    const server = await startServer();
    const sk = new SessionKeeper({ address: server.grpcAddr, token: "any-token" });
    assert.equal((await sk.decide(KEY)).decision, "DECISION_START_FRESH");
    sk.close();
    await server.stop();
  });
});

describe("bearer tokens (real server)", { skip: serveHelp().includes("--auth-tokens") ? false : "this server build has no --auth-tokens" }, () => {
  let server: Server;
  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), "sessionkeeper-tokens-"));
    const digest = createHash("sha256").update("team-a-secret").digest("hex");
    writeFileSync(join(dir, "tokens.toml"), `[[tokens]]\nname = "team-a"\nsha256 = "${digest}"\nnamespaces = ["team-a"]\n`);
    server = await startServer({ args: ["--auth-tokens", join(dir, "tokens.toml")] });
  });
  after(async () => {
    await server?.stop();
  });

  it("authenticates with the token and is limited to its namespaces", async () => {
    const key = { namespace: "team-a", agent: "coder", conversation: "auth" };
    const sk = new SessionKeeper({ address: server.grpcAddr, token: "team-a-secret" });
    const r = await sk.report(key, undefined, undefined, success("sid-auth"));
    assert.equal((await sk.decide(key)).resume, r.sessionId);
    await assert.rejects(sk.decide({ ...key, namespace: "team-b" }), (err: unknown) =>
      err instanceof SessionKeeperError && err.codeName === "PERMISSION_DENIED" && err.attempts === 1);
    sk.close();
    for (const token of [undefined, "wrong"]) {
      const other = new SessionKeeper({ address: server.grpcAddr, token });
      await assert.rejects(other.decide(key), (err: unknown) =>
        err instanceof SessionKeeperError && err.codeName === "UNAUTHENTICATED" && err.attempts === 1);
      other.close();
    }
  });
});

const certs = makeCerts();
const tlsSkip = !certs ? "openssl is not installed (scripts/test-clients installs it)" : !serveHelp().includes("--tls-cert") ? "this server build has no --tls-cert" : false;

describe("TLS (real server)", { skip: tlsSkip }, () => {
  let tls: Server;
  let mtls: Server;
  before(async () => {
    const c = certs!;
    tls = await startServer({ args: ["--tls-cert", c.serverCert, "--tls-key", c.serverKey] });
    mtls = await startServer({ args: ["--tls-cert", c.serverCert, "--tls-key", c.serverKey, "--tls-client-ca", c.ca] });
  });
  after(async () => {
    await tls?.stop();
    await mtls?.stop();
  });

  it("connects with a root certificate (path or PEM)", async () => {
    for (const rootCerts of [certs!.ca, readFileSync(certs!.ca)]) {
      const sk = new SessionKeeper({ address: tls.grpcAddr, tls: { rootCerts }, token: "t", channelOptions: SNI });
      assert.equal((await sk.decide(KEY)).decision, "DECISION_START_FRESH");
      sk.close();
    }
  });

  it("refuses an unknown server and plaintext", async () => {
    const wrongCa = new SessionKeeper({ address: tls.grpcAddr, tls: { rootCerts: certs!.otherCa }, retry: { maxAttempts: 1 }, channelOptions: SNI });
    await assert.rejects(wrongCa.decide(KEY), (err: unknown) => err instanceof SessionKeeperError && err.codeName === "UNAVAILABLE");
    wrongCa.close();
    const plain = new SessionKeeper({ address: tls.grpcAddr, retry: { maxAttempts: 1 }, timeoutMs: 2000 });
    await assert.rejects(plain.decide(KEY), SessionKeeperError);
    plain.close();
  });

  it("presents a client certificate for mutual TLS", async () => {
    const c = certs!;
    const withCert = new SessionKeeper({ address: mtls.grpcAddr, tls: { rootCerts: c.ca, certChain: c.clientCert, privateKey: c.clientKey }, channelOptions: SNI });
    assert.equal((await withCert.decide(KEY)).decision, "DECISION_START_FRESH");
    withCert.close();
    const without = new SessionKeeper({ address: mtls.grpcAddr, tls: { rootCerts: c.ca }, retry: { maxAttempts: 1 }, channelOptions: SNI });
    await assert.rejects(without.decide(KEY), (err: unknown) => err instanceof SessionKeeperError && err.codeName === "UNAVAILABLE");
    without.close();
  });
});
