//! Emulator benchmarks. Every figure is printed beside T, a trivial axum `POST` handler
//! measured in the same run with the same client (reqwest, keep-alive), because absolute
//! numbers drift from machine to machine (`PERF-NOTES.md`). Loopback only; every load loop
//! is bounded in time and count.

/// Prints a line of output and keeps it for `--report` (see [`report::line()`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::report::line(format!($($arg)*))
    };
}

mod amqp_figures;
mod amqp_raw;
mod backplane_figures;
mod baseline;
mod client;
mod emulator_figures;
mod redis_peer;
mod report;
mod socketio;
mod stats;
mod stored;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

pub(crate) use backplane_figures::backplane_figures;
pub(crate) use baseline::{
    disk_floor, disk_saturated, paced_trivial, steadiness, t_rate, trivial_server,
};
pub(crate) use client::{Client, batch_body, payload};
pub(crate) use emulator_figures::{end_to_end, prefill, start_emulator, stress, throughput};
pub(crate) use stats::{Beside, Report, lock, percentile_ms, rate, sorted};
pub(crate) use stored::stored;

/// Emulator benchmarks, each figure beside a baseline measured in the same run.
/// The same allocator as the emulator binary (the emulator runs in this process).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
pub(crate) struct Args {
    /// Seconds each throughput phase runs.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) seconds: f64,
    /// Concurrent senders for single sends (and for T).
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Messages (1 KB) stored for the large-store figures; 0 skips them.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) stored: u64,
    /// Seconds of the mixed stress run; 0 skips it.
    #[arg(long, default_value_t = 60)]
    pub(crate) stress_secs: u64,
    /// Write acknowledgement of the in-process emulator: full (fsync, the targets' setting)
    /// or none (to see what the fsyncs cost).
    #[arg(long, value_enum, default_value = "full")]
    pub(crate) durability: emulator::config::DurabilityFlag,
    /// Skip the emulator's own figures (T is always measured).
    #[arg(long)]
    pub(crate) skip_emulator: bool,
    /// Of the emulator's figures, measure only the end-to-end latency (quick to repeat).
    #[arg(long)]
    pub(crate) latency_only: bool,
    /// Skip the backplane figures.
    #[arg(long)]
    pub(crate) skip_backplane: bool,
    /// Skip the Socket.IO adapter figures (they need Node.js and npm).
    #[arg(long)]
    pub(crate) skip_socketio: bool,
    /// Concurrent publishers per backplane node (packing packs what they publish while a
    /// message is in flight).
    #[arg(long, default_value_t = 256)]
    pub(crate) bp_publishers: usize,
    /// Also write `BENCHMARKS.md` and its plots (`benchmarks/*.svg`) into the current
    /// folder, and show the running phase.
    #[arg(long)]
    pub(crate) report: bool,
    /// The emulator binary (release), for start-up, RSS and disk figures.
    #[arg(long, default_value = "target/release/emulator")]
    pub(crate) emulator_binary: PathBuf,
}

pub(crate) const KEY_NAME: &str = "RootManageSharedAccessKey";
pub(crate) const KEY: &str = "SAS_KEY_VALUE";
pub(crate) const KB: usize = 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As the emulator binary does (see its main): no transparent huge pages.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let args = Args::parse();
    let mut report = Report { misses: 0 };
    run(&args, &mut report).await?;
    out!("\n{} target(s) missed", report.misses);
    if args.report {
        let command: Vec<String> = std::env::args().skip(1).collect();
        let command = format!("scripts/bench {}", command.join(" "));
        report::write(std::path::Path::new("."), command.trim())?;
        println!("wrote BENCHMARKS.md and benchmarks/*.svg");
    }
    Ok(())
}

