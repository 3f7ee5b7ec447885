//! Group commit of reports on Postgres: the reports waiting when a batch starts are applied in one
//! short transaction, with exactly the semantics of applying them one at a time in the order they
//! arrived. Each is decided on its key's row as the reports before it in the batch left it; a
//! repeated report id replays the first one's answer; a report id another key recorded is refused.
//!
//! A batch never waits for a key: one report stuck behind a lock must not hold up, or fail, the
//! others that happen to share its batch. In this order, it
//! 1. takes each key's transaction-scoped advisory lock (a stable hash of the key) if no other
//!    batch holds it — two batches never work on one key at once, so they never wait for each
//!    other's rows or inserts;
//! 2. claims the report ids in ascending order with one `INSERT … ON CONFLICT DO NOTHING` (the only
//!    possible wait: for the same report id in flight elsewhere, and the batch's 1 ms lock timeout
//!    ends it — then every report of the batch goes back to its caller);
//! 3. locks the keys' rows `FOR UPDATE SKIP LOCKED`, learning which rows another transaction holds.
//!
//! A report whose key is held in 1 or 3 is handed back to its caller ([`BatchReply::Alone`]), whose
//! own path waits for the lock only as long as the caller does; a claim already made for it is given
//! back before commit. Then the batch decides every other report in memory, and commits after two
//! statements: one writes every changed row, every outcome, every claim given back, the tombstones
//! of the keys it left cleared (deleting those of the keys it stored an id for) and every applied
//! report's history event (trimming each key's history); one more deletes (or marks) the
//! transcripts of the ids it cleared, only when it cleared any. Everything is
//! transaction-scoped with unnamed statements, so it stays correct behind a pooler in transaction
//! mode.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Row};

use super::history::Append;
use super::{PostgresStore, SessionRecord};
use crate::domain::{
    HistoryEvent, ReportOutcome, ResumeFailureCause, RowEffect, RowReport, SessionKey, SessionRow, StoreResult,
    Tombstone, TranscriptFate,
};
use crate::store::{ReportReply, StoreError, StoredReport};

/// What a waiting report does.
#[derive(Debug, Clone)]
pub(super) enum ReportWork {
    /// A completed run: its row, whatever the key held.
    Store(StoreResult),
    /// A failed run, decided on the row.
    OnRow(RowReport),
}

/// One report waiting for its batch.
#[derive(Debug, Clone)]
pub(super) struct PendingReport {
    pub key: SessionKey,
    pub report_id: Option<String>,
    pub now: DateTime<Utc>,
    pub work: ReportWork,
}

/// The first argument of every key lock: keeps sessionkeeper's advisory locks apart from any
/// other application's on the same database ("sk" in ASCII).
const KEY_LOCK_CLASS: i32 = 0x736b;

/// A key's advisory lock: 32-bit FNV-1a over its three parts, each ended by a unit separator.
/// Fixed here (not `std`'s hasher, which may change between Rust releases) because every replica,
/// old and new binaries alike, must lock the same key under the same number. Two keys that share
/// a number are never in two batches at once.
fn key_lock(key: &SessionKey) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for part in [key.namespace(), key.agent(), key.conversation()] {
        for byte in part.bytes().chain([0x1f]) {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

/// How a report takes part in its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// No report id.
    Plain,
    /// The first report of the batch with its report id: it claims it.
    Claims,
    /// A later report with the same report id: it is answered from the claimer's record.
    Repeats(usize),
}

fn roles(items: &[PendingReport]) -> Vec<Role> {
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    items
        .iter()
        .enumerate()
        .map(|(at, item)| match &item.report_id {
            None => Role::Plain,
            Some(id) => match first.entry((item.key.namespace(), id.as_str())) {
                std::collections::hash_map::Entry::Occupied(claimer) => Role::Repeats(*claimer.get()),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(at);
                    Role::Claims
                }
            },
        })
        .collect()
}

/// The record a report id answers with: the one this batch writes, or one committed before.
enum Record {
    Fresh { key: SessionKey, outcome: ReportOutcome },
    Committed(StoredReport),
}

impl Record {
    fn reply(&self, key: &SessionKey) -> Result<ReportReply, StoreError> {
        match self {
            Record::Fresh { key: owner, outcome } if owner == key => Ok(ReportReply::Replayed(outcome.clone())),
            Record::Fresh { .. } => Ok(ReportReply::ReportIdReused),
            Record::Committed(stored) => stored.clone().into_reply(key),
        }
    }
}

