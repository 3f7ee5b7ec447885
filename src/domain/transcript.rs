//! The identity of an Agent SDK transcript ([`TranscriptKey`]: a namespace, the SDK's project key
//! and session id, and a subpath, `""` for the main transcript) and the check of the entries
//! appended to it ([`Entry::parse`]): each is a JSON object with a string `type`, kept as the text
//! received; its top-level string `uuid`, when it has one, is what the store deduplicates on.
//! Pure: no I/O, no SQL, no protobuf. A `TranscriptKey` can only be built valid; errors name the field.

use std::borrow::Cow;

use super::key::{DEFAULT_NAMESPACE, FieldError, check_name, check_text};

/// Longest project key: the SDK's is a sanitised cwd, cut to 200 characters plus a hash.
pub const MAX_PROJECT_KEY_BYTES: usize = 256;
/// Longest transcript session id. The SDK's are UUIDs, but its conformance suite uses plain
/// words (`sess`, `s1`), so any free text is accepted.
pub const MAX_TRANSCRIPT_SESSION_ID_BYTES: usize = 256;
/// Longest subpath (`subagents/agent-<id>` in practice).
pub const MAX_SUBPATH_BYTES: usize = 1024;
/// Longest `uuid` an entry may carry: it is indexed (Postgres refuses index rows past ~2.7 kB).
pub const MAX_ENTRY_UUID_BYTES: usize = 256;

/// One transcript: the main one of a session (`subpath` empty) or one of its subagents'.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TranscriptKey {
    namespace: String,
    project_key: String,
    session_id: String,
    subpath: String,
}

impl TranscriptKey {
    /// Validates the four parts; an empty namespace becomes `"default"`, an empty subpath is the
    /// main transcript.
    pub fn new(namespace: &str, project_key: &str, session_id: &str, subpath: &str) -> Result<Self, FieldError> {
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            namespace
        };
        check_name("key.namespace", namespace)?;
        check_text("key.project_key", project_key, MAX_PROJECT_KEY_BYTES)?;
        check_text("key.session_id", session_id, MAX_TRANSCRIPT_SESSION_ID_BYTES)?;
        check_subpath("key.subpath", subpath)?;
        Ok(TranscriptKey {
            namespace: namespace.to_owned(),
            project_key: project_key.to_owned(),
            session_id: session_id.to_owned(),
            subpath: subpath.to_owned(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn project_key(&self) -> &str {
        &self.project_key
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// `""` for the main transcript.
    pub fn subpath(&self) -> &str {
        &self.subpath
    }

    pub fn is_main(&self) -> bool {
        self.subpath.is_empty()
    }
}

impl std::fmt::Display for TranscriptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.project_key, self.session_id)?;
        if !self.subpath.is_empty() {
            write!(f, "/{}", self.subpath)?;
        }
        Ok(())
    }
}

/// Checks a subpath: empty (the main transcript), or at most [`MAX_SUBPATH_BYTES`] of free text
/// made of `/`-separated segments, none empty, `.` or `..`, with no backslash (the SDK maps
/// subpaths to files: a subpath must never name a place outside its session's directory).
pub fn check_subpath(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Ok(());
    }
    check_text(field, value, MAX_SUBPATH_BYTES)?;
    if value.contains('\\') {
        return Err(FieldError::new(
            field,
            "contains a backslash; segments are separated by '/'",
        ));
    }
    if let Some(bad) = value.split('/').find(|s| matches!(*s, "" | "." | "..")) {
        return Err(FieldError::new(
            field,
            format!("has a segment {bad:?}; segments must not be empty, '.' or '..'"),
        ));
    }
    Ok(())
}

/// One transcript entry as appended: the JSON text as received (stored byte for byte) and its
/// top-level `uuid`, when it has a string one (the store skips an entry whose uuid the transcript
/// already holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub json: String,
    pub uuid: Option<String>,
}

/// The two members of an entry the service reads; every other member is skipped unread.
#[derive(serde::Deserialize)]
struct EntryHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    uuid: Option<UuidMember<'a>>,
}

