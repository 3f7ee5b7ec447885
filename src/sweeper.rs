//! Sweeps: deleting every row older than its agent's TTL in bounded batches (no long lock, no
//! giant transaction), with the transcripts of their ids in the same transactions; then the
//! transcripts no row holds (last append older than `default_ttl`, or past their grace period),
//! plus report and append records past their retention, and tombstones past `tombstone_ttl` (the
//! rows' TTLs by default). One pass is [`sweep_once`], over
//! the store alone; the service runs it (for the RPC, the CLI and the background task that startup
//! schedules every `sweep_interval`, [`jittered`] so replicas do not sweep in lockstep).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::{Policy, TranscriptFate};
use crate::store::{AgentSelector, ExpiryRule, SessionStore, StoreError, SweptTranscripts};

/// Rows deleted per statement: a few milliseconds of work, so a batch never holds locks long.
pub const BATCH_SIZE: u32 = 5_000;
/// Transcripts deleted per statement: each may hold thousands of entries (up to 64 MiB).
pub const TRANSCRIPT_BATCH_SIZE: u32 = 100;
/// Pause between batches, so a large sweep leaves room for live traffic.
const BATCH_PAUSE: Duration = Duration::from_millis(2);
/// How long a report id is remembered (at least 24 h, SPEC §4).
pub const REPORT_RETENTION: TimeDelta = TimeDelta::hours(25);

/// What a sweep covers: `None` means every namespace / every agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepScope {
    pub namespace: Option<String>,
    pub agent: Option<String>,
}

/// The expiry rules of a sweep at `now`: one per agent with its own TTL, one for all the others.
pub fn expiry_rules(policy: &Policy, now: DateTime<Utc>, scope: &SweepScope) -> Vec<ExpiryRule> {
    let rule = |agents, agent: Option<&str>| ExpiryRule {
        namespace: scope.namespace.clone(),
        agents,
        cutoff: policy.cutoff(agent, now),
    };
    match &scope.agent {
        Some(agent) => vec![rule(AgentSelector::Only(agent.clone()), Some(agent))],
        None => {
            let mut rules: Vec<ExpiryRule> = policy
                .agents
                .keys()
                .map(|agent| rule(AgentSelector::Only(agent.clone()), Some(agent)))
                .collect();
            rules.push(rule(
                AgentSelector::AllExcept(policy.agents.keys().cloned().collect()),
                None,
            ));
            rules
        }
    }
}

/// The expiry rules of the tombstones at `now`: those of the rows (each agent's TTL) unless
/// `tombstone_ttl` sets one time for all agents.
pub fn tombstone_rules(policy: &Policy, now: DateTime<Utc>, scope: &SweepScope) -> Vec<ExpiryRule> {
    if policy.tombstone_ttl.is_none() {
        return expiry_rules(policy, now, scope);
    }
    let agents = match &scope.agent {
        Some(agent) => AgentSelector::Only(agent.clone()),
        None => AgentSelector::AllExcept(Vec::new()),
    };
    vec![ExpiryRule {
        namespace: scope.namespace.clone(),
        agents,
        cutoff: policy.tombstone_cutoff(None, now),
    }]
}

/// What one sweep pass deleted (or, dry, would delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepCounts {
    /// Expired session rows.
    pub rows: u64,
    /// Transcripts deleted with the expired rows' ids (none under a grace period: marked).
    pub transcripts_of_rows: u64,
    /// Transcripts no row holds: orphans and those past their grace period.
    pub transcripts_unheld: SweptTranscripts,
    /// Tombstones past their time (a dry run counts those there are now).
    pub tombstones: u64,
}

impl SweepCounts {
    pub fn transcripts(&self) -> u64 {
        self.transcripts_of_rows + self.transcripts_unheld.total()
    }
}

