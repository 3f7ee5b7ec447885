// Start and stop a real sessionkeeper server for the tests, and make test certificates.
// The binary is $SESSIONKEEPER_BIN or target/release/sessionkeeper of this repository (built with
// `cargo build --release --locked -p sessionkeeper` when missing); it runs on port 0 with the embedded SQLite store in a temp
// dir, and the test learns its ports from the JSON "sessionkeeper listening" log line.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

// dist/test/harness.js → the repository root is four levels up (clients/typescript/dist/test)
export const REPO_ROOT = resolve(__dirname, "..", "..", "..", "..");

export function serverBinary(): string {
  if (process.env.SESSIONKEEPER_BIN) return process.env.SESSIONKEEPER_BIN;
  const binary = join(REPO_ROOT, "target", "release", "sessionkeeper");
  if (!existsSync(binary)) {
    execFileSync("cargo", ["build", "--release", "--locked", "-p", "sessionkeeper"], { cwd: REPO_ROOT, stdio: "inherit" });
  }
  return binary;
}

/** The environment without anything that would point the server elsewhere (Postgres, tokens). */
function serverEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith("SESSIONKEEPER_") && k !== "DATABASE_URL"),
  );
}

export function serveHelp(): string {
  return execFileSync(serverBinary(), ["serve", "--help"], { env: serverEnv(), encoding: "utf8" });
}

export interface Server {
  grpcAddr: string;
  metricsAddr: string;
  process: ChildProcess;
  log(): string;
  stop(): Promise<number | null>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function ready(metricsAddr: string): Promise<boolean> {
  try {
    const res = await fetch(`http://${metricsAddr}/readyz`, { signal: AbortSignal.timeout(2000) });
    return res.status === 200;
  } catch {
    return false;
  }
}

export async function startServer(
  options: { args?: string[]; listen?: string; waitReady?: boolean; timeoutMs?: number } = {},
): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), "sessionkeeper-ts-"));
  const logPath = join(dir, "server.log");
  const fd = openSync(logPath, "w");
  const child = spawn(
    serverBinary(),
    [
      "serve",
      "--listen",
      options.listen ?? "127.0.0.1:0",
      "--metrics-listen",
      "127.0.0.1:0",
      "--data-dir",
      join(dir, "data"),
      "--log-format",
      "json",
      ...(options.args ?? []),
    ],
    { stdio: ["ignore", fd, fd], env: serverEnv() },
  );
  closeSync(fd);
  // a test process that exits without stopping its server still takes it down
  const reap = () => child.kill("SIGTERM");
  process.once("exit", reap);
  let exited = false;
  child.on("exit", () => (exited = true));
  const log = () => readFileSync(logPath, "utf8");
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  let addrs: { grpc: string; metrics: string } | undefined;
  while (!addrs) {
    for (const line of log().split("\n")) {
      try {
        const rec = JSON.parse(line);
        if (rec.message === "sessionkeeper listening") addrs = { grpc: rec.grpc_addr, metrics: rec.metrics_addr };
      } catch {
        // not a JSON line
      }
    }
    if (addrs) break;
    if (exited || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`sessionkeeper did not start:\n${log()}`);
    }
    await sleep(50);
  }
  const server: Server = {
    grpcAddr: addrs.grpc,
    metricsAddr: addrs.metrics,
    process: child,
    log,
    stop: () =>
      new Promise((resolveStop) => {
        if (exited) return resolveStop(child.exitCode);
        const killer = setTimeout(() => child.kill("SIGKILL"), 30_000);
        child.once("exit", (code) => {
          clearTimeout(killer);
          process.removeListener("exit", reap);
          resolveStop(code);
        });
        child.kill("SIGTERM");
      }),
  };
  while (options.waitReady !== false && !(await ready(server.metricsAddr))) {
    if (exited || Date.now() > deadline) {
      await server.stop();
      throw new Error(`sessionkeeper did not become ready:\n${log()}`);
    }
    await sleep(50);
  }
  return server;
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

export interface Certs {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  otherCa: string;
}

/** A CA, a server certificate for 127.0.0.1/localhost, a client certificate, an unrelated CA. */
export function makeCerts(): Certs | undefined {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
  } catch {
    return undefined;
  }
  const dir = mkdtempSync(join(tmpdir(), "sessionkeeper-certs-"));
  const run = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  for (const ca of ["ca", "other-ca"]) {
    run("req", "-x509", ...ec, "-keyout", `${ca}.key`, "-out", `${ca}.pem`, "-days", "2", "-subj", `/CN=${ca}`,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  }
  const leaves: Record<string, string> = {
    server: "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    client: "subjectAltName=DNS:orchestrator.test\nextendedKeyUsage=clientAuth\n",
  };
  for (const [name, ext] of Object.entries(leaves)) {
    writeFileSync(join(dir, `${name}.ext`), `basicConstraints=CA:FALSE\n${ext}`);
    run("req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
    run("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
      "-out", `${name}.pem`, "-days", "2", "-extfile", `${name}.ext`);
  }
  return {
    ca: join(dir, "ca.pem"),
    serverCert: join(dir, "server.pem"),
    serverKey: join(dir, "server.key"),
    clientCert: join(dir, "client.pem"),
    clientKey: join(dir, "client.key"),
    otherCa: join(dir, "other-ca.pem"),
  };
}

/** Real-shaped Claude Agent SDK result messages. */
export function success(sessionId: string, numTurns = 3, text = "done") {
  return {
    type: "result" as const,
    subtype: "success" as const,
    is_error: false,
    duration_ms: 5123,
    duration_api_ms: 4012,
    num_turns: numTurns,
    result: text,
    session_id: sessionId,
    total_cost_usd: 0.0123,
    usage: { input_tokens: 10, output_tokens: 20 },
    permission_denials: [],
  };
}

/** The exact frame Claude Code emits when resuming a transcript that is gone (SPEC §1). */
export function noConversation(newId: string, oldId: string) {
  return {
    type: "result" as const,
    subtype: "error_during_execution" as const,
    is_error: true,
    num_turns: 0,
    session_id: newId,
    errors: [`No conversation found with session ID: ${oldId}`],
  };
}
