//! `sessionkeeper-bench transcripts`: the transcript benchmark of issue 18, side by side with the
//! raw database in the same run.
//!
//! The workload is one realistic transcript shape (`--entries` entries, most a chat turn of
//! `--small-bytes`, every tenth a tool result of `--large-bytes`: 500 entries, about 2.7 MB with
//! the defaults), written in appends of `--batch` entries (one SDK flush per turn) and read back
//! whole. Four measurements, each for `--duration` after `--warmup`, from `--concurrency` workers,
//! each writing or reading transcripts of its own:
//!
//! * `append`: AppendEntries through the service (a fresh append id per call, one transcript per
//!   worker at a time, a new one when it is full);
//! * `raw_append`: the same batches as one autocommit `INSERT … SELECT FROM unnest(…)` into a
//!   plain table of the same columns and indexes as the service's entry table, on a plain sqlx connection (`--database-url`): what the
//!   database does for the rows alone, with no header, idempotency record, dedup check or service;
//! * `load`: LoadTranscript of a whole transcript (the stream to its end), over transcripts the
//!   append phase wrote;
//! * `raw_load`: `SELECT entry … ORDER BY seq` of the same rows from the plain table.
//!
//! It prints a table and one JSON line: per measurement calls/s, entries/s, MB/s and latency
//! percentiles (per append call, or per whole-transcript load).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use sessionkeeper::proto;
use sessionkeeper::proto::transcript_service_client::TranscriptServiceClient;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use tonic::transport::Channel;

use crate::{connect, parse_duration, unix_ns};

#[derive(Debug, Args)]
pub struct TranscriptArgs {
    /// The server's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// The raw baseline's database (the same Postgres the server uses).
    #[arg(long)]
    database_url: String,
    /// Entries per transcript.
    #[arg(long, default_value_t = 500)]
    entries: usize,
    /// Entries per append call.
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// Size of an ordinary entry (a chat turn), in bytes of JSON.
    #[arg(long, default_value_t = 1_500)]
    small_bytes: usize,
    /// Size of every tenth entry (a tool result), in bytes of JSON.
    #[arg(long, default_value_t = 40_000)]
    large_bytes: usize,
    /// Workers, each with one call in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Measured time per measurement.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time first.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    warmup: Duration,
    #[arg(long, default_value = "bench-transcripts")]
    namespace: String,
    /// Print only the JSON line, no table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

const WARMUP: u8 = 0;
const MAIN: u8 = 1;
const STOP: u8 = 2;

/// The raw baseline's table: the service's entry columns, nothing else.
const RAW_TABLE: &str = "CREATE TABLE IF NOT EXISTS bench_raw_transcript_entry (
    transcript_id bigint NOT NULL, seq bigint NOT NULL, uuid text, entry text NOT NULL,
    PRIMARY KEY (transcript_id, seq))";
/// The service's dedup index, so the raw rows carry the same indexes as the service's.
const RAW_INDEX: &str = "CREATE UNIQUE INDEX IF NOT EXISTS bench_raw_transcript_entry_uuid
    ON bench_raw_transcript_entry (transcript_id, uuid) WHERE uuid IS NOT NULL";
const RAW_INSERT: &str = "INSERT INTO bench_raw_transcript_entry (transcript_id, seq, uuid, entry)
    SELECT $1, s, u, e FROM unnest($2::bigint[], $3::text[], $4::text[]) AS x(s, u, e)";
const RAW_SELECT: &str = "SELECT entry FROM bench_raw_transcript_entry WHERE transcript_id = $1 ORDER BY seq";

/// One transcript's entries, as JSON texts with a uuid each.
struct Shape {
    entries: Vec<(String, String)>,
    bytes: usize,
}

