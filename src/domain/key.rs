//! The identity of a conversation (`SessionKey`) and where its session can be resumed (`Binding`),
//! with SPEC §3's limits. A `SessionKey` can only be built valid; the error names the field.

use std::fmt;

/// A field that breaks SPEC §3's limits; `field` is the request path the caller sees, and `index`
/// the element of a repeated field (`entries[3]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FieldError {
    pub field: &'static str,
    pub index: Option<usize>,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        FieldError {
            field,
            index: None,
            problem: problem.into(),
        }
    }

    /// The error of one element of a repeated field.
    pub fn at(field: &'static str, index: usize, problem: impl Into<String>) -> Self {
        FieldError {
            field,
            index: Some(index),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(index) => write!(f, "{}[{index}]: {}", self.field, self.problem),
            None => write!(f, "{}: {}", self.field, self.problem),
        }
    }
}

pub const DEFAULT_NAMESPACE: &str = "default";
const MAX_NAME_BYTES: usize = 64;
const MAX_CONVERSATION_BYTES: usize = 256;
/// Longest session id accepted for storage; real ids are UUIDs (36 bytes).
pub const MAX_SESSION_ID_BYTES: usize = 256;

/// One conversation of one agent in one namespace; the primary key of a stored session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    namespace: String,
    agent: String,
    conversation: String,
}

