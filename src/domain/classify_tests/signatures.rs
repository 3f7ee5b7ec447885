//! Tests of the signature table (`SIGNATURES`, `signatures.toml`): it parses, its patterns are
//! unique, and every row decides at least one real frame of its provider, in any case.

use super::*;

#[test]
fn the_signature_table_parses_with_lowercase_patterns_and_a_source_on_every_row() {
    let rows = parse_signatures(SIGNATURES_TOML).expect("signatures.toml parses");
    assert_eq!(rows, *SIGNATURES);
    assert!(rows.len() >= 60, "only {} rows", rows.len());
    for row in &rows {
        assert!(row.source.contains('@'), "{row:?} names no package version");
        assert!(
            ["", "claude", "codex", "gemini"].contains(&row.provider.as_str()),
            "{row:?} has an unknown provider"
        );
        assert!(
            matches!(row.class, SessionGone | InvalidSessionId | Quota | Auth | Transient),
            "{row:?}"
        );
        assert_eq!(
            row.label(),
            row.label().to_lowercase(),
            "{row:?} can never match a lowercased text"
        );
    }
}

#[test]
fn no_two_rows_share_a_pattern() {
    let mut labels: Vec<String> = SIGNATURES.iter().map(Signature::label).collect();
    labels.sort();
    let count = labels.len();
    labels.dedup();
    assert_eq!(labels.len(), count, "a pattern is listed twice");
}

#[test]
fn a_malformed_table_is_refused_naming_the_row() {
    let cases = [
        ("class = \"gone\"\ncontains = \"x\"\nsource = \"p@1\"", "class"),
        ("class = \"quota\"\ncontains = \"Usage\"\nsource = \"p@1\"", "lowercase"),
        ("class = \"quota\"\nsource = \"p@1\"", "contains"),
        ("class = \"quota\"\ncontains = \"x\"\nsource = \"\"", "source"),
        (
            "class = \"quota\"\ncontains = \"x\"\nprovider = \"Claude\"\nsource = \"p@1\"",
            "provider",
        ),
        (
            "class = \"auth\"\nbefore = \"a\"\nafter = \"b\"\nbetween = \"some\"\nsource = \"p@1\"",
            "between",
        ),
        (
            "class = \"auth\"\ncontains = \"x\"\nsource = \"p@1\"\ncolour = \"red\"",
            "colour",
        ),
    ];
    for (row, complaint) in cases {
        let table =
            format!("[[signature]]\nclass = \"auth\"\ncontains = \"ok\"\nsource = \"p@1\"\n\n[[signature]]\n{row}\n");
        let err = parse_signatures(&table).expect_err(row);
        assert!(err.row == 2 || err.row == 0, "{err} for {row:?}");
        assert!(
            err.to_string().contains(complaint),
            "{err} should mention {complaint} for {row:?}"
        );
    }
}

#[test]
fn every_real_frame_is_classified_as_its_class_by_its_row() {
    for f in signature_frames() {
        let result = frame(&f.frame);
        let class = class_named(&f.class);
        let decided = explain(&result, f.resumed, &f.provider);
        assert_eq!(decided.class, class, "{} ({})", f.name, f.source);
        assert_eq!(
            decided.signature.map(Signature::label).as_deref(),
            Some(f.row.as_str()),
            "{} ({}) is decided by another row",
            f.name,
            f.source
        );
        // Without a provider every row is tried: the class stays.
        assert_eq!(classify(&result, f.resumed, ""), class, "{}, no provider", f.name);
    }
}

#[test]
fn every_row_of_the_table_decides_at_least_one_real_frame_of_its_provider() {
    let frames = signature_frames();
    for row in SIGNATURES.iter() {
        let covered = frames
            .iter()
            .any(|f| f.row == row.label() && (row.provider.is_empty() || row.provider == f.provider));
        assert!(covered, "no real frame in signature_frames.toml is decided by {row:?}");
    }
    for f in &frames {
        assert!(
            SIGNATURES.iter().any(|row| row.label() == f.row),
            "{}: {:?} is not a row of the table any more",
            f.name,
            f.row
        );
    }
}

