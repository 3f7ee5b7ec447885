//! One lifecycle for transcripts and session rows (issue 18 point 3) through a real tonic client
//! on a real port, on both stores: a report that clears an id, Forget, a Get that finds the row
//! expired and a Sweep (with its dry run) delete the id's transcripts and say how many; a Get whose
//! stored session's transcript is held resumes on another host or config dir and says it is
//! resumable anywhere, unless the caller loads under another project key or the id was cleared.

use chrono::TimeDelta;
use sessionkeeper::domain::Binding;
use sessionkeeper::proto::transcript_service_client::TranscriptServiceClient;
use sessionkeeper::proto::{self, Action, Decision, FreshReason};
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::TestApp;
use crate::support::Backend;
use crate::support::fixtures::{domain_binding, domain_key, key, no_conversation_found, pod, report_request};

const PROJECT: &str = "-work-repo";

fn transcripts(app: &TestApp) -> TranscriptServiceClient<Channel> {
    TranscriptServiceClient::new(app.channel.clone())
}

fn tkey(project_key: &str, session_id: &str, subpath: &str) -> proto::TranscriptKey {
    proto::TranscriptKey {
        namespace: "acme".into(),
        project_key: project_key.into(),
        session_id: session_id.into(),
        subpath: subpath.into(),
    }
}

