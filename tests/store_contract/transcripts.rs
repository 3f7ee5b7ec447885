//! Transcripts (`TranscriptStore`): entries load back byte for byte in append order, keys are
//! separate transcripts, a project lists its main transcripts, uuids deduplicate, append ids replay,
//! the byte limit refuses a whole append, deletes cascade from the main transcript only, pages
//! cover everything once, and concurrent appends lose and duplicate nothing. Session summaries:
//! compare-and-set per dialect in the append's transaction, stamped with the transcript's mtime,
//! replayed, loaded, listed, and deleted with the transcript; the totals behind the gauges. Mirrors
//! the Agent SDKs' SessionStore conformance contracts where they apply to the store.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use sessionkeeper::clock::ManualClock;
use sessionkeeper::domain::{
    Entry, MAX_ENTRY_UUID_BYTES, MAX_PROJECT_KEY_BYTES, MAX_SUBPATH_BYTES, MAX_TRANSCRIPT_SESSION_ID_BYTES, Summary,
    SummaryDialect, SummaryWrite, TranscriptKey,
};
use sessionkeeper::metrics::Metrics;
use sessionkeeper::service::ServiceError;
use sessionkeeper::store::{
    AppendOutcome, AppendReply, ListedSession, SummaryReply, TranscriptStore, TranscriptTotals, TranscriptsDeleted,
};
use sessionkeeper::transcripts::{TranscriptLimits, Transcripts};
use tokio::task::JoinSet;

use crate::fixture::Fixture;
use crate::support::t0;

crate::on_both_stores! {
    fixture;
    both: [
        appended_entries_load_back_in_order_byte_for_byte,
        an_unknown_transcript_or_subpath_loads_as_none,
        three_appends_load_back_in_call_order,
        an_empty_append_creates_nothing,
        a_subpath_is_a_transcript_apart_from_the_main_one,
        the_same_session_id_in_two_projects_is_two_transcripts,
        list_sessions_is_exactly_the_projects_main_transcripts_with_mtimes_that_only_grow,
        a_replayed_append_id_changes_nothing_and_answers_the_first_outcome,
        an_append_id_used_for_another_key_is_refused_and_writes_nothing,
        concurrent_repeats_of_one_append_id_store_its_entries_once,
        entries_whose_uuid_is_stored_are_skipped_within_and_across_calls,
        an_append_past_the_byte_limit_stores_nothing_and_records_no_append_id,
        deleting_the_main_transcript_deletes_its_subpaths_and_nothing_else,
        deleting_a_subpath_deletes_only_that_subpath,
        small_pages_return_every_entry_exactly_once_in_order,
        concurrent_appends_to_one_transcript_lose_and_duplicate_nothing,
        the_longest_accepted_keys_uuids_and_a_one_mib_entry_round_trip,
        a_summary_is_written_by_compare_and_set_with_the_transcripts_mtime,
        a_summary_alone_is_written_only_to_a_transcript_that_exists,
        a_replayed_append_answers_whether_its_summary_was_written,
        each_dialect_keeps_its_own_summary,
        a_refused_append_writes_no_summary,
        concurrent_summary_writes_from_one_version_have_one_winner,
        deleting_a_transcript_deletes_its_summaries,
        summaries_are_refused_for_subpaths_at_the_service_level,
        the_totals_sum_every_transcripts_entries_and_bytes,
    ],
}

const LIMIT: u64 = 64 * 1024 * 1024;

fn tkey(project_key: &str, session_id: &str, subpath: &str) -> TranscriptKey {
    TranscriptKey::new("acme", project_key, session_id, subpath).expect("a valid transcript key")
}

fn main_key(session_id: &str) -> TranscriptKey {
    tkey("-work-repo", session_id, "")
}

/// An entry of type `kind` with a uuid, checked as the service checks it.
fn entry(kind: &str, uuid: Option<&str>, text: &str) -> Entry {
    let value = match uuid {
        Some(uuid) => serde_json::json!({"type": kind, "uuid": uuid, "text": text}),
        None => serde_json::json!({"type": kind, "text": text}),
    };
    Entry::parse(value.to_string(), 1024 * 1024).expect("a valid entry")
}

fn texts(entries: &[Entry]) -> Vec<String> {
    entries.iter().map(|e| e.json.clone()).collect()
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    t0() + TimeDelta::milliseconds(ms)
}

async fn append(store: &dyn TranscriptStore, key: &TranscriptKey, append_id: &str, entries: &[Entry]) -> AppendReply {
    append_at(store, key, append_id, entries, t0()).await
}

async fn append_at(
    store: &dyn TranscriptStore,
    key: &TranscriptKey,
    append_id: &str,
    entries: &[Entry],
    now: DateTime<Utc>,
) -> AppendReply {
    store
        .append(key, append_id, entries, now, LIMIT)
        .await
        .unwrap_or_else(|e| panic!("append {append_id} to {key}: {e}"))
}

fn appended(reply: AppendReply) -> AppendOutcome {
    match reply {
        AppendReply::Appended(outcome) => outcome,
        other => panic!("expected Appended, got {other:?}"),
    }
}

/// Every entry of the transcript with its seq, through pages of at most `max_entries` and
/// `max_bytes`; None when the transcript does not exist.
async fn load_paged(
    store: &dyn TranscriptStore,
    key: &TranscriptKey,
    max_entries: u32,
    max_bytes: u64,
) -> Option<Vec<(i64, String)>> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .load_page(key, after, max_entries, max_bytes, None)
            .await
            .unwrap_or_else(|e| panic!("load_page {key} after {after}: {e}"))?;
        if page.entries.is_empty() {
            assert_eq!(all.len() as u64, page.entry_count, "{key}: every entry was paged");
            return Some(all);
        }
        assert!(
            page.entries.len() <= max_entries as usize,
            "{key}: at most {max_entries} entries"
        );
        let bytes: usize = page.entries.iter().map(|e| e.json.len()).sum();
        assert!(
            page.entries.len() == 1 || bytes as u64 <= max_bytes,
            "{key}: {bytes} bytes in a page of {} entries, at most {max_bytes}",
            page.entries.len()
        );
        for e in page.entries {
            assert!(e.seq > after, "{key}: seq {} after {after}", e.seq);
            after = e.seq;
            all.push((e.seq, e.json));
        }
    }
}