/// Applies the active reports one after another to `rows` (each key's row as locked, updated in
/// place), in arrival order; returns each active report's outcome.
/// `cleared[at]` is the row the report at `at` cleared (its transcripts' fate and its tombstone
/// are its to write); `events[at]` its history event (with the `keep` of its policy).
fn apply_in_order(
    items: &[PendingReport],
    active: &[bool],
    rows: &mut HashMap<SessionKey, Option<SessionRow>>,
    cleared: &mut [Option<SessionRow>],
    events: &mut [Option<(HistoryEvent, u32)>],
) -> Vec<Option<ReportOutcome>> {
    items
        .iter()
        .zip(active)
        .zip(cleared.iter_mut().zip(events.iter_mut()))
        .map(|((item, &active), (cleared, event))| {
            if !active {
                return None;
            }
            let row = rows.entry(item.key.clone()).or_default();
            Some(match &item.work {
                ReportWork::Store(result) => {
                    *row = Some(result.row.clone());
                    *event = Some((HistoryEvent::of_store(result, item.now), result.history_events));
                    result.outcome.clone()
                }
                ReportWork::OnRow(report) => {
                    let found = row.clone();
                    let decision = report.decide(row.as_ref());
                    match &decision.effect {
                        RowEffect::None => {}
                        RowEffect::Clear { expected_session_id } => {
                            if row.as_ref().is_some_and(|r| &r.session_id == expected_session_id) {
                                *cleared = row.take();
                            }
                        }
                        RowEffect::CountFailure {
                            expected_session_id,
                            failure_count,
                        } => {
                            if let Some(r) = row.as_mut().filter(|r| &r.session_id == expected_session_id) {
                                r.failure_count = *failure_count;
                            }
                        }
                    }
                    let logged =
                        HistoryEvent::of_report(report, found.as_ref(), &decision, cleared.is_some(), item.now);
                    *event = Some((logged, report.history_events));
                    decision.outcome
                }
            })
        })
        .collect()
}

/// A key's parts, for sorting and for binding as arrays.
fn parts(key: &SessionKey) -> (&str, &str, &str) {
    (key.namespace(), key.agent(), key.conversation())
}

/// The claims of report ids, in ascending order: returns the ones claimed.
const CLAIM_REPORTS: &str = "INSERT INTO report \
     (namespace, report_id, agent, conversation, result_class, action, session_id, retry_fresh, created_at) \
     SELECT c.namespace, c.report_id, c.agent, c.conversation, c.result_class, '', '', false, c.created_at \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]) \
     AS c(namespace, report_id, agent, conversation, result_class, created_at) \
     ON CONFLICT (namespace, report_id) DO NOTHING RETURNING namespace, report_id";
/// The records of report ids claimed before.
const SELECT_REPORTS: &str = "SELECT r.namespace, r.report_id, r.agent, r.conversation, r.result_class, \
     r.action, r.session_id, r.retry_fresh, r.cause \
     FROM report r JOIN unnest($1::text[], $2::text[]) AS k(namespace, report_id) \
     ON r.namespace = k.namespace AND r.report_id = k.report_id";
/// The rows of the batch's keys, each locked unless another transaction holds it: then `busy`
/// says that it exists (the batch does not wait for it).
const SELECT_SESSIONS_SKIP_LOCKED: &str = "SELECT k.ordinal, s.session_id IS NOT NULL AS found, \
     (s.session_id IS NULL AND EXISTS (SELECT 1 FROM session x \
         WHERE x.namespace = k.namespace AND x.agent = k.agent AND x.conversation = k.conversation)) AS busy, \
     s.session_id, s.provider, s.host, s.config_dir, s.cwd, \
     CASE WHEN isfinite(s.last_used_at) THEN s.last_used_at END AS last_used_at, s.failure_count \
     FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(namespace, agent, conversation, ordinal) \
     LEFT JOIN LATERAL (SELECT * FROM session s \
         WHERE s.namespace = k.namespace AND s.agent = k.agent AND s.conversation = k.conversation \
         FOR UPDATE SKIP LOCKED) s ON true";
