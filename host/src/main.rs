use std::io::IsTerminal;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    // `bkg plugin-runner ...`: a plugin's child process in process isolation (started by the
    // host, never by hand). Dispatched before the host's flags are parsed.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("plugin-runner") {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
        std::process::exit(bkg_host::isolation::runner::main(&args[2..]));
    }
    // Colours only on a terminal, and never when NO_COLOR is set (https://no-color.org): a
    // log written to a file or a pipe stays plain text.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .init();
    let config = bkg_host::Config::parse();
    // Each HTTP connection holds two descriptors (the socket and the duplicate used to notice a
    // client that went away), plus plugins and the database: lift the soft limit to the hard one.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    actix_web::rt::System::new().block_on(bkg_host::run(config))
}