impl Shape {
    fn new(args: &TranscriptArgs) -> Self {
        let entries: Vec<(String, String)> = (0..args.entries)
            .map(|i| {
                let uuid = format!("00000000-0000-4000-8000-{i:012}");
                let size = if i % 10 == 9 {
                    args.large_bytes
                } else {
                    args.small_bytes
                };
                let kind = if i % 10 == 9 { "tool_result" } else { "assistant" };
                let head =
                    json!({"type": "user", "uuid": uuid, "sessionId": "s", "kind": kind, "text": ""}).to_string();
                let filler = "lorem ipsum dolor sit amet ".repeat(size.saturating_sub(head.len()) / 27 + 1);
                let text = &filler[..size.saturating_sub(head.len()).min(filler.len())];
                let entry = json!({"type": if i % 2 == 0 { "user" } else { "assistant" }, "uuid": uuid,
                                   "sessionId": "s", "kind": kind, "text": text})
                .to_string();
                (uuid, entry)
            })
            .collect();
        let bytes = entries.iter().map(|(_, e)| e.len()).sum();
        Shape { entries, bytes }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Measure {
    Append,
    RawAppend,
    Load,
    RawLoad,
}

impl Measure {
    fn name(self) -> &'static str {
        match self {
            Measure::Append => "append",
            Measure::RawAppend => "raw_append",
            Measure::Load => "load",
            Measure::RawLoad => "raw_load",
        }
    }
}

/// What one worker counted in the measured window.
struct Tally {
    latency: Histogram<u64>,
    calls: u64,
    entries: u64,
    bytes: u64,
    errors: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
            calls: 0,
            entries: 0,
            bytes: 0,
            errors: 0,
        }
    }

    fn record(&mut self, took: Duration, entries: usize, bytes: usize) {
        self.latency
            .saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
        self.calls += 1;
        self.entries += entries as u64;
        self.bytes += bytes as u64;
    }

    fn merge(&mut self, other: &Tally) {
        self.latency.add(&other.latency).expect("same histogram bounds");
        self.calls += other.calls;
        self.entries += other.entries;
        self.bytes += other.bytes;
        self.errors += other.errors;
    }

    fn summary(&self, elapsed: Duration) -> Value {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let q = |x: f64| {
            if self.calls == 0 {
                0
            } else {
                self.latency.value_at_quantile(x)
            }
        };
        json!({
            "calls": self.calls,
            "errors": self.errors,
            "calls_per_s": (self.calls as f64 / secs * 10.0).round() / 10.0,
            "entries_per_s": (self.entries as f64 / secs).round(),
            "mb_per_s": (self.bytes as f64 / secs / 1e6 * 100.0).round() / 100.0,
            "p50_us": q(0.5),
            "p99_us": q(0.99),
            "max_us": if self.calls == 0 { 0 } else { self.latency.max() },
        })
    }
}

struct Shared {
    shape: Shape,
    batch: usize,
    namespace: String,
    nonce: u128,
    state: AtomicU8,
    /// Transcripts complete in both places (written by the append measurements), for the loads.
    written: usize,
}

fn key(shared: &Shared, transcript: u64) -> proto::TranscriptKey {
    proto::TranscriptKey {
        namespace: shared.namespace.clone(),
        project_key: "-bench-project".into(),
        session_id: format!("{}-{transcript}", shared.nonce),
        subpath: String::new(),
    }
}

