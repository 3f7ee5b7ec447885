//! Interleavings (issue 17, point 4): loads, reports and Forgets on two or three keys, all started at
//! once through the store (which coalesces concurrent calls into batches: loads, and on both stores
//! reports, group-committed), are answered as SOME serial order of the same calls would answer
//! them, and leave the rows and report-id records that order leaves. The serial model is the
//! domain's own: a report is planned by `plan_report` (through `builders::Report`, as the service
//! plans it), a store writes its `StoreResult` row, every other report is `RowReport::decide` on the
//! row as it is then, its effect a compare-and-set, and a report id answers its first outcome to its
//! own key and `ReportIdReused` to any other key of the namespace.
//! The checker tries the orders of a case (at most 7 calls; an order is dropped at its first wrong
//! answer) and, when none explains what the store did, fails with the case, the answers and the rows.
//! Cases come from proptest with a fixed seed (the same cases every run); the interleaving is
//! whatever the runtime and the store make of them, and no interleaving may fail. This file must not
//! grow rules of its own: where the model needs a rule, it calls the domain's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use sessionkeeper::domain::{ReportPlan, RowEffect, SessionKey, SessionRow};
use sessionkeeper::store::{ReportReply, SessionStore};
use tokio::sync::Barrier;

use crate::builders::*;
use crate::fixture::Fixture;
use crate::support::t0;

crate::on_both_stores! {
    fixture;
    both: [concurrent_calls_on_a_few_keys_are_explained_by_some_serial_order],
}

/// Cases per store: enough to meet every kind of call racing every other, few enough for seconds.
const CASES: u32 = 48;
/// The same cases every run: a failure names a case that fails again (if its interleaving recurs).
const SEED: u64 = 0x17_04;
/// The most calls in one case: the search tries at most 7! orders, most cut short.
const MAX_CALLS: usize = 7;

const C: &str = "cccccccc-cccc-4ccc-8ccc-cccccccccccc";
/// The ids rows hold and runs complete with; a run resumes A or B.
const IDS: [&str; 3] = [A, B, C];

/// What a run reports.
#[derive(Debug, Clone, Copy)]
enum RunResult {
    /// A completed run that produced `IDS[i]`: stored whatever the row holds.
    Completed(usize),
    /// The resumed transcript is missing: cleared while the row still holds the resumed id.
    Gone,
    /// A resume that failed before its first turn: counted, and cleared at the limit (2).
    ZeroTurnFailure,
    /// An overloaded API: nothing changes.
    Transient,
}

#[derive(Debug, Clone)]
enum Call {
    Load,
    Report {
        result: RunResult,
        /// `IDS[i]`, or a fresh run.
        resumed: Option<usize>,
        /// `r<i>`, shared by the case's reports that draw the same `i` (on one key or several).
        report_id: Option<usize>,
    },
    Forget,
}

#[derive(Debug, Clone)]
struct Step {
    key: usize,
    call: Call,
    /// Through the second store instance (Postgres) instead of the first; SQLite has one.
    second_replica: bool,
    /// Times the call yields to the runtime after the common start, to vary who goes first.
    yields: u8,
}

#[derive(Debug, Clone)]
struct Case {
    /// Each key's row before the calls: `(IDS[i], failure count)`, or none.
    rows: Vec<Option<(usize, u32)>>,
    steps: Vec<Step>,
}

fn case() -> impl Strategy<Value = Case> {
    // Mostly two keys, rows mostly holding A and runs mostly resuming A: calls meet on one row.
    prop_oneof![3 => Just(2usize), 1 => Just(3usize)]
        .prop_flat_map(|keys| {
            (
                prop::collection::vec(prop::option::weighted(0.8, (held(), 0..2u32)), keys),
                prop::collection::vec(step(keys), 3..=MAX_CALLS),
            )
        })
        .prop_map(|(rows, steps)| Case { rows, steps })
}

/// A (three times in four) or B: the ids rows hold and runs resume.
fn held() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(0usize), 1 => Just(1usize)]
}

