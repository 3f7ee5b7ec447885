//! The embedded store's files under the real binary: a data dir on a small tmpfs filled to the
//! last byte and then given space back (reports `UNAVAILABLE` and readiness NOT_SERVING while full,
//! writes back by themselves within 5 s, nothing acknowledged lost), a database file with damaged
//! pages or of zero length (refused at start with one line), and the data dir's lock (a second
//! `serve`, `migrate` or `sweep` refuses with one line). Mounting needs root: outside CI a test
//! that needs it says so and is skipped; under `CI=true` it must run.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sessionkeeper::proto::{self, Action, Decision};
use sessionkeeper::store::sqlite::DATABASE_FILE;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::pg_cluster::running_as_root;
use crate::support::fixtures::{get_request, key, report_request, success};
use crate::support::process::{Server, health_status, sessionkeeper};
use crate::support::wait::{wait_for, wait_until};

const READY_WITHIN: Duration = Duration::from_secs(20);
/// The bound: writes succeed again this soon after space returns.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
/// Exit codes of `sessionkeeper` (see `src/main.rs`).
const EXIT_STORE_DAMAGED: i32 = 65;
const EXIT_DATA_DIR_IN_USE: i32 = 75;

/// True when the test may mount; false (after saying so) when it must be skipped. Under
/// `CI=true` a test that needs root fails instead: CI runs as root.
fn may_mount(test: &str) -> bool {
    if running_as_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: needs root to mount a tmpfs, and CI=true: CI must run it as root"
    );
    // Straight to stderr, past the test harness's capture: a skip is never silent.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs root to mount a tmpfs (CI runs it as root)"
    );
    false
}

/// A tmpfs of `size` mounted on a fresh temporary directory; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a {size} tmpfs on {}", dir.path().display());
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a server killed just before may still be closing its files.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Writes zeros to `file` until the filesystem refuses (ENOSPC); returns the bytes written.
fn fill(file: &Path) -> u64 {
    let mut out = std::fs::File::create(file).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match out.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {}: {e}", file.display()),
        }
    }
    written
}

fn serve(data_dir: &Path, name: &str) -> Server {
    let data_dir = data_dir.to_owned();
    Server::start(name, move |c| {
        c.arg("--data-dir").arg(data_dir);
    })
}

