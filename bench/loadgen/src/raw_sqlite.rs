//! `sessionkeeper-bench raw-sqlite`: the raw baseline of the embedded store, what pgbench is to
//! the Postgres one. It creates a store file with the store's own schema (`SqliteStore::open`
//! and `migrate` on a fresh directory under `--dir`), fills `--keys` rows shaped like the `run`
//! command's, and then, from `--concurrency` workers each on a plain sqlx SQLite connection of
//! its own (the store's connect options: WAL, full sync, the same busy timeout), runs the store's
//! own statements for a warm-up and then `--duration`: its SELECT by primary key (Get) and its
//! durable upsert (ReportResult), each write an autocommit statement, so its own transaction and
//! its own fsync. No batching, no pool, no service. It prints the same table and JSON line as
//! `run` (errors as gRPC codes: a busy or locked file as UNAVAILABLE, anything else INTERNAL)
//! and removes its directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use sessionkeeper::store::sqlite::{SELECT_SESSION, SqliteSettings, SqliteStore, UPSERT_SESSION};
use sessionkeeper::store::{SessionStore, sqlite::DATABASE_FILE};
use sqlx::{Connection, SqliteConnection};

use crate::stats::{OPS, Op, Phase, Recorder};
use crate::{Mix, binding, parse_duration, parse_mix, print_table, session_id, unix_ns};

#[derive(Debug, Args)]
pub struct RawSqliteArgs {
    /// Statement mix as weights: get=100 (the PK SELECT), report=100 (the upsert).
    #[arg(long, default_value = "get=100", value_parser = parse_mix)]
    mix: Mix,
    /// Rows (keys c-0 … c-<keys-1>), all filled before the run; statements spread over them uniformly.
    #[arg(long, default_value_t = 10_000)]
    keys: u32,
    /// Statements in flight (workers, each with a connection of its own).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Measured time.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time first.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    warmup: Duration,
    /// Where the temporary store directory is made (removed at the end).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
    /// Longest wait for the write lock (the store's busy timeout is the larger of this and 5 s).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    acquire_timeout: Duration,
    #[arg(long, default_value = "bench")]
    namespace: String,
    #[arg(long, default_value = "coder")]
    agent: String,
    /// Client runtime threads (each connection also has SQLite's worker thread of sqlx).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// A name for this run, copied into the JSON.
    #[arg(long, default_value = "")]
    label: String,
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

/// The key columns every statement binds first.
struct Rows {
    namespace: String,
    agent: String,
}

impl Rows {
    /// The store's read of one row by primary key; true when the row was there.
    async fn select(&self, conn: &mut SqliteConnection, conversation: &str) -> Result<bool, sqlx::Error> {
        let row = sqlx::query(SELECT_SESSION)
            .bind(self.namespace.as_str())
            .bind(self.agent.as_str())
            .bind(conversation)
            .fetch_optional(conn)
            .await?;
        Ok(row.is_some())
    }