fn step(keys: usize) -> impl Strategy<Value = Step> {
    let result = prop_oneof![
        3 => (0..IDS.len()).prop_map(RunResult::Completed),
        3 => Just(RunResult::Gone),
        2 => Just(RunResult::ZeroTurnFailure),
        1 => Just(RunResult::Transient),
    ];
    let report = (
        result,
        prop::option::weighted(0.8, held()),
        prop::option::weighted(0.6, 0..3usize),
    )
        .prop_map(|(result, resumed, report_id)| Call::Report {
            result,
            resumed,
            report_id,
        });
    let call = prop_oneof![3 => Just(Call::Load), 6 => report, 1 => Just(Call::Forget)];
    (0..keys, call, 0..4u8, 0..4u8).prop_map(|(key, call, replica, yields)| Step {
        key,
        call,
        second_replica: replica == 0,
        yields,
    })
}

/// A step made concrete: the report as the service would send it, with its plan.
#[derive(Debug, Clone)]
enum Op {
    Load,
    Report { report: Box<Report>, plan: Box<ReportPlan> },
    Forget,
}

/// What one call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Loaded(Option<SessionRow>),
    Reported(ReportReply),
    Forgot(bool),
}

impl Step {
    /// Step `i` of a case on `keys`; each report runs at its own instant, so a stored row names the
    /// report that stored it.
    fn op(&self, keys: &[SessionKey], i: usize) -> Op {
        let Call::Report {
            result,
            resumed,
            report_id,
        } = &self.call
        else {
            return match self.call {
                Call::Load => Op::Load,
                _ => Op::Forget,
            };
        };
        let key = &keys[self.key];
        let resumed = resumed.map_or("", |r| IDS[r]);
        let mut report = match result {
            RunResult::Completed(id) => Report::success(key, resumed, IDS[*id]),
            RunResult::Gone => Report::gone(key, resumed),
            RunResult::ZeroTurnFailure => Report::unknown_zero_turn_failure(key, resumed),
            RunResult::Transient => Report::transient_failure(key, resumed),
        }
        .at(t0() + micros(i as i64 + 1));
        if let Some(id) = report_id {
            report = report.id(format!("r{id}"));
        }
        let plan = report.plan();
        Op::Report {
            report: Box::new(report),
            plan: Box::new(plan),
        }
    }
}

impl Op {
    async fn call(&self, store: &dyn SessionStore, key: &SessionKey) -> Answer {
        match self {
            Op::Load => Answer::Loaded(load(store, key).await),
            Op::Report { report, .. } => Answer::Reported(report.send(store).await),
            Op::Forget => Answer::Forgot(
                store
                    .forget(key, sessionkeeper::domain::TranscriptFate::Delete, t0())
                    .await
                    .unwrap_or_else(|e| panic!("forget {key}: {e}"))
                    .rows
                    > 0,
            ),
        }
    }
}

/// The serial model: the keys' rows and the namespace's report-id records.
#[derive(Debug, Clone)]
struct Serial {
    rows: Vec<Option<SessionRow>>,
    /// Report id → the key it was first sent for, and its first outcome.
    report_ids: BTreeMap<String, (usize, sessionkeeper::domain::ReportOutcome)>,
}

impl Serial {
    /// What a report with `report_id` on `key` gets without being applied, if the id was seen.
    fn recorded(&self, report_id: &str, key: usize) -> Option<ReportReply> {
        self.report_ids.get(report_id).map(|(first_key, outcome)| {
            if *first_key == key {
                ReportReply::Replayed(outcome.clone())
            } else {
                ReportReply::ReportIdReused
            }
        })
    }

    /// Applies `op` on `key` and answers it, as a store that runs one call at a time would.
    fn apply(&mut self, key: usize, op: &Op) -> Answer {
        let (report, plan) = match op {
            Op::Load => return Answer::Loaded(self.rows[key].clone()),
            Op::Forget => return Answer::Forgot(self.rows[key].take().is_some()),
            Op::Report { report, plan } => (report, plan),
        };
        if let Some(reply) = report.report_id.as_deref().and_then(|id| self.recorded(id, key)) {
            return Answer::Reported(reply);
        }
        let outcome = match plan.as_ref() {
            ReportPlan::Store(result) => {
                self.rows[key] = Some(result.row.clone());
                result.outcome.clone()
            }
            ReportPlan::OnRow(on_row) => {
                let decision = on_row.decide(self.rows[key].as_ref());
                let holds = |expected: &str| self.rows[key].as_ref().is_some_and(|r| r.session_id == expected);
                match &decision.effect {
                    RowEffect::None => {}
                    RowEffect::Clear { expected_session_id } => {
                        if holds(expected_session_id) {
                            self.rows[key] = None;
                        }
                    }
                    RowEffect::CountFailure {
                        expected_session_id,
                        failure_count,
                    } => {
                        if holds(expected_session_id)
                            && let Some(row) = self.rows[key].as_mut()
                        {
                            row.failure_count = *failure_count;
                        }
                    }
                }
                decision.outcome
            }
        };
        if let Some(id) = &report.report_id {
            self.report_ids.insert(id.clone(), (key, outcome.clone()));
        }
        Answer::Reported(ReportReply::Applied(outcome))
    }
}

