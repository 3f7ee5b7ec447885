//! Shared builders for the contract tests: keys, rows and the outcomes a report answers with,
//! expiry rules and sweeps, and [`Report`], which classifies, plans and sends an SDK result exactly
//! as the service does, from the shared SDK frames of `tests/support/fixtures.rs`. Builders only build and send: assertions stay in the subject files.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sessionkeeper::domain::{
    Action, AgentPolicy, AgentResult, Binding, Policy, ReportOutcome, ReportPlan, ResultClass, ResumeFailureCause,
    SessionKey, SessionRow, classify, plan_report,
};
use sessionkeeper::store::{AgentSelector, ExpiryRule, ReportReply, SessionStore, StoreError};
use sessionkeeper::sweeper::{self, SweepScope};

use crate::fixture::Fixture;
use crate::support::fixtures::{self as frames, domain_result};
use crate::support::t0;

pub(crate) const A: &str = "11111111-1111-4111-8111-111111111111";
pub(crate) const B: &str = "22222222-2222-4222-8222-222222222222";

pub(crate) fn key(namespace: &str, agent: &str, conversation: &str) -> SessionKey {
    SessionKey::new(namespace, agent, conversation).expect("a valid key")
}

pub(crate) fn coder(conversation: &str) -> SessionKey {
    key("acme", "coder", conversation)
}

pub(crate) fn micros(n: i64) -> TimeDelta {
    TimeDelta::microseconds(n)
}

pub(crate) fn hours(n: i64) -> TimeDelta {
    TimeDelta::hours(n)
}

/// Where the stored rows were last run.
pub(crate) fn stored_binding() -> Binding {
    frames::domain_binding(&frames::pod("pod-a"))
}

/// Where the reporting runs ran.
pub(crate) fn request_binding() -> Binding {
    Binding {
        host: "pod-b".into(),
        ..stored_binding()
    }
}

pub(crate) fn row(session_id: &str, last_used_at: DateTime<Utc>) -> SessionRow {
    SessionRow {
        session_id: session_id.into(),
        binding: stored_binding(),
        last_used_at,
        failure_count: 0,
    }
}

/// The row a SUCCESS report at `now` stores.
pub(crate) fn stored_by_report(session_id: &str, now: DateTime<Utc>) -> SessionRow {
    SessionRow {
        session_id: session_id.into(),
        binding: request_binding(),
        last_used_at: now,
        failure_count: 0,
    }
}

pub(crate) fn outcome(class: ResultClass, action: Action, session_id: &str, retry_fresh: bool) -> ReportOutcome {
    ReportOutcome {
        class,
        action,
        session_id: session_id.into(),
        retry_fresh,
        transcripts_deleted: 0,
        cause: None,
    }
}

pub(crate) fn stored(session_id: &str) -> ReportOutcome {
    outcome(ResultClass::Success, Action::Stored, session_id, false)
}

/// A SESSION_GONE report (bound to `request_binding`, pod-b) that cleared a row [`row`] wrote
/// (`stored_binding`, pod-a): the resume was routed elsewhere.
pub(crate) fn cleared_as_gone() -> ReportOutcome {
    ReportOutcome {
        cause: Some(ResumeFailureCause::RoutedElsewhere),
        ..outcome(ResultClass::SessionGone, Action::Cleared, "", true)
    }
}

/// A SESSION_GONE report about an id the row no longer holds: nothing to compare, cause unknown.
pub(crate) fn superseded_gone(current: &str) -> ReportOutcome {
    ReportOutcome {
        cause: Some(ResumeFailureCause::Unknown),
        ..outcome(ResultClass::SessionGone, Action::Superseded, current, false)
    }
}

pub(crate) async fn load(store: &dyn SessionStore, key: &SessionKey) -> Option<SessionRow> {
    store.load(key).await.unwrap_or_else(|e| panic!("load {key}: {e}"))
}

/// Places a row with the fixture's own SQL (the stores have no "put": only reports store rows).
pub(crate) async fn put(fx: &Fixture, key: &SessionKey, row: &SessionRow) {
    fx.raw.put(key, row).await;
}

/// Puts `count` rows of `agent` in `namespace`, all last used at `last_used_at`.
pub(crate) async fn seed(
    fx: &Fixture,
    namespace: &str,
    agent: &str,
    label: &str,
    count: usize,
    last_used_at: DateTime<Utc>,
) -> Vec<SessionKey> {
    let mut keys = Vec::with_capacity(count);
    for i in 0..count {
        let key = key(namespace, agent, &format!("{label}-{i}"));
        put(fx, &key, &row(&format!("{label}-id-{i}"), last_used_at)).await;
        keys.push(key);
    }
    keys
}

/// How many of `keys` still have a row.
pub(crate) async fn surviving(store: &dyn SessionStore, keys: &[SessionKey]) -> usize {
    let mut found = 0;
    for key in keys {
        if load(store, key).await.is_some() {
            found += 1;
        }
    }
    found
}

pub(crate) fn rule(namespace: Option<&str>, agents: AgentSelector, cutoff: DateTime<Utc>) -> ExpiryRule {
    ExpiryRule {
        namespace: namespace.map(str::to_owned),
        agents,
        cutoff,
    }
}

pub(crate) fn only(agent: &str) -> AgentSelector {
    AgentSelector::Only(agent.into())
}

