// SessionKeeperSessionStore: the Claude Agent SDK's SessionStore (`Options.sessionStore`) over
// sessionkeeper's TranscriptService, so a session's transcript lives in the same store as its id,
// with the same lifecycle, and a session started on one host resumes on another.
//
// It owns the mapping of the SDK's six methods to the RPCs: an idempotency id per append (reused
// when the SDK retries the same batch), the session summaries the SDK lists (folded here with the
// SDK's own foldSessionSummary, written by compare-and-set), the split of oversized appends, and a
// load that resumes a broken stream where it stopped. It must not interpret entries: they are
// opaque JSON, sent as JSON.stringify gives them and parsed back as they were stored.
//
// The SDK is an optional peer: its types are copied structurally (test/typecheck checks the class
// against the SDK's SessionStore), and foldSessionSummary is imported dynamically on the first
// append of a main transcript.
import * as grpc from "@grpc/grpc-js";
import { createHash, randomUUID } from "node:crypto";

import {
  connectionOf,
  resolveOptions,
  withRetry,
  type Connection,
  type SessionKeeper,
  type SessionKeeperOptions,
} from "./client";
import {
  sessionkeeperProto,
  type AppendEntriesRequest,
  type AppendEntriesResponse__Output,
  type DeleteTranscriptResponse__Output,
  type ListSubkeysResponse__Output,
  type ListTranscriptSessionsResponse__Output,
  type LoadTranscriptResponse__Output,
  type Summary__Output,
  type TranscriptServiceClient,
} from "./proto";

/** The SDK's SessionKey: a main transcript (no subpath) or a subagent's ("subagents/agent-<id>"). */
export interface TranscriptSessionKey {
  projectKey: string;
  sessionId: string;
  subpath?: string;
}

/** The SDK's SessionStoreEntry: one JSONL transcript line, opaque apart from `type`. */
export interface TranscriptEntry {
  type: string;
  uuid?: string;
  timestamp?: string;
  [k: string]: unknown;
}

/** The SDK's SessionSummaryEntry: `data` is the SDK's own, stored verbatim. */
export interface TranscriptSummary {
  sessionId: string;
  /** Epoch ms of the append that wrote it (the same clock as listSessions' mtime). */
  mtime: number;
  data: Record<string, unknown>;
}

export interface SessionStoreOptions extends SessionKeeperOptions {
  /** The sessionkeeper namespace the transcripts are kept in ("" or absent: "default"). */
  namespace?: string;
}

type FoldSessionSummary = (
  prev: TranscriptSummary | undefined,
  key: TranscriptSessionKey,
  entries: TranscriptEntry[],
  options?: { mtime?: number },
) => TranscriptSummary;

/** The SDK times each append out at 60 s and never retries a timeout: every method ends well before. */
export const STORE_CALL_BUDGET_MS = 45_000;
/** Appends whose encoded request would exceed this are split into `<id>.0`, `<id>.1`, … */
export const MAX_APPEND_REQUEST_BYTES = 4 * 1024 * 1024;
/**
 * Room kept in each split request for the key, ids, field tags and the summary. Fixed, so that a
 * batch always splits the same way: the SDK's retry of it reuses `<id>.0`, `<id>.1`, … for the
 * same parts.
 */
const REQUEST_RESERVE_BYTES = 256 * 1024;
/** Sessions whose last summary a store remembers (the oldest are forgotten first). */
const MAX_CACHED_SUMMARIES = 10_000;

const DIALECT = "SUMMARY_DIALECT_CLAUDE_TYPESCRIPT";

let fold: Promise<FoldSessionSummary> | undefined;

/** foldSessionSummary of @anthropic-ai/claude-agent-sdk, loaded once, when first needed. */
function loadFold(): Promise<FoldSessionSummary> {
  fold ??= import("@anthropic-ai/claude-agent-sdk").then(
    (sdk) => sdk.foldSessionSummary as FoldSessionSummary,
    (e: unknown) => {
      fold = undefined;
      throw new Error(
        `SessionKeeperSessionStore needs @anthropic-ai/claude-agent-sdk (an optional peer dependency) to fold session summaries: ${String(e)}`,
      );
    },
  );
  return fold;
}

