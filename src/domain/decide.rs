//! Get's rules (SPEC §4 "Get"): no row → fresh; expired → fresh and delete the row as read;
//! binding mismatch → fresh, row kept; otherwise resume. Get never extends a row's life.

use chrono::{DateTime, Utc};

use super::{Binding, Policy, SessionRow, Tombstone};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FreshReason {
    NoSession,
    /// The row outlived its agent's TTL: the caller deletes it, conditionally on it being unchanged.
    Expired,
    /// The row lives under another binding; it stays, still valid where it lives.
    BindingMismatch,
    /// No row, but the key's tombstone says its last id was cleared, forgotten or expired.
    Cleared,
}

impl FreshReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FreshReason::NoSession => "no_session",
            FreshReason::Expired => "expired",
            FreshReason::BindingMismatch => "binding_mismatch",
            FreshReason::Cleared => "cleared",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Resume the stored row's session id.
    Resume,
    StartFresh(FreshReason),
}

/// Rule 1 once the key's current tombstone (if any) is known: no row and a tombstone →
/// START_FRESH / CLEARED; no row and no tombstone → START_FRESH / NO_SESSION.
pub fn decide_without_row(tombstone: Option<&Tombstone>) -> Decision {
    match tombstone {
        Some(_) => Decision::StartFresh(FreshReason::Cleared),
        None => Decision::StartFresh(FreshReason::NoSession),
    }
}

/// Decides whether the coming run of `agent` resumes `row`.
pub fn decide(
    row: Option<&SessionRow>,
    agent: &str,
    binding: &Binding,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Decision {
    let Some(row) = row else {
        return Decision::StartFresh(FreshReason::NoSession);
    };
    if now >= policy.expires_at(agent, row.last_used_at) {
        return Decision::StartFresh(FreshReason::Expired);
    }
    if binding.is_set() && row.binding.is_set() && binding.conflicts_with(&row.binding) {
        return Decision::StartFresh(FreshReason::BindingMismatch);
    }
    Decision::Resume
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::AgentPolicy;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z").unwrap().to_utc()
    }

    fn row(age: Duration, binding: Binding) -> SessionRow {
        SessionRow {
            session_id: "8f14e45f-ceea-4e7a-9b1c-000000000001".into(),
            binding,
            last_used_at: now() - chrono::TimeDelta::from_std(age).unwrap(),
            failure_count: 0,
        }
    }

    fn pod(host: &str) -> Binding {
        Binding {
            provider: "claude".into(),
            host: host.into(),
            config_dir: "/home/agent/.claude".into(),
            cwd: "/work/repo".into(),
        }
    }

    fn policy() -> Policy {
        let mut policy = Policy::default();
        policy.agents.insert(
            "reviewer".into(),
            AgentPolicy {
                ttl: Duration::from_secs(2 * 3600),
            },
        );
        policy
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn get_rules_table() {
        use Decision::*;
        use FreshReason::*;
        let cases: Vec<(&str, Option<SessionRow>, &str, Binding, Decision)> = vec![
            ("no row", None, "coder", pod("a"), StartFresh(NoSession)),
            ("1 h old resumes", Some(row(HOUR, pod("a"))), "coder", pod("a"), Resume),
            (
                "25 h old expired",
                Some(row(25 * HOUR, pod("a"))),
                "coder",
                pod("a"),
                StartFresh(Expired),
            ),
            (
                "exactly at the ttl is expired",
                Some(row(24 * HOUR, pod("a"))),
                "coder",
                pod("a"),
                StartFresh(Expired),
            ),
            (
                "a microsecond before the ttl resumes",
                Some(row(24 * HOUR - Duration::from_micros(1), pod("a"))),
                "coder",
                pod("a"),
                Resume,
            ),
            (
                "per-agent ttl: 3 h old reviewer expired",
                Some(row(3 * HOUR, pod("a"))),
                "reviewer",
                pod("a"),
                StartFresh(Expired),
            ),
            (
                "per-agent ttl: 1 h old reviewer resumes",
                Some(row(HOUR, pod("a"))),
                "reviewer",
                pod("a"),
                Resume,
            ),
            (
                "other host",
                Some(row(HOUR, pod("a"))),
                "coder",
                pod("b"),
                StartFresh(BindingMismatch),
            ),
            (
                "expiry wins over mismatch",
                Some(row(25 * HOUR, pod("a"))),
                "coder",
                pod("b"),
                StartFresh(Expired),
            ),
            (
                "request without binding resumes",
                Some(row(HOUR, pod("a"))),
                "coder",
                Binding::default(),
                Resume,
            ),
            (
                "row without binding resumes anywhere",
                Some(row(HOUR, Binding::default())),
                "coder",
                pod("b"),
                Resume,
            ),
            (
                "empty request field matches anything",
                Some(row(HOUR, pod("a"))),
                "coder",
                Binding {
                    host: String::new(),
                    ..pod("b")
                },
                Resume,
            ),
        ];
        for (name, row, agent, binding, expected) in cases {
            assert_eq!(
                decide(row.as_ref(), agent, &binding, now(), &policy()),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn a_claude_session_resumes_from_another_cwd_but_a_per_project_one_does_not() {
        let stored = row(HOUR, pod("a"));
        let elsewhere = Binding {
            cwd: "/work/other".into(),
            ..pod("a")
        };
        assert_eq!(
            decide(Some(&stored), "coder", &elsewhere, now(), &policy()),
            Decision::Resume
        );
        let gemini = |cwd: &str| Binding {
            provider: "gemini".into(),
            cwd: cwd.into(),
            ..pod("a")
        };
        let stored = row(HOUR, gemini("/work/repo"));
        assert_eq!(
            decide(Some(&stored), "coder", &gemini("/work/other"), now(), &policy()),
            Decision::StartFresh(FreshReason::BindingMismatch)
        );
    }

    #[test]
    fn every_binding_field_can_cause_a_mismatch() {
        let stored = row(HOUR, pod("a"));
        let variants = [
            Binding {
                provider: "codex".into(),
                ..pod("a")
            },
            Binding {
                host: "b".into(),
                ..pod("a")
            },
            Binding {
                config_dir: "/root/.claude".into(),
                ..pod("a")
            },
        ];
        for binding in variants {
            assert_eq!(
                decide(Some(&stored), "coder", &binding, now(), &policy()),
                Decision::StartFresh(FreshReason::BindingMismatch),
                "{binding:?}"
            );
        }
    }

    #[test]
    fn a_policy_change_applies_to_existing_rows_at_once() {
        let stored = row(3 * HOUR, pod("a"));
        assert_eq!(
            decide(Some(&stored), "coder", &pod("a"), now(), &policy()),
            Decision::Resume
        );
        let mut shorter = policy();
        shorter.default_ttl = 2 * HOUR;
        assert_eq!(
            decide(Some(&stored), "coder", &pod("a"), now(), &shorter),
            Decision::StartFresh(FreshReason::Expired)
        );
    }
}
