//! Tombstones (issue 19 point 1): the small record a key keeps when its session id goes away, so
//! the next Get can say *why* it starts fresh. Pure: which removal makes which reason, what a
//! report's clear records, and how long a tombstone counts. No I/O; the stores write and read
//! tombstones in the transactions that remove rows.

use chrono::{DateTime, Utc};

use super::{Binding, Policy, ResultClass, RowReport, SessionRow};

/// Why a key's session id went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TombstoneReason {
    /// A report said the session is gone (SESSION_GONE).
    ClearedGone,
    /// A report said the id is not a valid session id (INVALID_SESSION_ID).
    ClearedInvalid,
    /// Zero-turn unknown failures of resumes of the id reached `unknown_failure_limit`.
    ClearedFailureLimit,
    /// Forget: the user reset the conversation.
    Forgotten,
    /// A Get found the row past its TTL and deleted it.
    Expired,
    /// A sweep deleted the row past its TTL.
    Swept,
}

impl TombstoneReason {
    pub const ALL: [TombstoneReason; 6] = [
        TombstoneReason::ClearedGone,
        TombstoneReason::ClearedInvalid,
        TombstoneReason::ClearedFailureLimit,
        TombstoneReason::Forgotten,
        TombstoneReason::Expired,
        TombstoneReason::Swept,
    ];

    /// Stable text, as stored and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            TombstoneReason::ClearedGone => "cleared_gone",
            TombstoneReason::ClearedInvalid => "cleared_invalid",
            TombstoneReason::ClearedFailureLimit => "cleared_failure_limit",
            TombstoneReason::Forgotten => "forgotten",
            TombstoneReason::Expired => "expired",
            TombstoneReason::Swept => "swept",
        }
    }

    pub fn parse(text: &str) -> Option<TombstoneReason> {
        TombstoneReason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The reason a report of `class` clears an id with: gone, invalid, or (any other class that
    /// clears, which is only a counted unknown failure) the failure limit.
    pub fn of_clear(class: ResultClass) -> TombstoneReason {
        match class {
            ResultClass::SessionGone => TombstoneReason::ClearedGone,
            ResultClass::InvalidSessionId => TombstoneReason::ClearedInvalid,
            _ => TombstoneReason::ClearedFailureLimit,
        }
    }
}

/// What a key remembers of its last session id once the row is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// The id that went away.
    pub session_id: String,
    pub reason: TombstoneReason,
    pub cleared_at: DateTime<Utc>,
    /// The class of the report that cleared the id; None when no report did.
    pub result_class: Option<ResultClass>,
    /// The signature (as written in the table) that classified that report, when one matched.
    pub matched_signature: Option<String>,
    /// The binding the clearing report's run gave (empty when no report cleared the id).
    pub reported_binding: Binding,
    /// The binding the id was stored with.
    pub stored_binding: Binding,
}

impl Tombstone {
    /// The tombstone of a row removed without a report (forgotten, expired, swept).
    pub fn of_removal(row: &SessionRow, reason: TombstoneReason, now: DateTime<Utc>) -> Tombstone {
        Tombstone {
            session_id: row.session_id.clone(),
            reason,
            cleared_at: now,
            result_class: None,
            matched_signature: None,
            reported_binding: Binding::default(),
            stored_binding: row.binding.clone(),
        }
    }

    /// The tombstone of `row` cleared by `report` at `now`.
    pub fn of_report(report: &RowReport, row: &SessionRow, now: DateTime<Utc>) -> Tombstone {
        Tombstone {
            session_id: row.session_id.clone(),
            reason: TombstoneReason::of_clear(report.class),
            cleared_at: now,
            result_class: Some(report.class),
            matched_signature: report.matched_signature.clone(),
            reported_binding: report.binding.clone(),
            stored_binding: row.binding.clone(),
        }
    }

    /// A tombstone counts until `cleared_at + tombstone_ttl(agent)`; after that Get ignores it
    /// (the sweep deletes it).
    pub fn is_current(&self, agent: &str, now: DateTime<Utc>, policy: &Policy) -> bool {
        now < policy.tombstone_expires_at(agent, self.cleared_at)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::TranscriptFate;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z").unwrap().to_utc()
    }

    #[test]
    fn each_clearing_class_makes_its_reason() {
        let cases = [
            (ResultClass::SessionGone, TombstoneReason::ClearedGone),
            (ResultClass::InvalidSessionId, TombstoneReason::ClearedInvalid),
            (ResultClass::UnknownFailure, TombstoneReason::ClearedFailureLimit),
        ];
        for (class, reason) in cases {
            assert_eq!(TombstoneReason::of_clear(class), reason, "{class:?}");
        }
    }

    #[test]
    fn every_reason_reads_back_from_its_text_and_no_two_share_one() {
        for reason in TombstoneReason::ALL {
            assert_eq!(TombstoneReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(TombstoneReason::parse("cleared"), None);
    }

    #[test]
    fn a_report_tombstone_keeps_both_bindings_the_class_and_the_signature() {
        let stored = Binding {
            provider: "claude".into(),
            host: "pod-a".into(),
            ..Binding::default()
        };
        let reported = Binding {
            host: "pod-b".into(),
            ..stored.clone()
        };
        let row = SessionRow {
            session_id: "s1".into(),
            binding: stored.clone(),
            last_used_at: now(),
            failure_count: 0,
        };
        let report = RowReport {
            class: ResultClass::SessionGone,
            resumed_session_id: "s1".into(),
            num_turns: 0,
            unknown_failure_limit: 2,
            transcript_fate: TranscriptFate::Delete,
            binding: reported.clone(),
            matched_signature: Some("no conversation found".into()),
            history_events: crate::domain::DEFAULT_HISTORY_EVENTS,
        };
        let t = Tombstone::of_report(&report, &row, now());
        assert_eq!(t.reason, TombstoneReason::ClearedGone);
        assert_eq!(t.result_class, Some(ResultClass::SessionGone));
        assert_eq!(t.matched_signature.as_deref(), Some("no conversation found"));
        assert_eq!((t.stored_binding, t.reported_binding), (stored, reported));
    }

    #[test]
    fn a_tombstone_counts_for_the_agents_ttl_by_default_or_the_configured_time() {
        let row = SessionRow {
            session_id: "s1".into(),
            binding: Binding::default(),
            last_used_at: now(),
            failure_count: 0,
        };
        let t = Tombstone::of_removal(&row, TombstoneReason::Forgotten, now());
        let hour = chrono::TimeDelta::hours(1);
        let mut policy = Policy::default();
        assert!(t.is_current("coder", now() + hour * 23, &policy));
        assert!(!t.is_current("coder", now() + hour * 24, &policy));
        policy.tombstone_ttl = Some(Duration::from_secs(3600));
        assert!(t.is_current("coder", now() + hour - chrono::TimeDelta::microseconds(1), &policy));
        assert!(!t.is_current("coder", now() + hour, &policy));
    }
}