/// One sweep pass. A dry run counts the transcripts of the expired rows as if there were no
/// grace period (what a sweep with none would delete), and the unheld ones as they are now.
pub async fn sweep_once(
    store: &dyn SessionStore,
    policy: &Policy,
    now: DateTime<Utc>,
    scope: &SweepScope,
    dry_run: bool,
) -> Result<SweepCounts, StoreError> {
    let mut counts = SweepCounts::default();
    let fate = TranscriptFate::at(now, policy.transcript_grace);
    for rule in expiry_rules(policy, now, scope) {
        if dry_run {
            let expired = store.count_expired(&rule).await?;
            counts.rows += expired.rows;
            counts.transcripts_of_rows += expired.transcripts;
            continue;
        }
        loop {
            let started = std::time::Instant::now();
            let deleted = store.delete_expired_batch(&rule, BATCH_SIZE, fate, now).await?;
            tracing::debug!(
                rows = deleted.rows,
                transcripts = deleted.transcripts,
                took_us = started.elapsed().as_micros() as u64,
                "sweep batch"
            );
            counts.rows += deleted.rows;
            counts.transcripts_of_rows += deleted.transcripts;
            // A short batch means nothing is left (or another replica holds the rest).
            if deleted.rows < u64::from(BATCH_SIZE) {
                break;
            }
            tokio::time::sleep(BATCH_PAUSE).await;
        }
    }
    // Transcripts no row holds: the last append older than default_ttl (transcripts have no
    // agent), or past the grace period. Scoped by namespace; an agent filter does not apply.
    let orphan_cutoff_ms = policy.cutoff(None, now).timestamp_millis();
    let now_ms = now.timestamp_millis();
    let namespace = scope.namespace.as_deref();
    if dry_run {
        counts.transcripts_unheld = store
            .count_sweepable_transcripts(namespace, orphan_cutoff_ms, now_ms)
            .await?;
        for rule in tombstone_rules(policy, now, scope) {
            counts.tombstones += store.count_expired_tombstones(&rule).await?;
        }
        return Ok(counts);
    }
    loop {
        let swept = store
            .sweep_transcripts_batch(namespace, orphan_cutoff_ms, now_ms, TRANSCRIPT_BATCH_SIZE)
            .await?;
        counts.transcripts_unheld.orphan += swept.orphan;
        counts.transcripts_unheld.graced += swept.graced;
        if swept.total() < u64::from(TRANSCRIPT_BATCH_SIZE) {
            break;
        }
        tokio::time::sleep(BATCH_PAUSE).await;
    }
    for rule in tombstone_rules(policy, now, scope) {
        loop {
            let deleted = store.delete_expired_tombstones_batch(&rule, BATCH_SIZE).await?;
            counts.tombstones += deleted;
            if deleted < u64::from(BATCH_SIZE) {
                break;
            }
            tokio::time::sleep(BATCH_PAUSE).await;
        }
    }
    let before = now - REPORT_RETENTION;
    while store.delete_reports_before(before, BATCH_SIZE).await? == u64::from(BATCH_SIZE) {
        tokio::time::sleep(BATCH_PAUSE).await;
    }
    while store.delete_appends_before(before, BATCH_SIZE).await? == u64::from(BATCH_SIZE) {
        tokio::time::sleep(BATCH_PAUSE).await;
    }
    Ok(counts)
}

/// The interval with ±10 % jitter.
pub fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_secs_f64() * 0.1;
    Duration::from_secs_f64((interval.as_secs_f64() + spread * (fastrand::f64() * 2.0 - 1.0)).max(0.0))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::AgentPolicy;

    #[test]
    fn agents_with_their_own_ttl_get_their_own_rule_and_are_excluded_from_the_default() {
        let mut policy = Policy::default();
        policy.agents.insert(
            "reviewer".into(),
            AgentPolicy {
                ttl: Duration::from_secs(7200),
            },
        );
        let now = Utc::now();
        let rules = expiry_rules(&policy, now, &SweepScope::default());
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].agents, AgentSelector::Only("reviewer".into()));
        assert_eq!(rules[0].cutoff, now - TimeDelta::hours(2));
        assert_eq!(rules[1].agents, AgentSelector::AllExcept(vec!["reviewer".into()]));
        assert_eq!(rules[1].cutoff, now - TimeDelta::hours(24));
    }

    #[test]
    fn an_agent_filter_sweeps_that_agent_with_its_ttl() {
        let mut policy = Policy::default();
        policy.agents.insert(
            "reviewer".into(),
            AgentPolicy {
                ttl: Duration::from_secs(7200),
            },
        );
        let now = Utc::now();
        let scope = SweepScope {
            namespace: Some("acme".into()),
            agent: Some("coder".into()),
        };
        let rules = expiry_rules(&policy, now, &scope);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].agents, AgentSelector::Only("coder".into()));
        assert_eq!(rules[0].namespace.as_deref(), Some("acme"));
        assert_eq!(rules[0].cutoff, now - TimeDelta::hours(24));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(600));
            assert!(d >= Duration::from_secs(540) && d <= Duration::from_secs(660), "{d:?}");
        }
    }
}
