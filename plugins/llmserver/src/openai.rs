//! OpenAI's wire format: the requests this server reads, the answers and stream chunks it
//! writes, and its error shape (`{"error": {"message", "type", "param", "code"}}`).
//! Fields OpenAI clients send that do not apply here (`user`, `logprobs`, ...) are accepted and
//! ignored, as OpenAI-compatible servers customarily do; ones that would change the answer and
//! are not supported (`n` > 1, token-array input) are refused with a 400.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

/// An error in OpenAI's shape, with its HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<&'static str>,
    pub message: String,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error",
            code: None,
            param,
            message: message.into(),
        }
    }
    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: 404,
            kind: "invalid_request_error",
            code: Some("model_not_found"),
            param: Some("model"),
            message: format!("The model `{model}` does not exist or is not configured"),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: 404,
            kind: "invalid_request_error",
            code: None,
            param: None,
            message: message.into(),
        }
    }
    /// A failure on the server's side (5xx): OpenAI's `server_error` type.
    pub fn server(status: u16, message: impl Into<String>) -> Self {
        Self { status, kind: "server_error", code: None, param: None, message: message.into() }
    }
    /// [`ApiError::server`] with a machine-readable `code`.
    pub fn server_code(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self { code: Some(code), ..Self::server(status, message) }
    }
    /// Too many requests waiting (429): OpenAI's `rate_limit_error` type.
    pub fn too_many(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 429,
            kind: "rate_limit_error",
            code: Some(code),
            param: None,
            message: message.into(),
        }
    }
    pub fn body(&self) -> Value {
        json!({ "error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code,
        }})
    }
}

/// `stop`: a string or a list of up to 4 strings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// A string, or OpenAI's list of content parts (only `text` parts are used).
    #[serde(default)]
    pub content: Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub stop: Option<Stop>,
    pub seed: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u32>,
}

impl ChatRequest {
    /// Check it and turn it into the candle plugin's generation request.
    pub fn to_backend(&self) -> Result<Value, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid("messages must not be empty", Some("messages")));
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid("only n = 1 is supported", Some("n")));
        }
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::invalid(
                    "temperature must be within 0 and 2",
                    Some("temperature"),
                ));
            }
        }
        // 0 is accepted, as OpenAI does: it keeps only the likeliest token (greedy).
        if let Some(p) = self.top_p {
            if !(0.0..=1.0).contains(&p) {
                return Err(ApiError::invalid(
                    "top_p must be within 0 and 1 (0: greedy)",
                    Some("top_p"),
                ));
            }
        }
        let max_tokens = self.max_completion_tokens.or(self.max_tokens);
        if max_tokens == Some(0) {
            return Err(ApiError::invalid("max_tokens must be at least 1", Some("max_tokens")));
        }
        let stop = self.stop.clone().map(Stop::into_vec).unwrap_or_default();
        if stop.len() > 4 || stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid("stop takes up to 4 non-empty strings", Some("stop")));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.iter().enumerate() {
            if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
                return Err(ApiError::invalid(
                    format!(
                        "messages[{i}].role '{}' is not one of system, user, assistant",
                        m.role
                    ),
                    Some("messages"),
                ));
            }
            let role = if m.role == "developer" { "system" } else { m.role.as_str() };
            messages.push(json!({ "role": role, "content": content_text(&m.content, i)? }));
        }
        let mut body = json!({ "model": self.model, "messages": messages });
        let fields = [
            ("temperature", self.temperature.map(Value::from)),
            ("top_p", self.top_p.map(Value::from)),
            ("max_tokens", max_tokens.map(Value::from)),
            ("seed", self.seed.map(Value::from)),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                body[k] = v;
            }
        }
        if !stop.is_empty() {
            body["stop"] = json!(stop);
        }
        Ok(body)
    }
}

fn content_text(content: &Value, i: usize) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => Ok(parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("")),
        _ => Err(ApiError::invalid(
            format!("messages[{i}].content must be a string or a list of text parts"),
            Some("messages"),
        )),
    }
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Value,
    pub encoding_format: Option<String>,
    pub dimensions: Option<usize>,
}