#[test]
fn each_real_frame_matches_its_row_in_any_case() {
    for f in signature_frames() {
        let result = frame(&f.frame);
        for case in [str::to_uppercase, str::to_lowercase] {
            let changed = AgentResult {
                errors: result.errors.iter().map(|e| case(e)).collect(),
                exception: case(&result.exception),
                result_text: case(&result.result_text),
                ..result.clone()
            };
            assert_eq!(
                classify(&changed, f.resumed, &f.provider),
                class_named(&f.class),
                "{} in another case",
                f.name
            );
        }
    }
}

#[test]
fn a_row_of_one_provider_is_not_tried_for_another() {
    // Shapes without step 6's structure, so only the rows can decide.
    let cases = [
        (
            "codex",
            "claude",
            r#"{"is_error":true,"exception":"thread not found: 0199a213-81c0-7800-8aa1-bbab2a035a53"}"#,
            SessionGone,
        ),
        (
            "gemini",
            "codex",
            r#"{"is_error":true,"exception":"Error resuming session: No previous sessions found for this project."}"#,
            SessionGone,
        ),
        (
            "claude",
            "gemini",
            r#"{"is_error":true,"exception":"That session is running in the background (bg-7f3a)."}"#,
            Transient,
        ),
        (
            "codex",
            "claude",
            r#"{"is_error":true,"exception":"Quota exceeded. Check your plan and billing details."}"#,
            Quota,
        ),
        (
            "gemini",
            "claude",
            r#"{"is_error":true,"exception":"Please set an Auth method in your settings"}"#,
            Auth,
        ),
    ];
    for (own, other, json, class) in cases {
        let result = frame(json);
        assert_eq!(classify(&result, true, own), class, "{json} for {own}");
        assert_eq!(classify(&result, true, ""), class, "{json} without a provider");
        assert_eq!(classify(&result, true, other), UnknownFailure, "{json} for {other}");
        assert_eq!(
            classify(&result, true, &own.to_uppercase()),
            class,
            "{json}: the provider is matched in lowercase"
        );
    }
}

#[test]
fn gemini_invalid_session_identifier_is_gone_for_gemini_and_an_invalid_id_otherwise() {
    let result = frame(
        r#"{"is_error":true,"exception":"Error resuming session: Invalid session identifier \"3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21\"."}"#,
    );
    assert_eq!(classify(&result, true, "gemini"), SessionGone);
    assert_eq!(classify(&result, true, ""), SessionGone, "the gemini row comes first");
    assert_eq!(classify(&result, true, "claude"), InvalidSessionId);
}

#[test]
fn zero_turn_resume_failures_that_a_row_explains_are_never_cleared_by_step_6() {
    // SPEC §4 step 6 (zero-turn error_during_execution of a resume → gone) only when no row explains.
    let texts = [
        (
            "Failed to resume session: Failed to authenticate: this login reached its time limit",
            Auth,
        ),
        ("Failed to resume session: Not logged in · Please run /login", Auth),
        (
            "Failed to resume session: This conversation is already open in another running Claude session",
            Transient,
        ),
        ("That session is running in the background (bg-7f3a).", Transient),
        (
            "Failed to resume session: API Error: Connection error. (cause: read ECONNRESET)",
            Transient,
        ),
        ("queryParams builder failed: boom", Transient),
        ("Claude AI usage limit reached|1700000000", Quota),
    ];
    for (text, class) in texts {
        let result = parse(
            &json!({"type": "result", "subtype": "error_during_execution", "is_error": true,
            "num_turns": 0, "session_id": DEAD_ID, "errors": [text]}),
        );
        let decided = explain(&result, true, "claude");
        assert_eq!(decided.class, class, "{text}");
        assert_eq!(decided.step, 4, "{text}");
    }
    let unexplained = parse(
        &json!({"type": "result", "subtype": "error_during_execution", "is_error": true,
        "num_turns": 0, "session_id": DEAD_ID, "errors": ["Failed to resume session: something new"]}),
    );
    let decided = explain(&unexplained, true, "claude");
    assert_eq!((decided.class, decided.step, decided.signature), (SessionGone, 6, None));
}
