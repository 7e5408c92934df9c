use std::time::Duration;

use serde_json::Value;

use crate::support::{fixture, lib_name, Host};

fn read_json<S: std::io::Read + std::io::Write>(ws: &mut tungstenite::WebSocket<S>) -> Value {
    loop {
        match ws.read().expect("read a WebSocket message") {
            tungstenite::Message::Text(text) => {
                return serde_json::from_str(text.as_str()).unwrap()
            }
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
}

#[test]
fn plugin_and_lifecycle_lines_are_kept_and_streamed_live() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");

    // The host's lifecycle line for the load is in the plugin's log.
    let (status, v) = host.get_json("/api/core/plugins/echo/logs");
    assert_eq!(status, 200, "{v}");
    let first = &v["lines"][0];
    assert_eq!((first["source"].as_str(), first["level"].as_str()), (Some("host"), Some("info")));
    assert!(first["message"].as_str().unwrap().starts_with("loaded "), "{v}");

    assert_eq!(host.post("/api/plugins/echo/log", "line one").0, 200);
    let (_, v) = host.get_json("/api/core/plugins/echo/logs?tail=1");
    let lines = v["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["message"], "line one");
    assert_eq!(lines[0]["source"], "plugin");
    let (_, v) = host.get_json("/api/core/plugins/echo/logs?level=error");
    assert!(v["lines"].as_array().unwrap().is_empty(), "{v}");
    let (status, v) = host.get_json("/api/core/plugins/echo/logs?level=loud");
    assert_eq!(status, 400, "{v}");
    assert_eq!(host.get("/api/core/plugins/ghost/logs").0, 404);

    // WebSocket: the tail first, then live lines.
    let url = host.ws_url("/ws/core/plugins/echo/logs?tail=2");
    let (mut ws, _) = tungstenite::connect(url.as_str()).expect("connect the log WebSocket");
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = ws.get_mut() {
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    let replayed: Vec<Value> = (0..2).map(|_| read_json(&mut ws)).collect();
    assert_eq!(replayed[1]["message"], "line one", "{replayed:?}");
    assert_eq!(host.post("/api/plugins/echo/log", "live line").0, 200);
    let live = read_json(&mut ws);
    assert_eq!(live["message"], "live line");
    assert!(live["seq"].as_u64().unwrap() > replayed[1]["seq"].as_u64().unwrap());

    // A swap shows up live too.
    host.install(&fixture("echo-v2"), &lib_name("echo"));
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let line = read_json(&mut ws);
        kinds.push(line["message"].as_str().unwrap().split(' ').next().unwrap().to_string());
    }
    assert_eq!(kinds, ["swapped", "unloaded"]);
    ws.close(None).unwrap();
}