/// Every change of the batch at once: the rows it cleared, the rows it wrote (deleting their keys'
/// tombstones), the outcomes of the report ids it claimed, the claims it gives back, the
/// tombstones of the keys it left cleared ($21–$36) and every applied report's history event
/// ($37–$55); the recorded outcomes' causes are $56. Each key and each report id appears at most
/// once; the counts come back so that a difference (which the locks rule out) fails the batch
/// instead of passing unnoticed.
const WRITE_BATCH_ROWS: &str = "WITH cleared AS ( \
         DELETE FROM session s USING unnest($1::text[], $2::text[], $3::text[]) AS d(namespace, agent, conversation) \
         WHERE s.namespace = d.namespace AND s.agent = d.agent AND s.conversation = d.conversation RETURNING 1), \
     stored AS ( \
         INSERT INTO session \
         (namespace, agent, conversation, session_id, provider, host, config_dir, cwd, last_used_at, failure_count) \
         SELECT * FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
             $11::text[], $12::timestamptz[], $13::int4[]) \
         ON CONFLICT (namespace, agent, conversation) DO UPDATE SET \
         session_id = EXCLUDED.session_id, provider = EXCLUDED.provider, host = EXCLUDED.host, \
         config_dir = EXCLUDED.config_dir, cwd = EXCLUDED.cwd, last_used_at = EXCLUDED.last_used_at, \
         failure_count = EXCLUDED.failure_count RETURNING 1), \
     untombed AS ( \
         DELETE FROM tombstone t USING unnest($4::text[], $5::text[], $6::text[]) AS k(namespace, agent, conversation) \
         WHERE t.namespace = k.namespace AND t.agent = k.agent AND t.conversation = k.conversation), \
     recorded AS ( \
         UPDATE report r SET action = o.action, session_id = o.session_id, retry_fresh = o.retry_fresh, \
             cause = o.cause \
         FROM unnest($14::text[], $15::text[], $16::text[], $17::text[], $18::bool[], $56::text[]) \
         AS o(namespace, report_id, action, session_id, retry_fresh, cause) \
         WHERE r.namespace = o.namespace AND r.report_id = o.report_id RETURNING 1), \
     released AS ( \
         DELETE FROM report r USING unnest($19::text[], $20::text[]) AS u(namespace, report_id) \
         WHERE r.namespace = u.namespace AND r.report_id = u.report_id RETURNING 1)";
static WRITE_BATCH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{WRITE_BATCH_ROWS}, {}, {} \
         SELECT (SELECT count(*) FROM cleared), (SELECT count(*) FROM stored), (SELECT count(*) FROM recorded), \
             (SELECT count(*) FROM released), (SELECT count(*) FROM t_written), (SELECT appended FROM h_appended)",
        super::tombstone::written_cte(21, "true"),
        super::history::append_ctes(37, "true"),
    )
});

/// A row of [`SELECT_SESSIONS_SKIP_LOCKED`].
#[derive(sqlx::FromRow)]
struct LockedRecord {
    ordinal: i64,
    found: bool,
    busy: bool,
    session_id: Option<String>,
    provider: Option<String>,
    host: Option<String>,
    config_dir: Option<String>,
    cwd: Option<String>,
    last_used_at: Option<DateTime<Utc>>,
    failure_count: Option<i32>,
}

impl LockedRecord {
    /// The row, when one was found and locked.
    fn record(self) -> Option<SessionRecord> {
        if !self.found {
            return None;
        }
        Some(SessionRecord {
            session_id: self.session_id.unwrap_or_default(),
            provider: self.provider.unwrap_or_default(),
            host: self.host.unwrap_or_default(),
            config_dir: self.config_dir.unwrap_or_default(),
            cwd: self.cwd.unwrap_or_default(),
            last_used_at: self.last_used_at,
            failure_count: self.failure_count.unwrap_or_default(),
        })
    }
}

/// A row of [`SELECT_REPORTS`].
#[derive(sqlx::FromRow)]
struct KeyedReport {
    namespace: String,
    report_id: String,
    #[sqlx(flatten)]
    report: StoredReport,
}

/// A batch's answer to one report.
#[derive(Debug)]
pub(super) enum BatchReply {
    /// Applied (or refused) within the batch.
    Done(Result<ReportReply, StoreError>),
    /// Not applied: its key is busy (another transaction holds its row or another batch its key),
    /// or its batch could not be applied. Its caller applies it on its own path, where it waits for
    /// the lock as long as the caller does and no longer; the batch never waits for it.
    Alone,
}

