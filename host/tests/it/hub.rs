//! A small Hugging Face hub on 127.0.0.1 for the download tests: `GET /{repo}/resolve/{rev}/{file}`
//! with the headers `hf-hub` reads (`x-repo-commit`, `etag`, `x-linked-etag` for git-lfs files,
//! `Content-Range` for range requests), and knobs to break a transfer, corrupt a file, or hold
//! a transfer half-way until the test lets it go on.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Clone, Default)]
pub struct HubFile {
    pub data: Vec<u8>,
    /// Stored with git-lfs: the hub's `x-linked-etag` is the file's sha256.
    pub lfs: bool,
    /// Serve one byte changed (the advertised sha256 stays the real one's).
    pub corrupt: bool,
    /// Close the connection after this many body bytes, once.
    pub cut_once_at: Option<usize>,
    /// Stop after this many body bytes until [`FakeHub::release`] (the last byte before the
    /// stop comes 150 ms after the others, so the host's 100 ms progress throttle sends it).
    pub pause_at: Option<usize>,
}

/// One request the hub saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
}

#[derive(Default)]
struct State {
    files: Mutex<HashMap<String, HubFile>>,
    seen: Mutex<Vec<Seen>>,
    released: (Mutex<bool>, Condvar),
}

pub struct FakeHub {
    pub url: String,
    state: Arc<State>,
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic bytes that do not compress away.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

impl FakeHub {
    pub fn start() -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake hub");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State::default());
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        FakeHub { url, state }
    }

    pub fn add(&self, repo: &str, file: &str, f: HubFile) {
        self.state.files.lock().unwrap().insert(format!("{repo}/{file}"), f);
    }

    /// Let a paused transfer go on.
    pub fn release(&self) {
        let (lock, cv) = &self.state.released;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

fn serve(conn: TcpStream, state: &State) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone socket"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    state.seen.lock().unwrap().push(Seen { path: path.clone(), range: range.clone() });
    let mut out = conn;
    // /{repo}/resolve/{revision}/{file}
    let found = path.split_once("/resolve/").and_then(|(repo, rest)| {
        let (_rev, file) = rest.split_once('/')?;
        let key = format!("{}/{file}", repo.trim_start_matches('/'));
        state.files.lock().unwrap().get(&key).cloned().map(|f| (key, f))
    });
    let Some((key, file)) = found else {
        let body = "Entry not found";
        let _ = write!(
            out,
            "HTTP/1.1 404 Not Found\r\nx-error-code: EntryNotFound\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    };
    let sha = sha256_hex(&file.data);
    let mut data = file.data.clone();
    if file.corrupt {
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
    }
    let total = data.len();
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap_or((r, ""));
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = if b.is_empty() { total - 1 } else { b.parse().unwrap_or(total - 1) };
            (a.min(total), (b + 1).min(total))
        }
        None => (0, total),
    };
    let mut head = if range.is_some() {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{total}\r\n",
            end.saturating_sub(1)
        )
    } else {
        "HTTP/1.1 200 OK\r\n".to_string()
    };
    let etag = if file.lfs { sha[..40].to_string() } else { sha[24..].to_string() };
    head.push_str(&format!(
        "x-repo-commit: {COMMIT}\r\netag: \"{etag}\"\r\naccept-ranges: bytes\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        end - start
    ));
    if file.lfs {
        head.push_str(&format!("x-linked-etag: \"{sha}\"\r\nx-linked-size: {total}\r\n"));
    }
    head.push_str("\r\n");
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    let body = &data[start..end];
    let is_transfer = end - start > 1;
    if is_transfer {
        if let Some(cut) = file.cut_once_at.filter(|c| *c < body.len()) {
            // Once only: the next request for this file is served whole.
            state.files.lock().unwrap().get_mut(&key).unwrap().cut_once_at = None;
            let _ = out.write_all(&body[..cut]);
            let _ = out.flush();
            let _ = out.shutdown(std::net::Shutdown::Both);
            return;
        }
        if let Some(pause) = file.pause_at.filter(|p| *p > 1 && *p < body.len()) {
            let _ = out.write_all(&body[..pause - 1]);
            let _ = out.flush();
            std::thread::sleep(Duration::from_millis(150));
            let _ = out.write_all(&body[pause - 1..pause]);
            let _ = out.flush();
            let (lock, cv) = &state.released;
            let mut released = lock.lock().unwrap();
            while !*released {
                released = cv.wait(released).unwrap();
            }
            drop(released);
            let _ = out.write_all(&body[pause..]);
            return;
        }
    }
    let _ = out.write_all(body);
}