pub(crate) fn all_except(agents: &[&str]) -> AgentSelector {
    AgentSelector::AllExcept(agents.iter().map(|a| (*a).to_owned()).collect())
}

pub(crate) async fn delete_batch(store: &dyn SessionStore, rule: &ExpiryRule, limit: u32) -> u64 {
    store
        .delete_expired_batch(rule, limit, sessionkeeper::domain::TranscriptFate::Delete, t0())
        .await
        .unwrap_or_else(|e| panic!("delete_expired_batch {rule:?}: {e}"))
        .rows
}

pub(crate) async fn count_expired(store: &dyn SessionStore, rule: &ExpiryRule) -> u64 {
    store
        .count_expired(rule)
        .await
        .unwrap_or_else(|e| panic!("count_expired {rule:?}: {e}"))
        .rows
}

/// The default policy with a 2 h TTL for `reviewer` (everyone else keeps 24 h).
pub(crate) fn policy_with_short_lived_reviewer() -> Policy {
    let mut policy = Policy::default();
    policy.agents.insert(
        "reviewer".into(),
        AgentPolicy {
            ttl: Duration::from_secs(2 * 3600),
        },
    );
    policy
}

pub(crate) async fn sweep(
    store: &dyn SessionStore,
    policy: &Policy,
    now: DateTime<Utc>,
    scope: &SweepScope,
    dry: bool,
) -> u64 {
    sweeper::sweep_once(store, policy, now, scope, dry)
        .await
        .unwrap_or_else(|e| panic!("sweep_once (dry {dry}): {e}"))
        .rows
}

/// A report as the service sends it to the store: classified, planned by `domain::plan_report`.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) key: SessionKey,
    pub(crate) resumed_session_id: String,
    pub(crate) result: AgentResult,
    pub(crate) report_id: Option<String>,
    pub(crate) now: DateTime<Utc>,
    pub(crate) policy: Policy,
}

impl Report {
    pub(crate) fn new(key: &SessionKey, resumed_session_id: &str, result: AgentResult) -> Report {
        Report {
            key: key.clone(),
            resumed_session_id: resumed_session_id.into(),
            result,
            report_id: None,
            now: t0(),
            policy: Policy::default(),
        }
    }

    /// A completed run that produced `session_id`.
    pub(crate) fn success(key: &SessionKey, resumed: &str, session_id: &str) -> Report {
        Report::new(key, resumed, domain_result(frames::success(session_id, 3)))
    }

    /// Claude Code's answer to a resume of an id whose transcript is not here.
    pub(crate) fn gone(key: &SessionKey, resumed: &str) -> Report {
        let frame = frames::no_conversation_found(resumed, "33333333-3333-4333-8333-333333333333");
        Report::new(key, resumed, domain_result(frame))
    }

    /// A resume that failed before its first turn, for no reason the signatures know.
    pub(crate) fn unknown_zero_turn_failure(key: &SessionKey, resumed: &str) -> Report {
        Report::new(key, resumed, domain_result(frames::unknown_zero_turn_failure()))
    }

    pub(crate) fn transient_failure(key: &SessionKey, resumed: &str) -> Report {
        Report::new(key, resumed, domain_result(frames::transient_failure()))
    }

    pub(crate) fn id(mut self, report_id: impl Into<String>) -> Report {
        self.report_id = Some(report_id.into());
        self
    }

    pub(crate) fn at(mut self, now: DateTime<Utc>) -> Report {
        self.now = now;
        self
    }

    pub(crate) fn class(&self) -> ResultClass {
        classify(
            &self.result,
            !self.resumed_session_id.is_empty(),
            &request_binding().provider,
        )
    }

    /// The report planned as `service::Lifecycle::report` plans it, before any I/O.
    pub(crate) fn plan(&self) -> ReportPlan {
        plan_report(
            self.class(),
            &self.result,
            &self.resumed_session_id,
            &request_binding(),
            self.now,
            &self.policy,
        )
        .unwrap_or_else(|e| panic!("a valid report on {}: {e}", self.key))
    }

    /// Sends the report exactly as `service::Lifecycle::report` does: planned before any I/O,
    /// then through the store operation its plan names.
    pub(crate) async fn send(&self, store: &dyn SessionStore) -> ReportReply {
        self.try_send(store)
            .await
            .unwrap_or_else(|e| panic!("report on {}: {e}", self.key))
    }

    /// [`Report::send`], with the store's error.
    pub(crate) async fn try_send(&self, store: &dyn SessionStore) -> Result<ReportReply, StoreError> {
        let plan = self.plan();
        let report_id = self.report_id.as_deref();
        match &plan {
            ReportPlan::Store(result) => store.store_result(&self.key, report_id, self.now, result).await,
            ReportPlan::OnRow(report) => store.report_on_row(&self.key, report_id, self.now, report).await,
        }
    }
}

/// Runs both futures at once on the runtime's worker threads.
pub(crate) async fn at_once<X, Y>(
    first: impl Future<Output = X> + Send + 'static,
    second: impl Future<Output = Y> + Send + 'static,
) -> (X, Y)
where
    X: Send + 'static,
    Y: Send + 'static,
{
    let (x, y) = tokio::join!(tokio::spawn(first), tokio::spawn(second));
    (x.expect("first task"), y.expect("second task"))
}
