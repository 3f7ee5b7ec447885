//! Group commit for the embedded store: SQLite has one writer, so concurrent writes (reports,
//! forgets, expiry deletes, transcript appends and deletes) queue in the store's `Coalescer` and each batch is applied in one
//! `BEGIN IMMEDIATE` transaction ([`WriteTx`]) with one COMMIT, so one fsync, for all of them.
//! Within a batch the writes run in arrival order, each on the rows as the writes before it left
//! them (two reports on one key see each other's effect, a report id repeated in the batch
//! replays the first), each inside a savepoint of its own: a write that fails is rolled back to
//! its savepoint and answers its own error, and the others go on. A batch fails as a whole only
//! when its transaction does (BEGIN, COMMIT, or a failure that took the transaction with it, as
//! SQLite may on a full disk); then every caller in it gets that error. It owns the batch's
//! transaction and savepoints, not the writes' SQL (that is in `sqlite.rs`).

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnection;

use super::write_tx::WriteTx;
use super::{SqliteStore, lite};
use crate::domain::{
    Entry, RowReport, SessionKey, SessionRow, StoreResult, SummaryWrite, TranscriptFate, TranscriptKey,
};
use crate::store::{AppendReply, Removed, ReportReply, StoreError, SummaryReply, TranscriptsDeleted};

/// One write waiting for a batch: the arguments of the store's call, owned.
#[derive(Debug, Clone)]
pub(super) enum Write {
    Store {
        key: SessionKey,
        report_id: Option<String>,
        now: DateTime<Utc>,
        result: StoreResult,
    },
    OnRow {
        key: SessionKey,
        report_id: Option<String>,
        now: DateTime<Utc>,
        report: RowReport,
    },
    Forget {
        key: SessionKey,
        fate: TranscriptFate,
        now: DateTime<Utc>,
    },
    DeleteIfUnchanged {
        key: SessionKey,
        row: SessionRow,
        fate: TranscriptFate,
        now: DateTime<Utc>,
    },
    AppendTranscript {
        key: TranscriptKey,
        append_id: String,
        entries: Vec<Entry>,
        summary: Option<SummaryWrite>,
        now: DateTime<Utc>,
        max_transcript_bytes: u64,
    },
    DeleteTranscript {
        key: TranscriptKey,
    },
}

/// The answer to one [`Write`], of the kind its call returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Written {
    Reply(ReportReply),
    /// What a forget or an expiry delete removed.
    Removed(Removed),
    Appended((AppendReply, SummaryReply)),
    TranscriptsDeleted(TranscriptsDeleted),
}

impl Written {
    pub(super) fn into_reply(self) -> Result<ReportReply, StoreError> {
        match self {
            Written::Reply(reply) => Ok(reply),
            other => Err(other.mismatch("a report")),
        }
    }

    pub(super) fn into_removed(self) -> Result<Removed, StoreError> {
        match self {
            Written::Removed(removed) => Ok(removed),
            other => Err(other.mismatch("a delete")),
        }
    }

    pub(super) fn into_appended(self) -> Result<(AppendReply, SummaryReply), StoreError> {
        match self {
            Written::Appended(reply) => Ok(reply),
            other => Err(other.mismatch("a transcript append")),
        }
    }

    pub(super) fn into_transcripts_deleted(self) -> Result<TranscriptsDeleted, StoreError> {
        match self {
            Written::TranscriptsDeleted(deleted) => Ok(deleted),
            other => Err(other.mismatch("a transcript delete")),
        }
    }

    fn mismatch(&self, asked: &str) -> StoreError {
        let answered = match self {
            Written::Reply(_) => "a report",
            Written::Removed(_) => "a delete",
            Written::Appended(_) => "a transcript append",
            Written::TranscriptsDeleted(_) => "a transcript delete",
        };
        StoreError::Other(format!("{asked} was answered as {answered}").into())
    }
}

/// Ends a write's savepoint: released when the write succeeded (its changes stay in the
/// transaction), rolled back to first when it failed; and, when another write follows, opens
/// the next one's in the same round trip (each is a hop to the connection's thread).
fn end_of_write(succeeded: bool, another_follows: bool) -> &'static str {
    match (succeeded, another_follows) {
        (true, false) => "RELEASE item",
        (true, true) => "RELEASE item; SAVEPOINT item",
        (false, false) => "ROLLBACK TO item; RELEASE item",
        (false, true) => "ROLLBACK TO item; RELEASE item; SAVEPOINT item",
    }
}