/// The transcript's entries' text in order; None when it does not exist.
async fn load(store: &dyn TranscriptStore, key: &TranscriptKey) -> Option<Vec<String>> {
    let entries = load_paged(store, key, 10_000, u64::MAX / 2).await?;
    Some(entries.into_iter().map(|(_, json)| json).collect())
}

async fn sessions(store: &dyn TranscriptStore, project_key: &str) -> Vec<ListedSession> {
    store
        .list_sessions("acme", project_key, None)
        .await
        .unwrap_or_else(|e| panic!("list_sessions {project_key}: {e}"))
}

async fn session_ids(store: &dyn TranscriptStore, project_key: &str) -> Vec<String> {
    sessions(store, project_key)
        .await
        .into_iter()
        .map(|s| s.session_id)
        .collect()
}

async fn subkeys(store: &dyn TranscriptStore, session_id: &str) -> Vec<String> {
    store
        .list_subkeys("acme", "-work-repo", session_id)
        .await
        .unwrap_or_else(|e| panic!("list_subkeys {session_id}: {e}"))
}

async fn delete(store: &dyn TranscriptStore, key: &TranscriptKey) -> TranscriptsDeleted {
    store.delete(key).await.unwrap_or_else(|e| panic!("delete {key}: {e}"))
}

async fn appended_entries_load_back_in_order_byte_for_byte(fx: &Fixture) {
    let store = fx.transcripts();
    let key = main_key("sess");
    // Key order, spacing and escapes are kept as received; no uuid on some entries.
    let written = vec![
        Entry::parse(
            r#"{ "uuid" : "u-1", "type":"user", "message": {"z": 1, "a": [1, 2.50, "é\u00e9"]} }"#.into(),
            4096,
        )
        .unwrap(),
        entry(
            "assistant",
            Some("u-2"),
            "it's \"quoted\" \\ and 'sql'; DROP TABLE transcript; --",
        ),
        entry("custom-title", None, "ünïcode ✓ 🙂"),
    ];
    let outcome = appended(append_at(store, &key, "a1", &written, at_ms(5)).await);
    let bytes: usize = written.iter().map(|e| e.json.len()).sum();
    assert_eq!(
        outcome,
        AppendOutcome {
            stored: 3,
            duplicates: 0,
            entry_count: 3,
            byte_count: bytes as u64,
            mtime_ms: at_ms(5).timestamp_millis(),
        }
    );
    assert_eq!(load(store, &key).await, Some(texts(&written)));
    let paged = load_paged(store, &key, 100, 1 << 20).await.expect("stored");
    assert_eq!(paged.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [1, 2, 3]);
    let page = store
        .load_page(&key, 0, 100, 1 << 20, None)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(
        (page.entry_count, page.byte_count, page.mtime_ms),
        (3, bytes as u64, outcome.mtime_ms)
    );
}

async fn an_unknown_transcript_or_subpath_loads_as_none(fx: &Fixture) {
    let store = fx.transcripts();
    assert_eq!(load(store, &main_key("nope")).await, None);
    appended(append(store, &main_key("sess"), "a1", &[entry("x", Some("u1"), "")]).await);
    assert_eq!(
        load(store, &tkey("-work-repo", "sess", "subagents/agent-1")).await,
        None
    );
    assert_eq!(load(store, &tkey("-other", "sess", "")).await, None);
    let other_namespace = TranscriptKey::new("other", "-work-repo", "sess", "").unwrap();
    assert_eq!(load(store, &other_namespace).await, None);
}

async fn three_appends_load_back_in_call_order(fx: &Fixture) {
    let store = fx.transcripts();
    let key = main_key("sess");
    let batches = [
        vec![entry("x", Some("u1"), "1"), entry("x", None, "2")],
        vec![entry("x", Some("u3"), "3")],
        vec![
            entry("x", None, "4"),
            entry("x", Some("u5"), "5"),
            entry("x", None, "6"),
        ],
    ];
    for (i, batch) in batches.iter().enumerate() {
        appended(append(store, &key, &format!("a{i}"), batch).await);
    }
    let expected: Vec<String> = batches.iter().flat_map(|b| texts(b)).collect();
    assert_eq!(load(store, &key).await, Some(expected));
    let seqs: Vec<i64> = load_paged(store, &key, 100, 1 << 20)
        .await
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
}

async fn an_empty_append_creates_nothing(fx: &Fixture) {
    let store = fx.transcripts();
    let key = main_key("sess");
    let outcome = appended(append(store, &key, "a0", &[]).await);
    assert_eq!(
        outcome,
        AppendOutcome {
            stored: 0,
            duplicates: 0,
            entry_count: 0,
            byte_count: 0,
            mtime_ms: 0,
        }
    );
    assert_eq!(load(store, &key).await, None, "no phantom transcript");
    assert!(sessions(store, "-work-repo").await.is_empty());
    let first = appended(append(store, &key, "a1", &[entry("x", Some("u1"), "")]).await);
    let empty = appended(append_at(store, &key, "a2", &[], at_ms(60_000)).await);
    assert_eq!(
        empty,
        AppendOutcome {
            stored: 0,
            duplicates: 0,
            ..first
        },
        "the header as it is: mtime unmoved"
    );
    // The empty append recorded nothing: its id is still free.
    appended(append(store, &key, "a0", &[entry("x", Some("u2"), "")]).await);
    assert_eq!(load(store, &key).await.map(|e| e.len()), Some(2));
}

async fn a_subpath_is_a_transcript_apart_from_the_main_one(fx: &Fixture) {
    let store = fx.transcripts();
    let main = main_key("sess");
    let sub = tkey("-work-repo", "sess", "subagents/agent-1");
    let main_entries = [entry("x", Some("u1"), "main")];
    // The same uuid in the subagent's transcript is not a duplicate: dedup is per transcript.
    let sub_entries = [entry("agent_metadata", None, "meta"), entry("x", Some("u1"), "sub")];
    appended(append(store, &main, "a1", &main_entries).await);
    assert_eq!(appended(append(store, &sub, "a2", &sub_entries).await).stored, 2);
    assert_eq!(load(store, &main).await, Some(texts(&main_entries)));
    assert_eq!(load(store, &sub).await, Some(texts(&sub_entries)));
    assert_eq!(subkeys(store, "sess").await, ["subagents/agent-1"]);
}

