// SessionKeeper: the sessionkeeper.v1 client for Node (and Bun) on @grpc/grpc-js.
import * as grpc from "@grpc/grpc-js";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";

import { agentResultFromError, agentResultFromSdk, type SDKResultMessageLike } from "./convert";
import {
  sessionkeeperProto,
  type GetResponse__Output,
  type ReportResultResponse__Output,
  type SessionServiceClient,
} from "./proto";
import type {
  AgentResult,
  Attempt,
  Binding,
  ReportOutcome,
  SessionDecision,
  ConversationKey,
  SweepOutcome,
  TurnOutcome,
} from "./types";

/**
 * Bounded retries of retryable codes with full-jitter backoff. By default UNAVAILABLE (the store is
 * down or not migrated yet, or no connection) and RESOURCE_EXHAUSTED (the server sheds load: "too
 * many calls in flight, retry with backoff"). Retrying a report is safe: its reportId makes the
 * server apply it once.
 */
export interface RetryPolicy {
  /** Attempts in all, including the first (1 = no retry). Default 5. */
  maxAttempts: number;
  /** Ceiling of the first backoff, ms (a random wait in [0, ceiling]). Default 100. */
  initialBackoffMs: number;
  /** Largest backoff ceiling, ms. Default 2000. */
  maxBackoffMs: number;
  /** Growth of the ceiling per attempt. Default 2. */
  multiplier: number;
  /** No retry starts after this many ms since the first attempt. Default 30000. */
  maxElapsedMs: number;
  /** Status codes to retry. Default [UNAVAILABLE, RESOURCE_EXHAUSTED]. */
  retryableCodes: grpc.status[];
}

export const DEFAULT_RETRY: Readonly<RetryPolicy> = Object.freeze({
  maxAttempts: 5,
  initialBackoffMs: 100,
  maxBackoffMs: 2000,
  multiplier: 2,
  maxElapsedMs: 30_000,
  retryableCodes: [grpc.status.UNAVAILABLE, grpc.status.RESOURCE_EXHAUSTED],
});

/** PEM data, as a Buffer, PEM text, or a path to a PEM file. */
export type PemSource = Buffer | string;

export interface TlsOptions {
  /** CA certificate(s) to trust; the system roots when absent. */
  rootCerts?: PemSource;
  /** Client certificate chain and its key: mutual TLS. */
  certChain?: PemSource;
  privateKey?: PemSource;
}

export interface SessionKeeperOptions {
  /** host:port of the sessionkeeper gRPC listener. */
  address: string;
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** true: TLS with the system roots; an object: TLS with these certificates; absent: plaintext. */
  tls?: boolean | TlsOptions;
  /** Deadline of each attempt, ms. Default 5000. */
  timeoutMs?: number;
  /** Retry policy (merged over DEFAULT_RETRY). */
  retry?: Partial<RetryPolicy>;
  /** Extra metadata sent on every call. */
  metadata?: Record<string, string>;
  /** Extra gRPC channel options. */
  channelOptions?: grpc.ChannelOptions;
  /**
   * What runTurn does when sessionkeeper cannot be reached (UNAVAILABLE or DEADLINE_EXCEEDED after
   * the retries): "fail-turn" (default) throws a SessionKeeperError before the agent runs (or after
   * it, when the report fails); "fail-open" logs a warning (console.warn), runs the turn fresh and
   * skips the report.
   */
  whenUnavailable?: WhenUnavailable;
}

export type WhenUnavailable = "fail-turn" | "fail-open";

const UNREACHABLE_CODES: readonly grpc.status[] = [grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED];

export interface CallOptions {
  /** Deadline of each attempt of this call, ms. */
  timeoutMs?: number;
}

export interface DecideOptions extends CallOptions {
  /**
   * The transcript project key the SDK will load with (projectKeyForDirectory(cwd, env)): only a
   * transcript held under it makes the session resumable from anywhere.
   */
  transcriptProjectKey?: string;
}