impl SqliteStore {
    /// Applies `writes` in one write transaction: one answer per write, in order. The storage's
    /// refusals (a full disk) are recorded for readiness, whether one write or the batch met them.
    pub(super) async fn apply_batch(&self, writes: Vec<Write>) -> Result<Vec<Result<Written, StoreError>>, StoreError> {
        let answers = self.storage.note(self.apply_batch_once(&writes).await)?;
        Ok(answers.into_iter().map(|answer| self.storage.note(answer)).collect())
    }

    async fn apply_batch_once(&self, writes: &[Write]) -> Result<Vec<Result<Written, StoreError>>, StoreError> {
        let mut tx = WriteTx::begin(&self.pool).await?;
        let mut answers = Vec::with_capacity(writes.len());
        sqlx::raw_sql("SAVEPOINT item").execute(tx.conn()).await.map_err(lite)?;
        for (n, write) in writes.iter().enumerate() {
            let answer = apply(tx.conn(), write).await;
            let end = end_of_write(answer.is_ok(), n + 1 < writes.len());
            if let Err(e) = sqlx::raw_sql(end).execute(tx.conn()).await {
                // The write's failure ended the transaction (SQLite rolls it all back on some
                // errors, a full disk among them): the writes before it are gone too. Dropping
                // `tx` closes the connection.
                return Err(answer.err().unwrap_or_else(|| lite(e)));
            }
            answers.push(answer);
        }
        tx.commit().await?;
        Ok(answers)
    }
}