/// Every section the arguments ask for, in order.
async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let phase = Duration::from_secs_f64(args.seconds);
    report::phase("T, the baselines");
    out!(
        "emulator benchmarks: {} s per phase, {} concurrent senders, reqwest client, loopback\n",
        args.seconds,
        args.concurrency
    );

    // T: the trivial handler with the same client and concurrency.
    let trivial = trivial_server().await?;
    let t = t_rate(trivial, args.concurrency, phase).await?;
    report.baseline("T: trivial axum POST 1 KB -> 201", t, "req/s");
    let (p50, p99) = paced_trivial(trivial, args.seconds, 1).await;
    out!(
        "{:<62} {p50:>12.2} ms p50  {p99:.2} ms p99",
        "T paced at 1,000 req/s (latency floor of client + server)"
    );
    // The end-to-end phase makes 4 requests per message (a send, then a receive on each
    // of 3 subscriptions): its latency is read beside T at that rate.
    let (p50, e2e_floor) = paced_trivial(trivial, args.seconds, 4).await;
    out!(
        "{:<62} {p50:>12.2} ms p50  {e2e_floor:.2} ms p99",
        "T paced at 4,000 req/s (the end-to-end phase's request rate)"
    );

    let args_seconds = args.seconds;
    let (slow, slowest) = tokio::task::spawn_blocking(move || steadiness(phase)).await?;
    out!(
        "{:<62} {slow:>12.1} %  of 50 ms windows ran >= 2x slower than the median (slowest {slowest:.1}x)",
        "machine steadiness: fixed arithmetic on one thread"
    );
    let dir = tempfile::tempdir()?;
    let floor_dir = dir.path().to_path_buf();
    let (p50, p99, p999) =
        tokio::task::spawn_blocking(move || disk_floor(&floor_dir, args_seconds)).await??;
    out!(
        "{:<62} {p50:>12.2} ms p50  {p99:.2} ms p99  {p999:.2} ms p99.9",
        "disk: 1 KB append + fdatasync paced at 1,000/s (durable floor)"
    );

    report::phase("Redis (the peer)");
    let redis = redis_peer::Redis::start().await?;
    if redis.is_none() {
        report.misses += 1;
        out!(
            "{:<62} {:>12}  (redis-server is not installed: scripts/bench installs it)  MISSED",
            "peer: Redis",
            "not run"
        );
    }

    if !args.skip_backplane {
        report::phase("backplane");
        report.misses += backplane_figures(args, dir.path(), trivial).await?;
    }
    if !args.skip_socketio {
        report::phase("Socket.IO");
        let running = start_emulator(&dir.path().join("socketio"), args.durability).await?;
        socketio::figures(
            &emulator::connection_string(running.addr, KEY_NAME, KEY),
            args.seconds,
            redis.as_ref(),
            report,
        )
        .await?;
        running.stop().await;
    }
    if args.skip_emulator {
        if let Some(redis) = redis {
            redis.stop().await;
        }
        return Ok(());
    }
    report::phase("emulator");
    let running = start_emulator(&dir.path().join("main"), args.durability).await?;
    let c = Client::new(running.addr);

    let mut beside = Beside {
        trivial,
        concurrency: args.concurrency,
        phase,
        last: t,
        broker: running.broker.clone(),
        mark: emulator::store::WriterStats::default(),
    };
    let rest_peek_lock = if args.latency_only {
        None
    } else {
        Some(throughput(&c, args, &mut beside, report).await?)
    };
    report::phase("end-to-end latency");
    let rest_p99 = end_to_end(&c, &mut beside, e2e_floor, report).await?;
    if let Some(redis) = redis {
        let (p50, p99, got, expected) = redis_peer::pubsub_latency(&redis, args.seconds).await?;
        out!(
            "{:<62} {p50:>12.2} ms p50  {p99:.2} ms p99  ({got} of {expected} copies received)",
            "peer: Redis pub/sub at 1,000 msg/s to 3 subscribers (in memory)"
        );
        redis.stop().await;
    }
    let rest = amqp_figures::Rest {
        peek_lock: rest_peek_lock,
        p99: rest_p99,
        e2e_floor,
    };
    report::phase("AMQP");
    amqp_figures::figures(&c, running.amqp, &mut beside, rest, report).await?;

    if args.stress_secs > 0 {
        report::phase("stress");
        stress(&c, args.stress_secs).await?;
    }
    running.stop().await;
    if !args.latency_only {
        amqp_figures::idle_connections(args, report, dir.path()).await?;
    }

    if args.stored > 0 {
        report::phase("1M stored messages");
        stored(args, report, dir.path()).await?;
    }
    Ok(())
}
