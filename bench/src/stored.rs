//! Figures over a large store: start-up after a clean stop and after a SIGKILL, RSS, disk
//! use and send rate, against an empty store in a second process; and start-up and RSS at
//! a few store sizes on the way (the report's curve).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use testkit::process::ChildEmulator;

use crate::*;

/// An emulator binary the bench started, and how long it took to print its address.
pub(crate) struct Child {
    pub(crate) emulator: ChildEmulator,
    pub(crate) started_in: Duration,
}

pub(crate) async fn spawn(binary: &Path, data: &Path) -> anyhow::Result<Child> {
    let start = Instant::now();
    let data_dir = data.to_str().context("data folder path is not UTF-8")?;
    let emulator = ChildEmulator::start_on(
        binary,
        // The bench's own folder, so that a relative `binary` resolves as given.
        Path::new("."),
        "127.0.0.1:0",
        &["--cache-mb", "64", "--data-dir", data_dir],
    )
    .await
    .map_err(anyhow::Error::msg)
    .with_context(|| {
        format!(
            "cannot start {} (build it with cargo build --release -p emulator)",
            binary.display()
        )
    })?;
    Ok(Child {
        emulator,
        started_in: start.elapsed(),
    })
}

pub(crate) fn rss_mb(pid: u32) -> f64 {
    testkit::process::status_kib(pid, "VmRSS").unwrap_or(0) as f64 / 1024.0
}

pub(crate) fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => disk_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

pub(crate) async fn terminate(child: Child) -> anyhow::Result<()> {
    child
        .emulator
        .terminate()
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(())
}

/// Start-up, RSS, disk and send rate with `args.stored` 1 KB messages stored.
pub(crate) async fn stored(args: &Args, report: &mut Report, dir: &Path) -> anyhow::Result<()> {
    // One start is at the mercy of the scheduler and a cold page cache: take the median
    // of three, each on a folder of its own.
    let mut starts = Vec::new();
    let mut empty_rss = Vec::new();
    for i in 0..3 {
        let empty = spawn(&args.emulator_binary, &dir.join(format!("empty{i}"))).await?;
        starts.push(empty.started_in.as_secs_f64() * 1000.0);
        empty_rss.push(empty.emulator.child.id().map_or(0.0, rss_mb));
        terminate(empty).await?;
    }
    starts.sort_by(f64::total_cmp);
    empty_rss.sort_by(f64::total_cmp);
    report::store_point(0, starts[1], empty_rss[1]);
    report.limit(
        "start-up, empty store (process start to listening, median of 3)",
        starts[1],
        "ms",
        50.0,
        "",
    );
    curve(args, dir).await?;
    let data = dir.join("stored");
    let child = spawn(&args.emulator_binary, &data).await?;
    let c = Client::new(child.emulator.addr);
    c.queue("big").await?;
    c.queue("probe").await?;
    let phase = Duration::from_secs_f64(args.seconds);
    let probe = |c: Client| async move {
        rate(args.concurrency, phase, move |_| {
            let c = c.clone();
            async move { u64::from(c.send("probe", payload()).await) }
        })
        .await
    };
    let fill_start = Instant::now();
    let stored = fill(&c, args.stored).await?;
    out!(
        "{:<62} {:>12.0} msg/s  ({stored} messages in {:.1} s)",
        "fill (batch send)",
        stored as f64 / fill_start.elapsed().as_secs_f64(),
        fill_start.elapsed().as_secs_f64()
    );
    // The rates wander by tens of percent between phases of a few seconds on this kind of
    // machine: compare the stored store with an empty one (a second process) in
    // alternating probes, two each, over the same minute.
    let empty = spawn(&args.emulator_binary, &dir.join("empty-probe")).await?;
    let e = Client::new(empty.emulator.addr);
    e.queue("probe").await?;
    let (mut empty_rate, mut full_rate) = (0.0, 0.0);
    for _ in 0..2 {
        empty_rate += probe(e.clone()).await / 2.0;
        full_rate += probe(c.clone()).await / 2.0;
    }
    terminate(empty).await?;
    report.baseline(
        "send rate, empty store (mean of 2 probes)",
        empty_rate,
        "msg/s",
    );
    report.ratio(
        &format!("send rate with {stored} messages stored (mean of 2 probes)"),
        full_rate,
        "msg/s",
        empty_rate,
        "empty-store rate",
        0.85,
    );
    // The probes' messages stay stored too: they count as payload.
    let held = c.message_count("big").await? + c.message_count("probe").await?;
    let rss = child.emulator.child.id().map_or(0.0, rss_mb);
    report.limit(
        &format!("RSS with {stored} x 1 KB stored (cache 64 MB)"),
        rss,
        "MB",
        128.0,
        ", 64 MB + the cache",
    );
    terminate(child).await?;
    let payload_bytes = held * KB as u64;
    let disk = disk_bytes(&data);
    report.limit(
        &format!("disk / payload ({held} messages of 1 KB stored)"),
        disk as f64 / payload_bytes as f64,
        "x",
        2.0,
        "",
    );
    let mut restarted = spawn(&args.emulator_binary, &data).await?;
    let start_ms = restarted.started_in.as_secs_f64() * 1000.0;
    report.limit(
        &format!("start-up with {stored} messages stored (after a clean stop)"),
        start_ms,
        "ms",
        1000.0,
        "",
    );
    // Beside the figure above (the process that filled the store): what a fresh start over
    // the same store holds, to tell the index's share from what the fill left behind.
    let fresh_rss = restarted.emulator.child.id().map_or(0.0, rss_mb);
    out!(
        "{:<62} {:>12.2} MB",
        "  RSS right after that start-up",
        fresh_rss
    );
    report::store_point(held, start_ms, fresh_rss);
    // After a crash there is no index snapshot: the index is rebuilt from the records.
    restarted
        .emulator
        .kill()
        .await
        .map_err(anyhow::Error::msg)?;
    let rebuilt = spawn(&args.emulator_binary, &data).await?;
    out!(
        "{:<62} {:>12.2} ms",
        "  start-up after a SIGKILL (index rebuilt from the records)",
        rebuilt.started_in.as_secs_f64() * 1000.0
    );
    terminate(rebuilt).await?;
    Ok(())
}