/// Applies `items` (two or more) in one transaction; one answer per item, in order.
pub(super) async fn apply_batch(store: &PostgresStore, items: &[PendingReport]) -> Result<Vec<BatchReply>, StoreError> {
    store
        .bounded(async {
            let mut tx = store.lease_for(super::Caller::Batch).await?;
            let roles = roles(items);
            let mut alone = vec![false; items.len()];

            // 1. The keys: a key another batch holds now is left to its reports' callers.
            let held = try_lock_keys(store, tx.conn()?, items).await?;
            for (at, item) in items.iter().enumerate() {
                alone[at] = !held.contains(&key_lock(&item.key));
            }
            spread_to_repeats(&roles, &mut alone);

            // 2. The report ids' claims, ascending. A claim waits only for the same report id in
            // flight elsewhere.
            let mut claimers: Vec<usize> = (0..items.len())
                .filter(|&at| roles[at] == Role::Claims && !alone[at])
                .collect();
            claimers.sort_by(|&a, &b| id_of(&items[a]).cmp(&id_of(&items[b])));
            let (claimed, committed) = claim(store, tx.conn()?, items, &claimers).await?;

            // 3. The rows of the keys the applied reports touch, locked without waiting: a key
            // whose row another transaction holds is left to its reports' callers too.
            let touches: Vec<bool> = (0..items.len())
                .map(|at| {
                    !alone[at]
                        && match roles[at] {
                            Role::Plain => true,
                            Role::Claims => claimed.contains(&id_of(&items[at])),
                            Role::Repeats(_) => false,
                        }
                })
                .collect();
            let mut keys: Vec<&SessionKey> = (0..items.len())
                .filter(|&at| touches[at])
                .map(|at| &items[at].key)
                .collect();
            keys.sort_by(|a, b| parts(a).cmp(&parts(b)));
            keys.dedup();
            let (mut rows, busy) = read_rows(store, tx.conn()?, &keys).await?;
            for (at, item) in items.iter().enumerate() {
                if busy.contains(&item.key) {
                    alone[at] = true;
                }
            }
            spread_to_repeats(&roles, &mut alone);
            let active: Vec<bool> = (0..items.len()).map(|at| !alone[at] && touches[at]).collect();
            rows.retain(|key, _| !busy.contains(key));
            let before = rows.clone();

            // 4. Every report decided in arrival order, on the rows as the ones before left them.
            let mut cleared: Vec<Option<SessionRow>> = vec![None; items.len()];
            let mut events: Vec<Option<(HistoryEvent, u32)>> = vec![None; items.len()];
            let mut outcomes = apply_in_order(items, &active, &mut rows, &mut cleared, &mut events);

            // 5. One statement writes what changed, gives back the claims of reports left alone,
            // writes the tombstones of the keys the batch left cleared (each the last clear's) and
            // deletes those of the keys it stored a new id for, and appends every applied report's
            // history event in arrival order, each key's history trimmed.
            let mut changes = Changes::default();
            for (key, row) in &rows {
                match (&before[key], row) {
                    (was, now) if was == now => {}
                    (_, Some(row)) => changes.stored.push((key, row)),
                    (Some(_), None) => changes.cleared.push(key),
                    (None, None) => {}
                }
            }
            for &at in &claimers {
                if !claimed.contains(&id_of(&items[at])) {
                    continue;
                }
                match &outcomes[at] {
                    Some(outcome) => changes.recorded.push((&items[at], outcome)),
                    None => changes.released.push(&items[at]),
                }
            }
            let clearers: Vec<usize> = (0..items.len()).filter(|&at| cleared[at].is_some()).collect();
            let mut tombstones: HashMap<&SessionKey, Tombstone> = HashMap::new();
            for &at in &clearers {
                if let (ReportWork::OnRow(report), Some(row)) = (&items[at].work, &cleared[at]) {
                    tombstones.insert(&items[at].key, Tombstone::of_report(report, row, items[at].now));
                }
            }
            changes.tombstones = changes
                .cleared
                .iter()
                .filter_map(|key| tombstones.remove(key).map(|t| (*key, t)))
                .collect();
            let logged: Vec<(&SessionKey, HistoryEvent, u32)> = items
                .iter()
                .zip(events)
                .filter_map(|(item, event)| event.map(|(event, keep)| (&item.key, event, keep)))
                .collect();
            changes.events = Append::new(&logged);
            write(store, tx.conn()?, &changes).await?;
            // 5b. The cleared ids' transcripts, in the same transaction: one more statement, only
            // when the batch cleared an id.
            let gone: Vec<(&str, &str, TranscriptFate)> = clearers
                .iter()
                .filter_map(|&at| match &items[at].work {
                    ReportWork::OnRow(report) => Some((
                        items[at].key.namespace(),
                        cleared[at].as_ref().map_or("", |r| r.session_id.as_str()),
                        report.transcript_fate,
                    )),
                    ReportWork::Store(_) => None,
                })
                .collect();
            let deleted = super::transcript_lifecycle::cascade_each(tx.conn()?, &gone)
                .await
                .map_err(|e| store.fail(e))?;
            for (&at, deleted) in clearers.iter().zip(deleted) {
                if let Some(outcome) = outcomes[at].as_mut() {
                    outcome.transcripts_deleted = deleted;
                }
            }
            tx.commit(store).await?;

            // 6. The answers, in arrival order.
            let record_of = |claimer: usize| -> Option<Record> {
                let item = &items[claimer];
                match &outcomes[claimer] {
                    Some(outcome) => Some(Record::Fresh {
                        key: item.key.clone(),
                        outcome: outcome.clone(),
                    }),
                    None => committed.get(&id_of(item)).cloned().map(Record::Committed),
                }
            };
            let vanished = || StoreError::Other("the report id's record vanished after its claim conflicted".into());
            Ok((0..items.len())
                .map(|at| {
                    if alone[at] {
                        return BatchReply::Alone;
                    }
                    BatchReply::Done(match roles[at] {
                        Role::Plain => outcomes[at].clone().map(ReportReply::Applied).ok_or_else(vanished),
                        Role::Claims if active[at] => {
                            outcomes[at].clone().map(ReportReply::Applied).ok_or_else(vanished)
                        }
                        Role::Claims => record_of(at).ok_or_else(vanished).and_then(|r| r.reply(&items[at].key)),
                        Role::Repeats(claimer) => record_of(claimer)
                            .ok_or_else(vanished)
                            .and_then(|r| r.reply(&items[at].key)),
                    })
                })
                .collect())
        })
        .await
}

