//! A conversation's history (issue 19 point 2): the last events of a key — an id stored, each
//! report, a clear, an expiry (on read or by a sweep), a forget — so that an operator can see,
//! across ids, why a conversation started fresh. Pure: which event an operation makes, how many
//! bytes it counts for, and which events a history keeps ([`kept`]: the newest, at most
//! `[policy] history_events` of them and [`MAX_HISTORY_BYTES`] together). No I/O; the stores
//! write each event in the transaction of the change it records, and trim in that write.

use chrono::{DateTime, Utc};

use super::{Action, Binding, ResultClass, ResumeFailureCause, RowDecision, RowReport, SessionRow, StoreResult};

/// Events a history keeps by default (`[policy] history_events`).
pub const DEFAULT_HISTORY_EVENTS: u32 = 20;
/// Bytes (as [`HistoryEvent::bytes`] counts them) a history keeps at most; the oldest events go.
pub const MAX_HISTORY_BYTES: u32 = 16 * 1024;
/// What an event counts for besides its texts (its time, kind, class, action, numbers).
pub const EVENT_OVERHEAD_BYTES: u32 = 64;
/// Longest kept binding field or signature in an event (cut on a character boundary), so that
/// one event (at most about 5.6 KiB) always fits in a history.
pub const MAX_EVENT_TEXT_BYTES: usize = 1024;

/// What happened to the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HistoryKind {
    /// A completed run's report stored its id.
    Stored,
    /// A failed run's report that removed nothing (kept, counted, superseded, nothing stored).
    Reported,
    /// A failed run's report cleared the stored id.
    Cleared,
    /// A Get found the row past its TTL and deleted it.
    Expired,
    /// A sweep deleted the row past its TTL.
    Swept,
    /// Forget deleted the row.
    Forgotten,
}

impl HistoryKind {
    pub const ALL: [HistoryKind; 6] = [
        HistoryKind::Stored,
        HistoryKind::Reported,
        HistoryKind::Cleared,
        HistoryKind::Expired,
        HistoryKind::Swept,
        HistoryKind::Forgotten,
    ];

    /// Stable text, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryKind::Stored => "stored",
            HistoryKind::Reported => "reported",
            HistoryKind::Cleared => "cleared",
            HistoryKind::Expired => "expired",
            HistoryKind::Swept => "swept",
            HistoryKind::Forgotten => "forgotten",
        }
    }

    pub fn parse(text: &str) -> Option<HistoryKind> {
        HistoryKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// What a report said, as its event keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFacts {
    pub class: ResultClass,
    pub action: Action,
    /// The signature (as written in the table) that classified the result, when one matched.
    pub matched_signature: Option<String>,
    /// The id the run resumed; empty for a fresh run.
    pub resumed_session_id: String,
    pub num_turns: u32,
    /// Why a resume failed as SESSION_GONE (None for every other report).
    pub cause: Option<ResumeFailureCause>,
}

/// One event of a key's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEvent {
    pub at: DateTime<Utc>,
    pub kind: HistoryKind,
    /// The id the event is about: the one stored, cleared, expired, swept or forgotten; for a
    /// report that removed nothing, the id stored after it (empty when none).
    pub session_id: String,
    /// The binding the reporting run gave (empty for an expiry, a sweep or a forget: the
    /// tombstone and the `stored` event keep the row's).
    pub binding: Binding,
    /// Set on the events of reports (`stored`, `reported`, `cleared`).
    pub report: Option<ReportFacts>,
}

impl HistoryEvent {
    /// The event of a completed run's report that stored `result.row`.
    pub fn of_store(result: &StoreResult, at: DateTime<Utc>) -> HistoryEvent {
        HistoryEvent {
            at,
            kind: HistoryKind::Stored,
            session_id: result.row.session_id.clone(),
            binding: cut_binding(&result.row.binding),
            report: Some(ReportFacts {
                class: result.outcome.class,
                action: result.outcome.action,
                matched_signature: result.matched_signature.as_deref().map(cut),
                resumed_session_id: result.resumed_session_id.clone(),
                num_turns: result.num_turns,
                cause: None,
            }),
        }
    }

    /// The event of a failed run's `report` decided on `row` as `decision`; `cleared` when its
    /// compare-and-set removed the row (then the event is `cleared`, about the removed id).
    pub fn of_report(
        report: &RowReport,
        row: Option<&SessionRow>,
        decision: &RowDecision,
        cleared: bool,
        at: DateTime<Utc>,
    ) -> HistoryEvent {
        let removed = row.filter(|_| cleared);
        let (kind, session_id) = match removed {
            Some(row) => (HistoryKind::Cleared, row.session_id.clone()),
            None => (HistoryKind::Reported, decision.outcome.session_id.clone()),
        };
        HistoryEvent {
            at,
            kind,
            session_id,
            binding: cut_binding(&report.binding),
            report: Some(ReportFacts {
                class: report.class,
                action: decision.outcome.action,
                matched_signature: report.matched_signature.as_deref().map(cut),
                resumed_session_id: report.resumed_session_id.clone(),
                num_turns: report.num_turns,
                cause: decision.outcome.cause,
            }),
        }
    }