async fn the_same_session_id_in_two_projects_is_two_transcripts(fx: &Fixture) {
    let store = fx.transcripts();
    let a = tkey("A", "sess", "");
    let b = tkey("B", "sess", "");
    appended(append(store, &a, "a1", &[entry("x", Some("u1"), "in A")]).await);
    appended(append(store, &b, "a2", &[entry("x", Some("u1"), "in B")]).await);
    assert_eq!(load(store, &a).await, Some(vec![entry("x", Some("u1"), "in A").json]));
    assert_eq!(load(store, &b).await, Some(vec![entry("x", Some("u1"), "in B").json]));
    assert_eq!(session_ids(store, "A").await, ["sess"]);
    assert_eq!(session_ids(store, "B").await, ["sess"]);
}

async fn list_sessions_is_exactly_the_projects_main_transcripts_with_mtimes_that_only_grow(fx: &Fixture) {
    let store = fx.transcripts();
    for (i, session_id) in ["s1", "s2", "s3"].iter().enumerate() {
        let key = main_key(session_id);
        appended(append_at(store, &key, &format!("main-{i}"), &[entry("x", None, "")], at_ms(10)).await);
    }
    // A subagent of a session nobody listed, and another project's session: not listed.
    appended(
        append(
            store,
            &tkey("-work-repo", "s4", "subagents/agent-1"),
            "sub",
            &[entry("x", None, "")],
        )
        .await,
    );
    appended(append(store, &tkey("-other", "s5", ""), "other", &[entry("x", None, "")]).await);
    let listed = sessions(store, "-work-repo").await;
    let mut ids: Vec<&str> = listed.iter().map(|s| s.session_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["s1", "s2", "s3"]);
    assert!(listed.iter().all(|s| s.mtime_ms > 1_000_000_000_000), "{listed:?}");
    assert!(sessions(store, "-nobody").await.is_empty());

    // Appends at the same instant, or with a clock that went back, still move mtime forward.
    let key = main_key("s1");
    let mut last = at_ms(10).timestamp_millis();
    for (i, now) in [at_ms(10), at_ms(10), at_ms(-5_000), at_ms(20_000)]
        .into_iter()
        .enumerate()
    {
        let outcome = appended(append_at(store, &key, &format!("again-{i}"), &[entry("x", None, "")], now).await);
        assert_eq!(outcome.mtime_ms, now.timestamp_millis().max(last + 1), "append {i}");
        last = outcome.mtime_ms;
    }
    let s1 = sessions(store, "-work-repo")
        .await
        .into_iter()
        .find(|s| s.session_id == "s1");
    assert_eq!(s1.map(|s| s.mtime_ms), Some(last));
    // A subpath append does not move the main transcript's mtime.
    appended(
        append_at(
            store,
            &tkey("-work-repo", "s1", "subagents/a"),
            "sub-s1",
            &[entry("x", None, "")],
            at_ms(90_000),
        )
        .await,
    );
    let s1 = sessions(store, "-work-repo")
        .await
        .into_iter()
        .find(|s| s.session_id == "s1");
    assert_eq!(s1.map(|s| s.mtime_ms), Some(last));
}

async fn a_replayed_append_id_changes_nothing_and_answers_the_first_outcome(fx: &Fixture) {
    let store = fx.transcripts();
    let key = main_key("sess");
    let batch = [entry("x", Some("u1"), "1"), entry("x", None, "2")];
    let first = appended(append_at(store, &key, "retry-me", &batch, at_ms(1)).await);
    appended(append_at(store, &key, "later", &[entry("x", None, "3")], at_ms(2)).await);
    // The SDK retries the same batch with the same id (its first attempt timed out, yet committed).
    for replica in 0..2 {
        let reply = fx
            .transcript_replica(replica)
            .append(&key, "retry-me", &batch, at_ms(3), LIMIT)
            .await
            .expect("replay");
        assert_eq!(reply, AppendReply::Replayed(first), "replica {replica}");
    }
    // Even with other entries: the id alone decides.
    let reply = append(store, &key, "retry-me", &[entry("x", None, "other")]).await;
    assert_eq!(reply, AppendReply::Replayed(first));
    let expected: Vec<String> = texts(&batch).into_iter().chain([entry("x", None, "3").json]).collect();
    assert_eq!(load(store, &key).await, Some(expected));
    let listed = sessions(store, "-work-repo").await;
    assert_eq!(
        listed[0].mtime_ms,
        at_ms(2).timestamp_millis(),
        "a replay moves no mtime"
    );
}

async fn an_append_id_used_for_another_key_is_refused_and_writes_nothing(fx: &Fixture) {
    let store = fx.transcripts();
    let key = main_key("sess");
    appended(append(store, &key, "id-1", &[entry("x", Some("u1"), "")]).await);
    let others = [
        main_key("other-session"),
        tkey("-work-repo", "sess", "subagents/agent-1"),
        tkey("-other", "sess", ""),
    ];
    for other in &others {
        let reply = append(store, other, "id-1", &[entry("x", Some("u2"), "")]).await;
        assert_eq!(reply, AppendReply::AppendIdReused, "{other}");
        assert_eq!(load(store, other).await, None, "{other}");
    }
    // Append ids are per namespace.
    let elsewhere = TranscriptKey::new("other", "-work-repo", "sess", "").unwrap();
    appended(append(store, &elsewhere, "id-1", &[entry("x", Some("u1"), "")]).await);
    assert_eq!(load(store, &key).await.map(|e| e.len()), Some(1));
    assert_eq!(subkeys(store, "sess").await, Vec::<String>::new());
}

async fn concurrent_repeats_of_one_append_id_store_its_entries_once(fx: &Fixture) {
    let key = main_key("sess");
    let batch: Vec<Entry> = (0..5).map(|i| entry("x", None, &format!("e{i}"))).collect();
    let mut calls = JoinSet::new();
    for i in 0..8 {
        let (store, key, batch) = (fx.transcript_replica(i), key.clone(), batch.clone());
        calls.spawn(async move { store.append(&key, "same", &batch, t0(), LIMIT).await.expect("append") });
    }
    let replies = calls.join_all().await;
    let firsts: Vec<AppendOutcome> = replies
        .iter()
        .filter_map(|r| match r {
            AppendReply::Appended(outcome) => Some(*outcome),
            _ => None,
        })
        .collect();
    assert_eq!(firsts.len(), 1, "{replies:?}");
    for reply in &replies {
        assert!(
            *reply == AppendReply::Appended(firsts[0]) || *reply == AppendReply::Replayed(firsts[0]),
            "{replies:?}"
        );
    }
    assert_eq!(load(fx.transcripts(), &key).await, Some(texts(&batch)));
}

