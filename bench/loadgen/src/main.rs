//! `sessionkeeper-bench`: the load generator of sessionkeeper (issue 7; `scripts/bench` drives it).
//!
//! `sessionkeeper-bench run` sends a mix of Get and ReportResult calls over `--connections`
//! HTTP/2 connections from `--concurrency` workers (each with one call in flight), for a warm-up
//! and then `--duration`, and prints throughput, latency percentiles (HDR histogram) and errors by
//! gRPC status code as a table, then one JSON line. Closed loop by default (each worker sends its
//! next call when the previous one answered); with `--rate N`, open loop: a pacer thread issues N
//! tickets a second at fixed intended times, workers take them in turn, and latency counts from
//! the intended send time, so a stall shows up in the percentiles (no coordinated omission).
//!
//! `--seed N` first stores N sessions (keys `c-0` … `c-<N-1>`) through ReportResult. Keys are
//! drawn uniformly from `--keys`. Requests are encoded once per key at startup (see `codec`).
//! `--during-cmd CMD` runs a shell command after the main phase and records the calls made while
//! it runs (and `--after` it) separately: the sweep benchmark. `--rss-pid` samples a process's
//! resident size every `--rss-interval` across the run. `--server-pid` and `--metrics-url` read
//! the server's CPU time and its store's batch counters when the measured window opens and closes
//! (see `server`): CPU per call and the mean batch size.
//!
//! `sessionkeeper-bench raw-sqlite` is the embedded store's raw baseline (see `raw_sqlite`).
//!
//! `sessionkeeper-bench transcripts` measures transcript appends and loads beside the same rows
//! in a plain Postgres table (see `transcripts`).
//!
//! `sessionkeeper-bench wait-ready` polls the gRPC health service until the store is SERVING and
//! prints, relative to `--since-unix-ns`, when the port first accepted and when it was ready.

mod codec;
mod raw_sqlite;
mod server;
mod stats;
mod transcripts;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use prost::Message;
use prost::bytes::Bytes;
use serde_json::{Value, json};
use sessionkeeper::proto;
use tokio::sync::{Mutex, mpsc};
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use codec::{Outgoing, RawCodec, ReportId};
use server::Probe;
use stats::{OPS, Op, PHASES, Phase, Recorder};

const GET_PATH: &str = "/sessionkeeper.v1.SessionService/Get";
const REPORT_PATH: &str = "/sessionkeeper.v1.SessionService/ReportResult";

#[derive(Debug, Parser)]
#[command(
    name = "sessionkeeper-bench",
    version,
    about = "Load generator for sessionkeeper",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send load and measure it.
    Run(Box<RunArgs>),
    /// Wait until the server's store is SERVING; print when it listened and when it was ready.
    WaitReady(ReadyArgs),
    /// The embedded store's raw baseline: its own statements on plain SQLite connections.
    RawSqlite(raw_sqlite::RawSqliteArgs),
    /// Transcript append and load throughput, beside the same rows in a plain Postgres table.
    Transcripts(Box<transcripts::TranscriptArgs>),
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected a duration such as 500ms, 10s)"))
}

/// The RPC mix: `get=80,report=20` (weights, any sum).
#[derive(Debug, Clone)]
struct Mix {
    /// Cumulative weights, one per op in `OPS` order.
    cumulative: [u32; 2],
}

impl Mix {
    fn total(&self) -> u32 {
        self.cumulative[OPS.len() - 1]
    }

    fn pick(&self, draw: u32) -> Op {
        if draw < self.cumulative[0] { Op::Get } else { Op::Report }
    }

    fn weight(&self, op: Op) -> u32 {
        match op {
            Op::Get => self.cumulative[0],
            Op::Report => self.cumulative[1] - self.cumulative[0],
        }
    }
}

fn parse_mix(text: &str) -> Result<Mix, String> {
    let (mut get, mut report) = (0u32, 0u32);
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
        let weight: u32 = weight.trim().parse().map_err(|_| format!("bad weight in {part:?}"))?;
        match name.trim() {
            "get" => get += weight,
            "report" => report += weight,
            other => return Err(format!("unknown operation {other:?} (expected get or report)")),
        }
    }
    if get + report == 0 {
        return Err("the mix needs at least one operation with a weight above 0".into());
    }
    Ok(Mix {
        cumulative: [get, get + report],
    })
}

