//! TranscriptService (issue 18, preview) through a real tonic client on a real port, on both
//! stores: appends and loads in order, chunked streaming of a large transcript, idempotent appends,
//! the limits and their status codes, listing and deleting, field errors, tokens per namespace, an
//! unreachable Postgres, session summaries (compare-and-set, loaded, listed, their field errors),
//! and the transcript metrics on a real `/metrics` scrape.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessionkeeper::config::Settings;
use sessionkeeper::domain::{Entry, Policy};
use sessionkeeper::proto;
use sessionkeeper::proto::transcript_service_client::TranscriptServiceClient;
use sessionkeeper::server::auth::token_digest;
use sessionkeeper::store::postgres::{PostgresSettings, PostgresStore};
use sessionkeeper::transcripts::TranscriptLimits;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::helpers::{StoreHandle, TestApp, new_store, test_config, test_config_with};
use crate::support::wait::wait_for;
use crate::support::{Backend, t0};

/// A chunk's aim; a chunk may pass it by one entry's framing, never by a whole entry.
const CHUNK_BYTES: usize = 1024 * 1024;

fn client(app: &TestApp) -> TranscriptServiceClient<Channel> {
    TranscriptServiceClient::new(app.channel.clone())
}

fn tkey(session_id: &str, subpath: &str) -> proto::TranscriptKey {
    proto::TranscriptKey {
        namespace: "acme".into(),
        project_key: "-work-repo".into(),
        session_id: session_id.into(),
        subpath: subpath.into(),
    }
}

/// An entry as the SDK writes it: a JSON object with a `type` and a `uuid`, padded to `pad` bytes.
fn entry(uuid: &str, pad: usize) -> String {
    format!(r#"{{"type":"user","uuid":"{uuid}","text":"{}"}}"#, "x".repeat(pad))
}

fn append_request(key: proto::TranscriptKey, append_id: &str, entries: Vec<String>) -> proto::AppendEntriesRequest {
    proto::AppendEntriesRequest {
        key: Some(key),
        append_id: append_id.into(),
        entries,
        summary: None,
    }
}

async fn append(
    client: &mut TranscriptServiceClient<Channel>,
    key: proto::TranscriptKey,
    append_id: &str,
    entries: Vec<String>,
) -> Result<proto::AppendEntriesResponse, tonic::Status> {
    client
        .append_entries(append_request(key, append_id, entries))
        .await
        .map(|r| r.into_inner())
}

/// Every chunk of a load.
async fn load_chunks(
    client: &mut TranscriptServiceClient<Channel>,
    key: proto::TranscriptKey,
) -> Result<Vec<proto::LoadTranscriptResponse>, tonic::Status> {
    let mut stream = client
        .load_transcript(proto::LoadTranscriptRequest {
            key: Some(key),
            after_seq: 0,
            summary_dialect: 0,
        })
        .await?
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await? {
        chunks.push(chunk);
    }
    Ok(chunks)
}

/// The entries of a load, reassembled.
async fn load(client: &mut TranscriptServiceClient<Channel>, key: proto::TranscriptKey) -> Vec<String> {
    let chunks = load_chunks(client, key).await.expect("load");
    assert!(chunks[0].found, "the transcript exists");
    chunks.into_iter().flat_map(|c| c.entries).collect()
}

async fn appends_load_back_in_order_and_an_unknown_key_is_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = client(&app);
    let first: Vec<String> = (0..3).map(|i| entry(&format!("u{i}"), 10)).collect();
    let second: Vec<String> = (3..5).map(|i| entry(&format!("u{i}"), 10)).collect();
    let answer = append(&mut client, tkey("sess", ""), "a1", first.clone())
        .await
        .unwrap();
    assert_eq!((answer.replayed, answer.stored, answer.entry_count), (false, 3, 3));
    assert!(answer.mtime_ms > 0);
    let answer = append(&mut client, tkey("sess", ""), "a2", second.clone())
        .await
        .unwrap();
    assert_eq!((answer.stored, answer.entry_count), (2, 5));
    let bytes: usize = first.iter().chain(&second).map(String::len).sum();
    assert_eq!(answer.byte_count, bytes as u64);

    let chunks = load_chunks(&mut client, tkey("sess", "")).await.unwrap();
    assert_eq!(chunks.len(), 1);
    let info = chunks[0].info.expect("the first chunk describes the transcript");
    assert_eq!(
        (info.entry_count, info.upto_seq, info.mtime_ms),
        (5, 5, answer.mtime_ms)
    );
    assert_eq!(chunks[0].last_seq, 5);
    assert_eq!(chunks[0].entries, [first, second].concat(), "in order, byte for byte");

    let unknown = load_chunks(&mut client, tkey("never", "")).await.unwrap();
    assert_eq!(unknown.len(), 1, "one chunk says not found");
    assert!(!unknown[0].found && unknown[0].entries.is_empty() && unknown[0].info.is_none());
    let empty = append(&mut client, tkey("nothing", ""), "", vec![]).await.unwrap();
    assert_eq!((empty.stored, empty.entry_count), (0, 0));
    assert!(!load_chunks(&mut client, tkey("nothing", "")).await.unwrap()[0].found);
}

