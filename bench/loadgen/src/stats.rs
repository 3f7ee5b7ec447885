//! Per-worker counters and HDR histograms (no locks or allocation while recording), merged at the
//! end into a summary per phase and operation.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tonic::Code;

/// What a run does per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Report,
}

pub const OPS: [Op; 2] = [Op::Get, Op::Report];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Report => "report",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Measured phases; calls during the warm-up are not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The measurement (before the `--during-cmd` command, when there is one).
    Main = 0,
    /// While the `--during-cmd` command runs.
    During = 1,
    /// After it exited, for `--after`.
    After = 2,
}

pub const PHASES: [Phase; 3] = [Phase::Main, Phase::During, Phase::After];

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Main => "main",
            Phase::During => "during",
            Phase::After => "after",
        }
    }
}

/// Highest latency recorded: a minute, in microseconds (higher values are clamped).
const MAX_US: u64 = 60_000_000;
const CODES: usize = 17;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

fn code_name(code: usize) -> &'static str {
    [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ][code]
}

/// One (phase, op) cell: latencies of successful calls, errors by status code.
pub struct Cell {
    latency: Histogram<u64>,
    errors: [u64; CODES],
    /// Successful calls whose answer was not the expected one (Get not RESUME, report not STORED).
    unexpected: u64,
}

impl Cell {
    fn new() -> Self {
        Cell {
            latency: histogram(),
            errors: [0; CODES],
            unexpected: 0,
        }
    }

    fn merge(&mut self, other: &Cell) {
        self.latency.add(&other.latency).expect("same histogram bounds");
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors.iter()) {
            *mine += theirs;
        }
        self.unexpected += other.unexpected;
    }
}

/// Everything one worker recorded.
pub struct Recorder {
    cells: Vec<Cell>,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            cells: (0..PHASES.len() * OPS.len()).map(|_| Cell::new()).collect(),
        }
    }

    fn cell(&mut self, phase: Phase, op: Op) -> &mut Cell {
        &mut self.cells[phase as usize * OPS.len() + op.index()]
    }

    /// Records a successful call; `expected` says whether the answer was the expected one.
    pub fn ok(&mut self, phase: Phase, op: Op, latency: Duration, expected: bool) {
        let cell = self.cell(phase, op);
        let us = u64::try_from(latency.as_micros()).unwrap_or(MAX_US).clamp(1, MAX_US);
        cell.latency.saturating_record(us);
        if !expected {
            cell.unexpected += 1;
        }
    }

    pub fn error(&mut self, phase: Phase, op: Op, code: Code) {
        let code = (code as usize).min(CODES - 1);
        self.cell(phase, op).errors[code] += 1;
    }

    pub fn merge(&mut self, other: &Recorder) {
        for (mine, theirs) in self.cells.iter_mut().zip(other.cells.iter()) {
            mine.merge(theirs);
        }
    }

    /// The summary of one phase: `all`, then each op that ran; `None` when nothing ran.
    pub fn summary(&self, phase: Phase, elapsed: Duration) -> Option<Value> {
        let mut all = Cell::new();
        let mut ops = serde_json::Map::new();
        for op in OPS {
            let cell = &self.cells[phase as usize * OPS.len() + op.index()];
            if cell.latency.is_empty() && cell.errors.iter().all(|n| *n == 0) {
                continue;
            }
            all.merge(cell);
            ops.insert(op.name().to_owned(), cell_json(cell, elapsed));
        }
        if ops.is_empty() {
            return None;
        }
        let mut out = serde_json::Map::new();
        out.insert("elapsed_s".into(), json!(round3(elapsed.as_secs_f64())));
        out.insert("all".into(), cell_json(&all, elapsed));
        out.extend(ops);
        Some(Value::Object(out))
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn cell_json(cell: &Cell, elapsed: Duration) -> Value {
    let h = &cell.latency;
    let ok = h.len();
    let errors: serde_json::Map<String, Value> = cell
        .errors
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(code, n)| (code_name(code).to_owned(), json!(n)))
        .collect();
    let error_count: u64 = cell.errors.iter().sum();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let q = |quantile: f64| if ok == 0 { 0 } else { h.value_at_quantile(quantile) };
    json!({
        "ok": ok,
        "errors": error_count,
        "errors_by_code": errors,
        "unexpected": cell.unexpected,
        "rps": round3(ok as f64 / secs),
        "mean_us": round3(if ok == 0 { 0.0 } else { h.mean() }),
        "p50_us": q(0.50),
        "p90_us": q(0.90),
        "p99_us": q(0.99),
        "p999_us": q(0.999),
        "max_us": if ok == 0 { 0 } else { h.max() },
    })
}