#[derive(Debug, Args)]
struct Target {
    /// The server's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    target: Target,
    /// RPC mix as weights: get=80,report=20
    #[arg(long, default_value = "get=100", value_parser = parse_mix)]
    mix: Mix,
    /// Conversations the calls spread over uniformly (c-0 … c-<keys-1>).
    #[arg(long, default_value_t = 10_000)]
    keys: u32,
    /// Calls in flight (workers).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// HTTP/2 connections; workers use them round-robin.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Measured time (before --during-cmd, if any).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time first.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    warmup: Duration,
    /// Open loop: calls per second in total, at fixed intended times (closed loop without it).
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value = "bench")]
    namespace: String,
    #[arg(long, default_value = "coder")]
    agent: String,
    /// Store this many sessions (keys c-0 …) through ReportResult before the run.
    #[arg(long, default_value_t = 0)]
    seed: u32,
    /// Exit after seeding.
    #[arg(long)]
    seed_only: bool,
    /// Send ReportResult without a report_id (no idempotency record).
    #[arg(long)]
    no_report_id: bool,
    /// Client runtime threads (1: a single-threaded runtime, the leanest).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Shell command run after the main phase; calls made while it runs are recorded as "during".
    #[arg(long)]
    during_cmd: Option<String>,
    /// Keep measuring this long after --during-cmd exits ("after").
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    after: Duration,
    /// Sample this process's resident size (VmRSS) during the run.
    #[arg(long)]
    rss_pid: Option<u32>,
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    rss_interval: Duration,
    /// The server's pid: its CPU time (utime + stime) across the measured window, per call.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server's `/metrics` (http://host:port/metrics): its store's batches across the window.
    #[arg(long)]
    metrics_url: Option<String>,
    /// Clock ticks a second of /proc/<pid>/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clock_ticks: u64,
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

#[derive(Debug, Args)]
struct ReadyArgs {
    #[command(flatten)]
    target: Target,
    /// Health service name to wait for.
    #[arg(long, default_value = proto::SERVICE_NAME)]
    service: String,
    /// Report times relative to this instant (e.g. `date +%s%N` just before starting the server).
    #[arg(long)]
    since_unix_ns: Option<u128>,
    /// Give up after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Pause between polls.
    #[arg(long, default_value = "2ms", value_parser = parse_duration)]
    interval: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Run(args) => args.threads.max(1),
        Command::WaitReady(_) => 1,
        Command::RawSqlite(args) => args.threads.max(1),
        Command::Transcripts(_) => 2,
    };
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::WaitReady(args) => wait_ready(args).await,
            Command::RawSqlite(args) => raw_sqlite::raw_sqlite(args).await,
            Command::Transcripts(args) => transcripts::transcripts(*args).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

// ------------------------------------------------------------------------------------ requests

/// The session id stored for key `i` (UUID-shaped, like a Claude session id).
fn session_id(i: u32) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

fn binding(i: u32) -> proto::Binding {
    proto::Binding {
        provider: "claude".into(),
        host: "bench-worker-1".into(),
        config_dir: "/home/agent/.claude".into(),
        cwd: format!("/work/c-{i}"),
    }
}

/// Every request of the run, encoded once.
struct Requests {
    get: Vec<Bytes>,
    report: Vec<Bytes>,
}