    /// The event of `session_id`'s row removed without a report (`expired`, `swept`, `forgotten`).
    pub fn of_removal(session_id: &str, kind: HistoryKind, at: DateTime<Utc>) -> HistoryEvent {
        HistoryEvent {
            at,
            kind,
            session_id: session_id.to_owned(),
            binding: Binding::default(),
            report: None,
        }
    }

    /// What the event counts for against [`MAX_HISTORY_BYTES`]: [`EVENT_OVERHEAD_BYTES`] plus
    /// its texts. (A removal event counts `64 + session_id`; the Postgres store computes that
    /// one in SQL, `removal_bytes` below is the same rule.)
    pub fn bytes(&self) -> u32 {
        let b = &self.binding;
        let mut texts = self.session_id.len() + b.provider.len() + b.host.len() + b.config_dir.len() + b.cwd.len();
        if let Some(r) = &self.report {
            texts += r.matched_signature.as_ref().map_or(0, String::len) + r.resumed_session_id.len();
        }
        EVENT_OVERHEAD_BYTES.saturating_add(u32::try_from(texts).unwrap_or(u32::MAX))
    }
}

/// What a removal event of `session_id` counts for (as [`HistoryEvent::bytes`]).
pub fn removal_bytes(session_id: &str) -> u32 {
    HistoryEvent::of_removal(session_id, HistoryKind::Forgotten, DateTime::UNIX_EPOCH).bytes()
}

/// How many of a history's newest events stay, given each event's bytes newest first: the
/// longest run of newest events that holds at most `keep` events and [`MAX_HISTORY_BYTES`]
/// bytes. The stores apply the same rule in SQL (rank and running total, newest first).
pub fn kept(bytes_newest_first: impl IntoIterator<Item = u32>, keep: u32) -> usize {
    let mut total: u64 = 0;
    let mut count = 0;
    for bytes in bytes_newest_first {
        total += u64::from(bytes);
        if count + 1 > keep as usize || total > u64::from(MAX_HISTORY_BYTES) {
            break;
        }
        count += 1;
    }
    count
}

/// Drops the oldest of `events` (oldest first) beyond what [`kept`] keeps.
pub fn trim(events: &mut Vec<HistoryEvent>, keep: u32) {
    let stay = kept(events.iter().rev().map(HistoryEvent::bytes), keep);
    let gone = events.len() - stay;
    events.drain(..gone);
}

fn cut(text: &str) -> String {
    let mut cut = text.len().min(MAX_EVENT_TEXT_BYTES);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_owned()
}

