//! Reading a run's result as the SDKs and CLIs print it, for `sessionkeeper classify`: the SDK's
//! own result frame (`{"type":"result","subtype":…,"is_error":…}`, or Python's `ResultMessage`
//! fields), a stream-json transcript whose last `result` line counts, or, when the text is no
//! JSON frame at all, the text of an exception or of stderr. Pure: text in, [`AgentResult`] out.

use serde_json::Value;

use super::AgentResult;

/// The run's result in `text` (already truncated as a report's would be); `None` when the text
/// is empty.
pub fn result_from_output(text: &str) -> Option<AgentResult> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let objects: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
        .filter(Value::is_object)
        .collect();
    let last_result = objects.iter().rev().find(|v| v["type"] == "result");
    let whole = serde_json::from_str::<Value>(text).ok().filter(Value::is_object);
    let result = match (last_result, whole) {
        (Some(frame), _) => from_frame(frame),
        (None, Some(frame)) => from_frame(&frame),
        (None, None) => AgentResult {
            is_error: true,
            exception: text.to_owned(),
            ..AgentResult::default()
        },
    };
    Some(result.truncated())
}

fn from_frame(frame: &Value) -> AgentResult {
    let text = |key: &str| match &frame[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let number = |key: &str| frame[key].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    let errors = match &frame["errors"] {
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map_or_else(|| item.to_string(), str::to_owned))
            .collect(),
        Value::String(one) => vec![one.clone()],
        _ => Vec::new(),
    };
    AgentResult {
        is_error: frame["is_error"].as_bool().unwrap_or(false),
        subtype: text("subtype"),
        session_id: text("session_id"),
        num_turns: number("num_turns"),
        errors,
        terminal_reason: text("terminal_reason"),
        api_error_status: number("api_error_status"),
        exception: text("exception"),
        result_text: text("result"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_result_line_of_a_stream_json_transcript_counts() {
        let transcript = concat!(
            r#"{"type":"system","subtype":"init","session_id":"s-new"}"#,
            "\n",
            r#"{"type":"result","subtype":"success","is_error":false,"num_turns":1,"session_id":"s-old","result":"x"}"#,
            "\n",
            r#"{"type":"result","subtype":"error_during_execution","is_error":true,"num_turns":0,"session_id":"s-new","errors":["No conversation found with session ID: s-dead"]}"#,
            "\n",
        );
        let result = result_from_output(transcript).unwrap();
        assert_eq!(result.subtype, "error_during_execution");
        assert!(result.is_error);
        assert_eq!(result.session_id, "s-new");
        assert_eq!(result.errors, ["No conversation found with session ID: s-dead"]);
    }

    #[test]
    fn a_pretty_printed_frame_without_a_type_is_read_whole() {
        let frame = "{\n  \"subtype\": \"error_max_turns\",\n  \"is_error\": true,\n  \"num_turns\": 5,\n  \
                     \"session_id\": \"s1\",\n  \"terminal_reason\": \"max_turns\",\n  \"api_error_status\": 529\n}";
        let result = result_from_output(frame).unwrap();
        assert_eq!(
            (
                result.subtype.as_str(),
                result.num_turns,
                result.terminal_reason.as_str()
            ),
            ("error_max_turns", 5, "max_turns")
        );
        assert_eq!(result.api_error_status, 529);
    }

    #[test]
    fn text_that_is_no_frame_is_an_exception() {
        let stderr = "Error: thread/resume: no rollout found for thread id 0199a2";
        let result = result_from_output(stderr).unwrap();
        assert!(result.is_error);
        assert_eq!(result.exception, stderr);
        assert_eq!(result_from_output("  \n"), None);
    }
}
