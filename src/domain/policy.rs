//! The lifecycle policy read from configuration: per-agent TTLs, the unknown-failure limit, the
//! sweep interval and the operator's own signatures. TTLs are looked up at decision time, so a policy change applies to stored rows
//! at once (no expiry is written into a row).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Signature;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// TTL of agents without an override.
    pub default_ttl: Duration,
    /// Zero-turn unknown failures of resumes of one id before it counts as gone.
    pub unknown_failure_limit: u32,
    /// Pause between background sweeps (jittered).
    pub sweep_interval: Duration,
    /// Per-agent overrides, by agent name.
    pub agents: BTreeMap<String, AgentPolicy>,
    /// Operator-added signatures, tried before the built-in table within their step.
    pub signatures: Vec<Signature>,
    /// Delay between a session id going away and its transcripts' deletion (0: at once).
    pub transcript_grace: Duration,
    /// How long a tombstone counts (None: the agent's TTL).
    pub tombstone_ttl: Option<Duration>,
    /// Events a conversation's history keeps (at least 1; also at most 16 KiB together).
    pub history_events: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPolicy {
    pub ttl: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_ttl: Duration::from_secs(24 * 60 * 60),
            unknown_failure_limit: 2,
            sweep_interval: Duration::from_secs(10 * 60),
            agents: BTreeMap::new(),
            signatures: Vec::new(),
            transcript_grace: Duration::ZERO,
            tombstone_ttl: None,
            history_events: super::DEFAULT_HISTORY_EVENTS,
        }
    }
}

impl Policy {
    pub fn ttl(&self, agent: &str) -> Duration {
        self.agents.get(agent).map(|a| a.ttl).unwrap_or(self.default_ttl)
    }

    /// When a row last used at `last_used_at` expires: `last_used_at + ttl(agent)`.
    pub fn expires_at(&self, agent: &str, last_used_at: DateTime<Utc>) -> DateTime<Utc> {
        last_used_at
            .checked_add_signed(saturating_chrono(self.ttl(agent)))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// How long a tombstone of `agent` counts: `tombstone_ttl`, else the agent's TTL.
    pub fn tombstone_ttl(&self, agent: &str) -> Duration {
        self.tombstone_ttl.unwrap_or_else(|| self.ttl(agent))
    }

    /// When a tombstone of `agent` written at `cleared_at` stops counting.
    pub fn tombstone_expires_at(&self, agent: &str, cleared_at: DateTime<Utc>) -> DateTime<Utc> {
        cleared_at
            .checked_add_signed(saturating_chrono(self.tombstone_ttl(agent)))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Tombstones of `agent` (None: of agents without an override) written before this instant
    /// no longer count at `now`.
    pub fn tombstone_cutoff(&self, agent: Option<&str>, now: DateTime<Utc>) -> DateTime<Utc> {
        let ttl = self
            .tombstone_ttl
            .unwrap_or_else(|| agent.map_or(self.default_ttl, |a| self.ttl(a)));
        now.checked_sub_signed(saturating_chrono(ttl))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Rows of `agent` last used before this instant are expired at `now`.
    pub fn cutoff(&self, agent: Option<&str>, now: DateTime<Utc>) -> DateTime<Utc> {
        let ttl = agent.map_or(self.default_ttl, |a| self.ttl(a));
        now.checked_sub_signed(saturating_chrono(ttl))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

fn saturating_chrono(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_without_an_override_use_the_default_ttl() {
        let mut policy = Policy::default();
        policy.agents.insert(
            "reviewer".into(),
            AgentPolicy {
                ttl: Duration::from_secs(7200),
            },
        );
        assert_eq!(policy.ttl("reviewer"), Duration::from_secs(7200));
        assert_eq!(policy.ttl("coder"), Duration::from_secs(86_400));
    }

    #[test]
    fn a_huge_ttl_saturates_instead_of_overflowing() {
        let policy = Policy {
            default_ttl: Duration::from_secs(u64::MAX),
            ..Policy::default()
        };
        let now = Utc::now();
        assert!(policy.expires_at("a", now) > now);
        assert!(policy.cutoff(None, now) < now);
    }
}
