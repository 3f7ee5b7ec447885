//! Rows: a row loads back exactly as it was placed, keys are separate rows, and `forget` deletes
//! whatever a row holds. Rows are placed with the fixture's own SQL: the stores have no "put".

use chrono::DateTime;
use sessionkeeper::domain::{Binding, MAX_SESSION_ID_BYTES, SessionKey, SessionRow};
use tokio::task::JoinSet;

use crate::builders::*;
use crate::fixture::Fixture;
use crate::support::t0;

crate::on_both_stores! {
    fixture;
    both: [
        loading_a_missing_key_finds_nothing,
        a_put_row_loads_back_with_every_field_to_the_microsecond,
        putting_a_row_again_replaces_every_field,
        the_longest_accepted_values_round_trip,
        keys_differing_only_in_namespace_agent_or_conversation_are_separate_rows,
        conversations_holding_quotes_backslashes_and_sql_load_their_own_rows_alone_and_at_once,
        forget_deletes_the_row_whatever_it_holds_and_says_whether_there_was_one,
    ],
}

async fn loading_a_missing_key_finds_nothing(fx: &Fixture) {
    assert_eq!(load(fx.store(), &coder("nobody-here")).await, None);
}

async fn a_put_row_loads_back_with_every_field_to_the_microsecond(fx: &Fixture) {
    let store = fx.store();
    let key = key("acme", "coder", "PR #42: ünïcode ✓ and 'quotes'");
    let written = SessionRow {
        session_id: A.into(),
        binding: Binding {
            provider: "claude".into(),
            host: "pod-a.agents.svc.cluster.local".into(),
            config_dir: "/home/agent/.claude".into(),
            cwd: "/work/repo with spaces/ü".into(),
        },
        last_used_at: t0() + micros(123_457),
        failure_count: 7,
    };
    put(fx, &key, &written).await;
    assert_eq!(load(store, &key).await, Some(written.clone()));
    // One microsecond apart is a different instant, before and after the epoch of either store.
    let early = SessionRow {
        last_used_at: DateTime::from_timestamp_micros(-1).expect("valid instant"),
        ..written
    };
    put(fx, &key, &early).await;
    assert_eq!(load(store, &key).await, Some(early));
}

async fn putting_a_row_again_replaces_every_field(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(
        fx,
        &key,
        &SessionRow {
            failure_count: 1,
            ..row(A, t0())
        },
    )
    .await;
    let replacement = SessionRow {
        session_id: B.into(),
        binding: Binding::default(),
        last_used_at: t0() - hours(30) + micros(1),
        failure_count: 0,
    };
    put(fx, &key, &replacement).await;
    assert_eq!(load(store, &key).await, Some(replacement));
}

async fn the_longest_accepted_values_round_trip(fx: &Fixture) {
    let store = fx.store();
    let name = "n".repeat(64);
    let key = key(&name, &name, &"é".repeat(128));
    assert_eq!(key.conversation().len(), 256);
    let written = SessionRow {
        session_id: "ü".repeat(MAX_SESSION_ID_BYTES / 2),
        binding: Binding {
            provider: "p".repeat(4096),
            host: "h".repeat(4096),
            config_dir: "c".repeat(4096),
            cwd: "✓".repeat(1365),
        },
        last_used_at: t0(),
        failure_count: u32::MAX / 2,
    };
    put(fx, &key, &written).await;
    assert_eq!(load(store, &key).await, Some(written));
}

/// Conversations that differ only in quoting or escaping, or that look like SQL, are separate rows
/// and load back as themselves, one at a time and many at once (Postgres writes a batch's keys into
/// its statement as literals).
async fn conversations_holding_quotes_backslashes_and_sql_load_their_own_rows_alone_and_at_once(fx: &Fixture) {
    let conversations = [
        "it's",
        "it''s",
        r"a\b",
        r"a\\b",
        r"trailing\",
        "E'x'",
        "x'); DELETE FROM session; --",
        "$$ dollar $$",
        "ü ✓ 🙂",
        "plain",
    ];
    let keys: Vec<SessionKey> = conversations.iter().map(|c| coder(c)).collect();
    for (i, key) in keys.iter().enumerate() {
        let mut written = row(&format!("id-'{i}'\\"), t0());
        written.binding.cwd = format!("/work/'{i}'\\");
        put(fx, key, &written).await;
    }
    for (i, key) in keys.iter().enumerate() {
        let loaded = load(fx.store(), key).await.expect("stored");
        assert_eq!(
            (loaded.session_id.as_str(), loaded.binding.cwd.as_str()),
            (format!("id-'{i}'\\").as_str(), format!("/work/'{i}'\\").as_str()),
            "{key}"
        );
    }
    let mut loads = JoinSet::new();
    for round in 0..8 {
        for (i, key) in keys.iter().enumerate() {
            let (store, key) = (fx.replica(i + round), key.clone());
            loads.spawn(async move { (i, store.load(&key).await.expect("load").map(|r| r.session_id)) });
        }
    }
    while let Some(done) = loads.join_next().await {
        let (i, loaded) = done.expect("a load task");
        assert_eq!(loaded, Some(format!("id-'{i}'\\")), "{:?}", conversations[i]);
    }
    assert_eq!(
        surviving(fx.store(), &keys).await,
        keys.len(),
        "no statement deleted anything"
    );
}

async fn keys_differing_only_in_namespace_agent_or_conversation_are_separate_rows(fx: &Fixture) {
    let store = fx.store();
    let keys = [
        key("acme", "coder", "c1"),
        key("other", "coder", "c1"),
        key("acme", "reviewer", "c1"),
        key("acme", "coder", "c2"),
        // Names compare exactly: case matters.
        key("Acme", "coder", "c1"),
        key("acme", "Coder", "c1"),
        key("acme", "coder", "C1"),
    ];
    let rows: Vec<SessionRow> = (0..keys.len())
        .map(|i| row(&format!("id-{i}"), t0() + micros(i as i64)))
        .collect();
    for (key, row) in keys.iter().zip(&rows) {
        put(fx, key, row).await;
    }
    for (key, row) in keys.iter().zip(&rows) {
        assert_eq!(load(store, key).await.as_ref(), Some(row), "{key}");
    }
    assert!(
        (store
            .forget(&keys[0], sessionkeeper::domain::TranscriptFate::Delete, t0())
            .await
            .expect("forget")
            .rows
            > 0)
    );
    assert_eq!(load(store, &keys[0]).await, None);
    for (key, row) in keys.iter().zip(&rows).skip(1) {
        assert_eq!(
            load(store, key).await.as_ref(),
            Some(row),
            "{key} survives forgetting {}",
            keys[0]
        );
    }
}

async fn forget_deletes_the_row_whatever_it_holds_and_says_whether_there_was_one(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(fx, &key, &row(A, t0())).await;
    assert!(
        (store
            .forget(&key, sessionkeeper::domain::TranscriptFate::Delete, t0())
            .await
            .expect("forget")
            .rows
            > 0),
        "there was a row"
    );
    assert_eq!(load(store, &key).await, None);
    assert!(
        store
            .forget(&key, sessionkeeper::domain::TranscriptFate::Delete, t0())
            .await
            .expect("forget again")
            .rows
            == 0,
        "there was no row left"
    );
}