async fn entries_whose_uuid_is_stored_are_skipped_within_and_across_calls(fx: &Fixture) {
    let store = fx.transcripts();
    let key = main_key("sess");
    let first = [
        entry("x", Some("u1"), "first u1"),
        entry("x", Some("u2"), "u2"),
        entry("x", Some("u1"), "u1 again in the same call"),
        entry("x", None, "no uuid"),
        entry("x", None, "no uuid"),
    ];
    let outcome = appended(append(store, &key, "a1", &first).await);
    assert_eq!((outcome.stored, outcome.duplicates, outcome.entry_count), (4, 1, 4));
    let second = [
        entry("x", Some("u2"), "u2 from a retry"),
        entry("x", Some("u3"), "u3"),
        entry("x", None, "no uuid"),
    ];
    let outcome = appended(append(store, &key, "a2", &second).await);
    assert_eq!((outcome.stored, outcome.duplicates, outcome.entry_count), (2, 1, 6));
    let stored_bytes: usize = [&first[0], &first[1], &first[3], &first[4], &second[1], &second[2]]
        .iter()
        .map(|e| e.json.len())
        .sum();
    assert_eq!(outcome.byte_count, stored_bytes as u64, "only stored entries count");
    let before = outcome;
    // Only duplicates: nothing stored, the header unchanged (mtime too).
    let outcome = appended(append_at(store, &key, "a3", &[entry("x", Some("u3"), "again")], at_ms(60_000)).await);
    assert_eq!(
        outcome,
        AppendOutcome {
            stored: 0,
            duplicates: 1,
            ..before
        }
    );
    let expected = vec![
        first[0].json.clone(),
        first[1].json.clone(),
        first[3].json.clone(),
        first[4].json.clone(),
        second[1].json.clone(),
        second[2].json.clone(),
    ];
    assert_eq!(load(store, &key).await, Some(expected));
}

async fn an_append_past_the_byte_limit_stores_nothing_and_records_no_append_id(fx: &Fixture) {
    let store = fx.transcripts();
    let key = main_key("sess");
    let first = [entry("x", Some("u1"), "0123456789")];
    let size = first[0].json.len() as u64;
    // Exactly at the limit fits.
    let outcome = appended(store.append(&key, "a1", &first, t0(), size).await.unwrap());
    assert_eq!(outcome.byte_count, size);
    let more = [entry("x", Some("u2"), "a"), entry("x", None, "b")];
    let limit = size + more[0].json.len() as u64;
    let reply = store.append(&key, "a2", &more, at_ms(5), limit).await.unwrap();
    assert_eq!(
        reply,
        AppendReply::Full {
            byte_count: size,
            limit
        }
    );
    assert_eq!(
        load(store, &key).await,
        Some(texts(&first)),
        "nothing of the refused append"
    );
    assert_eq!(sessions(store, "-work-repo").await[0].mtime_ms, t0().timestamp_millis());
    // A duplicate counts for nothing: an append of duplicates fits at the limit.
    let dup = store
        .append(&key, "a3", &[entry("x", Some("u1"), "other text")], t0(), size)
        .await
        .unwrap();
    assert_eq!(appended(dup).stored, 0);
    // The refused append id was not recorded: with room, the same id appends.
    let outcome = appended(store.append(&key, "a2", &more, at_ms(6), LIMIT).await.unwrap());
    assert_eq!(outcome.stored, 2);
    // A new transcript whose first append does not fit is not created.
    let fresh = main_key("fresh");
    let reply = store.append(&fresh, "a4", &first, t0(), size - 1).await.unwrap();
    assert_eq!(
        reply,
        AppendReply::Full {
            byte_count: 0,
            limit: size - 1
        }
    );
    assert_eq!(load(store, &fresh).await, None);
    assert_eq!(session_ids(store, "-work-repo").await, ["sess"]);
}

async fn deleting_the_main_transcript_deletes_its_subpaths_and_nothing_else(fx: &Fixture) {
    let store = fx.transcripts();
    let main = main_key("sess");
    let subs = [
        tkey("-work-repo", "sess", "subagents/agent-1"),
        tkey("-work-repo", "sess", "subagents/agent-2"),
    ];
    let survivors = [
        main_key("other-session"),
        tkey("-other", "sess", ""),
        tkey("-other", "sess", "subagents/agent-1"),
        TranscriptKey::new("other", "-work-repo", "sess", "").unwrap(),
    ];
    appended(append(store, &main, "m", &[entry("x", Some("u1"), ""), entry("x", None, "")]).await);
    for (i, key) in subs.iter().chain(&survivors).enumerate() {
        appended(append(store, key, &format!("k{i}"), &[entry("x", Some("u1"), "")]).await);
    }
    let deleted = delete(store, &main).await;
    assert_eq!(
        deleted,
        TranscriptsDeleted {
            transcripts: 3,
            entries: 4
        }
    );
    assert_eq!(load(store, &main).await, None);
    for sub in &subs {
        assert_eq!(load(store, sub).await, None, "{sub}");
    }
    assert_eq!(subkeys(store, "sess").await, Vec::<String>::new());
    assert_eq!(session_ids(store, "-work-repo").await, ["other-session"]);
    for key in &survivors {
        assert_eq!(load(store, key).await.map(|e| e.len()), Some(1), "{key}");
    }
    // Deleting again, or a key never written, is fine.
    assert_eq!(delete(store, &main).await, TranscriptsDeleted::default());
    assert_eq!(delete(store, &main_key("never")).await, TranscriptsDeleted::default());
    // The same uuids can be appended to a new transcript at the key (with a new append id).
    let again = appended(append(store, &main, "m2", &[entry("x", Some("u1"), "")]).await);
    assert_eq!((again.stored, again.entry_count), (1, 1));
}