async fn a_large_transcript_streams_in_chunks_of_about_a_mebibyte(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = client(&app);
    let entries: Vec<String> = (0..300).map(|i| entry(&format!("u{i}"), 20_000)).collect();
    for (n, batch) in entries.chunks(50).enumerate() {
        append(&mut client, tkey("big", ""), &format!("b{n}"), batch.to_vec())
            .await
            .unwrap();
    }
    let chunks = load_chunks(&mut client, tkey("big", "")).await.unwrap();
    assert!(
        chunks.len() >= 5,
        "about 6 MB in chunks of ~1 MiB: {} chunks",
        chunks.len()
    );
    for chunk in &chunks {
        let bytes: usize = chunk.entries.iter().map(String::len).sum();
        assert!(bytes <= CHUNK_BYTES, "a chunk of {bytes} bytes");
        assert!(!chunk.entries.is_empty());
    }
    assert_eq!(chunks.last().unwrap().last_seq, 300);
    let reassembled: Vec<String> = chunks.into_iter().flat_map(|c| c.entries).collect();
    assert_eq!(reassembled, entries, "reassembled exactly");

    // A broken stream resumes after the last seq it got.
    let mut stream = client
        .load_transcript(proto::LoadTranscriptRequest {
            key: Some(tkey("big", "")),
            after_seq: 290,
            summary_dialect: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        rest.extend(chunk.entries);
    }
    assert_eq!(rest, entries[290..]);
}

/// A transcript deleted while it streams ends the stream with ABORTED, never with another
/// transcript's entries or a silent short read.
async fn a_transcript_deleted_during_a_load_ends_the_stream_aborted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = client(&app);
    // About 20 chunks: far more than the server reads ahead of a client that stops reading.
    let entries: Vec<String> = (0..1000).map(|i| entry(&format!("u{i}"), 20_000)).collect();
    for (n, batch) in entries.chunks(100).enumerate() {
        append(&mut client, tkey("big", ""), &format!("b{n}"), batch.to_vec())
            .await
            .unwrap();
    }
    let mut stream = client
        .load_transcript(proto::LoadTranscriptRequest {
            key: Some(tkey("big", "")),
            after_seq: 0,
            summary_dialect: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("a first chunk");
    assert!(first.found);
    client
        .delete_transcript(proto::DeleteTranscriptRequest {
            key: Some(tkey("big", "")),
        })
        .await
        .unwrap();
    let mut received = first.entries.len();
    let err = loop {
        match stream.message().await {
            Ok(Some(chunk)) => received += chunk.entries.len(),
            Ok(None) => panic!("the stream ended normally after {received} of 1000 entries"),
            Err(err) => break err,
        }
    };
    assert_eq!(err.code(), Code::Aborted, "{}", err.message());
    assert!(received < 1000);
}

async fn a_replayed_append_id_answers_the_same_and_a_reused_one_is_already_exists(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = client(&app);
    let batch = vec![entry("u1", 5), entry("u2", 5)];
    let first = append(&mut client, tkey("sess", ""), "same", batch.clone())
        .await
        .unwrap();
    let again = append(&mut client, tkey("sess", ""), "same", batch.clone())
        .await
        .unwrap();
    assert!(again.replayed && !first.replayed);
    assert_eq!(
        (again.stored, again.entry_count, again.byte_count, again.mtime_ms),
        (first.stored, first.entry_count, first.byte_count, first.mtime_ms)
    );
    assert_eq!(load(&mut client, tkey("sess", "")).await, batch, "nothing duplicated");

    // Entries the transcript already holds (same uuid) are skipped under a new append id too.
    let dup = append(
        &mut client,
        tkey("sess", ""),
        "other",
        vec![entry("u2", 5), entry("u3", 5)],
    )
    .await
    .unwrap();
    assert_eq!((dup.stored, dup.duplicates, dup.entry_count), (1, 1, 3));

    let err = append(&mut client, tkey("another", ""), "same", batch)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{}", err.message());
    assert!(err.message().contains("append_id"), "{}", err.message());
    assert!(!load_chunks(&mut client, tkey("another", "")).await.unwrap()[0].found);
}

async fn an_entry_over_the_limit_is_invalid_argument_naming_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = client(&app);
    let mut entries: Vec<String> = (0..4).map(|i| entry(&format!("u{i}"), 10)).collect();
    entries[3] = entry("big", 1024 * 1024);
    let size = entries[3].len();
    let err = append(&mut client, tkey("sess", ""), "a1", entries).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        format!("entries[3]: is {size} bytes, over the 1048576-byte limit")
    );
    let err = append(&mut client, tkey("sess", ""), "a1", vec![entry("u", 1), "[1]".into()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("entries[1]: "), "{}", err.message());
    assert!(
        !load_chunks(&mut client, tkey("sess", "")).await.unwrap()[0].found,
        "nothing stored"
    );
}

async fn an_append_past_the_transcript_limit_is_failed_precondition(backend: Backend) {
    let handle = new_store(backend).await;
    let mut config = test_config(&handle, Policy::default());
    config.transcript_limits = TranscriptLimits {
        max_entry_bytes: 1000,
        max_transcript_bytes: 2000,
    };
    let app = TestApp::start_with_config(handle, config, crate::support::t0()).await;
    app.wait_until_ready().await;
    let mut client = client(&app);
    let fits: Vec<String> = (0..3).map(|i| entry(&format!("u{i}"), 500)).collect();
    append(&mut client, tkey("sess", ""), "a1", fits.clone()).await.unwrap();
    let err = append(&mut client, tkey("sess", ""), "a2", vec![entry("u9", 500)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("full") && err.message().contains("2000"),
        "{}",
        err.message()
    );
    assert_eq!(
        load(&mut client, tkey("sess", "")).await,
        fits,
        "nothing of the refused append"
    );
    let err = append(&mut client, tkey("sess", ""), "a3", vec![entry("u9", 1000)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "over the entry limit of this server");
    assert!(err.message().contains("over the 1000-byte limit"), "{}", err.message());
}

async fn sessions_and_subkeys_are_listed_and_deleting_the_main_key_cascades(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = client(&app);
    for (n, (session, subpath)) in [
        ("s1", ""),
        ("s1", "subagents/agent-a"),
        ("s1", "subagents/agent-b"),
        ("s2", ""),
    ]
    .into_iter()
    .enumerate()
    {
        append(
            &mut client,
            tkey(session, subpath),
            &format!("a{n}"),
            vec![entry("u", 1)],
        )
        .await
        .unwrap();
    }
    let listed = client
        .list_transcript_sessions(proto::ListTranscriptSessionsRequest {
            namespace: "acme".into(),
            project_key: "-work-repo".into(),
            summary_dialect: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<&str> = listed.sessions.iter().map(|s| s.session_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["s1", "s2"]);
    assert!(listed.sessions.iter().all(|s| s.mtime_ms > 0));
    let subkeys = |client: &mut TranscriptServiceClient<Channel>| {
        let mut client = client.clone();
        async move {
            client
                .list_subkeys(proto::ListSubkeysRequest {
                    namespace: "acme".into(),
                    project_key: "-work-repo".into(),
                    session_id: "s1".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .subpaths
        }
    };
    assert_eq!(subkeys(&mut client).await, ["subagents/agent-a", "subagents/agent-b"]);

    let one = client
        .delete_transcript(proto::DeleteTranscriptRequest {
            key: Some(tkey("s1", "subagents/agent-a")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((one.transcripts_deleted, one.entries_deleted), (1, 1));
    assert_eq!(subkeys(&mut client).await, ["subagents/agent-b"]);
    let main = client
        .delete_transcript(proto::DeleteTranscriptRequest {
            key: Some(tkey("s1", "")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (main.transcripts_deleted, main.entries_deleted),
        (2, 2),
        "the main key cascades"
    );
    assert!(subkeys(&mut client).await.is_empty());
    assert!(!load_chunks(&mut client, tkey("s1", "")).await.unwrap()[0].found);
    let none = client
        .delete_transcript(proto::DeleteTranscriptRequest {
            key: Some(tkey("s1", "")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        none.transcripts_deleted, 0,
        "an unknown key deletes nothing and is no error"
    );
}

async fn bad_key_fields_are_invalid_argument_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = client(&app);
    let cases = [
        (
            proto::TranscriptKey {
                namespace: "a b".into(),
                ..tkey("s", "")
            },
            "key.namespace",
        ),
        (
            proto::TranscriptKey {
                project_key: String::new(),
                ..tkey("s", "")
            },
            "key.project_key",
        ),
        (tkey("", ""), "key.session_id"),
        (tkey("s\n", ""), "key.session_id"),
        (tkey("s", "../etc"), "key.subpath"),
        (tkey("s", "a\\b"), "key.subpath"),
    ];
    for (key, field) in cases {
        let err = append(&mut client, key.clone(), "a1", vec![entry("u", 1)])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{key:?}");
        assert!(
            err.message().starts_with(&format!("{field}: ")),
            "{key:?}: {}",
            err.message()
        );
        let err = load_chunks(&mut client, key.clone()).await.unwrap_err();
        assert!(
            err.message().starts_with(&format!("{field}: ")),
            "{key:?}: {}",
            err.message()
        );
    }
    let err = client
        .append_entries(proto::AppendEntriesRequest::default())
        .await
        .unwrap_err();
    assert!(err.message().starts_with("key: "), "{}", err.message());
    let err = append(&mut client, tkey("s", ""), "", vec![entry("u", 1)])
        .await
        .unwrap_err();
    assert!(err.message().starts_with("append_id: "), "{}", err.message());
    let err = client
        .list_transcript_sessions(proto::ListTranscriptSessionsRequest {
            namespace: "acme".into(),
            project_key: String::new(),
            summary_dialect: 0,
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("project_key: "), "{}", err.message());
    let err = client
        .list_subkeys(proto::ListSubkeysRequest {
            namespace: "acme".into(),
            project_key: "p".into(),
            session_id: String::new(),
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("session_id: "), "{}", err.message());
}

/// TranscriptService decodes requests of up to 8 MiB (SessionService: 4 MiB); a bigger one is
/// refused by the decoder and stores nothing.
async fn an_append_of_up_to_8_mib_is_decoded_and_a_bigger_one_is_out_of_range(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = client(&app);
    let big: Vec<String> = (0..6).map(|i| entry(&format!("u{i}"), 1_000_000)).collect();
    let answer = append(&mut client, tkey("big", ""), "six", big.clone()).await.unwrap();
    assert_eq!(answer.stored, 6, "about 6 MB in one request");
    assert_eq!(load(&mut client, tkey("big", "")).await, big);
    let too_big: Vec<String> = (0..9).map(|i| entry(&format!("v{i}"), 1_000_000)).collect();
    let err = append(&mut client, tkey("bigger", ""), "nine", too_big)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{}", err.message());
    assert!(!load_chunks(&mut client, tkey("bigger", "")).await.unwrap()[0].found);
}

crate::on_both_stores!(
    a_transcript_deleted_during_a_load_ends_the_stream_aborted,
    an_append_of_up_to_8_mib_is_decoded_and_a_bigger_one_is_out_of_range,
    appends_load_back_in_order_and_an_unknown_key_is_not_found,
    a_large_transcript_streams_in_chunks_of_about_a_mebibyte,
    a_replayed_append_id_answers_the_same_and_a_reused_one_is_already_exists,
    an_entry_over_the_limit_is_invalid_argument_naming_it,
    an_append_past_the_transcript_limit_is_failed_precondition,
    sessions_and_subkeys_are_listed_and_deleting_the_main_key_cascades,
    bad_key_fields_are_invalid_argument_naming_the_field,
    summaries_are_written_by_compare_and_set_and_come_back_with_loads_and_lists,
    bad_summaries_are_invalid_argument_naming_the_field,
    appends_and_loads_move_the_transcript_counters_and_the_gauges_show_what_is_stored,
);

const ACME_TOKEN: &str = "tok-acme-transcripts";

fn write_tokens(path: &Path) {
    std::fs::write(
        path,
        format!(
            "[[tokens]]\nname = \"acme-prod\"\nsha256 = {:?}\nnamespaces = [\"acme\"]\n",
            token_digest(ACME_TOKEN)
        ),
    )
    .unwrap();
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {token}")).unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_one_namespace_cannot_touch_another() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    write_tokens(&tokens);
    let handle = new_store(Backend::Sqlite).await;
    let config = test_config_with(
        &handle,
        Policy::default(),
        Settings {
            auth_tokens: Some(tokens),
            ..Settings::default()
        },
    );
    let app = TestApp::start_with_config(handle, config, crate::support::t0()).await;
    app.wait_until_ready().await;
    let mut client = client(&app);
    let globex = proto::TranscriptKey {
        namespace: "globex".into(),
        ..tkey("s", "")
    };
    let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());

    let acme = append_request(tkey("s", ""), "a1", vec![entry("u", 1)]);
    let no_token = client.append_entries(with_token(acme.clone(), None)).await.map(drop);
    assert_eq!(code(no_token), Code::Unauthenticated);
    let own = client
        .append_entries(with_token(acme, Some(ACME_TOKEN)))
        .await
        .map(drop);
    assert_eq!(code(own), Code::Ok);

    let other = append_request(globex.clone(), "a2", vec![entry("u", 1)]);
    let denied = client
        .append_entries(with_token(other, Some(ACME_TOKEN)))
        .await
        .map(drop);
    assert_eq!(code(denied), Code::PermissionDenied);
    let load = proto::LoadTranscriptRequest {
        key: Some(globex.clone()),
        after_seq: 0,
        summary_dialect: 0,
    };
    let denied = client
        .load_transcript(with_token(load, Some(ACME_TOKEN)))
        .await
        .map(drop);
    assert_eq!(code(denied), Code::PermissionDenied);
    let list = proto::ListTranscriptSessionsRequest {
        namespace: "globex".into(),
        project_key: "-work-repo".into(),
        summary_dialect: 0,
    };
    let denied = client
        .list_transcript_sessions(with_token(list, Some(ACME_TOKEN)))
        .await
        .map(drop);
    assert_eq!(code(denied), Code::PermissionDenied);
    let subkeys = proto::ListSubkeysRequest {
        namespace: String::new(),
        project_key: "-work-repo".into(),
        session_id: "s".into(),
    };
    let denied = client
        .list_subkeys(with_token(subkeys, Some(ACME_TOKEN)))
        .await
        .map(drop);
    assert_eq!(
        code(denied),
        Code::PermissionDenied,
        "an empty namespace is \"default\" before the access check"
    );
    let delete = proto::DeleteTranscriptRequest { key: Some(globex) };
    let denied = client
        .delete_transcript(with_token(delete, Some(ACME_TOKEN)))
        .await
        .map(drop);
    assert_eq!(code(denied), Code::PermissionDenied);
}

/// Postgres down (nothing listens on the port): every transcript call is UNAVAILABLE fast, with
/// no internal detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_is_unavailable_fast() {
    let url = "postgres://postgres@127.0.0.1:1/sessionkeeper".to_string();
    let store = PostgresStore::connect_lazy(&PostgresSettings {
        url: url.clone(),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(1),
        ..PostgresSettings::new("")
    })
    .unwrap();
    let handle = StoreHandle {
        store: Arc::new(store),
        dir: None,
        database_url: Some(url),
        backend: Backend::Postgres,
    };
    let app = TestApp::start(handle, Policy::default(), crate::support::t0()).await;
    let mut client = client(&app);
    let started = Instant::now();
    let err = append(&mut client, tkey("s", ""), "a1", vec![entry("u", 1)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    let err = load_chunks(&mut client, tkey("s", "")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(!err.message().contains("127.0.0.1"), "{}", err.message());
    let err = client
        .list_transcript_sessions(proto::ListTranscriptSessionsRequest {
            namespace: "acme".into(),
            project_key: "p".into(),
            summary_dialect: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "three calls took {:?}",
        started.elapsed()
    );
}

/// Calls of both services are observed: `sessionkeeper_rpc_duration_seconds` counts them by method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript_calls_are_counted_by_method() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut client = client(&app);
    append(&mut client, tkey("s", ""), "a1", vec![entry("u", 1)])
        .await
        .unwrap();
    load_chunks(&mut client, tkey("s", "")).await.unwrap();
    let (status, body) = app.http_get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "sessionkeeper_rpc_duration_seconds_count{code=\"OK\",method=\"AppendEntries\"} 1",
        "sessionkeeper_rpc_duration_seconds_count{code=\"OK\",method=\"LoadTranscript\"} 1",
        "sessionkeeper_rpc_duration_seconds_count{code=\"OK\",method=\"DeleteTranscript\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} in\n{body}");
    }
}

const PY: i32 = proto::SummaryDialect::ClaudePython as i32;
const TS: i32 = proto::SummaryDialect::ClaudeTypescript as i32;

fn summary_write(dialect: i32, data_json: &str, if_version: u64) -> proto::SummaryWrite {
    proto::SummaryWrite {
        dialect,
        data_json: data_json.into(),
        if_version,
    }
}

async fn append_with_summary(
    client: &mut TranscriptServiceClient<Channel>,
    key: proto::TranscriptKey,
    append_id: &str,
    entries: Vec<String>,
    summary: proto::SummaryWrite,
) -> Result<proto::AppendEntriesResponse, tonic::Status> {
    let mut request = append_request(key, append_id, entries);
    request.summary = Some(summary);
    client.append_entries(request).await.map(|r| r.into_inner())
}

/// Every chunk of a load that asks for a summary dialect.
async fn load_with_summary(
    client: &mut TranscriptServiceClient<Channel>,
    key: proto::TranscriptKey,
    summary_dialect: i32,
) -> Result<Vec<proto::LoadTranscriptResponse>, tonic::Status> {
    let mut stream = client
        .load_transcript(proto::LoadTranscriptRequest {
            key: Some(key),
            after_seq: 0,
            summary_dialect,
        })
        .await?
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await? {
        chunks.push(chunk);
    }
    Ok(chunks)
}

async fn list_with_summary(
    client: &mut TranscriptServiceClient<Channel>,
    summary_dialect: i32,
) -> Result<Vec<proto::TranscriptSession>, tonic::Status> {
    let listed = client
        .list_transcript_sessions(proto::ListTranscriptSessionsRequest {
            namespace: "acme".into(),
            project_key: "-work-repo".into(),
            summary_dialect,
        })
        .await?
        .into_inner();
    let mut sessions = listed.sessions;
    sessions.sort_by(|a, b| a.session_id.cmp(&b.session_id));
    Ok(sessions)
}

async fn summaries_are_written_by_compare_and_set_and_come_back_with_loads_and_lists(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = client(&app);
    let one = r#"{"custom_title":"one","first_prompt":"hi"}"#;
    let first = append_with_summary(
        &mut client,
        tkey("sess", ""),
        "a1",
        vec![entry("u1", 10)],
        summary_write(PY, one, 0),
    )
    .await
    .unwrap();
    assert!(first.summary_written);
    assert_eq!(first.current_summary, None, "only sent when not written");
    let v1 = proto::Summary {
        dialect: PY,
        data_json: one.into(),
        version: 1,
        mtime_ms: first.mtime_ms,
    };

    // A fold from a stale version: the entries are stored, the summary comes back to fold over.
    app.clock.advance(chrono::TimeDelta::milliseconds(5));
    let stale = append_with_summary(
        &mut client,
        tkey("sess", ""),
        "a2",
        vec![entry("u2", 10)],
        summary_write(PY, r#"{"custom_title":"stale"}"#, 0),
    )
    .await
    .unwrap();
    assert_eq!((stale.stored, stale.entry_count), (1, 2));
    assert!(!stale.summary_written);
    assert_eq!(stale.current_summary, Some(v1.clone()));

    // The summary alone, folded over version 1: written, the transcript unchanged.
    let two = r#"{"custom_title":"two"}"#;
    let alone = append_with_summary(&mut client, tkey("sess", ""), "a3", vec![], summary_write(PY, two, 1))
        .await
        .unwrap();
    assert!(alone.summary_written);
    assert_eq!(
        (alone.stored, alone.entry_count, alone.mtime_ms),
        (0, 2, stale.mtime_ms)
    );
    let v2 = proto::Summary {
        dialect: PY,
        data_json: two.into(),
        version: 2,
        mtime_ms: stale.mtime_ms,
    };
    // A repeat answers as the first call did.
    let replayed = append_with_summary(
        &mut client,
        tkey("sess", ""),
        "a1",
        vec![entry("u1", 10)],
        summary_write(PY, one, 0),
    )
    .await
    .unwrap();
    assert!(replayed.replayed && replayed.summary_written);
    // A summary alone for a session never written: nothing is written, nothing to fold over.
    let nowhere = append_with_summary(&mut client, tkey("never", ""), "n1", vec![], summary_write(PY, one, 0))
        .await
        .unwrap();
    assert!(!nowhere.summary_written && !nowhere.replayed);
    assert_eq!(nowhere.current_summary, None);
    assert_eq!((nowhere.entry_count, nowhere.mtime_ms), (0, 0));
    assert!(!load_chunks(&mut client, tkey("never", "")).await.unwrap()[0].found);

    // Load: the first chunk carries the dialect asked for, when stored; later chunks never.
    let chunks = load_with_summary(&mut client, tkey("sess", ""), PY).await.unwrap();
    assert_eq!(chunks[0].summary, Some(v2.clone()));
    assert_eq!(chunks[0].entries.len(), 2);
    assert_eq!(
        load_with_summary(&mut client, tkey("sess", ""), TS).await.unwrap()[0].summary,
        None
    );
    assert_eq!(
        load_chunks(&mut client, tkey("sess", "")).await.unwrap()[0].summary,
        None
    );
    let big: Vec<String> = (0..3).map(|i| entry(&format!("b{i}"), 700_000)).collect();
    let ts = r#"{"customTitle":"big","isSidechain":false}"#;
    append_with_summary(
        &mut client,
        tkey("big", ""),
        "b1",
        big.clone(),
        summary_write(TS, ts, 0),
    )
    .await
    .unwrap();
    let chunks = load_with_summary(&mut client, tkey("big", ""), TS).await.unwrap();
    assert!(chunks.len() >= 2, "{} chunks", chunks.len());
    assert_eq!(chunks[0].summary.as_ref().map(|s| s.data_json.as_str()), Some(ts));
    assert!(chunks[1..].iter().all(|c| c.summary.is_none()));
    assert_eq!(chunks.into_iter().flat_map(|c| c.entries).collect::<Vec<_>>(), big);

    // List: each session with its summary of the dialect asked for, where stored.
    let sessions = list_with_summary(&mut client, PY).await.unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!((sessions[0].session_id.as_str(), &sessions[0].summary), ("big", &None));
    assert_eq!(sessions[1].summary, Some(v2));
    assert!(sessions[1].summary.as_ref().unwrap().mtime_ms >= sessions[1].mtime_ms);
    let sessions = list_with_summary(&mut client, TS).await.unwrap();
    assert_eq!(
        sessions[0].summary.as_ref().map(|s| (s.dialect, s.version)),
        Some((TS, 1))
    );
    assert_eq!(sessions[1].summary, None);
    assert!(
        list_with_summary(&mut client, 0)
            .await
            .unwrap()
            .iter()
            .all(|s| s.summary.is_none())
    );

    // Deleted with the transcript.
    client
        .delete_transcript(proto::DeleteTranscriptRequest {
            key: Some(tkey("sess", "")),
        })
        .await
        .unwrap();
    append(&mut client, tkey("sess", ""), "again", vec![entry("u1", 1)])
        .await
        .unwrap();
    assert_eq!(
        load_with_summary(&mut client, tkey("sess", ""), PY).await.unwrap()[0].summary,
        None
    );
}

async fn bad_summaries_are_invalid_argument_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = client(&app);
    let over_limit = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1024 * 1024));
    let cases: Vec<(proto::TranscriptKey, &str, proto::SummaryWrite, &str)> = vec![
        (
            tkey("s", "subagents/agent-1"),
            "a1",
            summary_write(PY, "{}", 0),
            "summary",
        ),
        (tkey("s", ""), "a1", summary_write(0, "{}", 0), "summary.dialect"),
        (tkey("s", ""), "a1", summary_write(99, "{}", 0), "summary.dialect"),
        (tkey("s", ""), "a1", summary_write(TS, "[1, 2]", 0), "summary.data_json"),
        (
            tkey("s", ""),
            "a1",
            summary_write(TS, "{not json", 0),
            "summary.data_json",
        ),
        (
            tkey("s", ""),
            "a1",
            summary_write(TS, &over_limit, 0),
            "summary.data_json",
        ),
        (tkey("s", ""), "", summary_write(TS, "{}", 0), "append_id"),
    ];
    for (key, append_id, summary, field) in cases {
        let err = append_with_summary(&mut client, key, append_id, vec![entry("u1", 1)], summary)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {}", err.message());
        assert!(
            err.message().starts_with(&format!("{field}: ")),
            "{field}: {}",
            err.message()
        );
    }
    assert!(
        !load_chunks(&mut client, tkey("s", "subagents/agent-1")).await.unwrap()[0].found,
        "a refused append stores nothing"
    );
    assert!(!load_chunks(&mut client, tkey("s", "")).await.unwrap()[0].found);
    let err = load_with_summary(&mut client, tkey("s", ""), 7).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("summary_dialect: "), "{}", err.message());
    let err = list_with_summary(&mut client, 7).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("summary_dialect: "), "{}", err.message());
}

/// A series' value in a Prometheus text exposition (0 when absent).
fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The counters move with appends and loads as the scrape shows them; the gauges show what was
/// stored before the server started, read by its background refresh.
async fn appends_and_loads_move_the_transcript_counters_and_the_gauges_show_what_is_stored(backend: Backend) {
    let handle = new_store(backend).await;
    let seeded: Vec<Entry> = (0..3)
        .map(|i| Entry::parse(entry(&format!("s{i}"), 100), 1024).unwrap())
        .collect();
    let bytes: usize = seeded.iter().map(|e| e.json.len()).sum();
    let key = sessionkeeper::domain::TranscriptKey::new("acme", "-work-repo", "seeded", "").unwrap();
    handle.store.append(&key, "seed", &seeded, t0(), 1 << 20).await.unwrap();
    let app = TestApp::spawn_with(handle, Policy::default(), t0()).await;
    let gauges = wait_for(Duration::from_secs(10), "the transcript gauges", || async {
        let (_, text) = app.http_get("/metrics").await;
        (sample(&text, "sessionkeeper_transcript_entries") == 3.0).then_some(text)
    })
    .await;
    assert_eq!(
        sample(&gauges, "sessionkeeper_transcript_bytes"),
        bytes as f64,
        "{gauges}"
    );

    let (_, before) = app.http_get("/metrics").await;
    for family in [
        "sessionkeeper_transcript_appends_total",
        "sessionkeeper_transcript_entries_appended_total",
        "sessionkeeper_transcript_duplicates_total",
        "sessionkeeper_transcript_loads_total",
        "sessionkeeper_transcript_bytes",
        "sessionkeeper_transcript_entries",
    ] {
        assert!(before.contains(&format!("# TYPE {family} ")), "{family} exported");
    }
    let mut client = client(&app);
    // 2 stored, 1 duplicate; then a replay and a reused append id.
    append(
        &mut client,
        tkey("seeded", ""),
        "m1",
        vec![entry("n1", 1), entry("n2", 1), entry("s0", 100)],
    )
    .await
    .unwrap();
    append(&mut client, tkey("seeded", ""), "m1", vec![entry("n1", 1)])
        .await
        .unwrap();
    let reused = append(&mut client, tkey("other", ""), "m1", vec![entry("n1", 1)]).await;
    assert_eq!(reused.unwrap_err().code(), Code::AlreadyExists);
    load(&mut client, tkey("seeded", "")).await;
    load_chunks(&mut client, tkey("never", "")).await.unwrap();
    let (_, after) = app.http_get("/metrics").await;
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        moved("sessionkeeper_transcript_appends_total{result=\"appended\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved("sessionkeeper_transcript_appends_total{result=\"replayed\"}"),
        1.0
    );
    assert_eq!(
        moved("sessionkeeper_transcript_appends_total{result=\"append_id_reused\"}"),
        1.0
    );
    assert_eq!(moved("sessionkeeper_transcript_appends_total{result=\"full\"}"), 0.0);
    assert_eq!(moved("sessionkeeper_transcript_entries_appended_total"), 2.0);
    assert_eq!(moved("sessionkeeper_transcript_duplicates_total"), 1.0);
    assert_eq!(moved("sessionkeeper_transcript_loads_total{found=\"true\"}"), 1.0);
    assert_eq!(moved("sessionkeeper_transcript_loads_total{found=\"false\"}"), 1.0);
}