/// What the store holds once every call has answered: each key's row, and what each report id
/// the case used answers on each key (`Replayed` on the key that holds it, `ReportIdReused` elsewhere).
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    rows: Vec<Option<SessionRow>>,
    report_ids: BTreeMap<(String, usize), Option<ReportReply>>,
}

impl Serial {
    fn observed(&self, report_ids: &[String]) -> Observed {
        Observed {
            rows: self.rows.clone(),
            report_ids: report_ids
                .iter()
                .flat_map(|id| (0..self.rows.len()).map(move |k| ((id.clone(), k), self.recorded(id, k))))
                .collect(),
        }
    }
}

/// One call of the case, on its key.
struct Placed<'a> {
    key: usize,
    op: &'a Op,
    answer: &'a Answer,
}

/// Depth-first over the orders of `calls` not yet `used`, keeping an order only while the model
/// answers each call as the store did; true when a whole order also ends where the store ended.
fn search(
    state: &Serial,
    calls: &[Placed<'_>],
    used: &mut Vec<bool>,
    order: &mut Vec<usize>,
    end: &Observed,
    report_ids: &[String],
    tried: &mut u64,
) -> bool {
    if order.len() == calls.len() {
        *tried += 1;
        return state.observed(report_ids) == *end;
    }
    for i in 0..calls.len() {
        if used[i] {
            continue;
        }
        let mut next = state.clone();
        if next.apply(calls[i].key, calls[i].op) != *calls[i].answer {
            *tried += 1;
            continue;
        }
        used[i] = true;
        order.push(i);
        if search(&next, calls, used, order, end, report_ids, tried) {
            return true;
        }
        used[i] = false;
        order.pop();
    }
    false
}

/// The first serial order (indices into `calls`) that explains every answer and the end state.
fn explaining_order(
    start: &Serial,
    calls: &[Placed<'_>],
    end: &Observed,
    report_ids: &[String],
) -> (Option<Vec<usize>>, u64) {
    let (mut used, mut order, mut tried) = (vec![false; calls.len()], Vec::new(), 0);
    let found = search(start, calls, &mut used, &mut order, end, report_ids, &mut tried);
    (found.then_some(order), tried)
}

/// How a run of cases went, printed at the end.
#[derive(Debug, Default)]
struct Tally {
    cases: AtomicUsize,
    calls: AtomicUsize,
    /// Cases whose answers the order the calls were started in does not explain: they overlapped.
    reordered: AtomicUsize,
}

/// Runs one case in a namespace of its own (its report ids are its own) and checks it.
async fn check_case(fx: &Fixture, case: &Case, tally: &Tally) -> Result<(), TestCaseError> {
    let n = tally.cases.fetch_add(1, Ordering::Relaxed);
    let namespace = format!("interleaving-{n}");
    let keys: Vec<SessionKey> = (0..case.rows.len())
        .map(|k| key(&namespace, "coder", &format!("k{k}")))
        .collect();
    let mut start = Serial {
        rows: Vec::new(),
        report_ids: BTreeMap::new(),
    };
    for (key, placed) in keys.iter().zip(&case.rows) {
        let placed = placed.map(|(id, failures)| SessionRow {
            failure_count: failures,
            ..row(IDS[id], t0() - hours(1))
        });
        if let Some(placed) = &placed {
            put(fx, key, placed).await;
        }
        start.rows.push(placed);
    }
    let ops: Vec<Op> = case.steps.iter().enumerate().map(|(i, s)| s.op(&keys, i)).collect();

    let together = Arc::new(Barrier::new(ops.len()));
    let tasks: Vec<_> = case
        .steps
        .iter()
        .zip(&ops)
        .map(|(step, op)| {
            let (store, key, op) = (
                fx.replica(usize::from(step.second_replica)),
                keys[step.key].clone(),
                op.clone(),
            );
            let (together, yields) = (together.clone(), step.yields);
            tokio::spawn(async move {
                together.wait().await;
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
                op.call(store.as_ref(), &key).await
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.expect("a call panicked (a store error)"));
    }

    let mut report_ids: Vec<String> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Report { report, .. } => report.report_id.clone(),
            _ => None,
        })
        .collect();
    report_ids.sort();
    report_ids.dedup();
    let mut end = Observed {
        rows: Vec::new(),
        report_ids: BTreeMap::new(),
    };
    for key in &keys {
        end.rows.push(load(fx.store(), key).await);
    }
    // A report the id's record answers without applying it (an overloaded fresh run keeps any row
    // anyway): `Replayed` on the key holding the id, `ReportIdReused` on the others.
    for id in &report_ids {
        for (k, key) in keys.iter().enumerate() {
            let probe = Report::transient_failure(key, "").id(id.clone()).send(fx.store()).await;
            end.report_ids.insert((id.clone(), k), Some(probe));
        }
    }

    let calls: Vec<Placed<'_>> = case
        .steps
        .iter()
        .zip(&ops)
        .zip(&answers)
        .map(|((step, op), answer)| Placed {
            key: step.key,
            op,
            answer,
        })
        .collect();
    tally.calls.fetch_add(calls.len(), Ordering::Relaxed);
    let in_start_order = {
        let mut serial = start.clone();
        calls.iter().all(|c| serial.apply(c.key, c.op) == *c.answer) && serial.observed(&report_ids) == end
    };
    if !in_start_order {
        tally.reordered.fetch_add(1, Ordering::Relaxed);
    }
    let (order, tried) = explaining_order(&start, &calls, &end, &report_ids);
    if order.is_none() {
        let answered: Vec<String> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| format!("  #{i} on k{}: {:?}\n    -> {:?}", c.key, case.steps[i].call, c.answer))
            .collect();
        return Err(TestCaseError::fail(format!(
            "no serial order of the {} calls explains what the store did ({tried} orders tried, each \
             dropped at its first wrong answer or end state)\nrows before: {:?}\ncalls and answers:\n{}\nend: {:#?}",
            calls.len(),
            start.rows,
            answered.join("\n"),
            end
        )));
    }
    Ok(())
}

async fn concurrent_calls_on_a_few_keys_are_explained_by_some_serial_order(fx: &Fixture) {
    let config = Config {
        cases: CASES,
        rng_seed: RngSeed::Fixed(SEED),
        // Minimal failing cases are printed; no regression files are written into the tree.
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let tally = Tally::default();
    let runtime = tokio::runtime::Handle::current();
    // proptest drives cases synchronously; each case runs on this runtime, whose other workers
    // carry the case's concurrent calls.
    let result =
        tokio::task::block_in_place(|| runner.run(&case(), |case| runtime.block_on(check_case(fx, &case, &tally))));
    if let Err(failure) = result {
        panic!("{failure}");
    }
    // The store's own batch counters (every instance), to see how much the cases were coalesced.
    let mut batching: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for stats in fx.replicas.iter().flat_map(|r| r.batch_stats()) {
        let entry = batching.entry(stats.operation).or_default();
        entry.0 += stats.batches;
        entry.1 += stats.calls;
    }
    // The cases must really have gone through batches: some reports shared one (on Postgres a
    // report batch, on SQLite a write batch), or this test checked serial calls only.
    let (batches, calls) = batching
        .get("report")
        .or(batching.get("write"))
        .copied()
        .unwrap_or_default();
    assert!(calls > batches, "no two reports ever shared a batch: {batching:?}");
    println!(
        "INTERLEAVINGS {:?}: {} cases run, {} calls, {} cases not explained by the order they were started in; \
         batches (operation: batches/calls) {batching:?}",
        fx.store().kind(),
        tally.cases.load(Ordering::Relaxed),
        tally.calls.load(Ordering::Relaxed),
        tally.reordered.load(Ordering::Relaxed)
    );
}
