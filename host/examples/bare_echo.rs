//! The baseline for the HTTP throughput benchmark (issue #2): a bare actix-web 4 server
//! whose only handler echoes the request body with its content type. It serves the same
//! path as the host (`POST /api/plugins/{id}/{capability}`) so that the same wrk command
//! runs against both.
//!
//! ```text
//! cargo run --release -p bkg-host --example bare_echo -- --listen 127.0.0.1:0 --workers 2
//! ```
//!
//! The first stdout line is `bare_echo listening on http://ADDR`, like the host's.

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};

async fn echo(req: HttpRequest, body: Bytes) -> HttpResponse {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    HttpResponse::Ok().content_type(content_type).body(body)
}

fn usage() -> ! {
    eprintln!("usage: bare_echo [--listen ADDR] [--workers N]");
    std::process::exit(2);
}

fn main() -> std::io::Result<()> {
    let mut listen = "127.0.0.1:0".to_string();
    let mut workers: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--listen" => listen = value(),
            "--workers" => workers = Some(value().parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    actix_web::rt::System::new().block_on(async move {
        let mut server = HttpServer::new(|| {
            App::new().route("/api/plugins/{id}/{capability}", web::post().to(echo))
        })
        .shutdown_timeout(1);
        if let Some(n) = workers {
            server = server.workers(n.max(1));
        }
        let server = server.bind(&listen)?;
        for addr in server.addrs() {
            println!("bare_echo listening on http://{addr}");
        }
        server.run().await
    })
}