/// `uuid` as found: a string is a dedup key; any other JSON value is opaque data (no dedup).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum UuidMember<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Other(serde::de::IgnoredAny),
}

impl Entry {
    /// Checks one entry of at most `max_bytes`: a JSON object with a string `type`. Its string
    /// `uuid` is extracted (at most [`MAX_ENTRY_UUID_BYTES`], no NUL); a `uuid` of another JSON type
    /// is left alone. The problem is described for the caller, without the entry's content.
    pub fn parse(json: String, max_bytes: usize) -> Result<Entry, String> {
        if json.len() > max_bytes {
            return Err(format!("is {} bytes, over the {max_bytes}-byte limit", json.len()));
        }
        // serde would also read a JSON array into the struct, by position.
        if !json.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
            return Err("is not a JSON object".into());
        }
        let head: EntryHead<'_> = serde_json::from_str(&json).map_err(|e| format!("is not valid JSON: {e}"))?;
        if head.kind.is_none() {
            return Err("has no string member \"type\"".into());
        }
        let uuid = match head.uuid {
            Some(UuidMember::Text(uuid)) => {
                if uuid.len() > MAX_ENTRY_UUID_BYTES {
                    return Err(format!(
                        "has a uuid of {} bytes, at most {MAX_ENTRY_UUID_BYTES} allowed",
                        uuid.len()
                    ));
                }
                if uuid.contains('\0') {
                    return Err("has a uuid holding NUL".into());
                }
                Some(uuid.into_owned())
            }
            Some(UuidMember::Other(_)) | None => None,
        };
        Ok(Entry { json, uuid })
    }
}

/// Checks every entry of one append ([`Entry::parse`]); the error names `field` and the entry's
/// index (`entries[3]: is … bytes, over the …-byte limit`).
pub fn parse_entries(
    field: &'static str,
    entries: Vec<String>,
    max_entry_bytes: usize,
) -> Result<Vec<Entry>, FieldError> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, json)| Entry::parse(json, max_entry_bytes).map_err(|problem| FieldError::at(field, i, problem)))
        .collect()
}

/// The SDK whose fold produced a session summary. The Python and TypeScript SDKs fold to different
/// shapes (snake_case and camelCase keys), so a main transcript keeps one summary per dialect.
/// Stored as its code, the protobuf enum's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SummaryDialect {
    /// `fold_session_summary` of the Python claude-agent-sdk.
    ClaudePython,
    /// `foldSessionSummary` of the TypeScript @anthropic-ai/claude-agent-sdk.
    ClaudeTypescript,
}

impl SummaryDialect {
    pub const ALL: [SummaryDialect; 2] = [SummaryDialect::ClaudePython, SummaryDialect::ClaudeTypescript];

    /// The stored code (the protobuf enum's value).
    pub fn code(self) -> i16 {
        match self {
            SummaryDialect::ClaudePython => 1,
            SummaryDialect::ClaudeTypescript => 2,
        }
    }

    /// The dialect of a stored code (or a protobuf value); None for 0 (unspecified) and unknown codes.
    pub fn from_code(code: i64) -> Option<SummaryDialect> {
        SummaryDialect::ALL.into_iter().find(|d| i64::from(d.code()) == code)
    }
}

/// A compare-and-set write of one dialect's summary of a main transcript: written only when the
/// stored version equals `if_version` (0: none stored). The data is a JSON object, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryWrite {
    pub dialect: SummaryDialect,
    pub data_json: String,
    pub if_version: u64,
}

impl SummaryWrite {
    /// Checks a summary write: `data_json` a JSON object of at most `max_bytes`. Errors name
    /// `summary.data_json`, without the content.
    pub fn parse(
        dialect: SummaryDialect,
        data_json: String,
        if_version: u64,
        max_bytes: usize,
    ) -> Result<SummaryWrite, FieldError> {
        const FIELD: &str = "summary.data_json";
        if data_json.len() > max_bytes {
            return Err(FieldError::new(
                FIELD,
                format!("is {} bytes, over the {max_bytes}-byte limit", data_json.len()),
            ));
        }
        if !data_json.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
            return Err(FieldError::new(FIELD, "is not a JSON object"));
        }
        serde_json::from_str::<serde::de::IgnoredAny>(&data_json)
            .map_err(|e| FieldError::new(FIELD, format!("is not valid JSON: {e}")))?;
        Ok(SummaryWrite {
            dialect,
            data_json,
            if_version,
        })
    }
}

