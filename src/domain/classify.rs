//! Classification of a reported result (SPEC §4's table, with its signatures taken from the shipped packages). The text
//! signatures are data: one table, `signatures.toml`, embedded and parsed once into
//! [`SIGNATURES`], matched case-insensitively over `errors`, `exception` and `result_text`; each row
//! names the provider it applies to and the package version its text was found in. The steps run
//! in the spec's order and the first that matches wins; adding a signature is adding a row. Pure:
//! no I/O beyond the embedded text.

use std::sync::LazyLock;

use serde::Deserialize;

use super::{AgentResult, ResultClass};
use ResultClass::{Auth, InvalidSessionId, Quota, SessionGone, Transient};

/// The table, as shipped: parsed once, on first use. `signatures_table_parses` guards it.
pub static SIGNATURES: LazyLock<Vec<Signature>> =
    LazyLock::new(|| parse_signatures(SIGNATURES_TOML).unwrap_or_else(|e| panic!("src/domain/signatures.toml: {e}")));
/// The table's text (`src/domain/signatures.toml`); its header documents the format.
pub const SIGNATURES_TOML: &str = include_str!("signatures.toml");

/// Which step of the classification a text signature belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Step 2: the session id is dead or malformed. Tried before limits and transient failures.
    DeadSession,
    /// Step 4: the account or the network failed; the session itself is fine.
    KeepSession,
}

/// How a signature's text is found in a lowercased text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternKind {
    /// The text contains this.
    Contains(String),
    /// The text contains `before`, then one id-like token (whitespace-free, with a digit, as ids
    /// have and words do not: "thread 0199a2 not found", not "the thread was not found"), then `after`.
    TokenBetween { before: String, after: String },
    /// The text contains `before`, then anything (a path), then `after`.
    AnyBetween { before: String, after: String },
}

/// One row of the signature table. Patterns and providers are lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub class: ResultClass,
    pub pattern: PatternKind,
    /// `claude`, `codex`, `gemini`, ...; empty: every provider.
    pub provider: String,
    /// The package and version the text was found in (`@openai/codex@0.171.0`).
    pub source: String,
}

/// Why the signature table could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signature {row}: {message}")]
pub struct SignatureError {
    /// 1-based position of the row in the table (0: the table itself).
    pub row: usize,
    pub message: String,
}

/// One `[[signature]]` as written in the TOML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    class: String,
    contains: Option<String>,
    before: Option<String>,
    after: Option<String>,
    between: Option<String>,
    #[serde(default)]
    provider: String,
    source: String,
    /// Only for `scripts/check-signatures`: the literal(s) looked for in the package.
    #[serde(default)]
    #[allow(dead_code)]
    evidence: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    signature: Vec<RawSignature>,
}

/// Reads a signature table (the format of `signatures.toml`), checking every row.
pub fn parse_signatures(text: &str) -> Result<Vec<Signature>, SignatureError> {
    let table: RawTable = toml::from_str(text).map_err(|e| SignatureError {
        row: 0,
        message: e.message().to_owned(),
    })?;
    table
        .signature
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            raw.into_signature()
                .map_err(|message| SignatureError { row: i + 1, message })
        })
        .collect()
}

impl RawSignature {
    fn into_signature(self) -> Result<Signature, String> {
        let class = match self.class.as_str() {
            "session_gone" => SessionGone,
            "invalid_session_id" => InvalidSessionId,
            "quota" => Quota,
            "auth" => Auth,
            "transient" => Transient,
            other => {
                return Err(format!(
                    "class {other:?} is not one of session_gone, invalid_session_id, quota, auth, transient"
                ));
            }
        };
        let lowercase = |what: &str, text: &str| {
            if text.is_empty() {
                Err(format!("{what} is empty"))
            } else if text != text.to_lowercase() {
                Err(format!(
                    "{what} {text:?} must be lowercase (texts are matched lowercased)"
                ))
            } else {
                Ok(())
            }
        };
        let pattern = match (self.contains, self.before, self.after, self.between.as_deref()) {
            (Some(needle), None, None, None) => {
                lowercase("contains", &needle)?;
                PatternKind::Contains(needle)
            }
            (None, Some(before), Some(after), between) => {
                lowercase("before", &before)?;
                lowercase("after", &after)?;
                match between {
                    Some("token") | None => PatternKind::TokenBetween { before, after },
                    Some("any") => PatternKind::AnyBetween { before, after },
                    Some(other) => return Err(format!("between {other:?} is not token or any")),
                }
            }
            _ => return Err("needs either contains, or before and after (with between)".into()),
        };
        if self.provider != self.provider.to_lowercase() {
            return Err(format!("provider {:?} must be lowercase", self.provider));
        }
        if self.source.trim().is_empty() {
            return Err("source (package@version) is required".into());
        }
        Ok(Signature {
            class,
            pattern,
            provider: self.provider,
            source: self.source,
        })
    }
}

