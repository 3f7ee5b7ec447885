//! The command line and the logs as a new user meets them, through the real binary: each command's
//! `--help` shows only the flags it uses, `--listen` takes a host name, `--log-level` sits beside
//! `RUST_LOG` (and wins), logs carry colour codes only on a terminal, and a clean start logs no
//! warning beyond the embedded store's own notice.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sessionkeeper::proto::{self, Decision};
use tonic::transport::Channel;

use crate::binary::READY_WITHIN;
use crate::support;
use crate::support::process::{Server, sessionkeeper};

fn run(command: &mut Command) -> Output {
    command.output().expect("run sessionkeeper")
}

/// The long flags a `--help` text lists.
fn flags_in_help(args: &[&str]) -> BTreeSet<String> {
    let output = run(sessionkeeper().args(args));
    assert!(output.status.success(), "{args:?}: {output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().find(|w| w.starts_with("--")))
        .map(|flag| flag.trim_end_matches(',').to_owned())
        .collect()
}

fn set(flags: &[&str]) -> BTreeSet<String> {
    flags.iter().map(|f| (*f).to_owned()).collect()
}

/// What `migrate` reads: where the store is, how to reach it, and how to log.
const STORE_AND_LOG_FLAGS: &[&str] = &[
    "--config",
    "--data-dir",
    "--database-url",
    "--db-acquire-timeout",
    "--db-lock-timeout",
    "--db-max-connections",
    "--db-statement-timeout",
    "--help",
    "--log-format",
    "--log-level",
];

#[test]
fn migrate_and_sweep_help_show_only_the_flags_they_use() {
    assert_eq!(flags_in_help(&["migrate", "--help"]), set(STORE_AND_LOG_FLAGS));
    let mut sweep = set(STORE_AND_LOG_FLAGS);
    sweep.extend(set(&["--dry-run", "--namespace", "--agent"]));
    assert_eq!(flags_in_help(&["sweep", "--help"]), sweep);

    let serve = flags_in_help(&["serve", "--help"]);
    for flag in [
        "--listen",
        "--metrics-listen",
        "--tls-cert",
        "--auth-tokens",
        "--drain-timeout",
    ] {
        assert!(serve.contains(flag), "serve --help lists {flag}: {serve:?}");
    }
    assert!(serve.is_superset(&set(STORE_AND_LOG_FLAGS)), "{serve:?}");
}

#[test]
fn migrate_and_sweep_refuse_a_serve_flag_with_one_line_naming_it() {
    for args in [
        &["migrate", "--listen", "127.0.0.1:1"][..],
        &["--drain-timeout", "3s", "sweep", "--dry-run"],
    ] {
        let output = run(sessionkeeper().args(args));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("configures `serve`"), "{args:?}: {stderr}");
    }
    // The environment may still carry serve settings: one environment serves every command.
    let dir = tempfile::tempdir().unwrap();
    let output = run(sessionkeeper()
        .env("SESSIONKEEPER_LISTEN", "127.0.0.1:1")
        .arg("migrate")
        .arg("--data-dir")
        .arg(dir.path()));
    assert!(output.status.success(), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_accepts_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_args(
        "localhost",
        &["serve", "--listen", "localhost:0", "--metrics-listen", "localhost:0"],
        |c| {
            c.arg("--data-dir").arg(dir.path());
        },
    );
    assert!(server.grpc.ip().is_loopback(), "{}", server.grpc);
    server.wait_ready(READY_WITHIN).await;
    let channel = Channel::from_shared(format!("http://localhost:{}", server.grpc.port()))
        .unwrap()
        .connect()
        .await
        .expect("a client reaches the server by the same host name");
    let mut client = proto::session_service_client::SessionServiceClient::new(channel);
    let decision = client
        .get(proto::GetRequest {
            key: Some(crate::support::fixtures::key("by-name")),
            binding: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decision.decision(), Decision::StartFresh);
    server.stop().await;

    let output = run(sessionkeeper().args(["--listen", "no-such-host.invalid:50051"]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");
}

/// The levels of the JSON log lines a command printed.
fn levels(output: &Output) -> BTreeSet<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|event| event["level"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn log_level_sits_beside_rust_log_and_wins() {
    let dir = tempfile::tempdir().unwrap();
    let migrate = || {
        let mut command = sessionkeeper();
        command
            .args(["migrate", "--log-format", "json", "--data-dir"])
            .arg(dir.path());
        command
    };
    // RUST_LOG alone still works: sqlx logs each statement at DEBUG.
    let output = run(migrate().env("RUST_LOG", "debug"));
    assert!(output.status.success(), "{output:?}");
    assert!(levels(&output).contains("DEBUG"), "{output:?}");

    let output = run(migrate()
        .env("RUST_LOG", "debug")
        .env("SESSIONKEEPER_LOG_LEVEL", "warn"));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        levels(&output),
        BTreeSet::new(),
        "warn hides debug and info lines: {output:?}"
    );

    let output = run(migrate().env("RUST_LOG", "error").args(["--log-level", "debug"]));
    assert!(output.status.success(), "{output:?}");
    assert!(levels(&output).contains("DEBUG"), "{output:?}");

    let file = dir.path().join("sessionkeeper.toml");
    std::fs::write(&file, "log_level = \"warn\"\n").unwrap();
    let output = run(migrate().env("RUST_LOG", "debug").arg("--config").arg(&file));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        levels(&output),
        BTreeSet::new(),
        "the file's log_level wins too: {output:?}"
    );

    let output = run(migrate().args(["--log-level", "loud"]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.trim().lines().count() == 1 && stderr.contains("--log-level"),
        "{stderr}"
    );
}

/// Runs `command` and collects its stdout lines until one contains `needle`, then kills it.
fn lines_until(mut command: Command, needle: &str, within: Duration) -> Vec<String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + within;
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains(needle)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("no line with {needle:?} within {within:?}; got {lines:#?}");
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn logs_carry_colour_codes_only_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ];
    let mut piped = sessionkeeper();
    piped.args(args);
    let lines = lines_until(piped, "sessionkeeper listening", READY_WITHIN);
    assert!(
        !lines.iter().any(|l| l.contains('\u{1b}')),
        "no escape codes into a pipe: {lines:#?}"
    );

    // The same command on a pseudo-terminal (util-linux `script`) gets colours. `timeout` bounds
    // it should the terminal's end not stop it.
    let inner = format!(
        "exec timeout 30 {} {}",
        env!("CARGO_BIN_EXE_sessionkeeper"),
        args.join(" ")
    );
    let mut on_terminal = Command::new("script");
    on_terminal
        .args(["-qfec", &inner, "/dev/null"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    let lines = lines_until(on_terminal, "sessionkeeper listening", READY_WITHIN);
    assert!(
        lines.iter().any(|l| l.contains("\u{1b}[")),
        "colours on a terminal: {lines:#?}"
    );
}

/// The WARN lines a clean start logged, once it was ready.
async fn warnings_of_a_clean_start(name: &str, configure: impl FnOnce(&mut Command)) -> Vec<String> {
    let server = Server::start(name, configure);
    server.wait_ready(READY_WITHIN).await;
    server
        .wait_for_log(READY_WITHIN, "the startup sweep", |e| e["message"] == "sweep finished")
        .await;
    let warnings = server
        .log_events()
        .iter()
        .filter(|e| e["level"] != "INFO" && e["level"] != "DEBUG")
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    server.stop().await;
    warnings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_embedded_start_warns_only_that_the_store_is_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let warnings = warnings_of_a_clean_start("clean-embedded", |c| {
        c.arg("--data-dir").arg(dir.path());
    })
    .await;
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].starts_with("NO DATABASE CONFIGURED"), "{warnings:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_postgres_start_logs_no_warning() {
    let schema = support::fresh_pg_schema().await;
    let warnings = warnings_of_a_clean_start("clean-postgres", |c| {
        c.env("DATABASE_URL", &schema.url);
    })
    .await;
    assert_eq!(warnings, Vec::<String>::new());
}