async fn apply(conn: &mut SqliteConnection, write: &Write) -> Result<Written, StoreError> {
    match write {
        Write::Store {
            key,
            report_id,
            now,
            result,
        } => super::store_result(conn, key, report_id.as_deref(), *now, result)
            .await
            .map(Written::Reply),
        Write::OnRow {
            key,
            report_id,
            now,
            report,
        } => super::report_on_row(conn, key, report_id.as_deref(), *now, report)
            .await
            .map(Written::Reply),
        Write::Forget { key, fate, now } => super::forget(conn, key, *fate, *now).await.map(Written::Removed),
        Write::DeleteIfUnchanged { key, row, fate, now } => super::delete_if_unchanged(conn, key, row, *fate, *now)
            .await
            .map(Written::Removed),
        Write::AppendTranscript {
            key,
            append_id,
            entries,
            summary,
            now,
            max_transcript_bytes,
        } => super::transcript::append(
            conn,
            key,
            append_id,
            entries,
            summary.as_ref(),
            *now,
            *max_transcript_bytes,
        )
        .await
        .map(Written::Appended),
        Write::DeleteTranscript { key } => super::transcript::delete(conn, key)
            .await
            .map(Written::TranscriptsDeleted),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{Action, Binding, ReportOutcome, ResultClass};
    use crate::store::SessionStore;
    use crate::store::sqlite::{SqliteSettings, UPSERT_SESSION};

    const A: &str = "11111111-1111-4111-8111-111111111111";
    const B: &str = "22222222-2222-4222-8222-222222222222";

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_000_000, 0).unwrap()
    }

    fn key(conversation: &str) -> SessionKey {
        SessionKey::new("acme", "coder", conversation).unwrap()
    }

    fn row(session_id: &str, failure_count: u32) -> SessionRow {
        SessionRow {
            session_id: session_id.into(),
            binding: Binding {
                provider: "claude".into(),
                host: "pod-a".into(),
                ..Binding::default()
            },
            last_used_at: t0(),
            failure_count,
        }
    }

    fn outcome(class: ResultClass, action: Action, session_id: &str, retry_fresh: bool) -> ReportOutcome {
        ReportOutcome {
            class,
            action,
            session_id: session_id.into(),
            retry_fresh,
            transcripts_deleted: 0,
            cause: None,
        }
    }

    /// A SESSION_GONE resume's outcome: [`on_row`] reports carry no binding, so the cause is unknown.
    fn gone_outcome(action: Action, session_id: &str, retry_fresh: bool) -> ReportOutcome {
        ReportOutcome {
            cause: Some(crate::domain::ResumeFailureCause::Unknown),
            ..outcome(ResultClass::SessionGone, action, session_id, retry_fresh)
        }
    }

    fn stores(conversation: &str, report_id: &str, session_id: &str) -> Write {
        Write::Store {
            key: key(conversation),
            report_id: Some(report_id.into()),
            now: t0(),
            result: StoreResult {
                row: row(session_id, 0),
                outcome: outcome(ResultClass::Success, Action::Stored, session_id, false),
                resumed_session_id: String::new(),
                num_turns: 1,
                matched_signature: None,
                history_events: crate::domain::DEFAULT_HISTORY_EVENTS,
            },
        }
    }

    fn on_row(conversation: &str, report_id: &str, class: ResultClass, resumed: &str) -> Write {
        Write::OnRow {
            key: key(conversation),
            report_id: Some(report_id.into()),
            now: t0(),
            report: RowReport {
                class,
                resumed_session_id: resumed.into(),
                num_turns: 0,
                unknown_failure_limit: 2,
                transcript_fate: TranscriptFate::Delete,
                binding: crate::domain::Binding::default(),
                matched_signature: None,
                history_events: crate::domain::DEFAULT_HISTORY_EVENTS,
            },
        }
    }

    async fn open() -> (SqliteStore, tempfile::TempDir) {
        open_with(2).await
    }

    async fn open_with(max_connections: u32) -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let settings = SqliteSettings {
            data_dir: dir.path().to_owned(),
            max_connections,
            acquire_timeout: Duration::from_secs(2),
        };
        let store = SqliteStore::open(&settings).await.unwrap();
        store.migrate().await.unwrap();
        (store, dir)
    }

    fn applied(o: ReportOutcome) -> Written {
        Written::Reply(ReportReply::Applied(o))
    }

    fn answers(batch: Vec<Result<Written, StoreError>>) -> Vec<Result<Written, String>> {
        batch.into_iter().map(|a| a.map_err(|e| e.to_string())).collect()
    }

    #[tokio::test]
    async fn a_batch_applies_its_writes_in_order_each_on_the_row_the_ones_before_it_left() {
        let (store, _dir) = open().await;
        let gone = ResultClass::SessionGone;
        let failed = ResultClass::UnknownFailure;
        let batch = vec![
            // One key: stored A, a failure of A counted, B stored, a late gone report about A.
            stores("one", "r1", A),
            on_row("one", "r2", failed, A),
            stores("one", "r3", B),
            on_row("one", "r4", gone, A),
            // Another: A stored, then cleared as gone, then forgotten (nothing left), then a
            // delete of the row as first stored (gone already).
            stores("two", "r5", A),
            on_row("two", "r6", gone, A),
            Write::Forget {
                key: key("two"),
                fate: TranscriptFate::Delete,
                now: t0(),
            },
            Write::DeleteIfUnchanged {
                key: key("two"),
                row: row(A, 0),
                fate: TranscriptFate::Delete,
                now: t0(),
            },
        ];
        let got = answers(store.apply_batch(batch).await.unwrap());
        assert_eq!(
            got,
            vec![
                Ok(applied(outcome(ResultClass::Success, Action::Stored, A, false))),
                Ok(applied(outcome(failed, Action::Kept, A, false))),
                Ok(applied(outcome(ResultClass::Success, Action::Stored, B, false))),
                Ok(applied(gone_outcome(Action::Superseded, B, false))),
                Ok(applied(outcome(ResultClass::Success, Action::Stored, A, false))),
                Ok(applied(gone_outcome(Action::Cleared, "", true))),
                Ok(Written::Removed(Removed::default())),
                Ok(Written::Removed(Removed::default())),
            ]
        );
        assert_eq!(store.load(&key("one")).await.unwrap(), Some(row(B, 0)));
        assert_eq!(store.load(&key("two")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_report_id_repeated_in_one_batch_replays_the_first_and_changes_nothing() {
        let (store, _dir) = open().await;
        let failed = ResultClass::UnknownFailure;
        let batch = vec![
            stores("one", "same", A),
            // The same id again, with other content: the first answer, nothing changed.
            stores("one", "same", B),
            on_row("one", "count", failed, A),
            on_row("one", "count", failed, A),
            // The same id for another key of the namespace: refused, nothing changed.
            stores("other", "same", B),
        ];
        let got = answers(store.apply_batch(batch).await.unwrap());
        let first = outcome(ResultClass::Success, Action::Stored, A, false);
        let counted = outcome(failed, Action::Kept, A, false);
        assert_eq!(
            got,
            vec![
                Ok(applied(first.clone())),
                Ok(Written::Reply(ReportReply::Replayed(first))),
                Ok(applied(counted.clone())),
                Ok(Written::Reply(ReportReply::Replayed(counted))),
                Ok(Written::Reply(ReportReply::ReportIdReused)),
            ]
        );
        assert_eq!(store.load(&key("one")).await.unwrap(), Some(row(A, 1)), "counted once");
        assert_eq!(store.load(&key("other")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_write_that_fails_is_undone_alone_and_the_others_commit() {
        let (store, _dir) = open().await;
        // A row this binary cannot read (its time is text): a report decided on it fails.
        let unreadable = key("unreadable");
        sqlx::query(UPSERT_SESSION)
            .bind(unreadable.namespace())
            .bind(unreadable.agent())
            .bind(unreadable.conversation())
            .bind(A)
            .bind("claude")
            .bind("")
            .bind("")
            .bind("")
            .bind("not a time")
            .bind(0_i64)
            .execute(&store.pool)
            .await
            .unwrap();
        let batch = vec![
            stores("before", "r1", A),
            // Its report id is claimed before the row is read: the claim is undone with it.
            on_row("unreadable", "r2", ResultClass::SessionGone, A),
            stores("after", "r3", B),
        ];
        let got = store.apply_batch(batch).await.unwrap();
        assert_eq!(
            got[0].as_ref().unwrap(),
            &applied(outcome(ResultClass::Success, Action::Stored, A, false))
        );
        assert!(got[1].is_err(), "{:?}", got[1]);
        assert_eq!(
            got[2].as_ref().unwrap(),
            &applied(outcome(ResultClass::Success, Action::Stored, B, false))
        );
        assert_eq!(store.load(&key("before")).await.unwrap(), Some(row(A, 0)));
        assert_eq!(store.load(&key("after")).await.unwrap(), Some(row(B, 0)));
        let r2: i64 = sqlx::query_scalar("SELECT count(*) FROM report WHERE report_id = 'r2'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(r2, 0, "the failed report's claim was undone");
        // The same report id on a readable row is applied, not replayed.
        let retried = store
            .apply_batch(vec![on_row("before", "r2", ResultClass::SessionGone, A)])
            .await
            .unwrap();
        assert_eq!(
            answers(retried),
            vec![Ok(applied(gone_outcome(Action::Cleared, "", true)))]
        );
    }

    #[tokio::test]
    async fn a_full_disk_during_a_batch_answers_unavailable_and_is_recorded_for_readiness() {
        // One connection, whose file may not grow by a page: a disk that is full.
        let (store, _dir) = open_with(1).await;
        let mut conn = store.pool.acquire().await.unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {pages}")))
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        // Rows far larger than the pages left.
        let batch: Vec<Write> = (0..64)
            .map(|i| {
                let mut write = stores(&format!("big-{i}"), &format!("r{i}"), A);
                if let Write::Store { result, .. } = &mut write {
                    result.row.binding.cwd = "x".repeat(4000);
                }
                write
            })
            .collect();
        let refused = |e: &StoreError| e.is_unavailable() && e.to_string().contains("full");
        match store.apply_batch(batch).await {
            // SQLite ended the transaction: the batch fails for all its callers.
            Err(e) => {
                assert!(refused(&e), "{e}");
                println!("the whole batch failed: {e}");
            }
            // Or only the writes that needed space failed, and the commit went through.
            Ok(answers) => {
                assert!(answers.iter().any(Result::is_err), "some write needed a page");
                for answer in &answers {
                    if let Err(e) = answer {
                        assert!(refused(e), "{e}");
                    }
                }
                let failed = answers.iter().filter(|a| a.is_err()).count();
                println!("{failed} of {} writes refused, the others committed", answers.len());
            }
        }
        assert!(
            store.storage.unanswered().is_some(),
            "readiness will prove writes work before it says ready"
        );
    }
}
