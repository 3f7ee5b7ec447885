//! The real `sessionkeeper` binary as an operator runs it: configuration errors, `migrate` and
//! `sweep` against unreachable and real Postgres, `serve` retrying while Postgres is down, SIGTERM,
//! and kill -9 in the middle of traffic followed by a restart that loses no acknowledged id.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessionkeeper::proto::{self, Action, Decision};

pub use crate::support::process::{Server, http_get, sessionkeeper};

use crate::support;
use crate::support::fixtures::{key, report_request, success};

/// How long a test waits for a started server to become ready.
pub const READY_WITHIN: Duration = Duration::from_secs(20);

fn run(command: &mut Command) -> Output {
    command.output().expect("run sessionkeeper")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a failed start: the exit code, and exactly one stderr line containing `expected`.
fn assert_one_line_error(output: &Output, code: i32, expected: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {text}");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got: {text}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(expected), "{text}");
}

#[test]
fn version_prints_the_crate_version() {
    let output = run(sessionkeeper().arg("--version"));
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("sessionkeeper {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_bad_duration_stops_the_process_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(sessionkeeper()
        .env("SESSIONKEEPER_DRAIN_TIMEOUT", "10 parsecs")
        .arg("--data-dir")
        .arg(dir.path()));
    assert_one_line_error(&output, 2, "--drain-timeout");
}

#[test]
fn an_unknown_key_in_the_policy_file_stops_the_process_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessionkeeper.toml");
    std::fs::write(&file, "[policy]\ndefault_ttl = \"24h\"\nunknown_falure_limit = 3\n").unwrap();
    let output = run(sessionkeeper()
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path()));
    assert_one_line_error(&output, 2, "unknown field `unknown_falure_limit`");
}

#[test]
fn an_empty_tokens_file_stops_the_process_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    for empty in ["", "tokens = []\n"] {
        std::fs::write(&tokens, empty).unwrap();
        let output = run(sessionkeeper()
            .arg("--auth-tokens")
            .arg(&tokens)
            .arg("--data-dir")
            .arg(dir.path().join("data")));
        assert_one_line_error(
            &output,
            2,
            &format!("tokens file {}: lists no tokens", tokens.display()),
        );
    }
}

#[test]
fn an_unwritable_data_dir_stops_the_process_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let output = run(sessionkeeper().arg("--data-dir").arg(not_a_dir.join("data")));
    assert_one_line_error(&output, 2, "data_dir");
}

#[test]
fn migrate_and_sweep_exit_non_zero_with_one_line_when_postgres_is_unreachable() {
    for args in [&["migrate"][..], &["sweep"], &["sweep", "--dry-run"]] {
        let started = Instant::now();
        let output = run(sessionkeeper()
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/sessionkeeper")
            .args(args));
        assert_one_line_error(&output, 1, "cannot connect to postgres");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn migrate_then_sweep_work_on_a_real_postgres() {
    let schema = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(support::fresh_pg_schema());
    let output = run(sessionkeeper().env("DATABASE_URL", &schema.url).arg("sweep"));
    assert_one_line_error(&output, 1, "needs");
    let output = run(sessionkeeper().env("DATABASE_URL", &schema.url).arg("migrate"));
    assert!(output.status.success(), "{}", stderr(&output));
    let output = run(sessionkeeper()
        .env("DATABASE_URL", &schema.url)
        .args(["sweep", "--dry-run"]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("would delete 0 expired sessions"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_retrying_not_ready_while_postgres_is_down_and_says_why() {
    let mut server = Server::start("down", |c| {
        c.env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/sessionkeeper");
    });
    // Measures time passing: two seconds of retrying, through which serve keeps running.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.exit_status().is_none(), "serve keeps running");
    assert_eq!(http_get(server.metrics, "/livez").await.0, 200);
    assert_eq!(http_get(server.metrics, "/readyz").await.0, 503);
    assert!(server.logged("cannot connect to postgres"), "the log says why");
    assert!(server.logged("retry_in"), "the log says it retries");
    server.signal("-TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_is_announced_loudly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start("embedded", |c| {
        c.arg("--data-dir").arg(dir.path());
    });
    server.wait_ready(READY_WITHIN).await;
    let warnings = server
        .log_events()
        .iter()
        .filter(|e| e.to_string().contains("NO DATABASE CONFIGURED"))
        .count();
    assert_eq!(warnings, 1);
    server.signal("-TERM");
    assert!(
        server.wait_exit(Duration::from_secs(15)).await.success(),
        "SIGTERM exits 0"
    );
}

/// Reports from several tasks; kill -9; restart; every acknowledged id (or a later one whose
/// answer was lost with the process) is still stored.
async fn a_kill_9_mid_traffic_loses_no_acknowledged_id(configure: impl Fn(&mut Command)) {
    let server = Server::start("before-kill", &configure);
    server.wait_ready(READY_WITHIN).await;
    let client = server.client().await;
    let acked: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let mut client = client.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 1..=10_000u32 {
                let conversation = format!("w{worker}-c{}", seq % 5);
                let request = report_request(&key(&conversation), "", success(&format!("s-{seq}"), 1), "");
                match client.report_result(request).await {
                    Ok(r) => {
                        assert_eq!(r.get_ref().action(), Action::Stored);
                        acked.lock().unwrap().insert(conversation, seq);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Measures time passing: the writers run for 1.5 s before the server is killed mid-write.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut server = server;
    server.signal("-KILL");
    server.wait_exit(Duration::from_secs(10)).await;
    for task in tasks {
        task.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "traffic was running when the process died ({} keys acked)",
        acked.len()
    );
    drop(server);

    let restarted = Server::start("restarted", &configure);
    restarted.wait_ready(READY_WITHIN).await;
    let mut client = restarted.client().await;
    for (conversation, seq) in acked {
        let d = client
            .get(proto::GetRequest {
                key: Some(key(&conversation)),
                binding: None,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.decision(), Decision::Resume, "{conversation}");
        let stored: u32 = d.session_id.trim_start_matches("s-").parse().unwrap();
        assert!(
            stored >= seq,
            "{conversation}: acknowledged s-{seq} but s-{stored} is stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_traffic_loses_no_acknowledged_id_on_postgres() {
    let schema = support::fresh_pg_schema().await;
    a_kill_9_mid_traffic_loses_no_acknowledged_id(move |c| {
        c.env("DATABASE_URL", &schema.url);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_traffic_loses_no_acknowledged_id_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = dir.path();
    let path = path.to_owned();
    a_kill_9_mid_traffic_loses_no_acknowledged_id(move |c| {
        c.arg("--data-dir").arg(&path);
    })
    .await;
}
