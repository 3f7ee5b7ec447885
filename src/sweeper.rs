//! Sweeps: deleting every row older than its agent's TTL in bounded batches (no long lock, no
//! giant transaction), plus report records past their retention. One pass is [`sweep_once`], over
//! the store alone; the service runs it (for the RPC, the CLI and the background task that startup
//! schedules every `sweep_interval`, [`jittered`] so replicas do not sweep in lockstep).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::Policy;
use crate::store::{AgentSelector, ExpiryRule, SessionStore, StoreError};

/// Rows deleted per statement: a few milliseconds of work, so a batch never holds locks long.
pub const BATCH_SIZE: u32 = 5_000;
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

/// One sweep pass; returns the session rows deleted (or, dry, that would be).
pub async fn sweep_once(
    store: &dyn SessionStore,
    policy: &Policy,
    now: DateTime<Utc>,
    scope: &SweepScope,
    dry_run: bool,
) -> Result<u64, StoreError> {
    let mut total = 0;
    for rule in expiry_rules(policy, now, scope) {
        if dry_run {
            total += store.count_expired(&rule).await?;
            continue;
        }
        loop {
            let started = std::time::Instant::now();
            let deleted = store.delete_expired_batch(&rule, BATCH_SIZE).await?;
            tracing::debug!(
                rows = deleted,
                took_us = started.elapsed().as_micros() as u64,
                "sweep batch"
            );
            total += deleted;
            // A short batch means nothing is left (or another replica holds the rest).
            if deleted < u64::from(BATCH_SIZE) {
                break;
            }
            tokio::time::sleep(BATCH_PAUSE).await;
        }
    }
    if !dry_run {
        let before = now - REPORT_RETENTION;
        while store.delete_reports_before(before, BATCH_SIZE).await? == u64::from(BATCH_SIZE) {
            tokio::time::sleep(BATCH_PAUSE).await;
        }
    }
    Ok(total)
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
