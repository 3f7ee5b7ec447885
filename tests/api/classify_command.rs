//! `sessionkeeper classify` through the real binary, as an operator runs it on a frame from their
//! logs: stdin in, the class, the deciding row and what a report would do out; no server, no store.

use std::io::Write;
use std::process::{Output, Stdio};

use crate::support::process::sessionkeeper;

fn classify(stdin: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = sessionkeeper()
        .current_dir(dir.path())
        .arg("classify")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sessionkeeper classify");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write the frame");
    let output = child.wait_with_output().expect("wait for sessionkeeper classify");
    assert!(
        std::fs::read_dir(dir.path())
            .expect("list the working dir")
            .next()
            .is_none(),
        "classify created files in its working directory"
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_stream_json_transcript_of_a_lost_transcript_is_session_gone_and_names_its_row_and_source() {
    let transcript = concat!(
        r#"{"type":"system","subtype":"init","session_id":"b7e1f0c2-5a3d-4e8f-8c6b-9d2a1e0f4b37","cwd":"/work/repo"}"#,
        "\n",
        r#"{"type":"result","subtype":"error_during_execution","is_error":true,"duration_ms":12,"num_turns":0,"session_id":"b7e1f0c2-5a3d-4e8f-8c6b-9d2a1e0f4b37","errors":["No conversation found with session ID: 3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21"]}"#,
        "\n",
    );
    let output = classify(
        transcript,
        &[
            "--resumed",
            "3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21",
            "--provider",
            "claude",
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "class: SESSION_GONE", "{text}");
    assert!(
        lines[1].starts_with("decided by: step 2, signature \"no conversation found\"")
            && lines[1].contains("found in @anthropic-ai/claude-code@"),
        "{text}"
    );
    assert_eq!(
        lines[2],
        "stored id 3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21 (the one resumed): CLEARED (the row is deleted), retry_fresh"
    );
    assert!(
        !text.contains("STORED"),
        "the failed frame's id is never stored: {text}"
    );
}

#[test]
fn a_completed_frame_is_stored_and_codex_stderr_is_read_as_an_exception() {
    let success = r#"{"type":"result","subtype":"success","is_error":false,"num_turns":3,"session_id":"s-next","result":"Done. (No conversation found was a test string.)"}"#;
    let text = stdout(&classify(success, &["--resumed", "s-prev"]));
    assert!(
        text.starts_with("class: SUCCESS\ndecided by: step 1") && text.contains("any stored id: STORED s-next"),
        "{text}"
    );

    let codex = "Error: thread/resume: no rollout found for thread id 0199a213-81c0-7800-8aa1-bbab2a035a53\n";
    let text = stdout(&classify(
        codex,
        &[
            "--resumed",
            "0199a213-81c0-7800-8aa1-bbab2a035a53",
            "--provider",
            "codex",
        ],
    ));
    assert!(
        text.starts_with("class: SESSION_GONE\ndecided by: step 2, signature \"no rollout found for thread id\""),
        "{text}"
    );
}

#[test]
fn an_empty_stdin_is_one_line_on_stderr_and_exit_2() {
    let output = classify("", &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: no frame on stdin"), "{stderr}");
}

#[test]
fn with_a_config_file_the_operators_signatures_decide_and_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("sessionkeeper.toml");
    std::fs::write(
        &file,
        "[[policy.signatures]]\nclass = \"auth\"\ncontains = \"SSO session expired\"\n",
    )
    .expect("write the config file");
    let frame = r#"{"type":"result","subtype":"error_during_execution","is_error":true,"num_turns":0,"session_id":"b7e1f0c2-5a3d-4e8f-8c6b-9d2a1e0f4b37","errors":["Your SSO session expired; log in again"]}"#;
    let resumed = "3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21";

    let without = stdout(&classify(frame, &["--resumed", resumed]));
    assert!(without.starts_with("class: SESSION_GONE\n"), "{without}");

    let config = file.to_str().expect("utf-8 path");
    let output = classify(frame, &["--resumed", resumed, "--config", config]);
    assert!(output.status.success(), "{output:?}");
    let with = stdout(&output);
    assert!(with.starts_with("class: AUTH\n"), "{with}");
    assert!(
        with.contains("signature \"sso session expired\"") && with.contains("found in the policy file"),
        "{with}"
    );
    assert!(with.contains("KEPT"), "an auth failure keeps the stored id: {with}");
}
