//! OpenAI's files and vector stores under `/v1`: `/v1/files` and `/v1/vector_stores` are
//! forwarded over the bus to the `brainml` plugin's `openai.*` capabilities (which keep the
//! files and back each vector store with a collection), with the path's ids and the query
//! string's parameters put into the JSON body. An upload (`multipart/form-data`) is read here
//! and forwarded as its text. Every error is in OpenAI's shape; brainml not running is a 503
//! that names it.

use bkg_abi::serde_json::{json, Map, Value};
use bkg_abi::{Error, ErrorKind, Host, Request, Response};

use crate::multipart;
use crate::openai::ApiError;

/// The plugin that serves the vector stores.
pub const STORE: &str = "brainml";

/// Whether a path is one of the files' or vector stores'.
pub fn handles(path: &str) -> bool {
    ["/v1/files", "/v1/vector_stores"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
}

/// How an error of brainml (or of the bus about it) reads to an OpenAI client.
pub fn from_store(e: Error) -> ApiError {
    let about_plugin = e.message.starts_with("plugin '");
    let about_store = e.message.starts_with(&format!("plugin '{STORE}'"));
    match e.kind {
        ErrorKind::NOT_FOUND | ErrorKind::CONFLICT | ErrorKind::UNAVAILABLE if about_store => {
            let remedy = match e.kind {
                ErrorKind::CONFLICT => format!("start it: POST /api/core/plugins/{STORE}/start"),
                ErrorKind::NOT_FOUND => {
                    format!("install the '{STORE}' plugin in the plugins folder")
                }
                _ => "try again later".into(),
            };
            ApiError::server_code(
                503,
                "backend_unavailable",
                format!(
                    "vector stores and files are served by the '{STORE}' plugin, which is not \
                     available: {}; {remedy}",
                    e.message
                ),
            )
        }
        // brainml's own backend (candle, for the embeddings) is missing or busy.
        ErrorKind::NOT_FOUND | ErrorKind::CONFLICT | ErrorKind::UNAVAILABLE if about_plugin => {
            ApiError::server_code(
                503,
                "backend_unavailable",
                format!("the '{STORE}' plugin could not reach its backend: {}", e.message),
            )
        }
        _ => crate::from_backend(STORE, e),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query string's parameters as a JSON object of strings.
pub fn query_params(query: &str) -> Map<String, Value> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), Value::String(percent_decode(v)))
        })
        .collect()
}

/// The JSON body of a request as an object (an empty body is `{}`).
fn body_object(req: &Request<'_>) -> Result<Map<String, Value>, ApiError> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(ApiError::invalid(
            format!("The request body must be a JSON object, not {other}"),
            None,
        )),
        Err(e) => Err(ApiError::invalid(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )),
    }
}

/// `POST /v1/files`: the form's `file` (UTF-8 text) and `purpose`.
fn upload(req: &Request<'_>) -> Result<Value, ApiError> {
    let boundary = multipart::boundary(req.content_type).ok_or_else(|| {
        ApiError::invalid(
            format!(
                "Upload a file as multipart/form-data (fields file and purpose), not {:?}",
                req.content_type
            ),
            Some("file"),
        )
    })?;
    let parts = multipart::parse(req.body, &boundary)
        .map_err(|e| ApiError::invalid(format!("The multipart body is malformed: {e}"), None))?;
    let purpose = parts
        .iter()
        .find(|p| p.name == "purpose")
        .map(|p| String::from_utf8_lossy(p.data).trim().to_string())
        .ok_or_else(|| {
            ApiError::invalid("Missing required parameter: 'purpose'.", Some("purpose"))
        })?;
    let file = parts
        .iter()
        .find(|p| p.name == "file")
        .ok_or_else(|| ApiError::invalid("Missing required parameter: 'file'.", Some("file")))?;
    let filename =
        file.filename.clone().filter(|f| !f.is_empty()).unwrap_or_else(|| "upload".into());
    let text = std::str::from_utf8(file.data).map_err(|e| {
        ApiError::invalid(
            format!(
                "The file {filename} is not a UTF-8 text file ({e}); this server stores and \
                 searches text files only"
            ),
            Some("file"),
        )
    })?;
    if text.contains('\0') {
        return Err(ApiError::invalid(
            format!(
                "The file {filename} is not a text file (it holds NUL bytes); this server stores \
                 and searches text files only"
            ),
            Some("file"),
        ));
    }
    Ok(json!({ "filename": filename, "purpose": purpose, "text": text }))
}