export interface RunTurnOptions<R> {
  /** Idempotency key of the turn's report (e.g. the dispatch id); generated when absent. The fresh
   * retry is reported as `${reportId}:fresh`. */
  reportId?: string;
  /** Converts what `run` returned; default agentResultFromSdk (SDKResultMessage, frame, AgentResult). */
  toResult?: (output: R) => AgentResult;
  /** Rethrow the last run's error after reporting it. Default true. */
  throwErrors?: boolean;
  /** Sent with Get (DecideOptions.transcriptProjectKey): the run uses a SessionKeeperSessionStore. */
  transcriptProjectKey?: string;
}

const MAX_REPORT_ID_BYTES = 128;

/** A failed sessionkeeper call: `code` is the gRPC status; for INVALID_ARGUMENT `field` names the field. */
export class SessionKeeperError extends Error {
  override readonly name = "SessionKeeperError";
  readonly codeName: string;
  readonly field: string | undefined;

  constructor(
    readonly method: string,
    readonly code: grpc.status,
    readonly details: string,
    readonly attempts: number,
  ) {
    const codeName = grpc.status[code] ?? String(code);
    super(`sessionkeeper ${method}: ${codeName}: ${details}${attempts > 1 ? ` after ${attempts} attempts` : ""}`);
    this.codeName = codeName;
    const match = code === grpc.status.INVALID_ARGUMENT ? /^([A-Za-z0-9_.[\]]+): /.exec(details) : null;
    this.field = match ? match[1] : undefined;
  }
}

/** A fresh idempotency key for one report (reused across that report's retries). */
export function newReportId(): string {
  return randomUUID().replace(/-/g, "");
}

function freshReportId(reportId: string): string {
  let base = reportId;
  while (Buffer.byteLength(`${base}:fresh`) > MAX_REPORT_ID_BYTES) base = base.slice(0, -1);
  return `${base}:fresh`;
}

function pem(source: PemSource | undefined): Buffer | null {
  if (source === undefined) return null;
  if (Buffer.isBuffer(source)) return source;
  return source.includes("-----BEGIN") ? Buffer.from(source) : readFileSync(source);
}

function credentials(tls: SessionKeeperOptions["tls"]): grpc.ChannelCredentials {
  if (!tls) return grpc.credentials.createInsecure();
  const t: TlsOptions = tls === true ? {} : tls;
  if (Boolean(t.certChain) !== Boolean(t.privateKey)) {
    throw new TypeError("tls.certChain and tls.privateKey go together (mutual TLS)");
  }
  return grpc.credentials.createSsl(pem(t.rootCerts), pem(t.privateKey), pem(t.certChain));
}

function timestamp(ts: { seconds: string; nanos: number } | null): Date | undefined {
  if (!ts) return undefined;
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6));
}

function bindingMessage(b: Binding | undefined) {
  return b === undefined
    ? null
    : { provider: b.provider ?? "", host: b.host ?? "", configDir: b.configDir ?? "", cwd: b.cwd ?? "" };
}

function keyMessage(k: ConversationKey) {
  return { namespace: k.namespace ?? "", agent: k.agent, conversation: k.conversation };
}

function resultMessage(r: AgentResult) {
  return {
    isError: Boolean(r.isError),
    subtype: r.subtype ?? "",
    sessionId: r.sessionId ?? "",
    numTurns: Math.max(0, Math.min(Math.floor(r.numTurns ?? 0), 0xffffffff)),
    errors: r.errors ?? [],
    terminalReason: r.terminalReason ?? "",
    apiErrorStatus: Math.max(0, Math.min(Math.floor(r.apiErrorStatus ?? 0), 0xffffffff)),
    exception: r.exception ?? "",
    resultText: r.resultText ?? "",
  };
}

