//! SPEC §2's loop through the real server, including the stale-id loop the service exists for.

use sessionkeeper::proto::{Action, Decision, FreshReason, ResultClass};

use crate::helpers::TestApp;
use crate::support::Backend;
use crate::support::fixtures::{exited_without_a_result, key, no_conversation_found, report_request, success};

/// Get → run → ReportResult, a restart that loses the transcript, and recovery on the next turn.
async fn the_stale_id_loop_is_broken_and_the_failed_frames_id_is_never_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("thread-42");

    // Turn 1: nothing stored, start fresh, the run succeeds with s1.
    let d = app.get(&conversation, None).await;
    assert_eq!(d.decision(), Decision::StartFresh);
    assert_eq!(d.fresh_reason(), FreshReason::NoSession);
    let r = app
        .report(report_request(&conversation, "", success("s1", 3), "dispatch-1"))
        .await
        .unwrap();
    assert_eq!(
        (r.result_class(), r.action(), r.session_id.as_str()),
        (ResultClass::Success, Action::Stored, "s1")
    );

    // Turn 2: resume s1.
    let d = app.get(&conversation, None).await;
    assert_eq!(d.decision(), Decision::Resume);
    assert_eq!(d.session_id, "s1");

    // The container restarted and lost the transcript: the resume fails with the exact frame,
    // whose session_id is a brand-new id without a transcript.
    let frame = no_conversation_found("s1", "s-new-without-transcript");
    let r = app
        .report(report_request(&conversation, "s1", frame, "dispatch-2"))
        .await
        .unwrap();
    assert_eq!(r.result_class(), ResultClass::SessionGone);
    assert_eq!(r.action(), Action::Cleared);
    assert!(r.retry_fresh, "the orchestrator runs the turn again without resume");
    assert_eq!(r.session_id, "", "the failed frame's id is never stored");

    // Had the orchestrator asked again before its retry, it starts fresh: never the dead or new id.
    let d = app.get(&conversation, None).await;
    assert_eq!(d.decision(), Decision::StartFresh);
    assert_eq!(d.fresh_reason(), FreshReason::Cleared, "and the key remembers why");
    assert_eq!(d.session_id, "");
    assert_eq!(d.tombstone.map(|t| t.session_id), Some("s1".to_owned()));

    // The retry without resume succeeds with s2; the next turn resumes s2.
    let r = app
        .report(report_request(&conversation, "", success("s2", 1), "dispatch-2-retry"))
        .await
        .unwrap();
    assert_eq!((r.action(), r.session_id.as_str()), (Action::Stored, "s2"));
    let d = app.get(&conversation, None).await;
    assert_eq!((d.decision(), d.session_id.as_str()), (Decision::Resume, "s2"));
}

/// A late gone report about s1, arriving after a newer run stored s2, changes nothing.
async fn a_late_gone_report_leaves_the_newer_id_and_says_superseded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("thread-late");
    app.report(report_request(&conversation, "", success("s1", 2), ""))
        .await
        .unwrap();
    app.report(report_request(&conversation, "s1", success("s2", 2), ""))
        .await
        .unwrap();

    let r = app
        .report(report_request(
            &conversation,
            "s1",
            no_conversation_found("s1", "x"),
            "",
        ))
        .await
        .unwrap();
    assert_eq!(r.action(), Action::Superseded);
    assert!(!r.retry_fresh);
    assert_eq!(r.session_id, "s2");
    let d = app.get(&conversation, None).await;
    assert_eq!((d.decision(), d.session_id.as_str()), (Decision::Resume, "s2"));
}

/// Zero-turn unknown failures of a resume clear the id at the limit (2 by default).
async fn repeated_zero_turn_unknown_failures_of_a_resume_clear_the_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("thread-flaky");
    app.report(report_request(&conversation, "", success("s1", 2), ""))
        .await
        .unwrap();
    // A process exit with no result frame and no known text: UNKNOWN_FAILURE with zero turns.
    let unknown = exited_without_a_result();
    let first = app
        .report(report_request(&conversation, "s1", unknown.clone(), ""))
        .await
        .unwrap();
    assert_eq!(
        (first.result_class(), first.action()),
        (ResultClass::UnknownFailure, Action::Kept)
    );
    assert_eq!(first.session_id, "s1");
    let second = app
        .report(report_request(&conversation, "s1", unknown, ""))
        .await
        .unwrap();
    assert_eq!(second.action(), Action::Cleared);
    assert!(second.retry_fresh);
    assert_eq!(app.get(&conversation, None).await.decision(), Decision::StartFresh);
}

crate::on_both_stores!(
    the_stale_id_loop_is_broken_and_the_failed_frames_id_is_never_stored,
    a_late_gone_report_leaves_the_newer_id_and_says_superseded,
    repeated_zero_turn_unknown_failures_of_a_resume_clear_the_id,
);