/// Writes transcript `t` in batches; the time of each batch is recorded when measured.
async fn append_transcript(
    shared: &Shared,
    measure: Measure,
    grpc: &mut TranscriptServiceClient<Channel>,
    pool: &PgPool,
    t: u64,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    for (n, chunk) in shared.shape.entries.chunks(shared.batch).enumerate() {
        if shared.state.load(Ordering::Relaxed) == STOP {
            return Ok(());
        }
        let bytes: usize = chunk.iter().map(|(_, e)| e.len()).sum();
        let started = Instant::now();
        let outcome = match measure {
            Measure::Append => grpc
                .append_entries(proto::AppendEntriesRequest {
                    key: Some(key(shared, t)),
                    append_id: format!("{}-{t}-{n}", shared.nonce),
                    entries: chunk.iter().map(|(_, e)| e.clone()).collect(),
                    summary: None,
                })
                .await
                .map(drop)
                .map_err(anyhow::Error::from),
            _ => {
                let first = (n * shared.batch) as i64 + 1;
                let seqs: Vec<i64> = (first..first + chunk.len() as i64).collect();
                let uuids: Vec<&str> = chunk.iter().map(|(u, _)| u.as_str()).collect();
                let entries: Vec<&str> = chunk.iter().map(|(_, e)| e.as_str()).collect();
                sqlx::query(RAW_INSERT)
                    .bind(raw_id(shared, t))
                    .bind(&seqs)
                    .bind(&uuids)
                    .bind(&entries)
                    .execute(pool)
                    .await
                    .map(drop)
                    .map_err(anyhow::Error::from)
            }
        };
        match outcome {
            Ok(()) if shared.state.load(Ordering::Relaxed) == MAIN => {
                tally.record(started.elapsed(), chunk.len(), bytes)
            }
            Ok(()) => {}
            Err(e) if shared.state.load(Ordering::Relaxed) == MAIN => {
                tally.errors += 1;
                eprintln!("{}: {e:#}", measure.name());
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// The raw table's transcript id of transcript `t` of this run.
fn raw_id(shared: &Shared, t: u64) -> i64 {
    ((shared.nonce as i64 & 0xFFFF) << 32) | t as i64
}

async fn load_transcript(
    shared: &Shared,
    measure: Measure,
    grpc: &mut TranscriptServiceClient<Channel>,
    pool: &PgPool,
    t: u64,
) -> anyhow::Result<(usize, usize)> {
    if measure == Measure::Load {
        let mut stream = grpc
            .load_transcript(proto::LoadTranscriptRequest {
                key: Some(key(shared, t)),
                ..Default::default()
            })
            .await?
            .into_inner();
        let (mut entries, mut bytes) = (0, 0);
        while let Some(chunk) = stream.message().await? {
            entries += chunk.entries.len();
            bytes += chunk.entries.iter().map(String::len).sum::<usize>();
        }
        Ok((entries, bytes))
    } else {
        let rows: Vec<(String,)> = sqlx::query_as(RAW_SELECT)
            .bind(raw_id(shared, t))
            .fetch_all(pool)
            .await?;
        Ok((rows.len(), rows.iter().map(|(e,)| e.len()).sum()))
    }
}

async fn worker(
    shared: Arc<Shared>,
    measure: Measure,
    id: usize,
    channel: Channel,
    pool: PgPool,
    first_transcript: u64,
    stride: u64,
) -> anyhow::Result<Tally> {
    let mut grpc = TranscriptServiceClient::new(channel).max_decoding_message_size(8 << 20);
    let mut tally = Tally::new();
    let mut n: u64 = 0;
    while shared.state.load(Ordering::Relaxed) != STOP {
        match measure {
            Measure::Append | Measure::RawAppend => {
                let t = first_transcript + id as u64 + n * stride;
                append_transcript(&shared, measure, &mut grpc, &pool, t, &mut tally).await?;
            }
            Measure::Load | Measure::RawLoad => {
                let t = (id as u64 + n * stride) % shared.written as u64;
                let started = Instant::now();
                let outcome = load_transcript(&shared, measure, &mut grpc, &pool, t).await;
                let state = shared.state.load(Ordering::Relaxed);
                match outcome {
                    Ok((entries, bytes)) if state == MAIN => {
                        if entries != shared.shape.entries.len() {
                            bail!("{}: transcript {t} had {entries} entries", measure.name());
                        }
                        tally.record(started.elapsed(), entries, bytes);
                    }
                    Ok(_) => {}
                    Err(e) if state == MAIN => {
                        tally.errors += 1;
                        eprintln!("{}: {e:#}", measure.name());
                    }
                    Err(_) => {}
                }
            }
        }
        n += 1;
    }
    Ok(tally)
}

async fn measure(
    shared: &Arc<Shared>,
    measure: Measure,
    channels: &[Channel],
    pool: &PgPool,
    concurrency: usize,
    (warmup, duration): (Duration, Duration),
    first_transcript: u64,
) -> anyhow::Result<Value> {
    shared.state.store(WARMUP, Ordering::Relaxed);
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..concurrency {
        tasks.spawn(worker(
            shared.clone(),
            measure,
            id,
            channels[id % channels.len()].clone(),
            pool.clone(),
            first_transcript,
            concurrency as u64,
        ));
    }
    tokio::time::sleep(warmup).await;
    shared.state.store(MAIN, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    shared.state.store(STOP, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut total = Tally::new();
    while let Some(joined) = tasks.join_next().await {
        total.merge(&joined.context("worker panicked")??);
    }
    Ok(total.summary(elapsed))
}

/// Writes the transcripts the loads read, in both places, before any load is measured.
async fn prepare_loads(shared: &Arc<Shared>, channel: Channel, pool: &PgPool) -> anyhow::Result<()> {
    let mut grpc = TranscriptServiceClient::new(channel);
    shared.state.store(WARMUP, Ordering::Relaxed);
    let mut ignored = Tally::new();
    for t in 0..shared.written as u64 {
        append_transcript(shared, Measure::Append, &mut grpc, pool, t, &mut ignored).await?;
        append_transcript(shared, Measure::RawAppend, &mut grpc, pool, t, &mut ignored).await?;
    }
    Ok(())
}

pub async fn transcripts(args: TranscriptArgs) -> anyhow::Result<()> {
    if args.entries == 0 || args.batch == 0 || args.concurrency == 0 {
        bail!("--entries, --batch and --concurrency must be at least 1");
    }
    let shape = Shape::new(&args);
    let pool = PgPoolOptions::new()
        .max_connections(args.concurrency as u32 + 1)
        .connect(&args.database_url)
        .await
        .context("cannot connect to --database-url")?;
    pool.execute(RAW_TABLE).await.context("cannot create the raw table")?;
    pool.execute(RAW_INDEX)
        .await
        .context("cannot create the raw table's index")?;
    let channels = connect(&args.target, 1).await?;
    let shared = Arc::new(Shared {
        shape,
        batch: args.batch,
        namespace: args.namespace.clone(),
        nonce: unix_ns() % 1_000_000_007,
        state: AtomicU8::new(WARMUP),
        written: 32,
    });
    eprintln!(
        "transcript: {} entries, {:.2} MB, appended {} at a time; {} workers",
        shared.shape.entries.len(),
        shared.shape.bytes as f64 / 1e6,
        args.batch,
        args.concurrency
    );
    prepare_loads(&shared, channels[0].clone(), &pool).await?;
    let times = (args.warmup, args.duration);
    let mut results = serde_json::Map::new();
    // Service and raw alternate, so a drift of the machine shows in both.
    for (i, m) in [Measure::Append, Measure::RawAppend, Measure::Load, Measure::RawLoad]
        .into_iter()
        .enumerate()
    {
        let first = 1_000_000 * (i as u64 + 1);
        let summary = measure(&shared, m, &channels, &pool, args.concurrency, times, first).await?;
        eprintln!("{:<11} {summary}", m.name());
        results.insert(m.name().into(), summary);
    }
    let ratio = |a: &str, b: &str| {
        let rate = |m: &str| results[m]["entries_per_s"].as_f64().unwrap_or(0.0);
        (rate(a) / rate(b).max(1e-9) * 100.0).round() / 100.0
    };
    let out = json!({
        "transcript": {"entries": shared.shape.entries.len(), "bytes": shared.shape.bytes, "batch": args.batch},
        "concurrency": args.concurrency,
        "duration_s": args.duration.as_secs_f64(),
        "results": results,
        "append_vs_raw": ratio("append", "raw_append"),
        "load_vs_raw": ratio("load", "raw_load"),
    });
    if !args.json {
        println!(
            "{:<11} {:>9} {:>10} {:>8} {:>10} {:>10}",
            "", "calls/s", "entries/s", "MB/s", "p50 ms", "p99 ms"
        );
        for m in ["append", "raw_append", "load", "raw_load"] {
            let r = &out["results"][m];
            let f = |f: &str| r[f].as_f64().unwrap_or(0.0);
            println!(
                "{m:<11} {:>9.1} {:>10.0} {:>8.2} {:>10.2} {:>10.2}",
                f("calls_per_s"),
                f("entries_per_s"),
                f("mb_per_s"),
                f("p50_us") / 1000.0,
                f("p99_us") / 1000.0
            );
        }
        println!(
            "append {}x raw, load {}x raw (entries/s)",
            out["append_vs_raw"], out["load_vs_raw"]
        );
    }
    println!("{out}");
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{out}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    }
    pool.execute("DROP TABLE IF EXISTS bench_raw_transcript_entry").await?;
    Ok(())
}