async fn deleting_a_subpath_deletes_only_that_subpath(fx: &Fixture) {
    let store = fx.transcripts();
    let main = main_key("sess");
    let one = tkey("-work-repo", "sess", "subagents/agent-1");
    let two = tkey("-work-repo", "sess", "subagents/agent-2");
    appended(append(store, &main, "m", &[entry("x", None, "")]).await);
    appended(append(store, &one, "s1", &[entry("x", None, ""), entry("x", None, "")]).await);
    appended(append(store, &two, "s2", &[entry("x", None, "")]).await);
    assert_eq!(
        delete(store, &one).await,
        TranscriptsDeleted {
            transcripts: 1,
            entries: 2
        }
    );
    assert_eq!(load(store, &one).await, None);
    assert_eq!(load(store, &main).await.map(|e| e.len()), Some(1));
    assert_eq!(load(store, &two).await.map(|e| e.len()), Some(1));
    assert_eq!(subkeys(store, "sess").await, ["subagents/agent-2"]);
    assert_eq!(session_ids(store, "-work-repo").await, ["sess"]);
}

async fn small_pages_return_every_entry_exactly_once_in_order(fx: &Fixture) {
    let store = fx.transcripts();
    let key = main_key("sess");
    let written: Vec<Entry> = (0..37)
        .map(|i| {
            entry(
                "x",
                (i % 3 == 0).then(|| format!("u{i}")).as_deref(),
                &"z".repeat(i * 7),
            )
        })
        .collect();
    for (n, chunk) in written.chunks(5).enumerate() {
        appended(append(store, &key, &format!("a{n}"), chunk).await);
    }
    let largest = written.iter().map(|e| e.json.len() as u64).max().unwrap();
    for (max_entries, max_bytes) in [
        (1, u64::MAX / 2),
        (4, u64::MAX / 2),
        (100, 1),
        (100, 300),
        (7, largest),
        (0, 500),
    ] {
        let paged = load_paged(store, &key, max_entries.max(1), max_bytes)
            .await
            .expect("stored");
        let seqs: Vec<i64> = paged.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            seqs,
            (1..=37).collect::<Vec<i64>>(),
            "{max_entries} entries, {max_bytes} bytes"
        );
        let jsons: Vec<String> = paged.into_iter().map(|(_, json)| json).collect();
        assert_eq!(jsons, texts(&written), "{max_entries} entries, {max_bytes} bytes");
    }
    // A page never comes back empty while entries remain, even asked for none.
    let page = store.load_page(&key, 36, 0, 0, None).await.unwrap().expect("stored");
    assert_eq!(page.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [37]);
    let page = store
        .load_page(&key, 37, 10, 1000, None)
        .await
        .unwrap()
        .expect("stored");
    assert!(page.entries.is_empty());
    assert_eq!(page.entry_count, 37);
}

async fn concurrent_appends_to_one_transcript_lose_and_duplicate_nothing(fx: &Fixture) {
    const TASKS: usize = 16;
    const APPENDS: usize = 4;
    const PER_APPEND: usize = 3;
    let key = main_key("sess");
    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let (store, key) = (fx.transcript_replica(task), key.clone());
        tasks.spawn(async move {
            let mut stored = 0;
            for call in 0..APPENDS {
                // One entry of every call carries a uuid another task also sends: stored once.
                let batch: Vec<Entry> = (0..PER_APPEND)
                    .map(|n| {
                        let uuid = match n {
                            0 => format!("shared-{call}"),
                            _ => format!("t{task}-c{call}-n{n}"),
                        };
                        entry("x", Some(&uuid), &format!("t{task} c{call} n{n}"))
                    })
                    .collect();
                let reply = store
                    .append(&key, &format!("t{task}-c{call}"), &batch, at_ms(call as i64), LIMIT)
                    .await
                    .unwrap_or_else(|e| panic!("task {task} call {call}: {e}"));
                stored += appended(reply).stored;
            }
            stored
        });
    }
    let stored: u64 = tasks.join_all().await.into_iter().sum();
    let expected = (TASKS * APPENDS * (PER_APPEND - 1) + APPENDS) as u64;
    assert_eq!(stored, expected);
    let paged = load_paged(fx.transcripts(), &key, 50, 1 << 20).await.expect("stored");
    assert_eq!(paged.len() as u64, expected);
    let seqs: Vec<i64> = paged.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=expected as i64).collect::<Vec<_>>(), "seqs without gaps");
    let mut distinct: Vec<&String> = paged.iter().map(|(_, json)| json).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len() as u64, expected, "no entry twice");
    // Each task's calls are in its order, and each call's stored entries are consecutive.
    for task in 0..TASKS {
        let mine: Vec<(i64, String)> = paged
            .iter()
            .filter(|(_, json)| json.contains(&format!("\"t{task} c")))
            .cloned()
            .collect();
        let calls: Vec<usize> = mine
            .iter()
            .map(|(_, json)| {
                let at = json.find(" c").unwrap() + 2;
                json[at..at + 1].parse().unwrap()
            })
            .collect();
        assert!(calls.windows(2).all(|w| w[0] <= w[1]), "task {task}: {calls:?}");
        for call in 0..APPENDS {
            let seqs: Vec<i64> = mine
                .iter()
                .zip(&calls)
                .filter(|(_, c)| **c == call)
                .map(|((seq, _), _)| *seq)
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[1] == w[0] + 1),
                "task {task} call {call}: {seqs:?}"
            );
        }
    }
}

