//! Postgres SQL of a conversation's history (issue 19 point 2): the last events of a key, each
//! written in the statement of the change it records and trimmed in that same statement to the
//! newest `keep` events and 16 KiB (`domain::history_kept`'s rule, as rank and running total
//! newest first). Reports' events, alone or a whole batch's, ride in the statement that writes
//! the report's row or outcome: the [`append_ctes`] fragment, bound by [`Append::bind`]. Forget,
//! an expiry on read and a sweep log theirs from the deleted rows in their own statement (the
//! [`history_from_gone!`] fragment over a `gone` CTE), trimming with the newest event's `keep`
//! (they know no policy). The events' texts and sizes arrive built by `domain::HistoryEvent`.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres};

use crate::domain::{
    Binding, HistoryEvent, HistoryKind, MAX_HISTORY_BYTES, ReportFacts, ResumeFailureCause, SessionKey, history_kept,
};
use crate::store::StoreError;

/// A CTE pair `logged` / `unlogged` that writes a removal event (`$kind`, a literal) at `$at` (a
/// parameter) for each row of the CTE `gone` (deleted session rows, all columns), and deletes the
/// events it pushes out of the key's history: beyond the newest event's `keep` (20 when the key
/// has none) or 16 KiB, skipping the ones another transaction is deleting (as [`append_ctes`]). A
/// removal event counts 64 bytes plus its id (`domain::removal_bytes`).
macro_rules! history_from_gone {
    ($kind:literal, $at:literal) => {
        concat!(
            "logged AS (INSERT INTO history (namespace, agent, conversation, at, kind, session_id, size, keep) \
             SELECT g.namespace, g.agent, g.conversation, ",
            $at,
            ", '",
            $kind,
            "', g.session_id, 64 + octet_length(g.session_id), \
             coalesce((SELECT h.keep FROM history h WHERE h.namespace = g.namespace AND h.agent = g.agent \
                 AND h.conversation = g.conversation ORDER BY h.id DESC LIMIT 1), 20) \
             FROM gone g RETURNING 1), \
             unlogged AS (DELETE FROM history d WHERE d.id = ANY(ARRAY(SELECT o.id FROM history o \
                 WHERE o.id IN (SELECT r.id FROM ( \
                     SELECT x.id, row_number() OVER w AS rn, sum(x.size) OVER w AS total, \
                         first_value(x.keep) OVER w AS keep, 64 + octet_length(g.session_id) AS incoming \
                     FROM history x JOIN gone g ON x.namespace = g.namespace AND x.agent = g.agent \
                         AND x.conversation = g.conversation \
                     WINDOW w AS (PARTITION BY x.namespace, x.agent, x.conversation ORDER BY x.id DESC)) r \
                 WHERE r.rn + 1 > r.keep OR r.total + r.incoming > 16384) \
             FOR UPDATE SKIP LOCKED)) RETURNING 1), "
        )
    };
}
pub(super) use history_from_gone;

/// The CTE `h_appended` that appends new events: arrays `$first`…`$first+17` (in
/// [`Append::bind`]'s order; already trimmed among themselves) and the byte bound `$first+18`,
/// only when `gate` (a SQL condition, `true` for always) holds. Its one row, `appended`, is how
/// many it inserted; the statement must read it (a CTE nobody reads is never run). It calls
/// `sessionkeeper_history_append` (migration 20261128000007), which trims each key's history and
/// inserts the events with a cached generic plan, so a report's statement that writes its row
/// carries its event with no statement of its own and no planning of the trim.
pub(super) fn append_ctes(first: usize, gate: &str) -> String {
    let params = (first..first + 19)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("h_appended AS (SELECT sessionkeeper_history_append({params}) AS appended WHERE {gate})")
}

const SELECT: &str = "SELECT at, kind, session_id, provider, host, config_dir, cwd, result_class, action, \
     matched_signature, resumed_session_id, num_turns, cause \
     FROM history WHERE namespace = $1 AND agent = $2 AND conversation = $3 ORDER BY id";

/// Of `events` (in order, each with the `keep` of its write), the ones a history keeps when they
/// are written together: per key, the newest that fit under the last one's `keep` and 16 KiB.
fn trimmed_among_themselves<'a>(
    events: &'a [(&'a SessionKey, HistoryEvent, u32)],
) -> Vec<&'a (&'a SessionKey, HistoryEvent, u32)> {
    let keys: Vec<&SessionKey> = events.iter().map(|(k, _, _)| *k).collect();
    let mut keep_at = vec![false; events.len()];
    let mut seen = std::collections::HashSet::new();
    for key in keys {
        if !seen.insert(key) {
            continue;
        }
        let of_key: Vec<usize> = (0..events.len()).filter(|&i| events[i].0 == key).collect();
        let Some(&last) = of_key.last() else { continue };
        let stay = history_kept(of_key.iter().rev().map(|&i| events[i].1.bytes()), events[last].2);
        for &i in of_key.iter().rev().take(stay) {
            keep_at[i] = true;
        }
    }
    events.iter().zip(keep_at).filter(|(_, k)| *k).map(|(e, _)| e).collect()
}

/// Events to append, trimmed among themselves, to bind into [`append_ctes`]'s parameters.
#[derive(Default)]
pub(super) struct Append<'a> {
    events: Vec<&'a (&'a SessionKey, HistoryEvent, u32)>,
}