/// One dialect's stored summary of a main transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub dialect: SummaryDialect,
    pub data_json: String,
    /// 1 when first written, one more with each write.
    pub version: u64,
    /// The transcript's mtime_ms after the append that wrote it.
    pub mtime_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(project_key: &str, session_id: &str, subpath: &str) -> Result<TranscriptKey, FieldError> {
        TranscriptKey::new("acme", project_key, session_id, subpath)
    }

    #[test]
    fn a_summary_is_a_json_object_within_the_limit_and_dialects_keep_their_codes() {
        let ok = SummaryWrite::parse(SummaryDialect::ClaudePython, r#" {"a":1}"#.into(), 3, 64).unwrap();
        assert_eq!(ok.if_version, 3);
        for bad in ["[1]", "{", "\"x\"", ""] {
            let err = SummaryWrite::parse(SummaryDialect::ClaudePython, bad.into(), 0, 64).unwrap_err();
            assert_eq!(err.field, "summary.data_json", "{bad}");
        }
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(64));
        let err = SummaryWrite::parse(SummaryDialect::ClaudeTypescript, big, 0, 64).unwrap_err();
        assert!(err.problem.contains("over the 64-byte limit"), "{err}");
        for dialect in SummaryDialect::ALL {
            assert_eq!(SummaryDialect::from_code(i64::from(dialect.code())), Some(dialect));
        }
        assert_eq!(SummaryDialect::from_code(0), None);
        assert_eq!(SummaryDialect::from_code(3), None);
    }

    #[test]
    fn a_key_with_plain_word_ids_and_no_subpath_is_the_main_transcript() {
        let main = key("-work-repo", "sess", "").unwrap();
        assert!(main.is_main());
        assert_eq!(main.to_string(), "acme/-work-repo/sess");
        let sub = key("-work-repo", "sess", "subagents/agent-1").unwrap();
        assert!(!sub.is_main());
        assert_eq!(sub.subpath(), "subagents/agent-1");
        assert_eq!(TranscriptKey::new("", "p", "s", "").unwrap().namespace(), "default");
    }

    #[test]
    fn key_fields_outside_the_limits_are_rejected_naming_the_field() {
        let long = "p".repeat(257);
        let long_subpath = format!("subagents/{}", "a".repeat(1020));
        let cases: [(&str, &str, &str, &str, &str); 14] = [
            ("acme corp", "p", "s", "", "key.namespace"),
            ("acme", "", "s", "", "key.project_key"),
            ("acme", &long, "s", "", "key.project_key"),
            ("acme", "p\u{7}", "s", "", "key.project_key"),
            ("acme", "p", "", "", "key.session_id"),
            ("acme", "p", &long, "", "key.session_id"),
            ("acme", "p", "s\n", "", "key.session_id"),
            ("acme", "p", "s", "/subagents", "key.subpath"),
            ("acme", "p", "s", "subagents//a", "key.subpath"),
            ("acme", "p", "s", "subagents/", "key.subpath"),
            ("acme", "p", "s", "subagents/../../etc", "key.subpath"),
            ("acme", "p", "s", "./a", "key.subpath"),
            ("acme", "p", "s", "subagents\\a", "key.subpath"),
            ("acme", "p", "s", &long_subpath, "key.subpath"),
        ];
        for (namespace, project_key, session_id, subpath, field) in cases {
            let err = TranscriptKey::new(namespace, project_key, session_id, subpath).unwrap_err();
            assert_eq!(
                err.field, field,
                "{namespace:?} {project_key:?} {session_id:?} {subpath:?}"
            );
        }
        let nul = key("p", "s", "a\0b").unwrap_err();
        assert_eq!(nul.field, "key.subpath");
    }

    #[test]
    fn key_fields_at_the_limits_are_accepted() {
        let project_key = "é".repeat(128);
        let subpath = format!("{}/{}", "a".repeat(511), "b".repeat(512));
        assert_eq!(subpath.len(), MAX_SUBPATH_BYTES);
        let key = key(&project_key, &project_key, &subpath).unwrap();
        assert_eq!(key.project_key().len(), 256);
        // dots inside a segment are ordinary characters
        TranscriptKey::new("acme", "p", "s", "subagents/agent-1.jsonl/..x/.a").unwrap();
    }

    #[test]
    fn an_entry_is_a_json_object_with_a_string_type_kept_byte_for_byte() {
        let text = r#" {"type":"user","uuid":"u-1","message":{"content":[1,2,{"uuid":"inner"}]},"x":"é"} "#;
        let entry = Entry::parse(text.to_owned(), 1024).unwrap();
        assert_eq!(entry.json, text);
        assert_eq!(entry.uuid.as_deref(), Some("u-1"));
        let without = Entry::parse(r#"{"type":"summary","leafUuid":"x"}"#.to_owned(), 1024).unwrap();
        assert_eq!(without.uuid, None, "only the top-level uuid counts");
        let escaped = Entry::parse(r#"{"uuid":"a\u0062c","type":"x"}"#.to_owned(), 1024).unwrap();
        assert_eq!(escaped.uuid.as_deref(), Some("abc"), "the uuid is compared decoded");
    }

    #[test]
    fn a_uuid_that_is_not_a_string_is_opaque_data_and_not_a_dedup_key() {
        for text in [
            r#"{"type":"x","uuid":null}"#,
            r#"{"type":"x","uuid":7}"#,
            r#"{"type":"x","uuid":{"a":"b"}}"#,
        ] {
            assert_eq!(Entry::parse(text.to_owned(), 1024).unwrap().uuid, None, "{text}");
        }
    }

    #[test]
    fn entries_that_are_not_objects_with_a_string_type_are_refused() {
        let too_long = format!(r#"{{"type":"x","pad":"{}"}}"#, "a".repeat(100));
        let long_uuid = format!(r#"{{"type":"x","uuid":"{}"}}"#, "u".repeat(257));
        let cases = [
            (r#"["user","u-1"]"#, "not a JSON object"),
            ("\"text\"", "not a JSON object"),
            ("", "not a JSON object"),
            (r#"{"type":"x""#, "not valid JSON"),
            (r#"{"type":"x"} {}"#, "not valid JSON"),
            (r#"{"uuid":"u"}"#, "no string member"),
            (r#"{"type":3}"#, "not valid JSON"),
            (r#"{"type":null}"#, "no string member"),
            (r#"{"type":"x","type":"y"}"#, "not valid JSON"),
            (&too_long, "over the 64-byte limit"),
            (&long_uuid, "uuid of 257 bytes"),
            (r#"{"type":"x","uuid":"a\u0000b"}"#, "NUL"),
        ];
        for (text, problem) in cases {
            let max = if text == too_long { 64 } else { 1024 };
            let err = Entry::parse(text.to_owned(), max).unwrap_err();
            assert!(err.contains(problem), "{text}: {err}");
        }
    }

    #[test]
    fn the_error_of_an_append_names_the_field_and_the_entry() {
        let entries = vec![r#"{"type":"x"}"#.to_owned(), "[]".to_owned()];
        let err = parse_entries("entries", entries, 1024).unwrap_err();
        assert_eq!((err.field, err.index), ("entries", Some(1)));
        assert_eq!(err.to_string(), "entries[1]: is not a JSON object");
        let ok = parse_entries("entries", vec![r#"{"type":"x","uuid":"u"}"#.to_owned()], 1024).unwrap();
        assert_eq!(ok[0].uuid.as_deref(), Some("u"));
    }
}