impl Requests {
    fn build(namespace: &str, agent: &str, keys: u32) -> Self {
        let key = |i: u32| proto::SessionKey {
            namespace: namespace.to_owned(),
            agent: agent.to_owned(),
            conversation: format!("c-{i}"),
        };
        let get = (0..keys)
            .map(|i| {
                Bytes::from(
                    proto::GetRequest {
                        key: Some(key(i)),
                        binding: Some(binding(i)),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                )
            })
            .collect();
        // A successful resumed run that reports the same id: classified SUCCESS, stored.
        let report = (0..keys)
            .map(|i| {
                Bytes::from(
                    proto::ReportResultRequest {
                        key: Some(key(i)),
                        resumed_session_id: session_id(i),
                        binding: Some(binding(i)),
                        result: Some(proto::AgentResult {
                            is_error: false,
                            subtype: "success".into(),
                            session_id: session_id(i),
                            num_turns: 3,
                            result_text: "done".into(),
                            ..Default::default()
                        }),
                        report_id: String::new(),
                    }
                    .encode_to_vec(),
                )
            })
            .collect();
        Requests { get, report }
    }
}

/// Sends one call; `Ok(expected)` when it succeeded (and whether the answer was the usual one).
async fn call(
    grpc: &mut Grpc<Channel>,
    requests: &Requests,
    op: Op,
    key: usize,
    report_id: Option<ReportId>,
) -> Result<bool, tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
    match op {
        Op::Get => {
            let request = tonic::Request::new(Outgoing {
                body: requests.get[key].clone(),
                report_id: None,
            });
            let response = grpc
                .unary(
                    request,
                    PathAndQuery::from_static(GET_PATH),
                    RawCodec::<proto::GetResponse>::default(),
                )
                .await?;
            Ok(response.get_ref().decision == proto::Decision::Resume as i32)
        }
        Op::Report => {
            let request = tonic::Request::new(Outgoing {
                body: requests.report[key].clone(),
                report_id,
            });
            let response = grpc
                .unary(
                    request,
                    PathAndQuery::from_static(REPORT_PATH),
                    RawCodec::<proto::ReportResultResponse>::default(),
                )
                .await?;
            Ok(response.get_ref().action == proto::Action::Stored as i32)
        }
    }
}

// ----------------------------------------------------------------------------------------- run

const WARMUP: u8 = 0;
const MAIN: u8 = 1;
const DURING: u8 = 2;
const AFTER: u8 = 3;
const STOP: u8 = 4;

fn phase_of(state: u8) -> Option<Phase> {
    match state {
        MAIN => Some(Phase::Main),
        DURING => Some(Phase::During),
        AFTER => Some(Phase::After),
        _ => None,
    }
}

struct Shared {
    requests: Requests,
    mix: Mix,
    keys: usize,
    report_ids: bool,
    nonce: u64,
    state: AtomicU8,
}

type Tickets = Arc<Mutex<mpsc::Receiver<Instant>>>;

async fn worker(shared: Arc<Shared>, id: usize, channel: Channel, tickets: Option<Tickets>) -> Recorder {
    let mut grpc = Grpc::new(channel);
    let mut recorder = Recorder::new();
    let mut rng = fastrand::Rng::with_seed(shared.nonce ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut seq: u64 = 0;
    let total = shared.mix.total();
    loop {
        let intended = match &tickets {
            None => Instant::now(),
            Some(tickets) => match tickets.lock().await.recv().await {
                Some(at) => at,
                None => break,
            },
        };
        let state = shared.state.load(Ordering::Relaxed);
        if state == STOP {
            break;
        }
        let op = shared.mix.pick(rng.u32(0..total));
        let key = rng.usize(0..shared.keys);
        let report_id = (op == Op::Report && shared.report_ids).then(|| {
            seq += 1;
            ReportId::new(shared.nonce, id, seq)
        });
        let result = call(&mut grpc, &shared.requests, op, key, report_id).await;
        let latency = intended.elapsed();
        if let Some(phase) = phase_of(state) {
            match result {
                Ok(expected) => recorder.ok(phase, op, latency, expected),
                Err(status) => recorder.error(phase, op, status.code()),
            }
        }
    }
    recorder
}

/// Issues `rate` tickets a second at fixed intended times until the run stops. A ticket that
/// finds the queue full (two seconds of backlog) is dropped and counted.
fn pacer(shared: Arc<Shared>, rate: f64, tx: mpsc::Sender<Instant>, dropped: Arc<AtomicU64>) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut n: u32 = 0;
    let mut next = start;
    while shared.state.load(Ordering::Relaxed) != STOP {
        let now = Instant::now();
        while next <= now {
            if tx.try_send(next).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            n = n.wrapping_add(1);
            next = start + interval * n;
        }
        // std sleeps are precise to tens of microseconds; tokio timers only to a millisecond.
        std::thread::sleep((next - Instant::now().min(next)).max(Duration::from_micros(20)));
    }
}