fn not_allowed(method: &str, path: &str) -> ApiError {
    ApiError {
        status: 405,
        kind: "invalid_request_error",
        code: None,
        param: None,
        message: format!("{method} is not allowed on {path}"),
    }
}

/// The brainml capability and its JSON body for a request, or the error to answer.
fn forward(req: &Request<'_>, path: &str) -> Result<(&'static str, Value), ApiError> {
    let rest = path.trim_start_matches("/v1/");
    let segments: Vec<&str> = rest.split('/').collect();
    let with = |mut m: Map<String, Value>, ids: &[(&str, &str)]| {
        for (k, v) in ids {
            m.insert(k.to_string(), json!(v));
        }
        Value::Object(m)
    };
    let query = || query_params(req.query);
    let m = req.method;
    Ok(match (m, segments.as_slice()) {
        ("POST", ["files"]) => ("openai.files.create", upload(req)?),
        ("GET", ["files"]) => ("openai.files.list", with(query(), &[])),
        ("GET", ["files", id]) => ("openai.files.get", json!({ "file_id": id })),
        ("DELETE", ["files", id]) => ("openai.files.delete", json!({ "file_id": id })),
        ("GET", ["files", id, "content"]) => ("openai.files.content", json!({ "file_id": id })),
        ("POST", ["vector_stores"]) => {
            ("openai.vector_stores.create", with(body_object(req)?, &[]))
        }
        ("GET", ["vector_stores"]) => ("openai.vector_stores.list", with(query(), &[])),
        ("GET", ["vector_stores", id]) => {
            ("openai.vector_stores.get", json!({ "vector_store_id": id }))
        }
        ("POST", ["vector_stores", id]) => {
            ("openai.vector_stores.update", with(body_object(req)?, &[("vector_store_id", id)]))
        }
        ("DELETE", ["vector_stores", id]) => {
            ("openai.vector_stores.delete", json!({ "vector_store_id": id }))
        }
        ("POST", ["vector_stores", id, "files"]) => (
            "openai.vector_stores.files.create",
            with(body_object(req)?, &[("vector_store_id", id)]),
        ),
        ("GET", ["vector_stores", id, "files"]) => {
            ("openai.vector_stores.files.list", with(query(), &[("vector_store_id", id)]))
        }
        ("GET", ["vector_stores", id, "files", file]) => {
            ("openai.vector_stores.files.get", json!({ "vector_store_id": id, "file_id": file }))
        }
        ("DELETE", ["vector_stores", id, "files", file]) => {
            ("openai.vector_stores.files.delete", json!({ "vector_store_id": id, "file_id": file }))
        }
        ("POST", ["vector_stores", id, "search"]) => {
            ("openai.vector_stores.search", with(body_object(req)?, &[("vector_store_id", id)]))
        }
        (_, ["files"] | ["files", _] | ["files", _, "content"] | ["vector_stores"])
        | (_, ["vector_stores", _] | ["vector_stores", _, "files" | "search"])
        | (_, ["vector_stores", _, "files", _]) => return Err(not_allowed(m, path)),
        _ => {
            return Err(ApiError::not_found(format!(
                "no route {m} {path}: files are under /v1/files[/{{id}}[/content]], vector \
                 stores under /v1/vector_stores[/{{id}}[/files[/{{file_id}}]|/search]]"
            )))
        }
    })
}

