//! One lifecycle for transcripts and session rows (issue 18 point 3, design §6.2 and §6.3), as
//! pure rules: what becomes of a session id's transcripts when the last row holding it goes away
//! ([`TranscriptFate`]), and how a held transcript changes Get's answer ([`decide_with_transcript`]).
//! No I/O: the store applies the fate in the transaction that removes the row, and the service
//! asks the store whether the row's transcript is held.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Binding, Decision, FreshReason, SessionRow};

/// What becomes of the transcripts of a session id once no row of its namespace holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscriptFate {
    /// Deleted in the transaction that removed the row (`transcript_grace` is 0).
    Delete,
    /// Marked to be deleted by the sweep at this instant (epoch ms); no longer held from now on.
    DeleteAfterMs(i64),
}

impl TranscriptFate {
    /// The fate at `now` under a grace period of `grace` (0: deleted at once).
    pub fn at(now: DateTime<Utc>, grace: Duration) -> TranscriptFate {
        if grace.is_zero() {
            return TranscriptFate::Delete;
        }
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        TranscriptFate::DeleteAfterMs(now.timestamp_millis().saturating_add(grace_ms))
    }
}

/// A row's main transcript as the store found it: the one that makes its session resumable
/// anywhere when held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainTranscript {
    pub project_key: String,
    pub entry_count: u64,
    /// A deletion is pending (the id was cleared under a grace period and not stored since).
    pub delete_pending: bool,
}

impl MainTranscript {
    /// Held: it has entries, no deletion is pending, and it lives under the project key the
    /// caller will load with (any, when the caller names none).
    pub fn is_held(&self, wanted_project_key: Option<&str>) -> bool {
        self.entry_count > 0 && !self.delete_pending && wanted_project_key.is_none_or(|p| p == self.project_key)
    }
}

/// Get's answer once the row's transcript is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptDecision {
    pub decision: Decision,
    /// The project key of the held transcript: the SDK materialises it on any host or config dir.
    pub resumable_anywhere: Option<String>,
}

/// Refines `decision` (from [`super::decide`] on `row`) with the row's held main transcript: a
/// host or config-dir mismatch does not start fresh when the transcript is held, and a resume
/// says it is resumable anywhere. A provider mismatch, and a cwd mismatch where the provider
/// resumes by cwd, still start fresh; an expired row still expires.
pub fn decide_with_transcript(
    decision: Decision,
    row: &SessionRow,
    binding: &Binding,
    held: Option<&MainTranscript>,
) -> TranscriptDecision {
    let unchanged = TranscriptDecision {
        decision,
        resumable_anywhere: None,
    };
    let Some(held) = held else {
        return unchanged;
    };
    let anywhere = || TranscriptDecision {
        decision: Decision::Resume,
        resumable_anywhere: Some(held.project_key.clone()),
    };
    match decision {
        Decision::Resume => anywhere(),
        Decision::StartFresh(FreshReason::BindingMismatch)
            if !without_location(binding).conflicts_with(&without_location(&row.binding)) =>
        {
            anywhere()
        }
        Decision::StartFresh(_) => unchanged,
    }
}