/// Every part of the key at its limit, with quotes and SQL in it, a uuid at its limit and an entry
/// of 1 MiB (the default entry limit): all indexed and stored whole.
async fn the_longest_accepted_keys_uuids_and_a_one_mib_entry_round_trip(fx: &Fixture) {
    let store = fx.transcripts();
    let namespace = "n".repeat(64);
    let project_key = format!("it's'); DROP TABLE transcript; --{}", "é".repeat(100));
    let project_key = format!("{project_key}{}", "p".repeat(MAX_PROJECT_KEY_BYTES - project_key.len()));
    let session_id = "ü".repeat(MAX_TRANSCRIPT_SESSION_ID_BYTES / 2);
    let subpath = format!("{}/it's-{}", "a".repeat(511), "b".repeat(507));
    assert_eq!(subpath.len(), MAX_SUBPATH_BYTES);
    let main = TranscriptKey::new(&namespace, &project_key, &session_id, "").unwrap();
    let sub = TranscriptKey::new(&namespace, &project_key, &session_id, &subpath).unwrap();
    let uuid = "u".repeat(MAX_ENTRY_UUID_BYTES);
    let pad = 1024 * 1024 - entry("x", Some(&uuid), "").json.len();
    let big = entry("x", Some(&uuid), &"✓".repeat(pad / 3));
    assert!(big.json.len() <= 1024 * 1024 && big.json.len() > 1024 * 1024 - 3);
    for key in [&main, &sub] {
        let outcome = appended(
            append(
                store,
                key,
                &format!("big-{}", key.subpath().len()),
                std::slice::from_ref(&big),
            )
            .await,
        );
        assert_eq!(outcome.byte_count, big.json.len() as u64);
        assert_eq!(load(store, key).await, Some(vec![big.json.clone()]), "{key}");
        let again = appended(
            append(
                store,
                key,
                &format!("again-{}", key.subpath().len()),
                std::slice::from_ref(&big),
            )
            .await,
        );
        assert_eq!((again.stored, again.duplicates), (0, 1), "{key}");
    }
    let listed = store.list_sessions(&namespace, &project_key, None).await.unwrap();
    assert_eq!(
        listed.into_iter().map(|s| s.session_id).collect::<Vec<_>>(),
        [session_id.as_str()]
    );
    let subkeys = store.list_subkeys(&namespace, &project_key, &session_id).await.unwrap();
    assert_eq!(subkeys, [subpath]);
    assert_eq!(
        delete(store, &main).await,
        TranscriptsDeleted {
            transcripts: 2,
            entries: 2
        }
    );
}

const PY: SummaryDialect = SummaryDialect::ClaudePython;
const TS: SummaryDialect = SummaryDialect::ClaudeTypescript;

fn summary_write(dialect: SummaryDialect, data: serde_json::Value, if_version: u64) -> SummaryWrite {
    SummaryWrite::parse(dialect, data.to_string(), if_version, 1024 * 1024).expect("a valid summary")
}

async fn append_summary(
    store: &dyn TranscriptStore,
    key: &TranscriptKey,
    append_id: &str,
    entries: &[Entry],
    summary: &SummaryWrite,
    now: DateTime<Utc>,
) -> (AppendReply, SummaryReply) {
    store
        .append_with_summary(key, append_id, entries, Some(summary), now, LIMIT)
        .await
        .unwrap_or_else(|e| panic!("append {append_id} with a summary to {key}: {e}"))
}

/// The summary of `dialect` as the first load page carries it.
async fn loaded_summary(store: &dyn TranscriptStore, key: &TranscriptKey, dialect: SummaryDialect) -> Option<Summary> {
    store
        .load_page(key, 0, 100, 1 << 20, Some(dialect))
        .await
        .unwrap()
        .expect("the transcript exists")
        .summary
}

async fn listed(store: &dyn TranscriptStore, dialect: Option<SummaryDialect>) -> Vec<ListedSession> {
    store.list_sessions("acme", "-work-repo", dialect).await.unwrap()
}

async fn a_summary_is_written_by_compare_and_set_with_the_transcripts_mtime(fx: &Fixture) {
    let store = fx.transcripts();
    let key = main_key("sess");
    let first = summary_write(PY, serde_json::json!({"custom_title": "one"}), 0);
    let (reply, summary) =
        append_summary(store, &key, "a1", &[entry("user", Some("u1"), "hi")], &first, at_ms(5)).await;
    let outcome = appended(reply);
    assert_eq!(outcome.mtime_ms, at_ms(5).timestamp_millis());
    let v1 = Summary {
        dialect: PY,
        data_json: first.data_json.clone(),
        version: 1,
        mtime_ms: outcome.mtime_ms,
    };
    assert_eq!(
        summary,
        SummaryReply {
            written: true,
            current: Some(v1.clone())
        }
    );

    // A fold from "none stored" again loses: the entries are stored, the summary is not, and the
    // stored one comes back to fold over.
    let stale = summary_write(PY, serde_json::json!({"custom_title": "stale"}), 0);
    let (reply, summary) = append_summary(store, &key, "a2", &[entry("user", Some("u2"), "")], &stale, at_ms(6)).await;
    assert_eq!(appended(reply).stored, 1);
    assert_eq!(
        summary,
        SummaryReply {
            written: false,
            current: Some(v1.clone())
        }
    );
    let ahead = summary_write(PY, serde_json::json!({"custom_title": "ahead"}), 2);
    let (_, summary) = append_summary(store, &key, "a3", &[entry("user", Some("u3"), "")], &ahead, at_ms(7)).await;
    assert!(!summary.written);
    assert_eq!(summary.current.map(|s| s.version), Some(1));

    // From the version stored: written as the next version, with the append's mtime, even when
    // the mtime had to move past the clock (strictly increasing).
    let second = summary_write(PY, serde_json::json!({"custom_title": "two"}), 1);
    let (reply, summary) = append_summary(store, &key, "a4", &[entry("user", Some("u4"), "")], &second, at_ms(1)).await;
    let outcome = appended(reply);
    assert!(outcome.mtime_ms > at_ms(7).timestamp_millis());
    let v2 = Summary {
        dialect: PY,
        data_json: second.data_json.clone(),
        version: 2,
        mtime_ms: outcome.mtime_ms,
    };
    assert!(summary.written);
    assert_eq!(summary.current, Some(v2.clone()));
    assert_eq!(loaded_summary(store, &key, PY).await, Some(v2.clone()));
    let sessions = listed(store, Some(PY)).await;
    assert_eq!(
        sessions,
        [ListedSession {
            session_id: "sess".into(),
            mtime_ms: outcome.mtime_ms,
            summary: Some(v2.clone())
        }]
    );
    // Contract 14: the summary's mtime is never older than the listed mtime at that moment.
    assert!(sessions[0].summary.as_ref().unwrap().mtime_ms >= sessions[0].mtime_ms);
    assert_eq!(load(store, &key).await.map(|e| e.len()), Some(4), "every entry stored");
}