impl EmbeddingsRequest {
    /// The texts to embed, checked.
    pub fn texts(&self) -> Result<Vec<String>, ApiError> {
        let texts = match &self.input {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) if items.is_empty() => {
                return Err(ApiError::invalid("input must not be an empty list", Some("input")))
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(ApiError::invalid(
                        format!("input[{i}] must be a string (token arrays are not supported)"),
                        Some("input"),
                    )),
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(ApiError::invalid(
                    "input must be a string or a list of strings",
                    Some("input"),
                ))
            }
        };
        if texts.iter().any(|t| t.is_empty()) {
            return Err(ApiError::invalid("input must not contain empty strings", Some("input")));
        }
        if !matches!(self.encoding_format.as_deref(), None | Some("float") | Some("base64")) {
            return Err(ApiError::invalid(
                "encoding_format must be float or base64",
                Some("encoding_format"),
            ));
        }
        Ok(texts)
    }
}

/// The `data` entry of one embedding.
pub fn embedding_item(index: usize, vector: &[f32], base64: bool) -> Value {
    let embedding = if base64 {
        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        json!(vector)
    };
    json!({ "object": "embedding", "index": index, "embedding": embedding })
}

/// One `data: ...` event of a streamed chat answer.
pub fn sse(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// A `chat.completion.chunk`.
pub fn chunk(id: &str, created: u64, model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "system_fingerprint": null,
        "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(v: Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn chat_requests_map_to_the_backend() {
        let r = chat(json!({ "model": "m", "messages": [
            { "role": "developer", "content": "be brief" },
            { "role": "user", "content": [{ "type": "text", "text": "hi" }, { "type": "image_url" }] }],
            "max_completion_tokens": 5, "stop": "\n", "temperature": 0, "user": "x", "logprobs": false }));
        let b = r.to_backend().unwrap();
        assert_eq!(b["messages"][0], json!({ "role": "system", "content": "be brief" }));
        assert_eq!(b["messages"][1]["content"], "hi");
        assert_eq!(b["max_tokens"], 5);
        assert_eq!(b["stop"], json!(["\n"]));
        assert_eq!(b["temperature"], 0.0);
        assert!(b.get("top_p").is_none());
    }

    #[test]
    fn top_p_zero_is_accepted_as_greedy() {
        let r = chat(json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }],
            "top_p": 0 }));
        assert_eq!(r.to_backend().unwrap()["top_p"], 0.0);
    }

    #[test]
    fn bad_chat_requests_name_the_parameter() {
        for (v, param) in [
            (json!({ "model": "m", "messages": [] }), "messages"),
            (
                json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }], "n": 2 }),
                "n",
            ),
            (
                json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }], "temperature": 3 }),
                "temperature",
            ),
            (
                json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }], "top_p": 1.5 }),
                "top_p",
            ),
            (
                json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }], "top_p": -0.1 }),
                "top_p",
            ),
            (
                json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }], "max_tokens": 0 }),
                "max_tokens",
            ),
            (
                json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }], "stop": ["a","b","c","d","e"] }),
                "stop",
            ),
            (
                json!({ "model": "m", "messages": [{ "role": "wizard", "content": "x" }] }),
                "messages",
            ),
        ] {
            let e = chat(v.clone()).to_backend().unwrap_err();
            assert_eq!((e.status, e.param), (400, Some(param)), "{v}");
            assert_eq!(e.body()["error"]["type"], "invalid_request_error");
        }
    }

    #[test]
    fn embedding_inputs_and_encodings() {
        let r: EmbeddingsRequest =
            serde_json::from_value(json!({ "model": "m", "input": "a" })).unwrap();
        assert_eq!(r.texts().unwrap(), ["a"]);
        for input in [json!([]), json!([1, 2]), json!(""), json!([""]), json!({ "a": 1 })] {
            let r: EmbeddingsRequest =
                serde_json::from_value(json!({ "model": "m", "input": input })).unwrap();
            assert_eq!(r.texts().unwrap_err().status, 400, "{input}");
        }
        let item = embedding_item(3, &[1.0, -2.5], true);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(item["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat());
        assert_eq!(embedding_item(0, &[0.5], false)["embedding"], json!([0.5]));
    }

    #[test]
    fn stream_chunks_look_like_openai_s() {
        let c = chunk("chatcmpl-1", 7, "m", json!({ "content": "Hi" }), None);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["choices"][0]["delta"]["content"], "Hi");
        assert!(c["choices"][0]["finish_reason"].is_null());
        assert!(sse(&c).starts_with("data: {") && sse(&c).ends_with("}\n\n"));
    }
}