/// Samples VmRSS (kB) of `pid` every `every` until the run stops.
async fn sample_rss(shared: Arc<Shared>, pid: u32, every: Duration, started: Instant) -> Vec<Value> {
    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval(every);
    while shared.state.load(Ordering::Relaxed) != STOP {
        ticker.tick().await;
        if let Some(kb) = read_status_kb(pid, "VmRSS:") {
            let phase = match shared.state.load(Ordering::Relaxed) {
                WARMUP => "warmup",
                STOP => "stopped",
                state => phase_of(state).map_or("", Phase::name),
            };
            samples.push(json!({"t_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                                "phase": phase, "rss_kb": kb}));
        }
    }
    samples
}

fn read_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

async fn connect(target: &str, connections: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(target.to_owned())
        .with_context(|| format!("bad target {target:?}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {target}"))?,
        );
    }
    Ok(channels)
}

/// Stores sessions for keys 0..count through ReportResult, `concurrency` at a time.
async fn seed(shared: &Arc<Shared>, channels: &[Channel], count: u32, concurrency: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let next = Arc::new(AtomicU32::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency.max(1) {
        let (shared, next, failed) = (shared.clone(), next.clone(), failed.clone());
        let mut grpc = Grpc::new(channels[w % channels.len()].clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || failed.load(Ordering::Relaxed) {
                    return Ok::<(), anyhow::Error>(());
                }
                match call(&mut grpc, &shared.requests, Op::Report, i as usize, None).await {
                    Ok(true) => {}
                    Ok(false) => {
                        failed.store(true, Ordering::Relaxed);
                        bail!("seeding c-{i}: the report was not stored");
                    }
                    Err(status) => {
                        failed.store(true, Ordering::Relaxed);
                        bail!("seeding c-{i}: {:?} {}", status.code(), status.message());
                    }
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("seeding task panicked")??;
    }
    eprintln!("seeded {count} sessions in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs the shell command on a blocking thread; returns its exit code, wall time and output tails.
async fn run_command(command: String) -> anyhow::Result<Value> {
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || std::process::Command::new("sh").arg("-c").arg(&command).output())
        .await
        .context("command thread panicked")?
        .context("cannot run --during-cmd")?;
    let tail = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    };
    Ok(json!({
        "exit_code": output.status.code(),
        "wall_s": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        "stdout_tail": tail(&output.stdout),
        "stderr_tail": tail(&output.stderr),
    }))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.keys == 0 || args.seed > args.keys {
        bail!("--keys must be at least 1 and at least --seed");
    }
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        bail!("--rate must be a positive number");
    }
    let nonce = u64::try_from(unix_ns() & u128::from(u64::MAX)).unwrap_or(0);
    let shared = Arc::new(Shared {
        requests: Requests::build(&args.namespace, &args.agent, args.keys),
        mix: args.mix.clone(),
        keys: args.keys as usize,
        report_ids: !args.no_report_id,
        nonce,
        state: AtomicU8::new(WARMUP),
    });
    let channels = connect(&args.target.target, args.connections).await?;
    if args.seed > 0 {
        seed(&shared, &channels, args.seed, args.concurrency).await?;
    }
    if args.seed_only {
        return Ok(());
    }

    let started = Instant::now();
    let rss = args
        .rss_pid
        .map(|pid| tokio::spawn(sample_rss(shared.clone(), pid, args.rss_interval, started)));
    let dropped = Arc::new(AtomicU64::new(0));
    let (tickets, pacer_thread) = match args.rate {
        Some(rate) => {
            let capacity = ((rate * 2.0) as usize).clamp(1024, 1 << 20);
            let (tx, rx) = mpsc::channel(capacity);
            let (shared, dropped) = (shared.clone(), dropped.clone());
            let thread = std::thread::spawn(move || pacer(shared, rate, tx, dropped));
            (Some(Arc::new(Mutex::new(rx))), Some(thread))
        }
        None => (None, None),
    };
    let mut workers = tokio::task::JoinSet::new();
    for id in 0..args.concurrency.max(1) {
        workers.spawn(worker(
            shared.clone(),
            id,
            channels[id % channels.len()].clone(),
            tickets.clone(),
        ));
    }
    drop(tickets);

    // Phases: warm-up, main, then (with --during-cmd) during and after.
    let mut elapsed = [Duration::ZERO; 3];
    let probe = Probe {
        pid: args.server_pid,
        metrics_url: args.metrics_url.clone(),
        clock_ticks: args.clock_ticks,
    };
    tokio::time::sleep(args.warmup).await;
    let window_opened = if probe.is_set() {
        Some(probe.snapshot().await?)
    } else {
        None
    };
    shared.state.store(MAIN, Ordering::Relaxed);
    let main_started = Instant::now();
    tokio::time::sleep(args.duration).await;
    elapsed[0] = main_started.elapsed();
    let window = match &window_opened {
        Some(opened) => Some((opened, probe.snapshot().await?)),
        None => None,
    };
    let mut during = Value::Null;
    if let Some(command) = &args.during_cmd {
        shared.state.store(DURING, Ordering::Relaxed);
        let during_started = Instant::now();
        during = run_command(command.clone()).await?;
        elapsed[1] = during_started.elapsed();
        shared.state.store(AFTER, Ordering::Relaxed);
        let after_started = Instant::now();
        tokio::time::sleep(args.after).await;
        elapsed[2] = after_started.elapsed();
    }
    shared.state.store(STOP, Ordering::Relaxed);

    // Calls in flight get a bounded time to finish; the rest are abandoned and counted.
    let mut merged = Recorder::new();
    let mut unfinished = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, workers.join_next()).await {
            Ok(Some(Ok(recorder))) => merged.merge(&recorder),
            Ok(Some(Err(e))) => bail!("worker failed: {e}"),
            Ok(None) => break,
            Err(_) => {
                unfinished = workers.len();
                workers.abort_all();
                break;
            }
        }
    }
    if let Some(thread) = pacer_thread {
        let _ = thread.join();
    }
    let rss = match rss {
        Some(task) => Some(task.await.context("rss sampler failed")?),
        None => None,
    };

    let mut phases = serde_json::Map::new();
    for phase in PHASES {
        if let Some(summary) = merged.summary(phase, elapsed[phase as usize]) {
            phases.insert(phase.name().to_owned(), summary);
        }
    }
    let mix: serde_json::Map<String, Value> = OPS
        .iter()
        .filter(|op| args.mix.weight(**op) > 0)
        .map(|op| (op.name().to_owned(), json!(args.mix.weight(*op))))
        .collect();
    let mut result = json!({
        "label": args.label,
        "target": args.target.target,
        "mix": mix,
        "keys": args.keys,
        "concurrency": args.concurrency,
        "connections": args.connections,
        "threads": args.threads,
        "mode": if args.rate.is_some() { "open-loop" } else { "closed-loop" },
        "rate": args.rate,
        "warmup_s": args.warmup.as_secs_f64(),
        "duration_s": args.duration.as_secs_f64(),
        "report_ids": !args.no_report_id,
        "phases": phases,
        "unfinished": unfinished,
        "dropped_tickets": dropped.load(Ordering::Relaxed),
        "unix_ns_end": unix_ns().to_string(),
    });
    if !during.is_null() {
        result["during_cmd"] = during;
    }
    if let Some((opened, closed)) = window {
        let main = &result["phases"]["main"]["all"];
        let calls = main["ok"].as_u64().unwrap_or(0) + main["errors"].as_u64().unwrap_or(0);
        result["server"] = probe.window(opened, &closed, calls);
    }
    if let (Some(pid), Some(samples)) = (args.rss_pid, rss) {
        result["rss"] = json!({
            "pid": pid,
            "interval_s": args.rss_interval.as_secs_f64(),
            "hwm_kb": read_status_kb(pid, "VmHWM:"),
            "samples": samples,
        });
    }
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

fn ms(v: &Value) -> String {
    format!("{:.3}", v.as_f64().unwrap_or(0.0) / 1000.0)
}

fn print_table(result: &Value) {
    let mix: Vec<String> = result["mix"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    println!(
        "sessionkeeper-bench {} | {} | mix {} | keys {} | in flight {} | connections {} | {}{} | {}s (+{}s warm-up)",
        result["label"].as_str().unwrap_or(""),
        result["target"].as_str().unwrap_or(""),
        mix.join(","),
        result["keys"],
        result["concurrency"],
        result["connections"],
        result["mode"].as_str().unwrap_or(""),
        result["rate"]
            .as_f64()
            .map(|r| format!(" at {r}/s"))
            .unwrap_or_default(),
        result["duration_s"],
        result["warmup_s"],
    );
    println!(
        "{:<7} {:<7} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}  errors",
        "phase", "op", "calls", "rps", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "unexp"
    );
    let Some(phases) = result["phases"].as_object() else {
        return;
    };
    for phase in PHASES.map(Phase::name) {
        let Some(summary) = phases.get(phase) else {
            continue;
        };
        for op in ["all", "get", "report"] {
            let cell = &summary[op];
            if cell.is_null() {
                continue;
            }
            let errors = cell["errors_by_code"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            println!(
                "{:<7} {:<7} {:>9} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}  {}",
                phase,
                op,
                cell["ok"],
                cell["rps"].as_f64().unwrap_or(0.0),
                ms(&cell["p50_us"]),
                ms(&cell["p90_us"]),
                ms(&cell["p99_us"]),
                ms(&cell["p999_us"]),
                ms(&cell["max_us"]),
                cell["unexpected"],
                if errors.is_empty() { "-".to_owned() } else { errors },
            );
        }
    }
    let server = &result["server"];
    if !server.is_null() {
        let batches: Vec<String> = server["batches"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(op, b)| {
                        format!(
                            "{op} mean batch {} ({} calls / {} batches)",
                            b["mean_batch"], b["calls"], b["batches"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "server: {} s CPU in the window, {} µs per call; {}",
            server["cpu_s"],
            server["cpu_us_per_call"],
            if batches.is_empty() {
                "no batch counters".to_owned()
            } else {
                batches.join(", ")
            }
        );
    }
    if result["unfinished"].as_u64().unwrap_or(0) > 0 || result["dropped_tickets"].as_u64().unwrap_or(0) > 0 {
        println!(
            "unfinished calls at the end: {}, open-loop tickets dropped (backlog full): {}",
            result["unfinished"], result["dropped_tickets"]
        );
    }
}

// ---------------------------------------------------------------------------------- wait-ready

async fn wait_ready(args: ReadyArgs) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let since = args.since_unix_ns.unwrap_or_else(unix_ns);
    let rel_ms = |at: u128| (at.saturating_sub(since) as f64 / 1e6 * 1000.0).round() / 1000.0;
    let endpoint = Endpoint::from_shared(args.target.target.clone())
        .with_context(|| format!("bad target {:?}", args.target.target))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(200));
    let give_up = Instant::now() + args.timeout;
    let mut listening_at = None;
    let mut client = None;
    let mut polls = 0u64;
    loop {
        if Instant::now() >= give_up {
            bail!("not SERVING within {:?}", args.timeout);
        }
        polls += 1;
        if client.is_none()
            && let Ok(channel) = endpoint.connect().await
        {
            listening_at = Some(unix_ns());
            client = Some(HealthClient::new(channel));
        }
        if let Some(health) = client.as_mut() {
            let request = HealthCheckRequest {
                service: args.service.clone(),
            };
            if let Ok(response) = health.check(request).await
                && response.get_ref().status == ServingStatus::Serving as i32
            {
                let ready_at = unix_ns();
                let out = json!({
                    "service": args.service,
                    "listening_ms": listening_at.map(rel_ms),
                    "serving_ms": rel_ms(ready_at),
                    "polls": polls,
                });
                println!("{out}");
                return Ok(());
            }
        }
        tokio::time::sleep(args.interval).await;
    }
}
