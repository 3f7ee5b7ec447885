//! The operator's policy on the real binary: signatures added in `[[policy.signatures]]` classify
//! the next report, SIGHUP reloads the file's `[policy]` (signatures and TTLs), and a reload to an
//! invalid file keeps the policy in force and logs why.

use std::path::Path;
use std::time::Duration;

use chrono::TimeDelta;
use sessionkeeper::proto::ResultClass;

use crate::support::fixtures::{get_request, key, report_request, success, zero_turn_failure_with};
use crate::support::process::Server;

/// A message no built-in row knows: a fresh run failing with it is UNKNOWN_FAILURE by default.
const GATEWAY_ERROR: &str = "Acme egress proxy refused the upstream connection";

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

async fn class_of(server: &Server, conversation: &str) -> ResultClass {
    let mut client = server.client().await;
    let request = report_request(&key(conversation), "", zero_turn_failure_with(GATEWAY_ERROR), "");
    client.report_result(request).await.unwrap().into_inner().result_class()
}

async fn ttl_seen(server: &Server, conversation: &str) -> TimeDelta {
    let mut client = server.client().await;
    let answer = client.get(get_request(&key(conversation))).await.unwrap().into_inner();
    let (last_used, expires) = (answer.last_used_at.unwrap(), answer.expires_at.unwrap());
    TimeDelta::seconds(expires.seconds - last_used.seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_signatures_and_ttls_and_keeps_the_old_policy_when_the_new_one_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessionkeeper.toml");
    write(&file, "[policy]\ndefault_ttl = \"1h\"\n");
    let data = dir.path().join("data");
    let server = Server::start("policy-reload", |c| {
        c.arg("--data-dir").arg(&data).arg("--config").arg(&file);
    });
    server.wait_ready(crate::binary::READY_WITHIN).await;
    let mut client = server.client().await;
    client
        .report_result(report_request(&key("stored"), "", success("s-1", 1), ""))
        .await
        .unwrap();
    assert_eq!(class_of(&server, "before").await, ResultClass::UnknownFailure);
    assert_eq!(ttl_seen(&server, "stored").await, TimeDelta::hours(1));

    // An operator row and a new TTL, then SIGHUP: the next report and the next Get use them.
    write(
        &file,
        "[policy]\ndefault_ttl = \"2h\"\n\n[[policy.signatures]]\nclass = \"transient\"\n\
         contains = \"Acme egress proxy\"\nprovider = \"claude\"\n",
    );
    server.signal("-HUP");
    server
        .wait_for_log(Duration::from_secs(10), "policy reloaded", |e| {
            e["message"] == "policy reloaded" && e["signatures"] == 1
        })
        .await;
    assert_eq!(class_of(&server, "after").await, ResultClass::Transient);
    assert_eq!(ttl_seen(&server, "stored").await, TimeDelta::hours(2));

    // An invalid file: the reload is refused with the reason, and the policy in force stays.
    write(
        &file,
        "[policy]\ndefault_ttl = \"3h\"\n\n[[policy.signatures]]\nclass = \"flaky\"\ncontains = \"x\"\n",
    );
    server.signal("-HUP");
    server
        .wait_for_log(Duration::from_secs(10), "the failed reload", |e| {
            e["message"] == "policy reload failed; the previous policy stays in force"
                && e["error"]
                    .as_str()
                    .is_some_and(|error| error.contains("policy.signatures[1]") && error.contains("\"flaky\""))
        })
        .await;
    assert_eq!(class_of(&server, "invalid").await, ResultClass::Transient);
    assert_eq!(ttl_seen(&server, "stored").await, TimeDelta::hours(2));
    server.stop().await;
}

#[test]
fn an_invalid_operator_signature_stops_the_process_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessionkeeper.toml");
    write(&file, "[[policy.signatures]]\nclass = \"transient\"\ncontains = \"\"\n");
    let output = crate::support::process::sessionkeeper()
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("policy.signatures[1]: contains is empty"), "{stderr}");
}
