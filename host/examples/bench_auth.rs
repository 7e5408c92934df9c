//! Auth overhead (issue #3): the same plugin call (`POST /api/plugins/echo/noop`) through the
//! full actix service stack of the host, in one process and one run, three ways:
//! without the auth middleware, with it and the bootstrap admin key, and with it and a key
//! verified by the `apikeys` plugin (cached after the first call).
//!
//! `cargo build --release -p bkg-host --examples -p fixture-echo -p bkg-plugin-apikeys`
//! `target/release/examples/bench_auth [--calls 20000] [--rounds 7]`

mod common;

use std::time::{Duration, Instant};

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, App};
use bkg_host::{api, auth, Config, Core};
use clap::Parser as _;
use common::{build_dir, fixture, lib_name, median, Flags};

const KEY: &str = "bench-auth-admin-key-0123456789";

async fn time_calls<S, B>(app: &S, key: Option<&str>, calls: usize) -> Duration
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let started = Instant::now();
    for _ in 0..calls {
        let mut req = test::TestRequest::post().uri("/api/plugins/echo/noop").set_payload("");
        if let Some(k) = key {
            req = req.insert_header(("Authorization", format!("Bearer {k}")));
        }
        let resp = test::call_service(app, req.to_request()).await;
        assert!(resp.status().is_success(), "call failed: {}", resp.status());
    }
    started.elapsed()
}

fn install(plugins: &std::path::Path, source: &std::path::Path, name: &str) {
    let tmp = plugins.join(format!(".{name}.tmp"));
    std::fs::copy(source, &tmp).expect("copy plugin");
    std::fs::rename(&tmp, plugins.join(name)).expect("rename plugin");
}

#[actix_web::main]
async fn main() {
    let flags = Flags::parse(&["calls", "rounds"]);
    let calls: usize = flags.get("calls", 20_000);
    let rounds: usize = flags.get("rounds", 7);
    let dir = tempfile::tempdir().expect("temp dir");
    // SAFETY-free: set before any thread reads the environment (single-threaded so far).
    std::env::set_var("BKG_ADMIN_KEY", KEY);
    let data = dir.path().join("data");
    let plugins = dir.path().join("plugins");
    let config = Config::parse_from([
        "bkg",
        "--data-dir",
        data.to_str().unwrap(),
        "--plugins-dir",
        plugins.to_str().unwrap(),
    ]);
    let core = Core::start(&config).expect("start the host core");
    install(&plugins, &fixture("echo"), &lib_name("echo"));
    let apikeys =
        build_dir().join(format!("libbkg_plugin_apikeys.{}", std::env::consts::DLL_EXTENSION));
    install(&plugins, &apikeys, &lib_name("apikeys"));
    let state = core.state.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(state.routing.get("echo").is_some_and(|i| i.is_running())
        && state.routing.get("apikeys").is_some_and(|i| i.is_running()))
    {
        assert!(Instant::now() < deadline, "plugins did not start");
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }

    let with_auth = test::init_service(
        App::new()
            .app_data(state.clone())
            .wrap(actix_web::middleware::from_fn(auth::middleware))
            .configure(api::configure),
    )
    .await;
    let without =
        test::init_service(App::new().app_data(state.clone()).configure(api::configure)).await;

    // A key of the apikeys plugin, with the invoke scope.
    let create = test::TestRequest::post()
        .uri("/api/plugins/apikeys/create")
        .insert_header(("Authorization", format!("Bearer {KEY}")))
        .set_payload(r#"{"name":"bench","scopes":["invoke"]}"#)
        .to_request();
    let created: serde_json::Value = test::call_and_read_body_json(&with_auth, create).await;
    let plugin_key = created["key"].as_str().expect("created key").to_string();

    // Warm up every path once (and fill the verification cache).
    time_calls(&without, None, 1000).await;
    time_calls(&with_auth, Some(KEY), 1000).await;
    time_calls(&with_auth, Some(&plugin_key), 1000).await;

    let mut none = Vec::new();
    let mut bootstrap = Vec::new();
    let mut verified = Vec::new();
    let per_call = |d: Duration| d.as_secs_f64() * 1e6 / calls as f64;
    for _ in 0..rounds {
        none.push(per_call(time_calls(&without, None, calls).await));
        bootstrap.push(per_call(time_calls(&with_auth, Some(KEY), calls).await));
        verified.push(per_call(time_calls(&with_auth, Some(&plugin_key), calls).await));
    }
    let (n, b, v) = (median(&none), median(&bootstrap), median(&verified));
    println!("bench_auth: {calls} calls x {rounds} rounds per variant, medians of rounds, in-process actix service");
    println!("bench_auth: no auth middleware          {n:8.2} us/call");
    println!("bench_auth: bootstrap admin key         {b:8.2} us/call   (+{:.2} us)", b - n);
    println!("bench_auth: apikeys key (cached verify) {v:8.2} us/call   (+{:.2} us)", v - n);
    println!(
        "bench_auth: RESULT auth adds {:.2} us (bootstrap key) / {:.2} us (apikeys key) per request (target < 20 us: {})",
        b - n,
        v - n,
        if (b - n) < 20.0 && (v - n) < 20.0 { "met" } else { "NOT met" }
    );
    drop(with_auth);
    drop(without);
    core.shutdown().await;
}