impl<'a> Append<'a> {
    /// `events` in order, each with its key and the `keep` of its write.
    pub(super) fn new(events: &'a [(&'a SessionKey, HistoryEvent, u32)]) -> Self {
        Self {
            events: trimmed_among_themselves(events),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    /// Binds the 18 arrays and the byte bound of [`append_ctes`], in order, after what `query`
    /// has bound.
    pub(super) fn bind<'q>(&self, query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        let events = &self.events;
        let text = |f: &dyn Fn(&SessionKey, &HistoryEvent) -> String| -> Vec<String> {
            events.iter().map(|(k, e, _)| f(k, e)).collect()
        };
        let report = |f: &dyn Fn(&ReportFacts) -> String| -> Vec<String> {
            events
                .iter()
                .map(|(_, e, _)| e.report.as_ref().map(f).unwrap_or_default())
                .collect()
        };
        query
            .bind(text(&|k, _| k.namespace().to_owned()))
            .bind(text(&|k, _| k.agent().to_owned()))
            .bind(text(&|k, _| k.conversation().to_owned()))
            .bind(events.iter().map(|(_, e, _)| e.at).collect::<Vec<_>>())
            .bind(text(&|_, e| e.kind.as_str().to_owned()))
            .bind(text(&|_, e| e.session_id.clone()))
            .bind(text(&|_, e| e.binding.provider.clone()))
            .bind(text(&|_, e| e.binding.host.clone()))
            .bind(text(&|_, e| e.binding.config_dir.clone()))
            .bind(text(&|_, e| e.binding.cwd.clone()))
            .bind(report(&|r| r.class.as_str().to_owned()))
            .bind(report(&|r| r.action.as_str().to_owned()))
            .bind(report(&|r| r.matched_signature.clone().unwrap_or_default()))
            .bind(report(&|r| r.resumed_session_id.clone()))
            .bind(
                events
                    .iter()
                    .map(|(_, e, _)| e.report.as_ref().map_or(0, |r| i64::from(r.num_turns)))
                    .collect::<Vec<_>>(),
            )
            .bind(report(&|r| r.cause.map_or("", ResumeFailureCause::as_str).to_owned()))
            .bind(
                events
                    .iter()
                    .map(|(_, e, _)| i32::try_from(e.bytes()).unwrap_or(i32::MAX))
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|(_, _, keep)| i32::try_from(*keep).unwrap_or(i32::MAX))
                    .collect::<Vec<_>>(),
            )
            .bind(i64::from(MAX_HISTORY_BYTES))
    }
}

/// An event as Postgres returns it.
#[derive(sqlx::FromRow)]
struct EventRecord {
    at: DateTime<Utc>,
    kind: String,
    session_id: String,
    provider: String,
    host: String,
    config_dir: String,
    cwd: String,
    result_class: String,
    action: String,
    matched_signature: String,
    resumed_session_id: String,
    num_turns: i64,
    cause: String,
}

impl EventRecord {
    fn into_event(self) -> Result<HistoryEvent, StoreError> {
        let kind = HistoryKind::parse(&self.kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown history event kind {:?}", self.kind)))?;
        let report = crate::store::report_facts(
            &self.result_class,
            &self.action,
            self.matched_signature,
            self.resumed_session_id,
            self.num_turns,
            &self.cause,
        )?;
        Ok(HistoryEvent {
            at: self.at,
            kind,
            session_id: self.session_id,
            binding: Binding {
                provider: self.provider,
                host: self.host,
                config_dir: self.config_dir,
                cwd: self.cwd,
            },
            report,
        })
    }
}

/// The key's history, oldest first.
pub(super) async fn read(
    store: &super::PostgresStore,
    conn: &mut PgConnection,
    key: &SessionKey,
) -> Result<Vec<HistoryEvent>, StoreError> {
    let records: Vec<EventRecord> = sqlx::query_as(SELECT)
        .persistent(false)
        .bind(key.namespace())
        .bind(key.agent())
        .bind(key.conversation())
        .fetch_all(conn)
        .await
        .map_err(|e| store.fail(e))?;
    records.into_iter().map(EventRecord::into_event).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DEFAULT_HISTORY_EVENTS, EVENT_OVERHEAD_BYTES, removal_bytes};

    #[test]
    fn the_removal_fragment_counts_and_bounds_as_the_domain_does() {
        let sql = history_from_gone!("forgotten", "$4");
        assert!(sql.contains(&format!("{EVENT_OVERHEAD_BYTES} + octet_length(g.session_id)")));
        assert_eq!(removal_bytes("abcd"), EVENT_OVERHEAD_BYTES + 4);
        assert!(sql.contains(&format!("> {MAX_HISTORY_BYTES})")));
        assert!(sql.contains(&format!("LIMIT 1), {DEFAULT_HISTORY_EVENTS})")));
    }

    #[test]
    fn events_written_together_are_trimmed_per_key_under_the_last_ones_keep() {
        let a = SessionKey::new("n", "a", "1").unwrap();
        let b = SessionKey::new("n", "a", "2").unwrap();
        let event = |id: &str| HistoryEvent::of_removal(id, HistoryKind::Forgotten, DateTime::UNIX_EPOCH);
        let events = vec![
            (&a, event("a1"), 5),
            (&b, event("b1"), 5),
            (&a, event("a2"), 5),
            (&a, event("a3"), 2),
        ];
        let kept: Vec<&str> = trimmed_among_themselves(&events)
            .iter()
            .map(|(_, e, _)| e.session_id.as_str())
            .collect();
        assert_eq!(kept, ["b1", "a2", "a3"]);
    }
}