/// A report storing `session_id` for `conversation` under a report id of its own.
fn store_request(conversation: &str, session_id: &str) -> proto::ReportResultRequest {
    report_request(
        &key(conversation),
        "",
        success(session_id, 1),
        &format!("r-{session_id}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_writes_unavailable_and_not_ready_until_space_returns_then_recovers_by_itself() {
    if !may_mount("a_full_disk_makes_writes_unavailable_and_not_ready_until_space_returns_then_recovers_by_itself") {
        return;
    }
    let tmpfs = Tmpfs::mount("8m");
    let data_dir = tmpfs.path().join("data");
    let mut server = serve(&data_dir, "full-disk");
    server.wait_ready(READY_WITHIN).await;
    let mut client = server.client().await;
    // Acknowledged before the disk filled: conversation → the id stored.
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..20 {
        let (conversation, id) = (format!("before-{i}"), format!("s-before-{i}"));
        let r = client.report_result(store_request(&conversation, &id)).await.unwrap();
        assert_eq!(r.get_ref().action(), Action::Stored);
        acked.insert(conversation, id);
    }

    let filler = tmpfs.path().join("filler");
    let filled = fill(&filler);
    // The WAL may still have room inside it: report until a write is refused.
    let mut first_refusal = None;
    for i in 0..20_000 {
        let (conversation, id) = (format!("filling-{i}"), format!("s-filling-{i}"));
        match client.report_result(store_request(&conversation, &id)).await {
            Ok(_) => {
                acked.insert(conversation, id);
            }
            Err(status) => {
                first_refusal = Some(status);
                break;
            }
        }
    }
    let refusal = first_refusal.expect("a report is refused once the disk is full");
    let refused_at = Instant::now();
    assert_eq!(
        refusal.code(),
        Code::Unavailable,
        "a full disk is UNAVAILABLE: {refusal:?}"
    );
    // Readiness follows: no write can succeed.
    wait_until(
        Duration::from_secs(10),
        "/readyz 503 while the disk is full",
        || async { server.readyz().await == 503 },
    )
    .await;
    let not_ready_after = refused_at.elapsed();
    let mut refused_while_full = 0;
    for i in 0..10 {
        let (conversation, id) = (format!("full-{i}"), format!("s-full-{i}"));
        let mut request = store_request(&conversation, &id);
        if i % 2 == 1 {
            // Without a report id: the single-statement write, outside a transaction of ours.
            request.report_id.clear();
        }
        match client.report_result(request).await {
            Ok(_) => {
                acked.insert(conversation, id);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "never INTERNAL: {status:?}");
                refused_while_full += 1;
            }
        }
    }
    assert!(refused_while_full > 0, "reports are refused while the disk stays full");
    assert_eq!(server.readyz().await, 503, "still not ready while the disk is full");
    assert_eq!(server.livez().await, 200, "live: a full disk is no reason to restart");
    let channel = server.channel().await;
    assert_eq!(
        health_status(&channel, proto::SERVICE_NAME).await.unwrap(),
        ServingStatus::NotServing,
        "gRPC health agrees"
    );
    // Reads need no space.
    let (conversation, id) = acked.iter().next().unwrap();
    let d = client.get(get_request(&key(conversation))).await.unwrap().into_inner();
    assert_eq!((d.decision(), d.session_id.as_str()), (Decision::Resume, id.as_str()));

    std::fs::remove_file(&filler).unwrap();
    let space_back = Instant::now();
    let mut attempt = 0;
    let writes_back = wait_for(RECOVERY_BOUND, "a report succeeding after space returned", || {
        attempt += 1;
        let (conversation, id) = (format!("back-{attempt}"), format!("s-back-{attempt}"));
        let mut client = client.clone();
        async move {
            match client.report_result(store_request(&conversation, &id)).await {
                Ok(_) => Some((space_back.elapsed(), conversation, id)),
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "never INTERNAL: {status:?}");
                    None
                }
            }
        }
    })
    .await;
    acked.insert(writes_back.1, writes_back.2);
    let writes_back = writes_back.0;
    wait_until(RECOVERY_BOUND, "/readyz 200 once space is back", || async {
        server.readyz().await == 200
    })
    .await;
    let ready_back = space_back.elapsed();
    assert_eq!(
        health_status(&channel, proto::SERVICE_NAME).await.unwrap(),
        ServingStatus::Serving
    );
    let mut after = 0;
    for i in 0..50 {
        let (conversation, id) = (format!("after-{i}"), format!("s-after-{i}"));
        let r = client
            .report_result(store_request(&conversation, &id))
            .await
            .unwrap_or_else(|e| panic!("report {i} of 50 after space returned: {e:?}"));
        assert_eq!(r.get_ref().action(), Action::Stored);
        acked.insert(conversation, id);
        after += 1;
    }
    for (conversation, id) in &acked {
        let d = client.get(get_request(&key(conversation))).await.unwrap().into_inner();
        assert_eq!(
            (d.decision(), d.session_id.as_str()),
            (Decision::Resume, id.as_str()),
            "{conversation}: acknowledged {id}"
        );
    }
    println!(
        "DISK filler {filled} bytes; first write refused UNAVAILABLE, /readyz 503 {} ms later, {refused_while_full}/10 refused while full; \
         space back → first write {} ms, ready {} ms; {after}/50 reports after; {} acknowledged ids all readable",
        not_ready_after.as_millis(),
        writes_back.as_millis(),
        ready_back.as_millis(),
        acked.len()
    );
    server.signal("-TERM");
    assert!(
        server.wait_exit(Duration::from_secs(15)).await.success(),
        "SIGTERM exits 0"
    );
}

/// Runs the binary to its exit, at most `within` (then kills it and fails).
fn run_bounded(command: &mut Command, within: Duration, what: &str) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sessionkeeper");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(output) => output.expect("wait for sessionkeeper"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("{what}: the process did not exit within {within:?}");
        }
    }
}

/// Asserts a refusal: the exit code and exactly one stderr line, containing each of `expected`.
fn assert_one_line_refusal(output: &Output, code: i32, expected: &[&str]) -> String {
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "stderr: {text}");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got: {text}");
    assert!(lines[0].starts_with("error: "), "{text}");
    for needle in expected {
        assert!(lines[0].contains(needle), "{needle:?} in {text}");
    }
    lines[0].to_owned()
}