impl Signature {
    /// The step of the classification this row belongs to.
    pub fn stage(&self) -> Stage {
        match self.class {
            SessionGone | InvalidSessionId => Stage::DeadSession,
            _ => Stage::KeepSession,
        }
    }

    /// Whether this row is tried for a request of `provider`: its provider's rows and the
    /// provider-less ones; an empty provider tries every row.
    pub fn applies_to(&self, provider: &str) -> bool {
        self.provider.is_empty() || provider.is_empty() || self.provider.eq_ignore_ascii_case(provider)
    }

    /// The pattern as written in the table: its text, or `before…after`.
    pub fn label(&self) -> String {
        match &self.pattern {
            PatternKind::Contains(needle) => needle.clone(),
            PatternKind::TokenBetween { before, after } | PatternKind::AnyBetween { before, after } => {
                format!("{before}…{after}")
            }
        }
    }
}

/// Subtypes of a run that stopped at a limit (step 3).
pub const LIMIT_SUBTYPES: &[&str] = &[
    "error_max_turns",
    "error_max_budget_usd",
    "error_max_structured_output_retries",
];
/// Terminal reasons of a run that stopped at a limit (step 3).
pub const LIMIT_TERMINAL_REASONS: &[&str] = &["max_turns", "budget_exhausted"];
/// API statuses that say nothing about the session (step 5).
pub const API_STATUS_CLASSES: &[(u32, ResultClass)] = &[
    (429, Transient),
    (500, Transient),
    (502, Transient),
    (503, Transient),
    (529, Transient),
    (401, Auth),
    (403, Auth),
];
/// The subtype of a run that failed before its first turn (step 6's structure).
const ERROR_DURING_EXECUTION: &str = "error_during_execution";

impl PatternKind {
    /// Whether this pattern occurs in `text`, which must already be lowercase.
    pub fn matches(&self, text: &str) -> bool {
        match self {
            PatternKind::Contains(needle) => text.contains(needle.as_str()),
            PatternKind::TokenBetween { before, after } => text.match_indices(before.as_str()).any(|(start, _)| {
                let rest = &text[start + before.len()..];
                let token_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let token = &rest[..token_len];
                token.bytes().any(|b| b.is_ascii_digit()) && rest[token_len..].starts_with(after.as_str())
            }),
            PatternKind::AnyBetween { before, after } => text
                .find(before.as_str())
                .is_some_and(|start| text[start + before.len()..].contains(after.as_str())),
        }
    }
}

/// How a result was classified, and by what: the step of SPEC §4 that decided and, for a text
/// step, the row that matched (a built-in one or an operator's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification<'a> {
    pub class: ResultClass,
    /// 1–7, the step of SPEC §4's table that decided.
    pub step: u8,
    pub signature: Option<&'a Signature>,
}

/// The `source` of a row an operator added in the policy file.
pub const OPERATOR_SOURCE: &str = "the policy file";

/// One operator-added row (`[[policy.signatures]]`): `class` one of the five text classes,
/// `contains` matched case-insensitively, `provider` empty for every provider. Texts are lowercased
/// here, so an operator may paste a message as it appears in a log.
pub fn operator_signature(class: &str, contains: &str, provider: &str) -> Result<Signature, String> {
    let contains = contains.trim().to_lowercase();
    if contains.is_empty() {
        return Err("contains is empty".into());
    }
    RawSignature {
        class: class.to_owned(),
        contains: Some(contains),
        before: None,
        after: None,
        between: None,
        provider: provider.trim().to_lowercase(),
        source: OPERATOR_SOURCE.to_owned(),
        evidence: Vec::new(),
    }
    .into_signature()
}

/// Step 4 tries the classes in this order, each row in table order: a quota text wins over an
/// auth text, an auth text over a transient one, wherever they appear.
const KEEP_SESSION_ORDER: [ResultClass; 3] = [Quota, Auth, Transient];

/// Classifies a run's result with the built-in table; `resumed` says whether the run was asked to
/// resume a session, `provider` is the request's `binding.provider` (empty: every row is tried).
pub fn classify(result: &AgentResult, resumed: bool, provider: &str) -> ResultClass {
    explain_with(result, resumed, provider, &[]).class
}