fn cut_binding(b: &Binding) -> Binding {
    Binding {
        provider: cut(&b.provider),
        host: cut(&b.host),
        config_dir: cut(&b.config_dir),
        cwd: cut(&b.cwd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ReportOutcome, TranscriptFate};

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z").unwrap().to_utc() + chrono::TimeDelta::minutes(minute)
    }

    fn binding(host: &str) -> Binding {
        Binding {
            provider: "claude".into(),
            host: host.into(),
            ..Binding::default()
        }
    }

    fn row(id: &str, host: &str) -> SessionRow {
        SessionRow {
            session_id: id.into(),
            binding: binding(host),
            last_used_at: at(0),
            failure_count: 0,
        }
    }

    fn gone(resumed: &str, host: &str) -> RowReport {
        RowReport {
            class: ResultClass::SessionGone,
            resumed_session_id: resumed.into(),
            num_turns: 0,
            unknown_failure_limit: 2,
            transcript_fate: TranscriptFate::Delete,
            binding: binding(host),
            matched_signature: Some("no conversation found".into()),
            history_events: DEFAULT_HISTORY_EVENTS,
        }
    }

    #[test]
    fn a_history_keeps_the_newest_events_up_to_the_count() {
        assert_eq!(kept([100; 30], 20), 20);
        assert_eq!(kept([100; 5], 20), 5);
        assert_eq!(kept([100; 5], 1), 1);
        assert_eq!(kept([], 20), 0);
    }

    #[test]
    fn a_history_keeps_the_newest_events_up_to_16_kib() {
        // 16 events of 1 KiB fill it exactly; with one byte more among them, only 15 stay.
        assert_eq!(kept([1024; 20], 20), 16);
        assert_eq!(kept([1025].into_iter().chain([1024; 19]), 20), 15);
        assert_eq!(
            kept([1024, 1024, 16 * 1024], 20),
            2,
            "a big old event goes, with all before it"
        );
        assert_eq!(kept([MAX_HISTORY_BYTES], 20), 1);
    }

    #[test]
    fn trimming_drops_the_oldest_events() {
        let mut events: Vec<HistoryEvent> = (0..25)
            .map(|i| HistoryEvent::of_removal(&format!("s{i}"), HistoryKind::Forgotten, at(i)))
            .collect();
        trim(&mut events, 20);
        assert_eq!(events.len(), 20);
        assert_eq!(events[0].session_id, "s5");
        assert_eq!(events[19].session_id, "s24");
    }

    #[test]
    fn the_largest_event_fits_in_a_history_alone() {
        let huge = "x".repeat(4096);
        let report = RowReport {
            binding: Binding {
                provider: huge.clone(),
                host: huge.clone(),
                config_dir: huge.clone(),
                cwd: huge.clone(),
            },
            matched_signature: Some(huge),
            resumed_session_id: "r".repeat(256),
            ..gone("", "a")
        };
        let decision = report.decide(None);
        let event = HistoryEvent::of_report(&report, None, &decision, false, at(0));
        assert!(event.bytes() <= MAX_HISTORY_BYTES / 2, "{}", event.bytes());
        assert_eq!(event.binding.cwd.len(), MAX_EVENT_TEXT_BYTES);
        assert_eq!(kept([event.bytes()], 1), 1);
    }

    #[test]
    fn texts_are_cut_on_a_character_boundary() {
        assert_eq!(cut(&"é".repeat(1000)).len(), 1024);
        assert_eq!(cut(&format!("x{}", "é".repeat(1000))).len(), 1023);
    }

    #[test]
    fn a_clearing_report_makes_a_cleared_event_with_the_cause() {
        let report = gone("s1", "b");
        let stored = row("s1", "a");
        let decision = report.decide(Some(&stored));
        let event = HistoryEvent::of_report(&report, Some(&stored), &decision, true, at(1));
        assert_eq!((event.kind, event.session_id.as_str()), (HistoryKind::Cleared, "s1"));
        assert_eq!(event.binding, binding("b"));
        let facts = event.report.expect("a report's facts");
        assert_eq!(
            (
                facts.class,
                facts.action,
                facts.resumed_session_id.as_str(),
                facts.num_turns
            ),
            (ResultClass::SessionGone, Action::Cleared, "s1", 0)
        );
        assert_eq!(facts.matched_signature.as_deref(), Some("no conversation found"));
        assert_eq!(facts.cause, Some(ResumeFailureCause::RoutedElsewhere));
    }

    #[test]
    fn a_report_that_removed_nothing_makes_a_reported_event_about_the_id_stored_after() {
        let report = gone("s1", "a");
        let newer = row("s2", "a");
        let decision = report.decide(Some(&newer));
        let event = HistoryEvent::of_report(&report, Some(&newer), &decision, false, at(1));
        assert_eq!((event.kind, event.session_id.as_str()), (HistoryKind::Reported, "s2"));
        let facts = event.report.expect("a report's facts");
        assert_eq!(facts.action, Action::Superseded);
        assert_eq!(facts.cause, Some(ResumeFailureCause::Unknown));
        // A transient failure has no cause.
        let transient = RowReport {
            class: ResultClass::Transient,
            matched_signature: None,
            ..gone("s2", "a")
        };
        let decision = transient.decide(Some(&newer));
        let event = HistoryEvent::of_report(&transient, Some(&newer), &decision, false, at(2));
        assert_eq!(event.report.and_then(|r| r.cause), None);
    }

    #[test]
    fn a_store_makes_a_stored_event_with_the_run_and_the_binding() {
        let result = StoreResult {
            row: row("s3", "c"),
            outcome: ReportOutcome {
                class: ResultClass::Success,
                action: Action::Stored,
                session_id: "s3".into(),
                retry_fresh: false,
                transcripts_deleted: 0,
                cause: None,
            },
            resumed_session_id: "s2".into(),
            num_turns: 7,
            matched_signature: None,
            history_events: 5,
        };
        let event = HistoryEvent::of_store(&result, at(3));
        assert_eq!(
            (event.kind, event.session_id.as_str(), event.binding.host.as_str()),
            (HistoryKind::Stored, "s3", "c")
        );
        let facts = event.report.expect("a report's facts");
        assert_eq!((facts.num_turns, facts.resumed_session_id.as_str()), (7, "s2"));
    }

    #[test]
    fn a_removal_event_counts_64_bytes_and_its_id() {
        assert_eq!(removal_bytes("abc"), 67);
        let event = HistoryEvent::of_removal("abc", HistoryKind::Expired, at(0));
        assert_eq!((event.report, event.binding), (None, Binding::default()));
    }

    #[test]
    fn every_kind_reads_back_from_its_text() {
        for kind in HistoryKind::ALL {
            assert_eq!(HistoryKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(HistoryKind::parse("report"), None);
    }
}
