//! Tests of `classify` and the `SIGNATURES` table (SPEC §4): every row is exercised with a message
//! the SDKs really print, every class is reached from a real result frame, and each step of the
//! matching order has its own test. Inputs are SDK frames written as JSON text, parsed by `frame`.
//! One file per subject: the table (`signatures`), real frames (`real_frames`) and the matching
//! order (`matching_order`); properties over arbitrary results are in `domain/properties.rs`.

mod matching_order;
mod real_frames;
mod signatures;

use serde_json::{Value, json};

use super::*;
use crate::domain::ResultClass::{
    Auth, InvalidSessionId, LimitReached, Quota, SessionGone, Success, Transient, UnknownFailure,
};

/// The id a resume asked for (a Claude transcript that no longer exists on this host).
const DEAD_ID: &str = "3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21";

/// Parses an SDK frame (JSON text) into an `AgentResult`: `result` is the result text, `exception`
/// the text of a thrown error or exit, `api_error_status` the API's HTTP status; the rest of the
/// frame (`type`, `duration_ms`, `usage`, ...) is ignored, as the service ignores it.
fn frame(json: &str) -> AgentResult {
    parse(&serde_json::from_str(json).expect("the frame is valid JSON"))
}

fn parse(v: &Value) -> AgentResult {
    let text = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
    let number = |key: &str| u32::try_from(v[key].as_u64().unwrap_or(0)).expect("fits in u32");
    AgentResult {
        is_error: v["is_error"].as_bool().unwrap_or(false),
        subtype: text("subtype"),
        session_id: text("session_id"),
        num_turns: number("num_turns"),
        errors: v["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e.as_str().expect("errors are strings").to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        terminal_reason: text("terminal_reason"),
        api_error_status: number("api_error_status"),
        exception: text("exception"),
        result_text: text("result"),
    }
}

/// One frame of `signature_frames.toml`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFrame {
    name: String,
    source: String,
    provider: String,
    resumed: bool,
    class: String,
    /// The label of the row that must decide.
    row: String,
    frame: String,
}

/// Real frames, one or more per row of the table, each shaped as its package version emits it.
fn signature_frames() -> Vec<SignatureFrame> {
    #[derive(serde::Deserialize)]
    struct File {
        frame: Vec<SignatureFrame>,
    }
    let file: File = toml::from_str(include_str!("../signature_frames.toml")).expect("signature_frames.toml parses");
    file.frame
}

fn class_named(name: &str) -> ResultClass {
    ResultClass::ALL
        .into_iter()
        .find(|c| c.as_str() == name)
        .unwrap_or_else(|| panic!("{name:?} is not a result class"))
}