/// A report repeating a report id whose first report was left alone is left alone too: it is
/// answered by whatever that one's own path records.
fn spread_to_repeats(roles: &[Role], alone: &mut [bool]) {
    for at in 0..roles.len() {
        if let Role::Repeats(claimer) = roles[at]
            && alone[claimer]
        {
            alone[at] = true;
        }
    }
}

/// Takes the locks of the items' keys that no other batch holds, without waiting; returns the
/// ones taken. Only integers are formatted into the statement, which takes them in one round trip.
async fn try_lock_keys(
    store: &PostgresStore,
    conn: &mut sqlx::PgConnection,
    items: &[PendingReport],
) -> Result<HashSet<i32>, StoreError> {
    let mut locks: Vec<i32> = items.iter().map(|item| key_lock(&item.key)).collect();
    locks.sort_unstable();
    locks.dedup();
    let list = locks.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let statement = format!(
        "SELECT k FROM unnest(ARRAY[{list}]::int4[]) AS k WHERE pg_try_advisory_xact_lock({KEY_LOCK_CLASS}, k)"
    );
    let rows = sqlx::raw_sql(AssertSqlSafe(statement))
        .fetch_all(conn)
        .await
        .map_err(|e| store.fail(e))?;
    rows.iter()
        .map(|row| row.try_get::<i32, _>(0).map_err(|e| store.fail(e)))
        .collect()
}

