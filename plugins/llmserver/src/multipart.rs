//! A small `multipart/form-data` reader (RFC 7578) for `POST /v1/files`: the parts of a body
//! already in memory (the host has read it whole, within its body limit), each with its
//! field name, file name and bytes.

/// One part of a form.
#[derive(Debug, PartialEq)]
pub struct Part<'a> {
    pub name: String,
    pub filename: Option<String>,
    pub data: &'a [u8],
}

/// The boundary of a `multipart/form-data` content type, or `None` for another type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| unquote(v.trim()))
    })
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_string(),
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..].windows(needle.len()).position(|w| w == needle).map(|i| i + from)
}

/// The `name` and `filename` parameters of a part's `Content-Disposition` header.
fn disposition(headers: &str) -> Result<(String, Option<String>), String> {
    let line = headers
        .split("\r\n")
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("content-disposition").then_some(v)
        })
        .ok_or("a part has no Content-Disposition header")?;
    let (mut name, mut filename) = (None, None);
    for p in line.split(';').skip(1) {
        let Some((k, v)) = p.split_once('=') else { continue };
        match k.trim().to_ascii_lowercase().as_str() {
            "name" => name = Some(unquote(v.trim())),
            "filename" => filename = Some(unquote(v.trim())),
            _ => {}
        }
    }
    Ok((name.ok_or("a part's Content-Disposition has no name")?, filename))
}

/// The parts of `body`; an error says what is malformed.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    if boundary.is_empty() || boundary.len() > 200 {
        return Err("the multipart boundary must be 1 to 200 characters".into());
    }
    let delimiter = format!("--{boundary}").into_bytes();
    let next = format!("\r\n--{boundary}").into_bytes();
    let first = find(body, &delimiter, 0).ok_or("the body has no multipart boundary")?;
    let mut at = first + delimiter.len();
    let mut parts = Vec::new();
    loop {
        match body.get(at..at + 2) {
            Some(b"--") => return Ok(parts),
            Some(b"\r\n") => at += 2,
            _ => return Err("a multipart boundary is not followed by CRLF or --".into()),
        }
        let head_end = find(body, b"\r\n\r\n", at).ok_or("a part's headers do not end")?;
        let headers = std::str::from_utf8(&body[at..head_end])
            .map_err(|_| "a part's headers are not UTF-8".to_string())?;
        let (name, filename) = disposition(headers)?;
        let start = head_end + 4;
        let end =
            find(body, &next, start).ok_or("the body ends inside a part (no closing boundary)")?;
        parts.push(Part { name, filename, data: &body[start..end] });
        at = end + next.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_and_files_of_a_form() {
        assert_eq!(boundary("multipart/form-data; boundary=\"ab c\"").as_deref(), Some("ab c"));
        assert_eq!(boundary("Multipart/Form-Data;boundary=xyz").as_deref(), Some("xyz"));
        assert_eq!(boundary("application/json"), None);
        let body = b"preamble\r\n--xyz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n\
assistants\r\n--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a b.txt\"\r\n\
Content-Type: text/plain\r\n\r\nline one\r\n\r\nline two\r\n--xyz--\r\n";
        let parts = parse(body, "xyz").unwrap();
        assert_eq!(
            parts,
            [
                Part { name: "purpose".into(), filename: None, data: b"assistants" },
                Part {
                    name: "file".into(),
                    filename: Some("a b.txt".into()),
                    data: b"line one\r\n\r\nline two"
                },
            ]
        );
    }

    #[test]
    fn says_what_is_wrong_with_a_malformed_form() {
        let cases: [(&[u8], &str); 4] = [
            (b"no boundary here", "no multipart boundary"),
            (b"--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nrest", "ends inside"),
            (b"--xyz\r\nContent-Type: text/plain\r\n\r\nx\r\n--xyz--", "no Content-Disposition"),
            (b"--xyzgarbage", "not followed by CRLF"),
        ];
        for (body, needle) in cases {
            let e = parse(body, "xyz").unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
