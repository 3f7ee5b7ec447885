//! The README's walk-through "When a conversation starts fresh", executed: the case it tells is
//! played through the real gRPC API of a real server (on both stores), at the README's own times,
//! with its ids and bindings: a fresh run stores an id, the next resume on the same host fails with
//! Claude Code's "No conversation found" frame, the orchestrator's fresh retry stores a new id.
//! Then the README's own `sessionkeeper inspect` command (parsed from the block, its `--target`
//! pointed at the test server) runs as a process and its output must be the README's, line by line
//! (`…` stands for any text). When the output or the story changes, the README must change too.

use chrono::{DateTime, Utc};
use sessionkeeper::domain::Policy;
use sessionkeeper::proto;

use crate::helpers::{TestApp, new_store};
use crate::readme::{line_matches, readme_console_block};
use crate::support::Backend;
use crate::support::fixtures::{key, success};
use crate::support::process::sessionkeeper;

/// The README's conversation, ids and times.
const CONVERSATION: &str = "thread-42";
const FIRST_ID: &str = "5b1e9e0c-8f3a-4c57-9a2e-2f6d1c0b7e41";
const SECOND_ID: &str = "0c7d2b55-3e1f-4a8b-9c6d-7e2f1a0b9c84";
const STORED_AT: &str = "2026-11-27T16:02:41Z";
const CLEARED_AT: &str = "2026-11-28T09:14:03Z";
const STORED_AGAIN_AT: &str = "2026-11-28T09:14:40Z";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("a README time").to_utc()
}

/// The run's binding in the README: Claude Code on worker-1 in /work/repo (no config dir given).
fn worker_1() -> proto::Binding {
    proto::Binding {
        provider: "claude".into(),
        host: "worker-1".into(),
        config_dir: String::new(),
        cwd: "/work/repo".into(),
    }
}

async fn report(app: &TestApp, resumed: &str, result: proto::AgentResult) {
    app.report(proto::ReportResultRequest {
        key: Some(key(CONVERSATION)),
        resumed_session_id: resumed.into(),
        binding: Some(worker_1()),
        result: Some(result),
        report_id: String::new(),
    })
    .await
    .expect("report");
}

async fn the_readme_inspect_walk_through_is_what_the_server_shows(backend: Backend) {
    let app = TestApp::spawn_with(new_store(backend).await, Policy::default(), at(STORED_AT)).await;
    // A fresh run of 6 turns stores the first id.
    report(&app, "", success(FIRST_ID, 6)).await;
    // Its resume, on the same host, finds no transcript: Claude Code's frame (with a new id of its
    // own, never stored).
    app.clock.advance(at(CLEARED_AT) - at(STORED_AT));
    report(
        &app,
        FIRST_ID,
        proto::AgentResult {
            is_error: true,
            subtype: "error_during_execution".into(),
            session_id: "9f1c2d3e-0000-4000-8000-000000000001".into(),
            num_turns: 0,
            errors: vec![format!("No conversation found with session ID: {FIRST_ID}")],
            ..Default::default()
        },
    )
    .await;
    // The orchestrator retries the turn fresh: 3 turns, a new id.
    app.clock.advance(at(STORED_AGAIN_AT) - at(CLEARED_AT));
    report(&app, "", success(SECOND_ID, 3)).await;

    let steps = readme_console_block("When a conversation starts fresh");
    let [step] = steps.as_slice() else {
        panic!("the walk-through shows one command: {steps:?}");
    };
    let words: Vec<String> = step
        .command
        .split_whitespace()
        .map(|w| {
            if w.starts_with("http://localhost:") {
                format!("http://{}", app.grpc_addr)
            } else {
                w.to_owned()
            }
        })
        .collect();
    assert_eq!(words.first().map(String::as_str), Some("sessionkeeper"), "{words:?}");
    assert!(
        words.iter().any(|w| w.ends_with(&app.grpc_addr.to_string())),
        "the README's command names its --target: {words:?}"
    );
    let args = words[1..].to_vec();
    let out = tokio::task::spawn_blocking(move || sessionkeeper().args(&args).output().expect("run inspect"))
        .await
        .expect("the command ran");
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8(out.stdout).expect("UTF-8");
    let shown: Vec<&str> = shown.lines().map(str::trim_end).collect();
    assert_eq!(
        shown.len(),
        step.expected.len(),
        "the README shows {} lines, the command printed:\n{}",
        step.expected.len(),
        shown.join("\n")
    );
    for (expected, actual) in step.expected.iter().zip(&shown) {
        assert!(
            line_matches(expected, actual),
            "README line\n  {expected}\nbut the command printed\n  {actual}\nwhole output:\n{}",
            shown.join("\n")
        );
    }
}

crate::on_both_stores!(the_readme_inspect_walk_through_is_what_the_server_shows);