/// The binding without the fields a held transcript makes irrelevant (host, config dir).
fn without_location(binding: &Binding) -> Binding {
    Binding {
        host: String::new(),
        config_dir: String::new(),
        ..binding.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z").unwrap().to_utc()
    }

    fn at(provider: &str, host: &str, config_dir: &str, cwd: &str) -> Binding {
        Binding {
            provider: provider.into(),
            host: host.into(),
            config_dir: config_dir.into(),
            cwd: cwd.into(),
        }
    }

    fn row(binding: Binding) -> SessionRow {
        SessionRow {
            session_id: "s1".into(),
            binding,
            last_used_at: now(),
            failure_count: 0,
        }
    }

    fn main(project_key: &str, entry_count: u64, delete_pending: bool) -> MainTranscript {
        MainTranscript {
            project_key: project_key.into(),
            entry_count,
            delete_pending,
        }
    }

    #[test]
    fn no_grace_deletes_at_once_and_a_grace_marks_now_plus_grace() {
        assert_eq!(TranscriptFate::at(now(), Duration::ZERO), TranscriptFate::Delete);
        assert_eq!(
            TranscriptFate::at(now(), Duration::from_secs(90)),
            TranscriptFate::DeleteAfterMs(now().timestamp_millis() + 90_000)
        );
        assert_eq!(
            TranscriptFate::at(now(), Duration::MAX),
            TranscriptFate::DeleteAfterMs(i64::MAX),
            "saturates"
        );
    }

    #[test]
    fn held_needs_entries_no_pending_deletion_and_the_asked_project_key() {
        let cases = [
            ("entries, any key", main("-work-a", 3, false), None, true),
            ("entries, same key", main("-work-a", 3, false), Some("-work-a"), true),
            (
                "entries, another key",
                main("-work-a", 3, false),
                Some("-work-b"),
                false,
            ),
            ("no entries", main("-work-a", 0, false), None, false),
            ("deletion pending", main("-work-a", 3, true), None, false),
            (
                "deletion pending, same key",
                main("-work-a", 3, true),
                Some("-work-a"),
                false,
            ),
        ];
        for (name, transcript, wanted, held) in cases {
            assert_eq!(transcript.is_held(wanted), held, "{name}");
        }
    }

    #[test]
    fn get_with_a_held_transcript_table() {
        use Decision::*;
        use FreshReason::*;
        let stored = at("claude", "pod-a", "/home/a/.claude", "/work/repo");
        let held = main("-work-repo", 4, false);
        // (name, decide's answer, the request's binding, the held transcript, the answer, anywhere)
        type Case<'a> = (&'a str, Decision, Binding, Option<&'a MainTranscript>, Decision, bool);
        let cases: Vec<Case> = vec![
            ("resume, held", Resume, stored.clone(), Some(&held), Resume, true),
            ("resume, not held", Resume, stored.clone(), None, Resume, false),
            (
                "other host, held",
                StartFresh(BindingMismatch),
                at("claude", "pod-b", "/home/a/.claude", "/work/repo"),
                Some(&held),
                Resume,
                true,
            ),
            (
                "other config dir, held",
                StartFresh(BindingMismatch),
                at("claude", "pod-a", "/tmp/fresh", "/work/repo"),
                Some(&held),
                Resume,
                true,
            ),
            (
                "other host, not held",
                StartFresh(BindingMismatch),
                at("claude", "pod-b", "/home/a/.claude", "/work/repo"),
                None,
                StartFresh(BindingMismatch),
                false,
            ),
            (
                "other provider, held",
                StartFresh(BindingMismatch),
                at("codex", "pod-a", "/home/a/.claude", "/work/repo"),
                Some(&held),
                StartFresh(BindingMismatch),
                false,
            ),
            (
                "other cwd for a provider that resumes by cwd, held",
                StartFresh(BindingMismatch),
                at("gemini", "pod-b", "", "/elsewhere"),
                Some(&held),
                StartFresh(BindingMismatch),
                false,
            ),
            (
                "expired, held",
                StartFresh(Expired),
                stored.clone(),
                Some(&held),
                StartFresh(Expired),
                false,
            ),
        ];
        for (name, decision, binding, transcript, want, anywhere) in cases {
            let stored_row = if name.starts_with("other cwd") {
                row(at("gemini", "pod-a", "", "/work/repo"))
            } else {
                row(stored.clone())
            };
            let got = decide_with_transcript(decision, &stored_row, &binding, transcript);
            assert_eq!(got.decision, want, "{name}");
            assert_eq!(got.resumable_anywhere.is_some(), anywhere, "{name}");
            if anywhere {
                assert_eq!(got.resumable_anywhere.as_deref(), Some("-work-repo"), "{name}");
            }
        }
    }
}