/// `serve` on free ports (or `args`) over `data_dir`, run to its exit.
fn run_command(data_dir: &Path, args: &[&str]) -> Output {
    run_bounded(
        sessionkeeper().args(args).arg("--data-dir").arg(data_dir),
        Duration::from_secs(30),
        &format!("sessionkeeper {args:?}"),
    )
}

const SERVE: &[&str] = &["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];

/// A store with `rows` reports written through a real server, stopped cleanly (its WAL
/// checkpointed into the file).
async fn a_stopped_store_with_rows(data_dir: &Path, rows: usize) -> PathBuf {
    let server = serve(data_dir, "writer");
    server.wait_ready(READY_WITHIN).await;
    let mut client = server.client().await;
    for i in 0..rows {
        let conversation = format!("conversation-{i}-{}", "x".repeat(120));
        client
            .report_result(store_request(&conversation, &format!("s-{i}")))
            .await
            .unwrap();
    }
    server.stop().await;
    data_dir.join(DATABASE_FILE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_damaged_pages_is_refused_at_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = a_stopped_store_with_rows(dir.path(), 400).await;
    let pages = std::fs::metadata(&file).unwrap().len() / 4096;
    assert!(pages >= 12, "the store spans pages ({pages})");
    // Scribble over the head of every page in the middle third (B-tree page headers and cells).
    let mut db = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    for page in pages / 3..2 * pages / 3 {
        db.seek(SeekFrom::Start(page * 4096)).unwrap();
        db.write_all(&[0xa5; 200]).unwrap();
    }
    db.sync_all().unwrap();
    drop(db);
    let damaged_len = std::fs::metadata(&file).unwrap().len();

    let started = Instant::now();
    let output = run_command(dir.path(), SERVE);
    let took = started.elapsed();
    let line = assert_one_line_refusal(&output, EXIT_STORE_DAMAGED, &["damaged", DATABASE_FILE, "backup"]);
    for command in [&["migrate"][..], &["sweep"]] {
        let output = run_command(dir.path(), command);
        assert_one_line_refusal(&output, EXIT_STORE_DAMAGED, &["damaged"]);
    }
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        damaged_len,
        "the file is left as it was"
    );
    println!("DAMAGED {pages} pages, refused in {} ms: {line}", took.as_millis());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_length_store_file_is_refused_not_taken_for_a_new_store() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(DATABASE_FILE);
    std::fs::File::create(&file).unwrap();
    for command in [SERVE, &["migrate"], &["sweep"]] {
        let output = run_command(dir.path(), command);
        assert_one_line_refusal(&output, EXIT_STORE_DAMAGED, &["empty file", DATABASE_FILE, "delete it"]);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 0, "the file is left as it was");
    }
    // No file at all is no store yet: a new one is created.
    std::fs::remove_file(&file).unwrap();
    let output = run_command(dir.path(), &["migrate"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(std::fs::metadata(&file).unwrap().len() > 0, "a new store was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_migrate_or_sweep_on_a_served_data_dir_refuses_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), "holder");
    server.wait_ready(READY_WITHIN).await;
    let holder = server.pid().to_string();
    let data_dir = dir.path().display().to_string();
    for command in [SERVE, &["migrate"], &["sweep"], &["sweep", "--dry-run"]] {
        let output = run_command(dir.path(), command);
        assert_one_line_refusal(
            &output,
            EXIT_DATA_DIR_IN_USE,
            &[&data_dir, "in use", &holder, "Sweep RPC"],
        );
    }
    assert_eq!(server.readyz().await, 200, "the running server is untouched");
    let mut client = server.client().await;
    client
        .report_result(store_request("still-served", "s-1"))
        .await
        .unwrap();
    // What the refusal points to: the running server sweeps.
    client
        .sweep(proto::SweepRequest {
            dry_run: true,
            ..Default::default()
        })
        .await
        .expect("the Sweep RPC while the server holds the data dir");
    // The lock goes with its process, however it ends: kill -9 leaves no stale lock.
    server.signal("-KILL");
    server.wait_exit(Duration::from_secs(15)).await;
    let output = run_command(dir.path(), &["sweep"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let restarted = serve(dir.path(), "after-kill");
    restarted.wait_ready(READY_WITHIN).await;
    // Dropped: killed. (Not SIGTERM: a SIGTERM this soon after start can land before `serve`
    // installs its handler, which is another matter than the lock.)
    drop(restarted);
}