function toDecision(m: GetResponse__Output): SessionDecision {
  const resume = m.decision === "DECISION_RESUME" && m.sessionId ? m.sessionId : undefined;
  return {
    decision: m.decision,
    sessionId: m.sessionId,
    freshReason: m.freshReason,
    resume,
    binding: m.binding
      ? { provider: m.binding.provider, host: m.binding.host, configDir: m.binding.configDir, cwd: m.binding.cwd }
      : undefined,
    lastUsedAt: timestamp(m.lastUsedAt),
    expiresAt: timestamp(m.expiresAt),
    resumableAnywhere: m.resumableAnywhere,
    transcriptProjectKey: m.transcriptProjectKey,
  };
}

function toOutcome(m: ReportResultResponse__Output, reportId: string): ReportOutcome {
  return {
    resultClass: m.resultClass,
    action: m.action,
    sessionId: m.sessionId,
    retryFresh: m.retryFresh,
    reportId,
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Runs `attempt(deadline)` under a retry policy: retryable codes are retried with full-jitter
 * backoff while attempts, `maxElapsedMs` and `budgetMs` (the whole call, every attempt's deadline
 * included) allow. Every other failure, or the last, becomes a SessionKeeperError. Not exported from
 * the package: the client and the session store share it.
 */
export async function withRetry<T>(
  method: string,
  retry: RetryPolicy,
  timeoutMs: number,
  attempt: (deadline: number, attempt: number) => Promise<T>,
  budgetMs = Infinity,
): Promise<T> {
  const started = Date.now();
  for (let n = 1; ; n++) {
    const left = started + budgetMs - Date.now();
    try {
      return await attempt(Date.now() + Math.max(1, Math.min(timeoutMs, left)), n);
    } catch (e) {
      const err = e as Partial<grpc.ServiceError>;
      const code = typeof err.code === "number" ? err.code : grpc.status.UNKNOWN;
      const ceiling = Math.min(retry.maxBackoffMs, retry.initialBackoffMs * retry.multiplier ** (n - 1));
      const delay = Math.random() * ceiling;
      const elapsed = Date.now() - started;
      if (
        !retry.retryableCodes.includes(code) ||
        n >= retry.maxAttempts ||
        elapsed + delay > retry.maxElapsedMs ||
        elapsed + delay >= budgetMs
      ) {
        throw new SessionKeeperError(method, code, err.details ?? String(e), n);
      }
      await sleep(delay);
    }
  }
}

/** What a client was built from: a session store built from a client uses the same. */
export interface Connection {
  address: string;
  /** The client's channel (shared: whoever built it closes it). */
  channel: ReturnType<grpc.Client["getChannel"]>;
  metadata: grpc.Metadata;
  timeoutMs: number;
  retry: RetryPolicy;
}

const connections = new WeakMap<SessionKeeper, Connection>();

/** The connection of a SessionKeeper (internal: for SessionKeeperSessionStore.fromClient). */
export function connectionOf(client: SessionKeeper): Connection {
  const connection = connections.get(client);
  if (!connection) throw new TypeError("not a SessionKeeper client");
  return connection;
}

/** The channel settings, metadata, deadline and retry policy that SessionKeeperOptions describe. */
export function resolveOptions(o: SessionKeeperOptions): {
  credentials: grpc.ChannelCredentials;
  channelOptions: grpc.ClientOptions;
  metadata: grpc.Metadata;
  timeoutMs: number;
  retry: RetryPolicy;
} {
  const retry = { ...DEFAULT_RETRY, ...o.retry };
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(o.metadata ?? {})) metadata.set(k, v);
  // The token travels as plain metadata (not call credentials) so that it is also sent on a
  // plaintext channel, e.g. to a TLS-terminating sidecar on localhost.
  if (o.token) metadata.set("authorization", `Bearer ${o.token}`);
  return {
    credentials: credentials(o.tls),
    channelOptions: {
      // reconnect on the scale of the retry policy (gRPC's default waits 1 s, then up to 120 s)
      "grpc.initial_reconnect_backoff_ms": Math.max(50, retry.initialBackoffMs),
      "grpc.max_reconnect_backoff_ms": Math.max(100, retry.maxBackoffMs),
      ...o.channelOptions,
    },
    metadata,
    timeoutMs: o.timeoutMs ?? 5000,
    retry,
  };
}

/**
 * A sessionkeeper client: `decide` before a run, `report` after it, or `runTurn` for both plus the
 * one fresh retry. Every call has a deadline (`timeoutMs` per attempt); UNAVAILABLE and
 * RESOURCE_EXHAUSTED are retried with jittered, bounded backoff. Call `close()` when done.
 */
export class SessionKeeper {
  readonly address: string;
  private readonly client: SessionServiceClient;
  private readonly metadata: grpc.Metadata;
  private readonly timeoutMs: number;
  private readonly retry: RetryPolicy;
  readonly whenUnavailable: WhenUnavailable;

  constructor(options: SessionKeeperOptions | string) {
    const o: SessionKeeperOptions = typeof options === "string" ? { address: options } : options;
    this.address = o.address;
    this.whenUnavailable = o.whenUnavailable ?? "fail-turn";
    if (this.whenUnavailable !== "fail-turn" && this.whenUnavailable !== "fail-open") {
      throw new TypeError(`whenUnavailable must be "fail-turn" or "fail-open", not ${JSON.stringify(o.whenUnavailable)}`);
    }
    const resolved = resolveOptions(o);
    this.retry = resolved.retry;
    this.timeoutMs = resolved.timeoutMs;
    this.metadata = resolved.metadata;
    const Client = sessionkeeperProto().sessionkeeper.v1.SessionService;
    this.client = new Client(o.address, resolved.credentials, resolved.channelOptions);
    connections.set(this, {
      address: o.address,
      channel: this.client.getChannel(),
      metadata: this.metadata,
      timeoutMs: this.timeoutMs,
      retry: this.retry,
    });
  }

  close(): void {
    this.client.close();
  }

  /** Whether `err` is sessionkeeper being unreachable and this client goes on without it. */
  private failsOpen(err: unknown, what: string): boolean {
    if (this.whenUnavailable !== "fail-open" || !(err instanceof SessionKeeperError)) return false;
    if (!UNREACHABLE_CODES.includes(err.code)) return false;
    console.warn(`sessionkeeper unreachable, failing open (${what}): ${err.message}`);
    return true;
  }

  private once<Req, Res>(method: string, request: Req, deadline: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      const fn = (this.client as unknown as Record<string, Function>)[method];
      fn.call(
        this.client,
        request,
        this.metadata,
        { deadline },
        (err: grpc.ServiceError | null, res: Res) => (err ? reject(err) : resolve(res)),
      );
    });
  }

  private call<Req, Res>(method: string, request: Req, options: CallOptions = {}): Promise<Res> {
    return withRetry(method, this.retry, options.timeoutMs ?? this.timeoutMs, (deadline) =>
      this.once<Req, Res>(method, request, deadline),
    );
  }

  /** Get: resume the stored session (`resume` is its id) or start fresh (and why). */
  async decide(key: ConversationKey, binding?: Binding, options?: DecideOptions): Promise<SessionDecision> {
    const res = await this.call<object, GetResponse__Output>(
      "Get",
      {
        key: keyMessage(key),
        binding: bindingMessage(binding),
        transcriptProjectKey: options?.transcriptProjectKey ?? "",
      },
      options,
    );
    return toDecision(res);
  }

  /**
   * ReportResult: what the run did. `result` is an AgentResult or an SDKResultMessage (converted by
   * agentResultFromSdk). `resumedSessionId` is the id passed to the SDK's resume (undefined/"" for a
   * fresh run). Without `reportId` one is generated and reused by every retry of this report.
   */
  async report(
    key: ConversationKey,
    resumedSessionId: string | undefined | null,
    binding: Binding | undefined,
    result: AgentResult | SDKResultMessageLike | undefined,
    reportId?: string,
    options?: CallOptions,
  ): Promise<ReportOutcome> {
    const rid = reportId || newReportId();
    const res = await this.call<object, ReportResultResponse__Output>(
      "ReportResult",
      {
        key: keyMessage(key),
        resumedSessionId: resumedSessionId ?? "",
        binding: bindingMessage(binding),
        result: resultMessage(agentResultFromSdk(result)),
        reportId: rid,
      },
      options,
    );
    return toOutcome(res, rid);
  }

  /** Forget: delete the key's stored session (the user reset the conversation). */
  async forget(key: ConversationKey, options?: CallOptions): Promise<boolean> {
    const res = await this.call<object, { existed: boolean }>("Forget", { key: keyMessage(key) }, options);
    return res.existed;
  }

  /** Sweep: delete expired sessions now (empty filters mean all). */
  async sweep(
    filter: { namespace?: string; agent?: string; dryRun?: boolean } = {},
    options?: CallOptions,
  ): Promise<SweepOutcome> {
    const res = await this.call<object, { deleted: string; took: { seconds: string; nanos: number } | null }>(
      "Sweep",
      { namespace: filter.namespace ?? "", agent: filter.agent ?? "", dryRun: Boolean(filter.dryRun) },
      options,
    );
    const took = res.took ? Number(res.took.seconds) * 1000 + res.took.nanos / 1e6 : 0;
    return { deleted: Number(res.deleted), tookMs: took };
  }

  /**
   * One turn of the orchestrator loop: Get → run → ReportResult → one fresh retry.
   *
   * `run(resume)` runs the agent, resuming `resume` when it is defined, and returns its result
   * (by default an SDKResultMessage, a stream-json frame or an AgentResult). If it throws, the
   * error is reported (agentResultFromError). When the server answers retryFresh (the resumed
   * session is gone), `run(undefined)` runs once more. If the last run threw, its error is
   * rethrown after the report unless `throwErrors` is false.
   */
  async runTurn<R = SDKResultMessageLike>(
    key: ConversationKey,
    binding: Binding | undefined,
    run: (resume: string | undefined) => Promise<R> | R,
    options: RunTurnOptions<R> = {},
  ): Promise<TurnOutcome<R>> {
    const toResult = options.toResult ?? ((o: R) => agentResultFromSdk(o as SDKResultMessageLike));
    let unreachable: SessionKeeperError | undefined;
    let decision: SessionDecision;
    try {
      decision = await this.decide(key, binding, { transcriptProjectKey: options.transcriptProjectKey });
    } catch (e) {
      if (!this.failsOpen(e, "Get: the turn runs fresh, unreported")) throw e;
      unreachable = e as SessionKeeperError;
      decision = {
        decision: "DECISION_START_FRESH",
        sessionId: "",
        freshReason: "FRESH_REASON_UNSPECIFIED",
        resume: undefined,
        resumableAnywhere: false,
        transcriptProjectKey: "",
      };
    }
    const attempts: Attempt<R>[] = [];
    let rid = options.reportId || newReportId();
    let resume = decision.resume;
    for (;;) {
      let output: R | undefined;
      let error: unknown;
      let failed = false;
      let result: AgentResult;
      try {
        output = await run(resume);
        result = toResult(output);
      } catch (e) {
        failed = true;
        error = e;
        result = agentResultFromError(e);
      }
      let report: ReportOutcome | undefined;
      if (unreachable === undefined) {
        try {
          report = await this.report(key, resume, binding, result, rid);
        } catch (e) {
          if (!this.failsOpen(e, "ReportResult: the report is skipped")) throw e;
          unreachable = e as SessionKeeperError;
        }
      }
      attempts.push({ resumedSessionId: resume, output, error, result, report });
      if (report?.retryFresh && resume !== undefined) {
        resume = undefined;
        rid = freshReportId(rid);
        continue;
      }
      if (failed && options.throwErrors !== false) throw error;
      const final = attempts[attempts.length - 1];
      return {
        decision,
        attempts,
        final,
        output: final.output,
        sessionId: final.report?.sessionId ?? "",
        retriedFresh: attempts.length > 1,
        unreachable,
      };
    }
  }
}