/// The main transcript and a subagent's of `session_id`, each with two entries.
async fn write_transcripts(app: &TestApp, session_id: &str) -> [proto::TranscriptKey; 2] {
    let keys = [
        tkey(PROJECT, session_id, ""),
        tkey(PROJECT, session_id, "subagents/agent-1"),
    ];
    for (n, key) in keys.iter().enumerate() {
        let append_id = format!("{session_id}-{n}");
        transcripts(app)
            .append_entries(proto::AppendEntriesRequest {
                key: Some(key.clone()),
                append_id: append_id.clone(),
                entries: vec![
                    format!(r#"{{"type":"user","uuid":"{append_id}.1"}}"#),
                    format!(r#"{{"type":"assistant","uuid":"{append_id}.2"}}"#),
                ],
                summary: None,
            })
            .await
            .expect("append");
    }
    keys
}

async fn found(app: &TestApp, key: &proto::TranscriptKey) -> bool {
    let mut stream = transcripts(app)
        .load_transcript(proto::LoadTranscriptRequest {
            key: Some(key.clone()),
            ..Default::default()
        })
        .await
        .expect("load")
        .into_inner();
    stream
        .message()
        .await
        .expect("a chunk")
        .expect("one chunk at least")
        .found
}

async fn get_from(
    app: &TestApp,
    conversation: &proto::SessionKey,
    binding: proto::Binding,
    project_key: &str,
) -> proto::GetResponse {
    app.client
        .clone()
        .get(proto::GetRequest {
            key: Some(conversation.clone()),
            binding: Some(binding),
            transcript_project_key: project_key.into(),
        })
        .await
        .expect("get")
        .into_inner()
}

/// Another worker: another host and a fresh config dir, the same cwd.
fn other_worker() -> proto::Binding {
    proto::Binding {
        host: "pod-b".into(),
        config_dir: "/tmp/fresh-config".into(),
        ..pod("a")
    }
}

fn forget(conversation: &proto::SessionKey) -> proto::ForgetRequest {
    proto::ForgetRequest {
        key: Some(conversation.clone()),
    }
}

fn metric_line(metrics: &str, reason: &str) -> String {
    let prefix = format!("sessionkeeper_transcripts_deleted_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
        .to_owned()
}

async fn a_report_that_clears_the_id_deletes_its_transcripts_and_counts_them(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("c1");
    app.put_row(
        &domain_key(&conversation),
        "s1",
        TimeDelta::hours(1),
        domain_binding(&pod("a")),
    )
    .await;
    let keys = write_transcripts(&app, "s1").await;
    let bystander = write_transcripts(&app, "s2").await;

    let cleared = app
        .report(report_request(
            &conversation,
            "s1",
            no_conversation_found("s1", "s1"),
            "r1",
        ))
        .await
        .expect("report");
    assert_eq!(cleared.action(), Action::Cleared);
    assert_eq!(cleared.transcripts_deleted, 2);
    for key in &keys {
        assert!(!found(&app, key).await, "{key:?} deleted with the id");
    }
    for key in &bystander {
        assert!(found(&app, key).await, "{key:?} is another id's");
    }
    let (_, metrics) = app.http_get("/metrics").await;
    assert_eq!(
        metric_line(&metrics, "cleared"),
        "sessionkeeper_transcripts_deleted_total{reason=\"cleared\"} 2"
    );

    let get = get_from(&app, &conversation, other_worker(), "").await;
    assert_eq!(
        (get.decision(), get.fresh_reason()),
        (Decision::StartFresh, FreshReason::Cleared)
    );
    assert!(!get.resumable_anywhere, "after clearing, nothing resumes anywhere");
}

async fn forget_deletes_the_transcripts_and_counts_them(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("c1");
    app.put_row(
        &domain_key(&conversation),
        "s1",
        TimeDelta::hours(1),
        Binding::default(),
    )
    .await;
    let keys = write_transcripts(&app, "s1").await;
    let mut client = app.client.clone();
    let forgotten = client.forget(forget(&conversation)).await.expect("forget").into_inner();
    assert_eq!((forgotten.existed, forgotten.transcripts_deleted), (true, 2));
    for key in &keys {
        assert!(!found(&app, key).await, "{key:?} forgotten");
    }
    let again = client.forget(forget(&conversation)).await.expect("forget").into_inner();
    assert_eq!((again.existed, again.transcripts_deleted), (false, 0));
}

async fn a_get_that_finds_the_row_expired_deletes_its_transcripts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("c1");
    app.put_row(
        &domain_key(&conversation),
        "s1",
        TimeDelta::hours(25),
        domain_binding(&pod("a")),
    )
    .await;
    let keys = write_transcripts(&app, "s1").await;
    let get = get_from(&app, &conversation, pod("a"), PROJECT).await;
    assert_eq!(
        (get.decision(), get.fresh_reason()),
        (Decision::StartFresh, FreshReason::Expired)
    );
    assert!(
        !get.resumable_anywhere,
        "a held transcript does not keep a row alive past its TTL"
    );
    for key in &keys {
        assert!(!found(&app, key).await, "{key:?} expired with the row");
    }
    let (_, metrics) = app.http_get("/metrics").await;
    assert_eq!(
        metric_line(&metrics, "expired"),
        "sessionkeeper_transcripts_deleted_total{reason=\"expired\"} 2"
    );
}

async fn sweep_counts_the_transcripts_it_deletes_and_a_dry_run_what_it_would(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // An orphan: a fresh run's transcript whose ReportResult never came, 25 h ago.
    let orphan = write_transcripts(&app, "never-reported").await;
    app.clock.advance(TimeDelta::hours(25));
    // An expired row with its transcripts, and a live one with its own.
    app.put_row(
        &domain_key(&key("old")),
        "s-old",
        TimeDelta::hours(25),
        Binding::default(),
    )
    .await;
    let expired = write_transcripts(&app, "s-old").await;
    app.put_row(
        &domain_key(&key("live")),
        "s-live",
        TimeDelta::hours(1),
        Binding::default(),
    )
    .await;
    let live = write_transcripts(&app, "s-live").await;

    let sweep = |dry_run| proto::SweepRequest {
        namespace: "acme".into(),
        agent: String::new(),
        dry_run,
    };
    let mut client = app.client.clone();
    let dry = client.sweep(sweep(true)).await.expect("dry sweep").into_inner();
    assert_eq!((dry.deleted, dry.transcripts_deleted), (1, 4), "{dry:?}");
    assert!(
        found(&app, &orphan[0]).await && found(&app, &expired[0]).await,
        "a dry run deletes nothing"
    );

    let swept = client.sweep(sweep(false)).await.expect("sweep").into_inner();
    assert_eq!((swept.deleted, swept.transcripts_deleted), (1, 4), "{swept:?}");
    for key in orphan.iter().chain(&expired) {
        assert!(!found(&app, key).await, "{key:?} swept");
    }
    for key in &live {
        assert!(found(&app, key).await, "{key:?} is held by a live row");
    }
    let again = client.sweep(sweep(false)).await.expect("sweep").into_inner();
    assert_eq!((again.deleted, again.transcripts_deleted), (0, 0));
    let (_, metrics) = app.http_get("/metrics").await;
    assert_eq!(
        metric_line(&metrics, "swept"),
        "sessionkeeper_transcripts_deleted_total{reason=\"swept\"} 2"
    );
    assert_eq!(
        metric_line(&metrics, "orphan"),
        "sessionkeeper_transcripts_deleted_total{reason=\"orphan\"} 2"
    );
}

async fn a_held_transcript_resumes_on_another_host_and_config_dir(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("c1");
    app.put_row(
        &domain_key(&conversation),
        "s1",
        TimeDelta::hours(1),
        domain_binding(&pod("a")),
    )
    .await;

    // No transcript yet: the binding rule as before.
    let before = get_from(&app, &conversation, other_worker(), PROJECT).await;
    assert_eq!(
        (before.decision(), before.fresh_reason()),
        (Decision::StartFresh, FreshReason::BindingMismatch)
    );
    assert!(!before.resumable_anywhere);

    write_transcripts(&app, "s1").await;
    for project_key in [PROJECT, ""] {
        let held = get_from(&app, &conversation, other_worker(), project_key).await;
        assert_eq!(
            (held.decision(), held.session_id.as_str()),
            (Decision::Resume, "s1"),
            "{project_key:?}"
        );
        assert!(held.resumable_anywhere, "{project_key:?}");
        assert_eq!(held.transcript_project_key, PROJECT, "{project_key:?}");
        assert_eq!(held.binding, Some(pod("a")), "the stored row is described as stored");
    }
    // On the row's own host the binding decides alone: Get's usual path reads no transcript.
    let home = get_from(&app, &conversation, pod("a"), "").await;
    assert_eq!(home.decision(), Decision::Resume);
    assert!(!home.resumable_anywhere && home.transcript_project_key.is_empty());

    // The SDK would load under another project key (another cwd): not held for it.
    let elsewhere = get_from(&app, &conversation, other_worker(), "-somewhere-else").await;
    assert_eq!(
        (elsewhere.decision(), elsewhere.fresh_reason()),
        (Decision::StartFresh, FreshReason::BindingMismatch)
    );
    assert!(!elsewhere.resumable_anywhere && elsewhere.transcript_project_key.is_empty());

    // Another provider is another CLI: a held transcript does not help.
    let codex = get_from(
        &app,
        &conversation,
        proto::Binding {
            provider: "codex".into(),
            ..other_worker()
        },
        "",
    )
    .await;
    assert_eq!(codex.fresh_reason(), FreshReason::BindingMismatch);
}

async fn a_transcript_project_key_outside_the_rule_is_an_invalid_argument_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let refused = app
        .client
        .clone()
        .get(proto::GetRequest {
            key: Some(key("c1")),
            binding: None,
            transcript_project_key: "bad\u{7}key".into(),
        })
        .await
        .expect_err("a control character");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("transcript_project_key"),
        "{}",
        refused.message()
    );
}

crate::on_both_stores!(
    a_report_that_clears_the_id_deletes_its_transcripts_and_counts_them,
    forget_deletes_the_transcripts_and_counts_them,
    a_get_that_finds_the_row_expired_deletes_its_transcripts,
    sweep_counts_the_transcripts_it_deletes_and_a_dry_run_what_it_would,
    a_held_transcript_resumes_on_another_host_and_config_dir,
    a_transcript_project_key_outside_the_rule_is_an_invalid_argument_naming_the_field,
);
