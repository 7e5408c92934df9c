//! Request body limits per route class: 413 with the limit named, a capability's own larger
//! limit, uploads, and a client that sends far more than the limit cannot make the host
//! buffer it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::support::{fixture, lib_name, Host, ADMIN_KEY};

fn echo_host(extra: &[&str]) -> Host {
    let host = Host::start_with(extra);
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    host
}

fn error_message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    v["error"]["message"].as_str().unwrap_or(body).to_string()
}

/// Send a request whose body is `total` bytes, in chunked encoding when `chunked` (so the
/// host cannot know its size up front), over a raw socket; the host may answer and close
/// before the body is sent whole. Returns the status and body of the answer.
fn send_big(host: &Host, path: &str, total: usize, chunked: bool) -> (u16, String) {
    let addr = host.base.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let length = if chunked {
        "Transfer-Encoding: chunked\r\n".to_string()
    } else {
        format!("Content-Length: {total}\r\n")
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n{length}Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("send head");
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let block = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < total {
                let n = block.len().min(total - sent);
                let ok = if chunked {
                    stream.write_all(format!("{n:x}\r\n").as_bytes()).is_ok()
                        && stream.write_all(&block[..n]).is_ok()
                        && stream.write_all(b"\r\n").is_ok()
                } else {
                    stream.write_all(&block[..n]).is_ok()
                };
                if !ok {
                    return sent; // the host answered and closed: fine
                }
                sent += n;
            }
            if chunked {
                let _ = stream.write_all(b"0\r\n\r\n");
            }
            sent
        })
    };
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_call_body_over_the_limit_is_refused_413_naming_the_limit() {
    let host = echo_host(&["--max-body-bytes", "1000"]);
    let at_limit = "a".repeat(1000);
    assert_eq!(host.post("/api/plugins/echo/echo", &at_limit), (200, at_limit.clone()));
    // (A POST to an admin route echo does not have is a 404 before its body is read.)
    assert_eq!(host.post("/api/plugins/echo/admin/info", &"a".repeat(1001)).0, 404);
    for path in ["/api/plugins/echo/echo", "/x-echo/anything"] {
        let (status, body) = host.post(path, &"a".repeat(1001));
        assert_eq!(status, 413, "{path}: {body}");
        let message = error_message(&body);
        assert!(
            message.contains("1000 bytes") && message.contains("--max-body-bytes"),
            "{path}: {message}"
        );
    }
    // Without a Content-Length, the limit is found while reading.
    let (status, body) = send_big(&host, "/api/plugins/echo/echo", 5000, true);
    assert_eq!(status, 413, "{body}");
    assert!(error_message(&body).contains("1000 bytes"), "{body}");
    // The plugin still serves.
    assert_eq!(host.post("/api/plugins/echo/echo", "ok"), (200, "ok".to_string()));
}

#[test]
fn a_capability_may_declare_a_larger_body_limit_in_its_manifest() {
    let host = echo_host(&["--max-body-bytes", "1000"]);
    let (_, plugin) = host.get_json("/api/core/plugins/echo");
    let large = plugin["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "echo-large")
        .expect("echo-large");
    assert_eq!(large["input_schema"]["x-bkg-max-body-bytes"], 2 << 20);
    let body = "b".repeat(100_000);
    assert_eq!(host.post("/api/plugins/echo/echo-large", &body), (200, body));
    let (status, answer) = host.post("/api/plugins/echo/echo-large", &"c".repeat((2 << 20) + 1));
    assert_eq!(status, 413, "{answer}");
    assert!(error_message(&answer).contains(&format!("{} bytes", 2 << 20)), "{answer}");
    // The default still holds for the others.
    assert_eq!(host.post("/api/plugins/echo/echo", &"d".repeat(1001)).0, 413);
}

#[test]
fn admin_json_and_upload_bodies_have_their_own_limits() {
    let host = echo_host(&["--max-admin-body-bytes", "200", "--max-upload-bytes", "4096"]);
    let config = format!(r#"{{"greeting":"{}"}}"#, "g".repeat(300));
    let (status, body) = host.post("/api/core/plugins/echo/config", &config);
    assert_eq!(status, 413, "{body}");
    assert!(error_message(&body).contains("--max-admin-body-bytes"), "{body}");
    let (status, body) = host.put_bytes("/api/core/plugins/upload/big.so", &vec![0u8; 5000]);
    assert_eq!(status, 413, "{body}");
    let message = error_message(&body);
    assert!(message.contains("4096 bytes") && message.contains("--max-upload-bytes"), "{message}");
    // Nothing was left in the plugins folder: no temp file, no library.
    let left: Vec<String> = std::fs::read_dir(&host.plugins)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != &lib_name("echo"))
        .collect();
    assert!(left.is_empty(), "left in the plugins folder: {left:?}");
    // A small JSON body still works.
    assert_eq!(host.post("/api/core/plugins/echo/config", r#"{"greeting":"hi"}"#).0, 200);
}

/// A client with an invoke key streams 512 MiB at a capability (declared size, and chunked):
/// the host answers 413 without holding the body, so its peak memory stays far below it.
#[test]
fn a_huge_body_is_not_buffered_by_the_host() {
    let host = echo_host(&[]);
    let before = peak_rss_kib(host.pid());
    for chunked in [false, true] {
        let (status, body) = send_big(&host, "/api/plugins/echo/echo", 512 << 20, chunked);
        assert_eq!(status, 413, "chunked {chunked}: {body}");
        assert!(error_message(&body).contains(&format!("{} bytes", 4 << 20)), "{body}");
    }
    let grown_mib = (peak_rss_kib(host.pid()) - before) / 1024;
    assert!(
        grown_mib < 64,
        "the host's peak RSS grew by {grown_mib} MiB for 1 GiB of refused bodies"
    );
    assert_eq!(host.post("/api/plugins/echo/echo", "still here"), (200, "still here".to_string()));
}