/// Claims the report ids of `claimers`; returns the ids claimed, and the records of the ones that
/// were claimed before.
async fn claim(
    store: &PostgresStore,
    conn: &mut sqlx::PgConnection,
    items: &[PendingReport],
    claimers: &[usize],
) -> Result<(HashSet<(String, String)>, HashMap<(String, String), StoredReport>), StoreError> {
    if claimers.is_empty() {
        return Ok(Default::default());
    }
    let column = |f: fn(&PendingReport) -> &str| -> Vec<&str> { claimers.iter().map(|&at| f(&items[at])).collect() };
    let classes: Vec<&str> = claimers
        .iter()
        .map(|&at| match &items[at].work {
            ReportWork::Store(result) => result.outcome.class.as_str(),
            ReportWork::OnRow(report) => report.class.as_str(),
        })
        .collect();
    let created: Vec<DateTime<Utc>> = claimers.iter().map(|&at| items[at].now).collect();
    let claimed: Vec<(String, String)> = sqlx::query_as(CLAIM_REPORTS)
        .persistent(false)
        .bind(column(|i| i.key.namespace()))
        .bind(column(|i| i.report_id.as_deref().unwrap_or_default()))
        .bind(column(|i| i.key.agent()))
        .bind(column(|i| i.key.conversation()))
        .bind(classes)
        .bind(created)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| store.fail(e))?;
    let claimed: HashSet<(String, String)> = claimed.into_iter().collect();
    let before: Vec<usize> = claimers
        .iter()
        .copied()
        .filter(|&at| !claimed.contains(&id_of(&items[at])))
        .collect();
    let mut committed = HashMap::new();
    if !before.is_empty() {
        let found: Vec<KeyedReport> = sqlx::query_as(SELECT_REPORTS)
            .persistent(false)
            .bind(before.iter().map(|&at| items[at].key.namespace()).collect::<Vec<_>>())
            .bind(
                before
                    .iter()
                    .map(|&at| items[at].report_id.as_deref().unwrap_or_default())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| store.fail(e))?;
        committed.extend(found.into_iter().map(|k| ((k.namespace, k.report_id), k.report)));
    }
    Ok((claimed, committed))
}

/// The rows of `keys`, locked, and the keys whose rows another transaction holds (skipped).
async fn read_rows(
    store: &PostgresStore,
    conn: &mut sqlx::PgConnection,
    keys: &[&SessionKey],
) -> Result<(HashMap<SessionKey, Option<SessionRow>>, HashSet<SessionKey>), StoreError> {
    let mut rows: HashMap<SessionKey, Option<SessionRow>> = keys.iter().map(|k| ((*k).clone(), None)).collect();
    let mut busy = HashSet::new();
    if keys.is_empty() {
        return Ok((rows, busy));
    }
    let records: Vec<LockedRecord> = sqlx::query_as(SELECT_SESSIONS_SKIP_LOCKED)
        .persistent(false)
        .bind(keys.iter().map(|k| k.namespace()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.agent()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.conversation()).collect::<Vec<_>>())
        .fetch_all(conn)
        .await
        .map_err(|e| store.fail(e))?;
    for locked in records {
        let key = usize::try_from(locked.ordinal - 1)
            .ok()
            .and_then(|at| keys.get(at))
            .ok_or_else(|| StoreError::Other(format!("a batched read returned ordinal {}", locked.ordinal).into()))?;
        if locked.busy {
            busy.insert((*key).clone());
        } else if let Some(record) = locked.record() {
            rows.insert((*key).clone(), Some(record.into_row(key)));
        }
    }
    Ok((rows, busy))
}

/// What a batch writes.
#[derive(Default)]
struct Changes<'a> {
    cleared: Vec<&'a SessionKey>,
    stored: Vec<(&'a SessionKey, &'a SessionRow)>,
    recorded: Vec<(&'a PendingReport, &'a ReportOutcome)>,
    /// Claims of reports left alone after all: deleted, so their own path claims them.
    released: Vec<&'a PendingReport>,
    /// The tombstones of (some of) the `cleared` keys.
    tombstones: Vec<(&'a SessionKey, Tombstone)>,
    events: Append<'a>,
}