/// [`classify`], saying which step and which row decided.
pub fn explain(result: &AgentResult, resumed: bool, provider: &str) -> Classification<'static> {
    explain_with(result, resumed, provider, &[])
}

/// [`explain`] with the operator's rows (the policy's `signatures`) as well: within steps 2 and
/// 4 they are tried first, in their order; step 1 (success) still wins over every row.
pub fn explain_with<'a>(
    result: &AgentResult,
    resumed: bool,
    provider: &str,
    operator: &'a [Signature],
) -> Classification<'a> {
    let decided = |class, step, signature| Classification { class, step, signature };
    let subtype = result.subtype.as_str();
    // 1. A completed run is a success whatever its texts say.
    if !result.is_error && (subtype.is_empty() || subtype.eq_ignore_ascii_case("success")) {
        return decided(ResultClass::Success, 1, None);
    }
    let texts: Vec<String> = result
        .errors
        .iter()
        .chain([&result.exception, &result.result_text])
        .filter(|t| !t.is_empty())
        .map(|t| t.to_lowercase())
        .collect();
    let built_in = || SIGNATURES.iter().filter(|s| s.applies_to(provider));
    let operator_rows = || operator.iter().filter(|s| s.applies_to(provider));
    let matches = |s: &Signature| texts.iter().any(|t| s.pattern.matches(t));
    // 2. The SDK said the session is gone or the id is malformed.
    if let Some(row) = operator_rows()
        .chain(built_in())
        .find(|s| s.stage() == Stage::DeadSession && matches(s))
    {
        return decided(row.class, 2, Some(row));
    }
    // 3. The run did turns and stopped at a limit: the session is valid.
    let at_limit = LIMIT_SUBTYPES.iter().any(|s| subtype.eq_ignore_ascii_case(s))
        || LIMIT_TERMINAL_REASONS
            .iter()
            .any(|r| result.terminal_reason.eq_ignore_ascii_case(r));
    if at_limit && result.num_turns > 0 {
        return decided(ResultClass::LimitReached, 3, None);
    }
    // 4. Quota, auth or transient texts (also what keeps step 6 from clearing a valid session).
    if let Some(row) = operator_rows().find(|s| s.stage() == Stage::KeepSession && matches(s)) {
        return decided(row.class, 4, Some(row));
    }
    for class in KEEP_SESSION_ORDER {
        if let Some(row) = built_in().find(|s| s.class == class && matches(s)) {
            return decided(class, 4, Some(row));
        }
    }
    // 5. The API's status.
    if let Some((_, class)) = API_STATUS_CLASSES
        .iter()
        .find(|(status, _)| *status == result.api_error_status)
    {
        return decided(*class, 5, None);
    }
    // 6. A resume that failed before any turn and that no row explains: the session is gone.
    if resumed && subtype.eq_ignore_ascii_case(ERROR_DURING_EXECUTION) && result.num_turns == 0 {
        return decided(ResultClass::SessionGone, 6, None);
    }
    // 7. Anything else.
    decided(ResultClass::UnknownFailure, 7, None)
}

/// The signature table as the README shows it: one Markdown row per class and provider, in the
/// table's order, its patterns in backticks (`…` stands for an id or a path).
/// `tests/api/signatures_readme.rs` keeps the README's copy equal to this.
pub fn signatures_markdown() -> String {
    let mut groups: Vec<(ResultClass, &str, Vec<String>)> = Vec::new();
    let order = [SessionGone, InvalidSessionId, Quota, Auth, Transient];
    for class in order {
        for signature in SIGNATURES.iter().filter(|s| s.class == class) {
            let label = format!("`{}`", signature.label().replace('|', "\\|"));
            match groups
                .iter_mut()
                .find(|(c, provider, _)| *c == class && *provider == signature.provider)
            {
                Some((_, _, labels)) => labels.push(label),
                None => groups.push((class, signature.provider.as_str(), vec![label])),
            }
        }
    }
    let mut text = String::from("| class | provider | signatures |\n|---|---|---|\n");
    for (class, provider, labels) in groups {
        let provider = if provider.is_empty() {
            "every provider"
        } else {
            provider
        };
        text.push_str(&format!(
            "| {} | {provider} | {} |\n",
            class.as_str().to_uppercase(),
            labels.join(", ")
        ));
    }
    text
}

#[cfg(test)]
#[path = "classify_tests/mod.rs"]
mod tests;

#[cfg(test)]
#[path = "operator_signature_tests.rs"]
mod operator_signature_tests;