    /// The store's upsert of row `i`, shaped like the `run` command's report of key `i`.
    async fn upsert(&self, conn: &mut SqliteConnection, i: u32, conversation: &str) -> Result<bool, sqlx::Error> {
        let binding = binding(i);
        let now = i64::try_from(unix_ns() / 1000).unwrap_or(i64::MAX);
        let done = sqlx::query(UPSERT_SESSION)
            .bind(self.namespace.as_str())
            .bind(self.agent.as_str())
            .bind(conversation)
            .bind(session_id(i))
            .bind(binding.provider)
            .bind(binding.host)
            .bind(binding.config_dir)
            .bind(binding.cwd)
            .bind(now)
            .bind(0_i64)
            .execute(conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn code_of(err: &sqlx::Error) -> tonic::Code {
    let busy = match err {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<u32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    };
    if busy {
        tonic::Code::Unavailable
    } else {
        tonic::Code::Internal
    }
}

async fn worker(
    rows: Arc<Rows>,
    mix: Mix,
    keys: u32,
    id: usize,
    mut conn: SqliteConnection,
    state: Arc<AtomicU8>,
) -> (Recorder, SqliteConnection) {
    let mut recorder = Recorder::new();
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut rng = fastrand::Rng::with_seed(nonce ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let total = mix.total();
    loop {
        let phase = state.load(Ordering::Relaxed);
        if phase == STOP {
            break;
        }
        let op = mix.pick(rng.u32(0..total));
        let i = rng.u32(0..keys);
        let conversation = format!("c-{i}");
        let started = Instant::now();
        let result = match op {
            Op::Get => rows.select(&mut conn, &conversation).await,
            Op::Report => rows.upsert(&mut conn, i, &conversation).await,
        };
        let latency = started.elapsed();
        if phase == MAIN {
            match result {
                Ok(expected) => recorder.ok(Phase::Main, op, latency, expected),
                Err(e) => recorder.error(Phase::Main, op, code_of(&e)),
            }
        }
    }
    (recorder, conn)
}

pub async fn raw_sqlite(args: RawSqliteArgs) -> anyhow::Result<()> {
    if args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    let dir = args
        .dir
        .join(format!("sessionkeeper-raw-sqlite-{}-{}", std::process::id(), unix_ns()));
    let outcome = measure(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn measure(args: &RawSqliteArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    // The store makes its file and schema, then steps aside: only plain connections from here.
    let store = SqliteStore::open(&SqliteSettings {
        data_dir: dir.to_owned(),
        max_connections: 1,
        acquire_timeout: args.acquire_timeout,
    })
    .await
    .context("cannot create the store file")?;
    store.migrate().await.context("cannot create the store's schema")?;
    store.close().await;
    let options = SqliteStore::connect_options(&dir.join(DATABASE_FILE), args.acquire_timeout);
    let rows = Arc::new(Rows {
        namespace: args.namespace.clone(),
        agent: args.agent.clone(),
    });

    let mut seeding = SqliteConnection::connect_with(&options)
        .await
        .context("cannot open the store file")?;
    let started = Instant::now();
    sqlx::raw_sql("BEGIN").execute(&mut seeding).await?;
    for i in 0..args.keys {
        rows.upsert(&mut seeding, i, &format!("c-{i}")).await?;
    }
    sqlx::raw_sql("COMMIT").execute(&mut seeding).await?;
    seeding.close().await?;
    eprintln!("filled {} rows in {:.1}s", args.keys, started.elapsed().as_secs_f64());

    let state = Arc::new(AtomicU8::new(WARMUP));
    let mut workers = tokio::task::JoinSet::new();
    for id in 0..args.concurrency.max(1) {
        let conn = SqliteConnection::connect_with(&options)
            .await
            .context("cannot open a connection")?;
        workers.spawn(worker(
            rows.clone(),
            args.mix.clone(),
            args.keys,
            id,
            conn,
            state.clone(),
        ));
    }
    tokio::time::sleep(args.warmup).await;
    state.store(MAIN, Ordering::Relaxed);
    let main_started = Instant::now();
    tokio::time::sleep(args.duration).await;
    let elapsed = main_started.elapsed();
    state.store(STOP, Ordering::Relaxed);

    let mut merged = Recorder::new();
    while let Some(joined) = workers.join_next().await {
        let (recorder, conn) = joined.context("worker failed")?;
        merged.merge(&recorder);
        let _ = conn.close().await;
    }
    let mut phases = serde_json::Map::new();
    if let Some(summary) = merged.summary(Phase::Main, elapsed) {
        phases.insert(Phase::Main.name().to_owned(), summary);
    }
    let mix: serde_json::Map<String, serde_json::Value> = OPS
        .iter()
        .filter(|op| args.mix.weight(**op) > 0)
        .map(|op| (op.name().to_owned(), json!(args.mix.weight(*op))))
        .collect();
    let result = json!({
        "label": args.label,
        "tool": "raw-sqlite",
        "target": format!("sqlite:{}", dir.join(DATABASE_FILE).display()),
        "mix": mix,
        "keys": args.keys,
        "concurrency": args.concurrency,
        "connections": args.concurrency,
        "threads": args.threads,
        "mode": "closed-loop",
        "rate": null,
        "warmup_s": args.warmup.as_secs_f64(),
        "duration_s": args.duration.as_secs_f64(),
        "report_ids": false,
        "phases": phases,
        "unfinished": 0,
        "dropped_tickets": 0,
        "unix_ns_end": unix_ns().to_string(),
    });
    let line = serde_json::to_string(&result)?;
    if !args.json {
        print_table(&result);
    }
    println!("{line}");
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{line}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