/// Sends `count` 1 KB messages (rounded up to whole batches of 64) to the queue "big", from
/// 16 concurrent senders; the number sent.
async fn fill(c: &Client, count: u64) -> anyhow::Result<u64> {
    let body = Arc::new(batch_body(64));
    let requests = count.div_ceil(64);
    let next = Arc::new(AtomicU64::new(0));
    let fillers: Vec<_> = (0..16)
        .map(|_| {
            let (c, body, next) = (c.clone(), body.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    if !c.send_batch("big", (*body).clone()).await {
                        return false;
                    }
                }
                true
            })
        })
        .collect();
    for f in fillers {
        if !f.await? {
            bail!("filling the store failed");
        }
    }
    Ok(requests * 64)
}

/// Start-up after a clean stop and RSS right after it, at 1/8, 1/4 and 1/2 of
/// `args.stored` (on a store of their own, filled step by step), for the report's curve; the
/// full size's point comes from [`stored()`].
async fn curve(args: &Args, dir: &Path) -> anyhow::Result<()> {
    let data = dir.join("curve");
    let mut child = spawn(&args.emulator_binary, &data).await?;
    Client::new(child.emulator.addr).queue("big").await?;
    let mut held = 0;
    for share in [8, 4, 2] {
        let want = args.stored / share;
        if want <= held {
            continue;
        }
        held += fill(&Client::new(child.emulator.addr), want - held).await?;
        terminate(child).await?;
        child = spawn(&args.emulator_binary, &data).await?;
        let start_ms = child.started_in.as_secs_f64() * 1000.0;
        let rss = child.emulator.child.id().map_or(0.0, rss_mb);
        out!(
            "{:<62} {:>12.2} ms  RSS {rss:.1} MB",
            format!("  start-up with {held} messages stored (the curve)"),
            start_ms
        );
        report::store_point(held, start_ms, rss);
    }
    terminate(child).await?;
    // The curve's store is not needed again: give its disk back before the big fill.
    std::fs::remove_dir_all(&data).ok();
    Ok(())
}