impl SessionKey {
    /// Validates the three parts; an empty namespace becomes `"default"`.
    pub fn new(namespace: &str, agent: &str, conversation: &str) -> Result<Self, FieldError> {
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            namespace
        };
        check_name("key.namespace", namespace)?;
        check_name("key.agent", agent)?;
        check_text("key.conversation", conversation, MAX_CONVERSATION_BYTES)?;
        Ok(SessionKey {
            namespace: namespace.to_owned(),
            agent: agent.to_owned(),
            conversation: conversation.to_owned(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    pub fn conversation(&self) -> &str {
        &self.conversation
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.agent, self.conversation)
    }
}

/// Checks a namespace or agent name: 1 to 64 bytes of `[A-Za-z0-9._-]`.
pub fn check_name(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(FieldError::new(
            field,
            format!("is {} bytes, at most {MAX_NAME_BYTES} allowed", value.len()),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(FieldError::new(
            field,
            format!("contains {bad:?}; only A-Z a-z 0-9 . _ - are allowed"),
        ));
    }
    Ok(())
}

/// What a character that free text must not hold is, or `None` for an allowed one: characters
/// that reorder how the text around them displays (bidirectional embeddings, overrides and
/// isolates) or that are invisible (zero-width space, byte-order mark). Two ids that render the
/// same must not be two keys. The zero-width joiner (U+200D) stays allowed: emoji sequences use it.
fn hidden_character(c: char) -> Option<&'static str> {
    match c {
        '\u{202A}'..='\u{202E}' => Some("a bidirectional embedding or override"),
        '\u{2066}'..='\u{2069}' => Some("a bidirectional isolate"),
        '\u{200B}' => Some("a zero-width space"),
        '\u{FEFF}' => Some("a byte-order mark (zero-width no-break space)"),
        _ => None,
    }
}

/// Checks a free text identifier: 1 to `max` bytes of UTF-8 without control characters,
/// bidirectional controls or invisible characters.
pub fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(FieldError::new(
            field,
            format!("is {} bytes, at most {max} allowed", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(field, "contains a control character"));
    }
    if let Some((c, what)) = value.chars().find_map(|c| hidden_character(c).map(|what| (c, what))) {
        return Err(FieldError::new(
            field,
            format!(
                "contains U+{:04X}, {what}; text that displays differently from its bytes is not allowed",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// Providers whose CLI resumes a session from any working directory: it finds the transcript by
/// id under its config dir, so the cwd does not decide where a session can be resumed. Checked with
/// the real CLIs: Claude Code 2.1.332 (claude-agent-sdk 0.2.189, @anthropic-ai/claude-agent-sdk
/// 0.3.332) finds `<CLAUDE_CONFIG_DIR>/projects/*/<id>.jsonl` from any cwd, even once the original
/// cwd is deleted; Codex 0.163.0 finds `<CODEX_HOME>/sessions/…` from any cwd. For other providers
/// (Gemini CLI keeps sessions per project) the cwd still decides.
pub const CWD_INDEPENDENT_PROVIDERS: [&str; 2] = ["claude", "codex"];

/// Where a session can be resumed. Fields compare as exact strings; empty matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    pub provider: String,
    pub host: String,
    pub config_dir: String,
    pub cwd: String,
}

impl Binding {
    /// A binding is set when any field is non-empty.
    pub fn is_set(&self) -> bool {
        !(self.provider.is_empty() && self.host.is_empty() && self.config_dir.is_empty() && self.cwd.is_empty())
    }

    /// True when the session bound to `other` cannot be resumed where `self` points: provider,
    /// host or config dir non-empty on both sides and different; or the cwd, unless the provider
    /// (either side's, when only one names it) is one whose CLI resumes from any cwd
    /// ([`CWD_INDEPENDENT_PROVIDERS`]).
    pub fn conflicts_with(&self, other: &Binding) -> bool {
        let differs = |a: &str, b: &str| !a.is_empty() && !b.is_empty() && a != b;
        let provider = if self.provider.is_empty() {
            &other.provider
        } else {
            &self.provider
        };
        let cwd_decides = !CWD_INDEPENDENT_PROVIDERS.contains(&provider.as_str());
        differs(&self.provider, &other.provider)
            || differs(&self.host, &other.host)
            || differs(&self.config_dir, &other.config_dir)
            || (cwd_decides && differs(&self.cwd, &other.cwd))
    }

    /// Checks each field: at most 4 KiB, no control characters (empty is allowed).
    pub fn validate(&self) -> Result<(), FieldError> {
        const MAX_BINDING_BYTES: usize = 4096;
        let fields: [(&'static str, &str); 4] = [
            ("binding.provider", &self.provider),
            ("binding.host", &self.host),
            ("binding.config_dir", &self.config_dir),
            ("binding.cwd", &self.cwd),
        ];
        for (field, value) in fields {
            if !value.is_empty() {
                check_text(field, value, MAX_BINDING_BYTES)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_namespace_becomes_default() {
        let key = SessionKey::new("", "coder", "c1").unwrap();
        assert_eq!(key.namespace(), "default");
    }

    #[test]
    fn key_fields_outside_the_limits_are_rejected_naming_the_field() {
        let long_name = "a".repeat(65);
        let long_conversation = "c".repeat(257);
        let cases: [(&str, &str, &str, &str); 8] = [
            ("acme corp", "coder", "c", "key.namespace"),
            (&long_name, "coder", "c", "key.namespace"),
            ("acme", "", "c", "key.agent"),
            ("acme", "cod/er", "c", "key.agent"),
            ("acme", &long_name, "c", "key.agent"),
            ("acme", "coder", "", "key.conversation"),
            ("acme", "coder", &long_conversation, "key.conversation"),
            ("acme", "coder", "line\nbreak", "key.conversation"),
        ];
        for (namespace, agent, conversation, field) in cases {
            let err = SessionKey::new(namespace, agent, conversation).unwrap_err();
            assert_eq!(err.field, field, "{namespace:?} {agent:?} {conversation:?}");
        }
    }

    #[test]
    fn a_conversation_with_hidden_or_direction_changing_characters_is_rejected() {
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
            '\u{200B}', '\u{FEFF}',
        ] {
            let conversation = format!("invoice-{c}42");
            let err = SessionKey::new("acme", "coder", &conversation).unwrap_err();
            assert_eq!(err.field, "key.conversation", "U+{:04X}", u32::from(c));
            assert!(
                err.problem.contains(&format!("U+{:04X}", u32::from(c))),
                "{}",
                err.problem
            );
        }
        // Emoji sequences are joined by U+200D: allowed, as are other non-ASCII letters.
        for conversation in ["family-\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}", "מסמך-7", "会話"] {
            SessionKey::new("acme", "coder", conversation).unwrap();
        }
    }

    #[test]
    fn key_fields_at_the_limits_are_accepted() {
        let name = "a.B_9-".repeat(10) + "abcd";
        assert_eq!(name.len(), 64);
        let conversation = "é".repeat(128);
        assert_eq!(conversation.len(), 256);
        let key = SessionKey::new(&name, &name, &conversation).unwrap();
        assert_eq!(key.conversation(), conversation);
    }

    #[test]
    fn bindings_conflict_only_on_a_field_set_on_both_sides() {
        for provider in ["claude", "codex", "gemini", ""] {
            let row = Binding {
                provider: provider.into(),
                host: "pod-a".into(),
                config_dir: "/home/a/.claude".into(),
                cwd: "/work".into(),
            };
            assert!(!row.conflicts_with(&row.clone()), "{provider}");
            assert!(!row.conflicts_with(&Binding::default()), "{provider}");
            let only_host = Binding {
                host: "pod-a".into(),
                ..Binding::default()
            };
            assert!(!row.conflicts_with(&only_host), "{provider}");
            // (an empty provider matches any: only the host and config dir can differ then)
            let first = usize::from(provider.is_empty());
            for change in first..3 {
                let mut other = row.clone();
                let field = [&mut other.provider, &mut other.host, &mut other.config_dir]
                    .into_iter()
                    .nth(change)
                    .unwrap();
                field.push_str("-elsewhere");
                assert!(row.conflicts_with(&other), "{provider}: field {change}");
            }
        }
    }

    #[test]
    fn the_cwd_decides_only_for_providers_that_resume_per_project() {
        let at = |provider: &str, cwd: &str| Binding {
            provider: provider.into(),
            host: "pod-a".into(),
            config_dir: "/home/a/.claude".into(),
            cwd: cwd.into(),
        };
        // Claude Code and Codex find the transcript under the config dir from any cwd
        for provider in CWD_INDEPENDENT_PROVIDERS {
            assert!(
                !at(provider, "/work/a").conflicts_with(&at(provider, "/work/b")),
                "{provider}"
            );
            // one side naming the provider is enough
            assert!(
                !at(provider, "/work/a").conflicts_with(&at("", "/work/b")),
                "{provider}"
            );
            assert!(
                !at("", "/work/a").conflicts_with(&at(provider, "/work/b")),
                "{provider}"
            );
        }
        // other providers (and an unnamed one) keep sessions per project: the cwd decides
        for provider in ["gemini", ""] {
            assert!(
                at(provider, "/work/a").conflicts_with(&at(provider, "/work/b")),
                "{provider:?}"
            );
        }
        // exact strings: a provider spelled otherwise is not recognised
        assert!(at("Claude", "/work/a").conflicts_with(&at("Claude", "/work/b")));
    }
}
