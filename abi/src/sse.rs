//! Server-sent events, for plugins that stream them or read another plugin's over the bus
//! (`Host::call_stream`): [`event`] writes one, [`ChatDeltas`] takes the text deltas out of an
//! OpenAI chat completion stream such as `llmserver`'s `chat.completions` with `stream: true`.

use serde_json::Value;

/// One event: `event: <name>\ndata: <data>\n\n`, or without the `event:` line when `name` is
/// `None` (a plain `message` event).
pub fn event(name: Option<&str>, data: &Value) -> Vec<u8> {
    match name {
        Some(name) => format!("event: {name}\ndata: {data}\n\n").into_bytes(),
        None => format!("data: {data}\n\n").into_bytes(),
    }
}

/// Reads an OpenAI chat completion stream (`data: {...}` lines, `data: [DONE]` at the end) fed
/// in chunks that may split a line anywhere: [`ChatDeltas::feed`] returns the non-empty
/// `choices[0].delta.content` texts of the lines it completes, and an `{"error": {"message"}}`
/// event is kept in [`ChatDeltas::error`]. Other lines (comments, `event:` names, `[DONE]`,
/// JSON it cannot read) are skipped.
#[derive(Debug, Default)]
pub struct ChatDeltas {
    pending: Vec<u8>,
    /// The message of the last error event seen, if any.
    pub error: Option<String>,
}

impl ChatDeltas {
    /// Feed bytes; returns the text deltas of the complete lines among them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let Some(data) = line.strip_prefix(b"data: ") else { continue };
            let Ok(v) = serde_json::from_slice::<Value>(data) else { continue };
            if let Some(message) = v["error"]["message"].as_str() {
                self.error = Some(message.to_string());
            } else if let Some(text) = v["choices"][0]["delta"]["content"].as_str() {
                if !text.is_empty() {
                    out.push(text.to_string());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deltas_are_taken_across_split_chunks_and_errors_are_kept() {
        let mut r = ChatDeltas::default();
        let a =
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\nda";
        assert!(r.feed(a).is_empty());
        let b = b"ta: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n";
        assert_eq!(r.feed(b), ["Hel", "lo"]);
        // A line split inside a multi-byte character, then completed.
        let c = "data: {\"choices\":[{\"delta\":{\"content\":\"é\"}}]}\n".as_bytes();
        let cut = c.iter().position(|&x| x == 0xc3).unwrap() + 1;
        assert!(r.feed(&c[..cut]).is_empty());
        assert_eq!(r.feed(&c[cut..]), ["é"]);
        assert!(r.feed(b": keep-alive\nevent: x\ndata: not json\ndata: [DONE]\n\n").is_empty());
        assert!(r.error.is_none());
        r.feed(b"data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n");
        assert_eq!(r.error.as_deref(), Some("boom"));
    }

    #[test]
    fn events_are_written_with_and_without_a_name() {
        let data = json!({ "delta": "a\nb" });
        assert_eq!(event(Some("done"), &data), b"event: done\ndata: {\"delta\":\"a\\nb\"}\n\n");
        assert_eq!(event(None, &data), b"data: {\"delta\":\"a\\nb\"}\n\n");
        // What `event` writes, `ChatDeltas` reads back.
        let chunk = json!({ "choices": [{ "delta": { "content": "x" } }] });
        assert_eq!(ChatDeltas::default().feed(&event(None, &chunk)), ["x"]);
    }
}