/// Serve a files or vector stores request through brainml.
pub fn route(host: &Host, req: &Request<'_>, path: &str) -> Result<Response, ApiError> {
    let (capability, body) = forward(req, path)?;
    let r = host.call_json(STORE, capability, &body).map_err(from_store)?;
    let content_type = if r.content_type.is_empty() { "application/json" } else { &r.content_type };
    Ok(Response::bytes(content_type, r.body).with_status(if r.status >= 400 {
        r.status
    } else {
        200
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(
        method: &'a str,
        query: &'a str,
        content_type: &'a str,
        body: &'a [u8],
    ) -> Request<'a> {
        Request { target: "", method, query, content_type, body }
    }

    #[test]
    fn paths_become_brainml_capabilities_with_their_ids() {
        let (c, b) = forward(
            &req("POST", "", "application/json", b"{\"query\":\"q\"}"),
            "/v1/vector_stores/vs_1/search",
        )
        .unwrap();
        assert_eq!(c, "openai.vector_stores.search");
        assert_eq!(b, json!({ "query": "q", "vector_store_id": "vs_1" }));
        let (c, b) =
            forward(&req("GET", "limit=2&after=vs_%31&order=asc", "", b""), "/v1/vector_stores")
                .unwrap();
        assert_eq!(c, "openai.vector_stores.list");
        assert_eq!(b, json!({ "limit": "2", "after": "vs_1", "order": "asc" }));
        let (c, b) =
            forward(&req("DELETE", "", "", b""), "/v1/vector_stores/vs_1/files/file-2").unwrap();
        assert_eq!(c, "openai.vector_stores.files.delete");
        assert_eq!(b, json!({ "vector_store_id": "vs_1", "file_id": "file-2" }));
        let e = forward(&req("PUT", "", "", b""), "/v1/vector_stores/vs_1").unwrap_err();
        assert_eq!(e.status, 405);
        let e = forward(&req("GET", "", "", b""), "/v1/vector_stores/vs_1/nope").unwrap_err();
        assert_eq!(e.status, 404);
        let e = forward(&req("POST", "", "", b"[1]"), "/v1/vector_stores").unwrap_err();
        assert_eq!((e.status, e.kind), (400, "invalid_request_error"));
        assert!(handles("/v1/files") && handles("/v1/vector_stores/x") && !handles("/v1/filesx"));
    }

    #[test]
    fn an_upload_must_be_utf8_text() {
        let form = |data: &[u8]| {
            let mut b = b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n\r\n".to_vec();
            b.extend_from_slice(data);
            b.extend_from_slice(b"\r\n--b--\r\n");
            b
        };
        let ct = "multipart/form-data; boundary=b";
        let ok = form("héllo".as_bytes());
        let (c, b) = forward(&req("POST", "", ct, &ok), "/v1/files").unwrap();
        assert_eq!(c, "openai.files.create");
        assert_eq!(b, json!({ "filename": "x.bin", "purpose": "assistants", "text": "héllo" }));
        for data in [&b"\xff\xfe\x00\x01"[..], &b"ab\x00cd"[..]] {
            let body = form(data);
            let e = forward(&req("POST", "", ct, &body), "/v1/files").unwrap_err();
            assert_eq!((e.status, e.param), (400, Some("file")), "{}", e.message);
            assert!(
                e.message.contains("x.bin") && e.message.contains("text file"),
                "{}",
                e.message
            );
        }
        let e = forward(&req("POST", "", "application/json", b"{}"), "/v1/files").unwrap_err();
        assert!(e.message.contains("multipart/form-data"), "{}", e.message);
    }

    #[test]
    fn brainml_missing_or_stopped_is_a_503_naming_it() {
        let e = from_store(Error::not_found("plugin 'brainml' is not loaded"));
        assert_eq!((e.status, e.kind, e.code), (503, "server_error", Some("backend_unavailable")));
        assert!(e.message.contains("'brainml' plugin") && e.message.contains("install"));
        let e = from_store(Error::conflict("plugin 'brainml' is stopped"));
        assert!(e.message.contains("/brainml/start"), "{}", e.message);
        let e = from_store(Error::not_found("No vector store found with id 'vs_x'."));
        assert_eq!((e.status, e.kind), (404, "invalid_request_error"));
        assert_eq!(e.message, "No vector store found with id 'vs_x'.");
        let e = from_store(Error::not_found("plugin 'candle' is not loaded"));
        assert_eq!(e.status, 503);
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