/// Writes `changes` in one statement, and checks that it changed exactly what it was given.
async fn write(store: &PostgresStore, conn: &mut sqlx::PgConnection, changes: &Changes<'_>) -> Result<(), StoreError> {
    let Changes {
        cleared,
        stored,
        recorded,
        released,
        tombstones,
        events,
    } = changes;
    if cleared.is_empty() && stored.is_empty() && recorded.is_empty() && released.is_empty() && events.is_empty() {
        return Ok(());
    }
    let strings =
        |f: &dyn Fn(&SessionRow) -> &str| -> Vec<String> { stored.iter().map(|(_, r)| f(r).to_owned()).collect() };
    let query = sqlx::query(WRITE_BATCH.as_str())
        .persistent(false)
        .bind(cleared.iter().map(|k| k.namespace()).collect::<Vec<_>>())
        .bind(cleared.iter().map(|k| k.agent()).collect::<Vec<_>>())
        .bind(cleared.iter().map(|k| k.conversation()).collect::<Vec<_>>())
        .bind(stored.iter().map(|(k, _)| k.namespace()).collect::<Vec<_>>())
        .bind(stored.iter().map(|(k, _)| k.agent()).collect::<Vec<_>>())
        .bind(stored.iter().map(|(k, _)| k.conversation()).collect::<Vec<_>>())
        .bind(strings(&|r| &r.session_id))
        .bind(strings(&|r| &r.binding.provider))
        .bind(strings(&|r| &r.binding.host))
        .bind(strings(&|r| &r.binding.config_dir))
        .bind(strings(&|r| &r.binding.cwd))
        .bind(stored.iter().map(|(_, r)| r.last_used_at).collect::<Vec<_>>())
        .bind(
            stored
                .iter()
                .map(|(_, r)| i32::try_from(r.failure_count).unwrap_or(i32::MAX))
                .collect::<Vec<_>>(),
        )
        .bind(recorded.iter().map(|(i, _)| i.key.namespace()).collect::<Vec<_>>())
        .bind(
            recorded
                .iter()
                .map(|(i, _)| i.report_id.as_deref().unwrap_or_default())
                .collect::<Vec<_>>(),
        )
        .bind(recorded.iter().map(|(_, o)| o.action.as_str()).collect::<Vec<_>>())
        .bind(recorded.iter().map(|(_, o)| o.session_id.as_str()).collect::<Vec<_>>())
        .bind(recorded.iter().map(|(_, o)| o.retry_fresh).collect::<Vec<_>>())
        .bind(released.iter().map(|i| i.key.namespace()).collect::<Vec<_>>())
        .bind(
            released
                .iter()
                .map(|i| i.report_id.as_deref().unwrap_or_default())
                .collect::<Vec<_>>(),
        );
    let query = events.bind(super::tombstone::bind_written(query, tombstones)).bind(
        recorded
            .iter()
            .map(|(_, o)| o.cause.map_or("", ResumeFailureCause::as_str))
            .collect::<Vec<_>>(),
    );
    let written = query.fetch_one(conn).await.map_err(|e| store.fail(e))?;
    let counts = (0..6)
        .map(|at| written.try_get::<i64, _>(at))
        .collect::<Result<Vec<i64>, _>>()
        .map_err(|e| store.fail(e))?;
    let expected = [
        cleared.len(),
        stored.len(),
        recorded.len(),
        released.len(),
        tombstones.len(),
        events.len(),
    ]
    .map(count);
    if counts != expected {
        return Err(StoreError::Other(
            format!(
                "a batch of reports wrote {counts:?} (cleared, stored, recorded, released, tombstones, events), \
                 not {expected:?}"
            )
            .into(),
        ));
    }
    Ok(())
}

fn id_of(item: &PendingReport) -> (String, String) {
    (
        item.key.namespace().to_owned(),
        item.report_id.clone().unwrap_or_default(),
    )
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_lock_is_the_same_number_in_every_build() {
        // Replicas of different versions must agree: these values are fixed forever.
        let key = SessionKey::new("ns", "agent", "conv").unwrap();
        assert_eq!(key_lock(&key), key_lock(&key.clone()));
        let other = SessionKey::new("ns", "agen", "tconv").unwrap();
        assert_ne!(key_lock(&key), key_lock(&other), "the separator keeps the parts apart");
        // 32-bit FNV-1a of "ns\x1fagent\x1fconv\x1f", computed independently.
        assert_eq!(key_lock(&key), 0x379d_5d58);
    }

    #[test]
    fn a_repeated_report_id_follows_its_first_report_and_ids_are_per_namespace() {
        let item = |ns: &str, id: Option<&str>| PendingReport {
            key: SessionKey::new(ns, "a", "c").unwrap(),
            report_id: id.map(str::to_owned),
            now: DateTime::UNIX_EPOCH,
            work: ReportWork::OnRow(RowReport {
                class: crate::domain::ResultClass::Transient,
                resumed_session_id: String::new(),
                num_turns: 0,
                unknown_failure_limit: 2,
                transcript_fate: crate::domain::TranscriptFate::Delete,
                binding: crate::domain::Binding::default(),
                matched_signature: None,
                history_events: crate::domain::DEFAULT_HISTORY_EVENTS,
            }),
        };
        let items = [
            item("n", Some("r")),
            item("n", None),
            item("m", Some("r")),
            item("n", Some("r")),
        ];
        assert_eq!(
            roles(&items),
            [Role::Claims, Role::Plain, Role::Claims, Role::Repeats(0)]
        );
    }
}
