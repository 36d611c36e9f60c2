//! The emulator binary: parse flags, install logging, serve until SIGINT or SIGTERM.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use emulator::{Cli, Emulator, connection_string, store::Location};
use tracing_subscriber::EnvFilter;

/// mimalloc: the request path allocates a lot (sled, JSON, XML); with glibc malloc and free
/// were ~12% of the CPU of the benchmark's latency run, and mimalloc raised its throughput
/// figures by a fifth to a half (see the bench).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Transparent huge pages fault memory in 2 MiB at a time: with mimalloc's arenas they
    // held a quarter of the RSS over a large store (134 MB against 99 MB without) for no
    // measured speed. Redis advises against them for the same reason. Best effort: a
    // kernel without the flag just keeps its default.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emulator: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let bind = cli.bind;
    let settings = cli.into_settings()?;
    if let Some(file) = &settings.entities {
        for ignored in &file.ignored {
            tracing::warn!(field = %ignored, "config file: ignored");
        }
    }
    let location = match &settings.location {
        Location::Directory(dir) => format!("data in {}", dir.display()),
        Location::InMemory => "in memory (nothing kept on disk)".to_string(),
    };
    let primary = settings.keys[0].clone();
    let emulator = Emulator::open(settings).await.context("cannot start")?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Service Bus emulator listening on http://{addr} ({location})"
    )?;
    writeln!(
        out,
        "Connection string: {}",
        connection_string(addr, &primary.name, &primary.key)
    )?;
    out.flush()?;
    drop(out);
    tracing::info!(%addr, "ready");
    emulator.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