/** JSON with object keys sorted at every level: equal entries hash equally whatever their key order. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

function contentHash(entries: TranscriptEntry[]): string {
  return createHash("sha256").update(canonicalJson(entries)).digest("hex");
}

const keyId = (k: TranscriptSessionKey) => JSON.stringify([k.projectKey, k.sessionId, k.subpath || ""]);
const sessionId = (projectKey: string, id: string) => JSON.stringify([projectKey, id]);

/** Bytes a length-delimited protobuf field of `n` bytes takes (tag, length, payload). */
function fieldBytes(n: number): number {
  let varint = 1;
  for (let v = n; v >= 0x80; v = Math.floor(v / 0x80)) varint++;
  return 1 + varint + n;
}

/**
 * Groups of consecutive entries whose requests stay under `limit` bytes (a single larger entry is
 * sent alone: the server judges it against its own entry limit).
 */
export function splitEntries(texts: string[], limit: number): string[][] {
  const groups: string[][] = [];
  let group: string[] = [];
  let size = 0;
  for (const text of texts) {
    const n = fieldBytes(Buffer.byteLength(text));
    if (group.length > 0 && size + n > limit) {
      groups.push(group);
      group = [];
      size = 0;
    }
    group.push(text);
    size += n;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}

interface CachedSummary {
  version: number;
  summary: TranscriptSummary;
}

function fromSummaryMessage(id: string, m: Summary__Output): CachedSummary {
  return {
    version: Number(m.version),
    summary: { sessionId: id, mtime: Number(m.mtimeMs), data: JSON.parse(m.dataJson) as Record<string, unknown> },
  };
}

/**
 * The Claude Agent SDK's `SessionStore`, kept by sessionkeeper (`Options.sessionStore` of
 * @anthropic-ai/claude-agent-sdk). Build it from the client's options plus a namespace, or from a
 * client with `fromClient`. Every method ends within 45 s (the SDK gives up at 60 s); failures
 * reject with a SessionKeeperError, so the SDK retries the append.
 */
export class SessionKeeperSessionStore {
  namespace!: string;
  private client!: TranscriptServiceClient;
  private metadata!: grpc.Metadata;
  private timeoutMs!: number;
  private retry!: Connection["retry"];
  private ownsChannel!: boolean;
  /** The last failed append per transcript key: the SDK retries the same batch, which reuses its id. */
  private failed = new Map<string, { hash: string; appendId: string }>();
  /** The last summary written or read per session: the base of the next fold. */
  private summaries = new Map<string, CachedSummary>();

  /** A store with its own channel: the client's options (address, token, tls, …) plus a namespace. */
  constructor(options: SessionStoreOptions | string) {
    const o: SessionStoreOptions = typeof options === "string" ? { address: options } : options;
    const resolved = resolveOptions(o);
    const Client = sessionkeeperProto().sessionkeeper.v1.TranscriptService;
    this.init(new Client(o.address, resolved.credentials, resolved.channelOptions), o.namespace, resolved, true);
  }

  /** A store on a client's channel, token, deadline and retry policy (closing the client closes it). */
  static fromClient(client: SessionKeeper, options: { namespace?: string } = {}): SessionKeeperSessionStore {
    const c = connectionOf(client);
    const Client = sessionkeeperProto().sessionkeeper.v1.TranscriptService;
    const store = Object.create(SessionKeeperSessionStore.prototype) as SessionKeeperSessionStore;
    store.failed = new Map();
    store.summaries = new Map();
    // the credentials are the channel's own: channelOverride ignores these
    const transcripts = new Client(c.address, grpc.credentials.createInsecure(), { channelOverride: c.channel });
    store.init(transcripts, options.namespace, c, false);
    return store;
  }

  private init(
    client: TranscriptServiceClient,
    namespace: string | undefined,
    c: Pick<Connection, "metadata" | "timeoutMs" | "retry">,
    ownsChannel: boolean,
  ): void {
    this.client = client;
    this.namespace = namespace ?? "";
    this.metadata = c.metadata;
    this.timeoutMs = c.timeoutMs;
    this.retry = c.retry;
    this.ownsChannel = ownsChannel;
  }

  /** Closes the channel (a store from fromClient leaves it to its client). */
  close(): void {
    if (this.ownsChannel) this.client.close();
  }

  private unary<Res>(method: keyof TranscriptServiceClient & string, request: object): Promise<Res> {
    return withRetry(
      method,
      this.retry,
      this.timeoutMs,
      (deadline) =>
        new Promise<Res>((resolve, reject) => {
          const fn = (this.client as unknown as Record<string, Function>)[method];
          fn.call(this.client, request, this.metadata, { deadline }, (err: grpc.ServiceError | null, res: Res) =>
            err ? reject(err) : resolve(res),
          );
        }),
      STORE_CALL_BUDGET_MS,
    );
  }

  private transcriptKey(key: TranscriptSessionKey) {
    return { namespace: this.namespace, projectKey: key.projectKey, sessionId: key.sessionId, subpath: key.subpath || "" };
  }

  /**
   * Appends a batch in one AppendEntries (no RPC for an empty batch). A batch the SDK retries after
   * a failure carries the failed call's append id, so the server stores it once. On the main
   * transcript the session summary is folded and written in the same call, by compare-and-set: when
   * another writer got there first, it is folded again over the stored one and written once more.
   */
  async append(key: TranscriptSessionKey, entries: TranscriptEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const k = keyId(key);
    const hash = contentHash(entries);
    const previous = this.failed.get(k);
    const appendId = previous?.hash === hash ? previous.appendId : randomUUID().replace(/-/g, "");
    const main = !key.subpath;
    const sid = sessionId(key.projectKey, key.sessionId);
    try {
      let summary: AppendEntriesRequest["summary"] = null;
      let base: CachedSummary | undefined;
      if (main) {
        const foldSummary = await loadFold();
        base = this.summaries.get(sid);
        const folded = foldSummary(base?.summary, key, entries);
        summary = { dialect: DIALECT, dataJson: JSON.stringify(folded.data), ifVersion: base?.version ?? 0 };
      }
      const texts = entries.map((e) => JSON.stringify(e));
      const groups = splitEntries(texts, MAX_APPEND_REQUEST_BYTES - REQUEST_RESERVE_BYTES);
      let last: AppendEntriesResponse__Output | undefined;
      for (const [i, group] of groups.entries()) {
        last = await this.unary<AppendEntriesResponse__Output>("AppendEntries", {
          key: this.transcriptKey(key),
          appendId: groups.length === 1 ? appendId : `${appendId}.${i}`,
          entries: group,
          // with the last part: the summary is stamped with the transcript's final mtime
          summary: i === groups.length - 1 ? summary : null,
        });
      }
      this.failed.delete(k);
      if (main && last && summary) await this.settleSummary(key, entries, summary, base, last);
    } catch (e) {
      this.failed.set(k, { hash, appendId });
      throw e;
    }
  }

  private remember(sid: string, summary: CachedSummary): void {
    this.summaries.delete(sid); // re-inserted last: the Map's order is the age
    this.summaries.set(sid, summary);
    if (this.summaries.size > MAX_CACHED_SUMMARIES) this.summaries.delete(this.summaries.keys().next().value!);
  }

  /** Caches the summary just written, or folds again over the one that won the race and writes once. */
  private async settleSummary(
    key: TranscriptSessionKey,
    entries: TranscriptEntry[],
    sent: NonNullable<AppendEntriesRequest["summary"]>,
    base: CachedSummary | undefined,
    res: AppendEntriesResponse__Output,
  ): Promise<void> {
    const sid = sessionId(key.projectKey, key.sessionId);
    if (res.summaryWritten) {
      this.remember(sid, {
        version: (base?.version ?? 0) + 1,
        summary: { sessionId: key.sessionId, mtime: Number(res.mtimeMs), data: JSON.parse(sent.dataJson ?? "{}") },
      });
      return;
    }
    // The compare-and-set was lost (a cold cache, or another writer): fold over what is stored.
    const current = res.currentSummary ? fromSummaryMessage(key.sessionId, res.currentSummary) : undefined;
    const folded = (await loadFold())(current?.summary, key, entries);
    const dataJson = JSON.stringify(folded.data);
    const retry = await this.unary<AppendEntriesResponse__Output>("AppendEntries", {
      key: this.transcriptKey(key),
      appendId: randomUUID().replace(/-/g, ""),
      entries: [],
      summary: { dialect: DIALECT, dataJson, ifVersion: current?.version ?? 0 },
    });
    if (retry.summaryWritten) {
      this.remember(sid, {
        version: (current?.version ?? 0) + 1,
        summary: { sessionId: key.sessionId, mtime: Number(retry.mtimeMs), data: folded.data },
      });
    } else {
      // Lost twice: the stored summary is older than the transcript, so the SDK's freshness check
      // falls back to loading the session; the next append folds over whatever is stored then.
      this.summaries.delete(sid);
    }
  }

  /**
   * Loads a transcript, in order, or null when it was never written (or was deleted). A stream
   * that breaks is resumed after the last entry received; a transcript deleted during the load
   * (ABORTED) is loaded again from the start.
   */
  async load(key: TranscriptSessionKey): Promise<TranscriptEntry[] | null> {
    let entries: TranscriptEntry[] = [];
    let afterSeq = "0";
    let found = true;
    const main = !key.subpath;
    const resumable = [...this.retry.retryableCodes, grpc.status.ABORTED];
    await withRetry(
      "LoadTranscript",
      { ...this.retry, retryableCodes: resumable },
      STORE_CALL_BUDGET_MS,
      (deadline) =>
        new Promise<void>((resolve, reject) => {
          const stream = this.client.LoadTranscript(
            {
              key: this.transcriptKey(key),
              afterSeq,
              summaryDialect: main && afterSeq === "0" ? DIALECT : "SUMMARY_DIALECT_UNSPECIFIED",
            },
            this.metadata,
            { deadline },
          );
          stream.on("data", (chunk: LoadTranscriptResponse__Output) => {
            if (!chunk.found) {
              found = false;
              return;
            }
            for (const text of chunk.entries) entries.push(JSON.parse(text) as TranscriptEntry);
            if (chunk.entries.length > 0) afterSeq = chunk.lastSeq;
            if (chunk.summary) {
              this.remember(sessionId(key.projectKey, key.sessionId), fromSummaryMessage(key.sessionId, chunk.summary));
            }
          });
          stream.on("error", (err: grpc.ServiceError) => {
            if (err.code === grpc.status.ABORTED) {
              entries = [];
              afterSeq = "0";
            }
            reject(err);
          });
          stream.on("end", () => resolve());
        }),
      STORE_CALL_BUDGET_MS,
    );
    return found ? entries : null;
  }

  /** The project's sessions (main transcripts) with their mtime, epoch ms. */
  async listSessions(projectKey: string): Promise<Array<{ sessionId: string; mtime: number }>> {
    const res = await this.unary<ListTranscriptSessionsResponse__Output>("ListTranscriptSessions", {
      namespace: this.namespace,
      projectKey,
    });
    return res.sessions.map((s) => ({ sessionId: s.sessionId, mtime: Number(s.mtimeMs) }));
  }

  /** The summaries this SDK folded for the project's sessions (sessions without one are left out). */
  async listSessionSummaries(projectKey: string): Promise<TranscriptSummary[]> {
    const res = await this.unary<ListTranscriptSessionsResponse__Output>("ListTranscriptSessions", {
      namespace: this.namespace,
      projectKey,
      summaryDialect: DIALECT,
    });
    return res.sessions.flatMap((s) => (s.summary ? [fromSummaryMessage(s.sessionId, s.summary).summary] : []));
  }

  /** Deletes a subpath's transcript, or (no subpath) the session's main transcript and every subpath. */
  async delete(key: TranscriptSessionKey): Promise<void> {
    await this.unary<DeleteTranscriptResponse__Output>("DeleteTranscript", { key: this.transcriptKey(key) });
    if (!key.subpath) {
      this.summaries.delete(sessionId(key.projectKey, key.sessionId));
      const prefix = JSON.stringify([key.projectKey, key.sessionId]).slice(0, -1);
      for (const k of this.failed.keys()) if (k.startsWith(prefix)) this.failed.delete(k);
    } else {
      this.failed.delete(keyId(key));
    }
  }

  /** The subpaths stored under a session (never the main transcript). */
  async listSubkeys(key: { projectKey: string; sessionId: string }): Promise<string[]> {
    const res = await this.unary<ListSubkeysResponse__Output>("ListSubkeys", {
      namespace: this.namespace,
      projectKey: key.projectKey,
      sessionId: key.sessionId,
    });
    return res.subpaths;
  }
}