async fn a_summary_alone_is_written_only_to_a_transcript_that_exists(fx: &Fixture) {
    let store = fx.transcripts();
    let key = main_key("sess");
    let write = summary_write(TS, serde_json::json!({"customTitle": "t"}), 0);
    let (reply, summary) = append_summary(store, &key, "s1", &[], &write, at_ms(5)).await;
    let nothing = AppendOutcome {
        stored: 0,
        duplicates: 0,
        entry_count: 0,
        byte_count: 0,
        mtime_ms: 0,
    };
    assert_eq!(reply, AppendReply::Appended(nothing));
    assert_eq!(summary, SummaryReply::default(), "not written, nothing to fold over");
    assert_eq!(load(store, &key).await, None, "no transcript was created");
    assert!(listed(store, Some(TS)).await.is_empty());

    // Nothing was recorded: the append id is free for an append that stores entries.
    let outcome = appended(append_at(store, &key, "s1", &[entry("user", Some("u1"), "")], at_ms(8)).await);
    assert_eq!(outcome.stored, 1);
    let (reply, summary) = append_summary(store, &key, "s2", &[], &write, at_ms(20)).await;
    assert_eq!(
        appended(reply),
        AppendOutcome {
            stored: 0,
            duplicates: 0,
            ..outcome
        },
        "the header does not move"
    );
    let v1 = Summary {
        dialect: TS,
        data_json: write.data_json.clone(),
        version: 1,
        mtime_ms: outcome.mtime_ms,
    };
    assert_eq!(
        summary,
        SummaryReply {
            written: true,
            current: Some(v1.clone())
        }
    );
    assert_eq!(loaded_summary(store, &key, TS).await, Some(v1.clone()));
    // Recorded: a repeat is a replay, and writes nothing again.
    let (reply, summary) = append_summary(store, &key, "s2", &[], &write, at_ms(30)).await;
    assert!(matches!(reply, AppendReply::Replayed(_)), "{reply:?}");
    assert_eq!(
        summary,
        SummaryReply {
            written: true,
            current: Some(v1.clone())
        }
    );
    assert_eq!(loaded_summary(store, &key, TS).await, Some(v1));
}

async fn a_replayed_append_answers_whether_its_summary_was_written(fx: &Fixture) {
    let store = fx.transcripts();
    let key = main_key("sess");
    let batch = [entry("user", Some("u1"), "")];
    let write = summary_write(PY, serde_json::json!({"n": 1}), 0);
    let (first, summary) = append_summary(store, &key, "a1", &batch, &write, at_ms(5)).await;
    assert!(summary.written);
    let later = summary_write(PY, serde_json::json!({"n": 2}), 1);
    let (_, summary) = append_summary(store, &key, "a2", &[entry("user", Some("u2"), "")], &later, at_ms(6)).await;
    let v2 = summary.current.expect("written");
    assert_eq!(v2.version, 2);
    for replica in 0..fx.transcript_replicas.len() {
        let (reply, summary) =
            append_summary(&*fx.transcript_replica(replica), &key, "a1", &batch, &write, at_ms(9)).await;
        assert_eq!(reply, AppendReply::Replayed(appended(first)), "replica {replica}");
        assert_eq!(
            summary,
            SummaryReply {
                written: true,
                current: Some(v2.clone())
            },
            "the first answer, with the summary stored now"
        );
    }
    let stale = summary_write(PY, serde_json::json!({"n": 3}), 1);
    let (_, summary) = append_summary(store, &key, "a3", &[entry("user", Some("u3"), "")], &stale, at_ms(7)).await;
    assert!(!summary.written);
    let (reply, summary) = append_summary(store, &key, "a3", &[entry("user", Some("u3"), "")], &stale, at_ms(8)).await;
    assert!(matches!(reply, AppendReply::Replayed(_)));
    assert_eq!(
        summary,
        SummaryReply {
            written: false,
            current: Some(v2.clone())
        }
    );
    // A replay without a summary asks nothing about one.
    let (reply, summary) = store
        .append_with_summary(&key, "a1", &batch, None, at_ms(9), LIMIT)
        .await
        .unwrap();
    assert!(matches!(reply, AppendReply::Replayed(_)));
    assert_eq!(summary, SummaryReply::default());
}

