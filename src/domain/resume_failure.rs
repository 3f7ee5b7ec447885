//! The cause of a resume failure (issue 19 point 3): when a resume fails as SESSION_GONE, the
//! failing run's binding compared with the one the id was stored with, under the binding rule
//! ([`Binding::conflicts_with`], with the provider's cwd rule). Pure: the report path records the
//! cause in the log line and the `cause` label of `sessionkeeper_resume_failures_total`.

use super::{Binding, ResultClass, RowReport, SessionRow};

/// Why a stored session's transcript was not where the resume looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResumeFailureCause {
    /// Same binding: the transcript was lost where it lived (a volume not persisted, the CLI's
    /// cleanup, a read-only config dir, `HOME` overridden).
    LostInPlace,
    /// A binding field that matters differs: the run went to another host, config dir or (for a
    /// per-project provider) cwd.
    RoutedElsewhere,
    /// Either binding is empty: nothing to compare.
    Unknown,
}

impl ResumeFailureCause {
    pub const ALL: [ResumeFailureCause; 3] = [
        ResumeFailureCause::LostInPlace,
        ResumeFailureCause::RoutedElsewhere,
        ResumeFailureCause::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResumeFailureCause::LostInPlace => "lost_in_place",
            ResumeFailureCause::RoutedElsewhere => "routed_elsewhere",
            ResumeFailureCause::Unknown => "unknown",
        }
    }

    /// The cause of a failed run's `report` (decided with the row by `RowReport::decide`, carried
    /// by its outcome to the history event, the log line and the metric): None unless it is a
    /// SESSION_GONE resume; [`ResumeFailureCause::of`] the bindings when it removed `cleared`
    /// (the row holding the resumed id); `unknown` when it removed nothing (the row held another
    /// id, or none).
    pub fn of_report(report: &RowReport, cleared: Option<&SessionRow>) -> Option<ResumeFailureCause> {
        if report.class != ResultClass::SessionGone || report.resumed_session_id.is_empty() {
            return None;
        }
        Some(cleared.map_or(ResumeFailureCause::Unknown, |row| {
            ResumeFailureCause::of(&row.binding, &report.binding)
        }))
    }

    /// The cause of a failed resume of an id stored with `stored` by a run reporting `reported`.
    pub fn of(stored: &Binding, reported: &Binding) -> ResumeFailureCause {
        if !stored.is_set() || !reported.is_set() {
            return ResumeFailureCause::Unknown;
        }
        if reported.conflicts_with(stored) {
            ResumeFailureCause::RoutedElsewhere
        } else {
            ResumeFailureCause::LostInPlace
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claude(host: &str, config_dir: &str, cwd: &str) -> Binding {
        Binding {
            provider: "claude".into(),
            host: host.into(),
            config_dir: config_dir.into(),
            cwd: cwd.into(),
        }
    }

    #[test]
    fn resume_failure_causes_table() {
        use ResumeFailureCause::*;
        let gemini = |cwd: &str| Binding {
            provider: "gemini".into(),
            cwd: cwd.into(),
            ..Binding::default()
        };
        let cases: Vec<(&str, Binding, Binding, ResumeFailureCause)> = vec![
            (
                "same binding",
                claude("w1", "/h/.claude", "/r"),
                claude("w1", "/h/.claude", "/r"),
                LostInPlace,
            ),
            (
                "other host",
                claude("w1", "/h/.claude", "/r"),
                claude("w2", "/h/.claude", "/r"),
                RoutedElsewhere,
            ),
            (
                "other config dir",
                claude("w1", "/h/.claude", "/r"),
                claude("w1", "/root/.claude", "/r"),
                RoutedElsewhere,
            ),
            (
                "claude resumes from any cwd",
                claude("w1", "/h/.claude", "/r"),
                claude("w1", "/h/.claude", "/x"),
                LostInPlace,
            ),
            (
                "a per-project provider's cwd matters",
                gemini("/r"),
                gemini("/x"),
                RoutedElsewhere,
            ),
            (
                "other provider",
                claude("w1", "", ""),
                Binding {
                    provider: "codex".into(),
                    host: "w1".into(),
                    ..Binding::default()
                },
                RoutedElsewhere,
            ),
            (
                "an empty field matches anything",
                claude("w1", "", "/r"),
                claude("w1", "/h/.claude", "/r"),
                LostInPlace,
            ),
            (
                "stored binding empty",
                Binding::default(),
                claude("w1", "/h/.claude", "/r"),
                Unknown,
            ),
            (
                "reported binding empty",
                claude("w1", "/h/.claude", "/r"),
                Binding::default(),
                Unknown,
            ),
            ("both empty", Binding::default(), Binding::default(), Unknown),
        ];
        for (name, stored, reported, expected) in cases {
            assert_eq!(ResumeFailureCause::of(&stored, &reported), expected, "{name}");
        }
    }

    #[test]
    fn every_cause_has_its_own_label() {
        let labels: std::collections::BTreeSet<&str> = ResumeFailureCause::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels.len(), ResumeFailureCause::ALL.len());
    }
}
