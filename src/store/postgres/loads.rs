//! The one statement that answers a batch of loads, written out with its keys as literals so that
//! it and the transaction's `COMMIT` go to Postgres as one simple-protocol query: one round trip
//! where an unnamed statement with parameters takes two (Parse/Describe, then Bind/Execute) and its
//! `COMMIT` a third. The simple protocol is safe behind a transaction-mode pooler (nothing outlives
//! the transaction). Its answers come back as text, so the time is read as microseconds since the
//! Unix epoch rather than a text timestamp whose form would depend on the session's settings.

use chrono::{DateTime, Utc};

use super::SessionRecord;
use crate::domain::SessionKey;
use crate::store::StoreError;

/// `value` as a Postgres string literal that means the same whatever `standard_conforming_strings`
/// says: an escape string (`E'…'`) with its backslashes and quotes doubled. `None` for a NUL, which
/// no Postgres text can hold (validated keys never carry one).
fn text_literal(value: &str) -> Option<String> {
    if value.contains('\0') {
        return None;
    }
    let mut literal = String::with_capacity(value.len() + 3);
    literal.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => literal.push_str("''"),
            '\\' => literal.push_str("\\\\"),
            c => literal.push(c),
        }
    }
    literal.push('\'');
    Some(literal)
}

/// `ARRAY[…]::text[]` of one field of every key.
fn text_array(keys: &[SessionKey], field: fn(&SessionKey) -> &str) -> Result<String, StoreError> {
    let mut array = String::from("ARRAY[");
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            array.push(',');
        }
        let literal = text_literal(field(key))
            .ok_or_else(|| StoreError::Other(format!("key {key} holds a NUL character").into()))?;
        array.push_str(&literal);
    }
    array.push_str("]::text[]");
    Ok(array)
}

/// The rows of `keys` (numbered from 1 in `ordinal`), then `COMMIT`: one query string.
pub(super) fn select_then_commit(keys: &[SessionKey]) -> Result<String, StoreError> {
    Ok(format!(
        "SELECT k.ordinal, s.session_id, s.provider, s.host, s.config_dir, s.cwd, \
         CASE WHEN isfinite(s.last_used_at) \
         THEN (extract(epoch FROM s.last_used_at) * 1000000)::int8 END AS last_used_us, s.failure_count \
         FROM unnest({}, {}, {}) WITH ORDINALITY AS k(namespace, agent, conversation, ordinal) \
         JOIN session s ON s.namespace = k.namespace AND s.agent = k.agent AND s.conversation = k.conversation; \
         COMMIT",
        text_array(keys, SessionKey::namespace)?,
        text_array(keys, SessionKey::agent)?,
        text_array(keys, SessionKey::conversation)?,
    ))
}

/// A row of [`select_then_commit`].
#[derive(sqlx::FromRow)]
pub(super) struct LoadedRecord {
    pub(super) ordinal: i64,
    session_id: String,
    provider: String,
    host: String,
    config_dir: String,
    cwd: String,
    last_used_us: Option<i64>,
    failure_count: i32,
}

impl LoadedRecord {
    pub(super) fn into_record(self) -> SessionRecord {
        SessionRecord {
            session_id: self.session_id,
            provider: self.provider,
            host: self.host,
            config_dir: self.config_dir,
            cwd: self.cwd,
            last_used_at: self.last_used_us.and_then(DateTime::<Utc>::from_timestamp_micros),
            failure_count: self.failure_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_doubles_quotes_and_backslashes_and_refuses_nul() {
        assert_eq!(text_literal("plain").as_deref(), Some("E'plain'"));
        assert_eq!(text_literal(r"it's a \ path").as_deref(), Some(r"E'it''s a \\ path'"));
        assert_eq!(text_literal("x'); DROP TABLE session; --").as_deref(), Some("E'x''); DROP TABLE session; --'"));
        assert_eq!(text_literal("zürich ✓").as_deref(), Some("E'zürich ✓'"));
        assert_eq!(text_literal("a\0b"), None);
    }

    #[test]
    fn the_query_names_every_key_in_order_and_commits() {
        let keys = [SessionKey::new("ns", "coder", "o'brien").unwrap(), SessionKey::new("ns", "coder", "c-2").unwrap()];
        let sql = select_then_commit(&keys).unwrap();
        assert!(sql.contains("unnest(ARRAY[E'ns',E'ns']::text[], ARRAY[E'coder',E'coder']::text[], ARRAY[E'o''brien',E'c-2']::text[])"), "{sql}");
        assert!(sql.ends_with("; COMMIT"), "{sql}");
    }
}
