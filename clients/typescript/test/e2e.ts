// What the end-to-end tests through the real agent CLIs share: the mock model API (the only fake:
// clients/e2e/mock_model_api.py on 127.0.0.1), a real sessionkeeper server (the release build;
// Postgres when SESSIONKEEPER_TEST_DATABASE_URL is set) and a private HOME/config dir/cwd per worker.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

import type { Binding } from "../src/index";
import { REPO_ROOT, startServer, type Server } from "./harness";

export interface MockRequest {
  path: string;
  marker: string;
  messages: number;
  user_texts: string[];
  follow_up: boolean;
}

export interface MockApi {
  port: number;
  baseUrl: string;
  process: ChildProcess;
  requests(): Promise<MockRequest[]>;
  stop(): void;
}

export async function startMock(): Promise<MockApi> {
  const python = process.env.SK_E2E_PYTHON || "python3";
  const child = spawn(python, [join(REPO_ROOT, "clients", "e2e", "mock_model_api.py")], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  const line: string = await new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once("line", (l) => resolve(l));
    child.once("exit", (code) => reject(new Error(`mock exited ${code}`)));
  });
  const [word, port] = line.split(" ");
  if (word !== "listening") throw new Error(`unexpected mock output: ${line}`);
  const baseUrl = `http://127.0.0.1:${port}`;
  process.once("exit", () => child.kill());
  return {
    port: Number(port),
    baseUrl,
    process: child,
    requests: async () => (await (await fetch(`${baseUrl}/_requests`)).json()) as MockRequest[],
    stop: () => child.kill(),
  };
}

export function startE2eServer(): Promise<Server> {
  const url = process.env.SESSIONKEEPER_TEST_DATABASE_URL;
  return startServer({ args: url ? ["--database-url", url] : [] });
}

export interface Worker {
  root: string;
  home: string;
  configDir: string;
  cwd: string;
  /** The container restarted without its home volume: the config dir is empty again. */
  restartLosingTheVolume(): void;
}

export function newWorker(configName = ".claude"): Worker {
  const root = mkdtempSync(join(tmpdir(), "sk-e2e-"));
  const home = join(root, "home");
  const configDir = join(home, configName);
  const cwd = join(root, "work");
  for (const d of [home, configDir, cwd]) mkdirSync(d, { recursive: true });
  return {
    root,
    home,
    configDir,
    cwd,
    restartLosingTheVolume() {
      rmSync(configDir, { recursive: true, force: true });
      mkdirSync(configDir, { recursive: true });
    },
  };
}

/** The environment that keeps the CLI on loopback, quick, and inside the worker's dirs. */
export function quietEnv(mock: MockApi, worker: Worker): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  return {
    ...env,
    HOME: worker.home,
    CLAUDE_CONFIG_DIR: worker.configDir,
    ANTHROPIC_BASE_URL: mock.baseUrl,
    ANTHROPIC_API_KEY: "sk-ant-mock-key",
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
    DISABLE_TELEMETRY: "1",
    DISABLE_AUTOUPDATER: "1",
    DISABLE_ERROR_REPORTING: "1",
    CLAUDE_CODE_MAX_RETRIES: "0",
    API_TIMEOUT_MS: "30000",
    NO_PROXY: "127.0.0.1,localhost",
    HTTP_PROXY: "",
    HTTPS_PROXY: "",
    http_proxy: "",
    https_proxy: "",
  };
}

export function claudeBinding(worker: Worker): Binding {
  return { provider: "claude", host: "e2e-worker", configDir: worker.configDir, cwd: worker.cwd };
}

/** A CODEX_HOME whose config sends every model call to the mock (Responses API), no retries. */
export function codexHome(mock: MockApi, worker: Worker): string {
  const home = join(worker.root, "codex-home");
  mkdirSync(home, { recursive: true });
  writeFileSync(
    join(home, "config.toml"),
    [
      'model = "mock-model"',
      'model_provider = "mock"',
      "[model_providers.mock]",
      'name = "mock"',
      `base_url = "${mock.baseUrl}/v1"`,
      'wire_api = "responses"',
      'env_key = "MOCK_API_KEY"',
      "request_max_retries = 0",
      "stream_max_retries = 0",
      "",
    ].join("\n"),
  );
  return home;
}

export function codexEnv(mock: MockApi, worker: Worker): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  return {
    ...env,
    HOME: worker.home,
    CODEX_HOME: codexHome(mock, worker),
    MOCK_API_KEY: "mock-key",
    RUST_BACKTRACE: "0",
    NO_PROXY: "127.0.0.1,localhost",
    HTTP_PROXY: "",
    HTTPS_PROXY: "",
    http_proxy: "",
    https_proxy: "",
  };
}
