//! `sessionkeeper inspect NAMESPACE/AGENT/CONVERSATION` (issue 19 point 4): the real binary as a
//! client of a real server on a real port, on both stores: the timeline and `--json` show the
//! history (issue 19 point 2: here the clear's event, with its cause) and the tombstone of a
//! cleared id with both bindings; a token is sent when the server wants one; a bad
//! key exits 2 naming it, an unreachable server exits 1.

use std::process::Output;

use chrono::{SecondsFormat, TimeDelta};
use sessionkeeper::config::Settings;
use sessionkeeper::domain::Policy;
use sessionkeeper::server::auth::token_digest;

use crate::helpers::{TestApp, new_store, test_config_with};
use crate::support::Backend;
use crate::support::fixtures::{domain_binding, domain_key, key, no_conversation_found, pod, report_request};
use crate::support::process::sessionkeeper;

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || sessionkeeper().args(&args).output().expect("run sessionkeeper"))
        .await
        .expect("the command ran")
}

fn args(app: &TestApp, rest: &[&str]) -> Vec<String> {
    let mut all = vec![
        "inspect".to_owned(),
        "--target".to_owned(),
        format!("http://{}", app.grpc_addr),
    ];
    all.extend(rest.iter().map(|s| (*s).to_owned()));
    all
}

async fn inspect_prints_the_tombstone_of_a_cleared_id_as_a_timeline_and_as_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("cli/thread-7");
    app.put_row(
        &domain_key(&conversation),
        "s-a",
        TimeDelta::hours(1),
        domain_binding(&pod("b")),
    )
    .await;
    app.report(report_request(
        &conversation,
        "s-a",
        no_conversation_found("s-a", "x"),
        "",
    ))
    .await
    .expect("report");
    let cleared_at = app.clock_now().to_rfc3339_opts(SecondsFormat::Secs, true);

    let out = run(args(&app, &["acme/coder/cli/thread-7", "--json"])).await;
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["key"]["conversation"], "cli/thread-7");
    assert_eq!(json["session"], serde_json::Value::Null);
    let t = &json["tombstone"];
    assert_eq!(t["session_id"], "s-a");
    assert_eq!(t["reason"], "cleared_gone");
    assert_eq!(t["result_class"], "session_gone");
    assert_eq!(t["matched_signature"], "no conversation found");
    assert_eq!(t["cleared_at"], cleared_at.as_str());
    assert_eq!(t["stored_binding"]["host"], "b");
    assert_eq!(t["reported_binding"]["host"], "a");
    assert_eq!(t["expired"], false);
    let history = json["history"].as_array().expect("the history");
    assert_eq!(history.len(), 1, "{json:#}");
    let cleared = &history[0];
    assert_eq!(cleared["at"], cleared_at.as_str());
    assert_eq!(cleared["kind"], "cleared");
    assert_eq!(cleared["session_id"], "s-a");
    assert_eq!(cleared["result_class"], "session_gone");
    assert_eq!(cleared["action"], "cleared");
    assert_eq!(cleared["resumed_session_id"], "s-a");
    assert_eq!(cleared["num_turns"], 0);
    assert_eq!(cleared["cause"], "routed_elsewhere");
    assert_eq!(cleared["matched_signature"], "no conversation found");
    assert_eq!(cleared["binding"]["host"], "a");

    let out = run(args(&app, &["acme/coder/cli/thread-7"])).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "acme/coder/cli/thread-7");
    assert_eq!(lines[1], "history, oldest first:");
    assert_eq!(lines[2], format!("  {cleared_at}  cleared  s-a"));
    assert_eq!(
        lines[3],
        "      session_gone (cleared), resumed s-a, 0 turns, cause routed_elsewhere, \
         signature \"no conversation found\""
    );
    assert!(
        lines[4].starts_with("      run binding:  ") && lines[4].contains("host=a"),
        "{text}"
    );
    assert_eq!(lines[5], "kept now:");
    assert_eq!(lines[6], format!("{cleared_at}  cleared_gone  s-a"));
    assert_eq!(
        lines[7],
        "    a report said session_gone (signature \"no conversation found\")"
    );
    assert!(
        lines[8].starts_with("    stored from:  ") && lines[8].contains("host=b"),
        "{text}"
    );
    assert!(
        lines[9].starts_with("    failing run:  ") && lines[9].contains("host=a"),
        "{text}"
    );
    assert_eq!(lines.last(), Some(&"next: a Get starts fresh: cleared (cleared_gone)"));
}

async fn a_bad_key_exits_2_naming_it_and_an_unreachable_server_exits_1(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let out = run(args(&app, &["acme/coder"])).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAMESPACE/AGENT/CONVERSATION"));
    let out = run(args(&app, &["acme/bad agent/c"])).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent"), "{out:?}");
    // A port nothing listens on (bound, then closed).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = run(vec![
        "inspect".into(),
        "--target".into(),
        format!("http://{closed}"),
        "acme/coder/c".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: cannot reach"),
        "{out:?}"
    );
}

crate::on_both_stores!(
    inspect_prints_the_tombstone_of_a_cleared_id_as_a_timeline_and_as_json,
    a_bad_key_exits_2_naming_it_and_an_unreachable_server_exits_1,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_sends_the_token_from_the_flag_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[tokens]]\nname = \"ops\"\nsha256 = {:?}\nnamespaces = [\"acme\"]\n",
            token_digest("tok-inspect")
        ),
    )
    .unwrap();
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

    let out = run(args(&app, &["acme/coder/c"])).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
        "{out:?}"
    );
    let out = run(args(&app, &["acme/coder/c", "--token", "tok-inspect"])).await;
    assert!(out.status.success(), "{out:?}");
    let out = run(args(&app, &["globex/coder/c", "--token", "tok-inspect"])).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"),
        "{out:?}"
    );
    let target = format!("http://{}", app.grpc_addr);
    let out = tokio::task::spawn_blocking(move || {
        sessionkeeper()
            .args(["inspect", "--target", &target, "acme/coder/c"])
            .env("SESSIONKEEPER_TOKEN", "tok-inspect")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
}
