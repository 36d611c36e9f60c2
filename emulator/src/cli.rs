//! What the `emulator` binary does: parse flags, install logging, serve until SIGINT or
//! SIGTERM. In the library so that a test package can build the same binary under its own
//! name (a test can only start the binaries of its own package).

use std::future::Future;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::{Cli, Emulator, connection_string, store::Location, tls_connection_string};

/// The allocator setting [`main`] starts the process with, and its value in milliseconds.
const PURGE_DELAY: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "10");

/// Runs the emulator binary: flags from the command line and the environment, logs to
/// standard error, serving until SIGINT or SIGTERM; the exit code says how it ended. The
/// binary sets mimalloc as its allocator before calling this.
pub fn main() -> ExitCode {
    #[cfg(unix)]
    purge_sooner();
    serve_main()
}

/// mimalloc gives memory freed by a thread back to the OS only once it has been unused for
/// its purge delay (1,000 ms by default in mimalloc 3; 10 ms was mimalloc 2's default), and
/// only when that thread calls into it again; so threads that go idle after a burst kept
/// up to ~20 MB that was no longer used. The bench's RSS over a 1M store: 128-132 MB at
/// 1,000 ms, 122-128 MB at 100 ms, ~120 MB at 10 ms, 107 MB at 0 (the last at a third less
/// fill throughput; 10 ms showed no loss). mimalloc reads its options from the environment
/// when the process starts, and setting one at run time needs `unsafe` FFI, which this
/// workspace forbids; so, unless the variable is set already, the binary runs itself
/// again (same pid, arguments and environment) with it set. If that fails it goes on with
/// the default.
#[cfg(unix)]
fn purge_sooner() {
    use std::os::unix::process::CommandExt as _;
    let (var, value) = PURGE_DELAY;
    if std::env::var_os(var).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut again = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        again.arg0(arg0);
    }
    // `exec` returns only when it failed.
    let error = again.args(args).env(var, value).exec();
    eprintln!("emulator: cannot run again with {var}={value} ({error}); keeping the default");
}

fn serve_main() -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(serve_async()),
        Err(e) => {
            eprintln!("emulator: error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_async() -> ExitCode {
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
        // Colour codes only for a terminal, not into a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    let (amqp_bind, amqps_bind) = (cli.amqp_bind, cli.amqps_bind);
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
    let tls = emulator.tls().cloned();
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let addr = listener.local_addr()?;
    let amqp = tokio::net::TcpListener::bind(amqp_bind)
        .await
        .with_context(|| {
            format!("cannot listen for AMQP on {amqp_bind} (--amqp-bind; port 0 picks a free port)")
        })?;
    let amqp_addr = amqp.local_addr()?;
    let amqps = match &tls {
        Some(_) => Some(tokio::net::TcpListener::bind(amqps_bind).await.with_context(|| {
            format!(
                "cannot listen for AMQP over TLS on {amqps_bind} (--amqps-bind; port 0 picks a free port)"
            )
        })?),
        None => None,
    };
    let amqps_addr = amqps
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()?;
    let shutdown = shutdown_signal();
    let mut banner = vec![
        format!("Service Bus emulator listening on http://{addr} ({location})"),
        format!(
            "Connection string: {}",
            connection_string(addr, &primary.name, &primary.key)
        ),
        match amqps_addr {
            // One line: harnesses read the AMQP address from it.
            Some(tls) => {
                format!("AMQP 1.0 listening on amqp://{amqp_addr} and, over TLS, amqps://{tls}")
            }
            None => format!("AMQP 1.0 listening on amqp://{amqp_addr}"),
        },
        format!(
            "AMQP connection string (Service Bus SDKs): {}",
            connection_string(amqp_addr, &primary.name, &primary.key)
        ),
    ];
    if let Some(tls) = &tls {
        banner.extend(tls_banner(addr, tls));
    }
    if let Some(tls) = amqps_addr {
        banner.push(format!(
            "AMQPS connection string (the SDKs over TLS; trust the CA as above, Python: connection_verify=CA): {}",
            tls_connection_string(tls, &primary.name, &primary.key)
        ));
    }
    // Whoever started us may stop reading once it has the address (a closed pipe): that
    // is no reason to stop serving.
    if let Err(e) = print_lines(&banner) {
        tracing::warn!(error = %e, "cannot write the address to standard output; serving anyway");
    }
    tracing::info!(%addr, "ready");
    let listeners = crate::Listeners {
        http: listener,
        amqp: Some(amqp),
        amqps,
    };
    emulator.serve_listeners(listeners, shutdown).await?;
    Ok(())
}

/// Where HTTPS is served and how each client trusts it.
fn tls_banner(addr: std::net::SocketAddr, tls: &crate::tls::Tls) -> Vec<String> {
    let mut lines = vec![format!(
        "HTTPS on the same port: https://localhost:{} (certificate {})",
        addr.port(),
        tls.cert.display()
    )];
    if let Some(ca) = &tls.ca {
        let ca = ca.display();
        lines.extend([
            format!("Trust the emulator's CA {ca} (the Python and Linux variables replace the default bundle: keep them to local runs):"),
            format!("  Node.js: NODE_EXTRA_CA_CERTS={ca}"),
            format!("  Python:  REQUESTS_CA_BUNDLE={ca} (sync clients), SSL_CERT_FILE={ca} (aio clients)"),
            format!("  .NET:    SSL_CERT_FILE={ca} on Linux; certutil -user -addstore Root {ca} on Windows"),
            format!("  curl:    curl --cacert {ca} https://localhost:{}/", addr.port()),
        ]);
    }
    lines
}

/// Writes `lines` to standard output and flushes it.
fn print_lines(lines: &[String]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a signal sent as soon as the banner is out
/// must stop the emulator gracefully, not kill it.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        match signals {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for SIGINT or SIGTERM");
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}