async fn each_dialect_keeps_its_own_summary(fx: &Fixture) {
    let store = fx.transcripts();
    let key = main_key("sess");
    let py = summary_write(PY, serde_json::json!({"first_prompt": "py"}), 0);
    let ts = summary_write(TS, serde_json::json!({"firstPrompt": "ts"}), 0);
    let (_, summary) = append_summary(store, &key, "a1", &[entry("user", Some("u1"), "")], &py, at_ms(5)).await;
    assert_eq!(summary.current.as_ref().map(|s| s.version), Some(1));
    let (_, summary) = append_summary(store, &key, "a2", &[entry("user", Some("u2"), "")], &ts, at_ms(6)).await;
    assert!(summary.written, "the other dialect's version does not count");
    assert_eq!(summary.current.as_ref().map(|s| s.version), Some(1));
    let py2 = summary_write(PY, serde_json::json!({"first_prompt": "py2"}), 1);
    let (_, summary) = append_summary(store, &key, "a3", &[], &py2, at_ms(7)).await;
    assert!(summary.written);

    let loaded_py = loaded_summary(store, &key, PY).await.expect("python summary");
    let loaded_ts = loaded_summary(store, &key, TS).await.expect("typescript summary");
    assert_eq!((loaded_py.dialect, loaded_py.version), (PY, 2));
    assert_eq!(loaded_py.data_json, py2.data_json);
    assert_eq!((loaded_ts.dialect, loaded_ts.version), (TS, 1));
    assert_eq!(loaded_ts.data_json, ts.data_json);
    let page = store.load_page(&key, 0, 100, 1 << 20, None).await.unwrap().unwrap();
    assert_eq!(page.summary, None, "none asked");

    // A session with no summary is listed without one; no dialect asked, none returned.
    appended(append(store, &main_key("bare"), "b1", &[entry("user", None, "")]).await);
    let with_ts = listed(store, Some(TS)).await;
    assert_eq!(with_ts.len(), 2);
    assert_eq!(
        (with_ts[0].session_id.as_str(), with_ts[0].summary.as_ref()),
        ("bare", None)
    );
    assert_eq!(with_ts[1].summary, Some(loaded_ts));
    let with_py = listed(store, Some(PY)).await;
    assert_eq!(with_py[1].summary, Some(loaded_py));
    assert!(listed(store, None).await.iter().all(|s| s.summary.is_none()));
    // Another project's listing sees none of it.
    assert!(
        store
            .list_sessions("acme", "-other", Some(PY))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_refused_append_writes_no_summary(fx: &Fixture) {
    let store = fx.transcripts();
    let key = main_key("sess");
    let write = summary_write(PY, serde_json::json!({"n": 1}), 0);
    let (reply, summary) = store
        .append_with_summary(
            &key,
            "big",
            &[entry("user", Some("u1"), "far too big")],
            Some(&write),
            at_ms(5),
            10,
        )
        .await
        .unwrap();
    assert!(matches!(reply, AppendReply::Full { .. }), "{reply:?}");
    assert_eq!(summary, SummaryReply::default());
    appended(append(store, &key, "ok", &[entry("user", Some("u2"), "")]).await);
    assert_eq!(loaded_summary(store, &key, PY).await, None);
    // An append id of another key writes no summary either.
    let other = main_key("other");
    let (reply, summary) = append_summary(store, &other, "ok", &[entry("user", None, "")], &write, at_ms(6)).await;
    assert_eq!(reply, AppendReply::AppendIdReused);
    assert_eq!(summary, SummaryReply::default());
    assert_eq!(loaded_summary(store, &key, PY).await, None);
}

/// Folds that started from the same version race: exactly one is written, every other gets the
/// winner back to fold over; every entry is stored.
async fn concurrent_summary_writes_from_one_version_have_one_winner(fx: &Fixture) {
    let key = main_key("sess");
    appended(append(fx.transcripts(), &key, "seed", &[entry("user", Some("u0"), "")]).await);
    let mut calls = JoinSet::new();
    for task in 0..8 {
        let store = fx.transcript_replica(task);
        let key = key.clone();
        calls.spawn(async move {
            let write = summary_write(TS, serde_json::json!({"writer": task}), 0);
            let batch = [entry("user", Some(&format!("u{}", task + 1)), "")];
            let (reply, summary) =
                append_summary(&*store, &key, &format!("t{task}"), &batch, &write, at_ms(task as i64)).await;
            (appended(reply), summary)
        });
    }
    let results = calls.join_all().await;
    let winners: Vec<&SummaryReply> = results.iter().map(|(_, s)| s).filter(|s| s.written).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = winners[0].current.clone().expect("the written summary");
    assert_eq!(winner.version, 1);
    for (_, summary) in results.iter().filter(|(_, s)| !s.written) {
        assert_eq!(summary.current.as_ref(), Some(&winner));
    }
    assert_eq!(loaded_summary(fx.transcripts(), &key, TS).await, Some(winner));
    assert_eq!(load(fx.transcripts(), &key).await.map(|e| e.len()), Some(9));
}

async fn deleting_a_transcript_deletes_its_summaries(fx: &Fixture) {
    let store = fx.transcripts();
    let key = main_key("sess");
    let sub = tkey("-work-repo", "sess", "subagents/agent-1");
    let keep = main_key("keep");
    for (n, k) in [&key, &keep].into_iter().enumerate() {
        for dialect in SummaryDialect::ALL {
            let write = summary_write(dialect, serde_json::json!({"n": n}), 0);
            let id = format!("{n}-{}", dialect.code());
            let (_, summary) = append_summary(store, k, &id, &[entry("user", None, "")], &write, at_ms(5)).await;
            assert!(summary.written);
        }
    }
    appended(append(store, &sub, "sub", &[entry("user", None, "")]).await);
    // A subpath's delete leaves the main transcript's summaries.
    delete(store, &sub).await;
    assert_eq!(loaded_summary(store, &key, PY).await.map(|s| s.version), Some(1));
    assert_eq!(
        delete(store, &key).await,
        TranscriptsDeleted {
            transcripts: 1,
            entries: 2
        }
    );
    assert_eq!(listed(store, Some(PY)).await.len(), 1, "only the other session");
    // A new transcript at the key (on SQLite possibly under the same id) starts with none.
    appended(append(store, &key, "again", &[entry("user", None, "")]).await);
    for dialect in SummaryDialect::ALL {
        assert_eq!(loaded_summary(store, &key, dialect).await, None, "{dialect:?}");
        assert_eq!(loaded_summary(store, &keep, dialect).await.map(|s| s.version), Some(1));
    }
    let write = summary_write(PY, serde_json::json!({"n": "new"}), 0);
    let (_, summary) = append_summary(store, &key, "new", &[], &write, at_ms(9)).await;
    assert_eq!(summary.current.map(|s| (s.version, summary.written)), Some((1, true)));
}

/// The service keeps summaries to main transcripts, refusing before the store is touched.
async fn summaries_are_refused_for_subpaths_at_the_service_level(fx: &Fixture) {
    let store: Arc<dyn TranscriptStore> = fx.transcript_replica(0);
    let transcripts = Transcripts::new(
        store.clone(),
        Arc::new(ManualClock::new(t0())),
        TranscriptLimits::default(),
        Arc::new(Metrics::new()),
    );
    let sub = tkey("-work-repo", "sess", "subagents/agent-1");
    let write = summary_write(PY, serde_json::json!({}), 0);
    let err = transcripts
        .append(&sub, "a1", &[entry("user", None, "")], Some(&write))
        .await
        .unwrap_err();
    match err {
        ServiceError::InvalidArgument(field) => assert_eq!(field.field, "summary"),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    assert_eq!(load(&*store, &sub).await, None, "nothing stored");
    let err = transcripts
        .append(&main_key("sess"), "", &[], Some(&write))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::InvalidArgument(ref f) if f.field == "append_id"),
        "{err:?}"
    );
    let answer = transcripts
        .append(&main_key("sess"), "a2", &[entry("user", None, "")], Some(&write))
        .await
        .unwrap();
    assert!(answer.summary.written);
}

async fn the_totals_sum_every_transcripts_entries_and_bytes(fx: &Fixture) {
    let store = fx.transcripts();
    assert_eq!(store.transcript_totals().await.unwrap(), TranscriptTotals::default());
    let a = [entry("user", Some("u1"), "one"), entry("user", None, "two")];
    let b = [entry("user", Some("u1"), "three")];
    appended(append(store, &main_key("a"), "a", &a).await);
    appended(append(store, &tkey("-work-repo", "a", "subagents/x"), "b", &b).await);
    appended(append(store, &main_key("a"), "dup", &b).await);
    let bytes: usize = a.iter().chain(&b).map(|e| e.json.len()).sum();
    assert_eq!(
        store.transcript_totals().await.unwrap(),
        TranscriptTotals {
            transcripts: 2,
            entries: 3,
            bytes: bytes as u64
        }
    );
    delete(store, &main_key("a")).await;
    assert_eq!(store.transcript_totals().await.unwrap(), TranscriptTotals::default());
}
