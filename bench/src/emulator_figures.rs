//! The emulator's own figures: throughput of each operation beside T, end-to-end
//! latency to three subscriptions, and the mixed stress run.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::*;

pub(crate) async fn start_emulator(
    dir: &Path,
    durability: emulator::config::DurabilityFlag,
) -> anyhow::Result<Running> {
    let settings = emulator::Settings {
        location: emulator::store::Location::Directory(dir.to_path_buf()),
        durability: durability.into(),
        ..emulator::Settings::in_memory()
    };
    let emulator = emulator::Emulator::open(settings).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let amqp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (addr, amqp_addr) = (listener.local_addr()?, amqp.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let broker = emulator.broker().clone();
    let task = tokio::spawn(async move {
        let _ = emulator
            .serve_all(listener, Some(amqp), async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Running {
        addr,
        amqp: amqp_addr,
        broker,
        stop,
        task,
    })
}

/// An emulator serving in this process (REST and AMQP).
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) amqp: SocketAddr,
    /// Its broker, to read the store writer's counters.
    pub(crate) broker: emulator::broker::Broker,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops it and waits for its final flush.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Fills `queue` with at least `messages` 1 KB messages, in batches of 64, 16 at a time.
pub(crate) async fn prefill(c: &Client, queue: &str, messages: usize) -> anyhow::Result<()> {
    c.queue(queue).await?;
    let fill = messages / 64 + 1;
    let body = batch_body(64);
    for chunk in 0..fill.div_ceil(16) {
        let sends: Vec<_> = (0..16.min(fill - chunk * 16))
            .map(|_| c.send_batch(queue, body.clone()))
            .collect();
        for s in sends {
            if !s.await {
                bail!("prefill of {queue} failed");
            }
        }
    }
    Ok(())
}

/// Mixed send, peek-lock + complete and receive-and-delete at saturation, under a hard
/// timeout; fails loudly when progress stops (a stalled store).
pub(crate) async fn stress(c: &Client, seconds: u64) -> anyhow::Result<()> {
    c.queue("stress").await?;
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for role in 0..32 {
        let (c, progress, stop) = (c.clone(), progress.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = match role % 4 {
                    0 | 1 => c.send("stress", payload()).await,
                    2 => c.lock_and_complete("stress").await,
                    _ => c.take("stress", 0).await.is_some(),
                };
                if ok {
                    progress.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let start = Instant::now();
    let mut last = (0, Instant::now());
    while start.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = progress.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            stop.store(true, Ordering::Relaxed);
            bail!("STRESS FAILED: no progress for 10 s after {now} operations: the store stalled");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        if tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .is_err()
        {
            bail!(
                "STRESS FAILED: a worker did not finish within 30 s of the end: the store stalled"
            );
        }
    }
    let ops = progress.load(Ordering::Relaxed);
    out!(
        "{:<62} {:>12.0} op/s  ({ops} operations in {seconds} s, no stall)",
        "stress: mixed send / lock+complete / receive-and-delete",
        ops as f64 / seconds as f64
    );
    Ok(())
}

/// The store writer's longest cycle under saturated single sends (`w`, that phase's
/// window), beside the disk alone doing what that cycle does most: appends of the phase's
/// mean record size, each synced, back to back for as long as the phase ran.
async fn writer_stall(
    w: &emulator::store::WriterStats,
    phase: Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    let record = usize::try_from(w.bytes / w.cycles.max(1)).unwrap_or(usize::MAX);
    let dir = tempfile::tempdir()?;
    let at = dir.path().to_path_buf();
    let (p999, max) =
        tokio::task::spawn_blocking(move || disk_saturated(&at, phase.as_secs_f64(), record))
            .await??;
    report.limit(
        "store writer stall under saturated single sends (longest cycle)",
        w.longest_cycle.as_secs_f64() * 1e3,
        "ms",
        5.0,
        &format!(
            "; longest sync {:.2} ms; the disk alone, {record} B appended + fdatasync \
             back to back: max {max:.2} ms, p99.9 {p999:.2} ms{}",
            w.longest_sync.as_secs_f64() * 1e3,
            if max > 5.0 {
                " (the disk alone misses it too)"
            } else {
                ""
            }
        ),
    );
    Ok(())
}

/// The throughput figures: single and batch sends, both receive modes, fan-out.
/// Returns the peek-lock + complete rate, which the AMQP figure is read beside.
pub(crate) async fn throughput(
    c: &Client,
    args: &Args,
    beside: &mut Beside,
    report: &mut Report,
) -> anyhow::Result<f64> {
    let phase = beside.phase;
    // Sizes the receive phases' prefill.
    let t = beside.last;
    // Durable single send to a topic with 3 subscriptions being drained.
    c.topic("fan3", 3).await?;
    let draining = Arc::new(AtomicBool::new(true));
    let drainers: Vec<_> = (0..3)
        .flat_map(|s| (0..2).map(move |_| s))
        .map(|s| {
            let (c, draining) = (c.clone(), draining.clone());
            tokio::spawn(async move {
                while draining.load(Ordering::Relaxed) {
                    c.take(&format!("fan3/Subscriptions/s{s}"), 1).await;
                }
            })
        })
        .collect();
    let cs = c.clone();
    beside.mark();
    let single = rate(args.concurrency, phase, move |_| {
        let c = cs.clone();
        async move { u64::from(c.send("fan3", payload()).await) }
    })
    .await;
    draining.store(false, Ordering::Relaxed);
    for d in drainers {
        let _ = d.await;
    }
    let t_single = beside.t().await?;
    report.ratio(
        &format!(
            "durable single send, {} senders, 3 subscriptions draining",
            args.concurrency
        ),
        single,
        "msg/s",
        t_single,
        &format!("T beside it, {t_single:.0} req/s"),
        0.25,
    );
    let w = beside.writer();
    writer_stall(&w, phase, report).await?;

    // Batch send: 64 x 1 KB per request.
    c.queue("batch").await?;
    let body = Arc::new(batch_body(64));
    let cb = c.clone();
    beside.mark();
    let batch = rate(16, phase, move |_| {
        let (c, body) = (cb.clone(), body.clone());
        async move {
            if c.send_batch("batch", (*body).clone()).await {
                64
            } else {
                0
            }
        }
    })
    .await;
    let t_batch = beside.t().await?;
    report.ratio(
        "durable batch send, 64 x 1 KB per request, 16 senders",
        batch,
        "msg/s",
        t_batch,
        &format!("T beside it, {t_batch:.0} req/s"),
        1.0,
    );
    beside.writer();

    // Receive-and-delete and peek-lock + complete from prefilled queues, 16 receivers.
    let mut peek_lock = 0.0;
    for (queue, name, target) in [
        ("rd", "receive-and-delete, 16 receivers", 0.30),
        ("pl", "peek-lock + complete, 16 receivers", 0.15),
    ] {
        prefill(
            c,
            queue,
            ((t * args.seconds * target * 1.5) as usize).max(2_000),
        )
        .await?;
        let cr = c.clone();
        beside.mark();
        let got = rate(16, phase, move |_| {
            let c = cr.clone();
            async move {
                if queue == "rd" {
                    u64::from(c.take(queue, 0).await.is_some())
                } else {
                    u64::from(c.lock_and_complete(queue).await)
                }
            }
        })
        .await;
        let t_beside = beside.t().await?;
        report.ratio(
            name,
            got,
            "msg/s",
            t_beside,
            &format!("T beside it, {t_beside:.0} req/s"),
            target,
        );
        beside.writer();
        peek_lock = got;
    }

    // Fan-out cost: 10 subscriptions against 1.
    c.topic("one", 1).await?;
    c.topic("ten", 10).await?;
    let mut fan = [0.0; 2];
    for (i, topic) in ["one", "ten"].into_iter().enumerate() {
        let cf = c.clone();
        beside.mark();
        fan[i] = rate(args.concurrency, phase, move |_| {
            let c = cf.clone();
            async move { u64::from(c.send(topic, payload()).await) }
        })
        .await;
        beside.writer();
    }
    report.baseline("send to a topic with 1 subscription", fan[0], "msg/s");
    report.ratio(
        "send to a topic with 10 subscriptions",
        fan[1],
        "msg/s",
        fan[0],
        "1-subscription rate",
        0.50,
    );
    Ok(peek_lock)
}

/// End-to-end latency at 1,000 msg/s to 3 subscriptions, durable; `floor` is T's p99 at
/// the same request rate (ms), printed beside it. Returns the p99 (ms).
pub(crate) async fn end_to_end(
    c: &Client,
    beside: &mut Beside,
    floor: f64,
    report: &mut Report,
) -> anyhow::Result<f64> {
    let seconds = beside.phase.as_secs_f64();
    c.topic("lat", 3).await?;
    beside.mark();
    let origin = Instant::now();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let receiving = Arc::new(AtomicBool::new(true));
    let receivers: Vec<_> = (0..3)
        .flat_map(|s| (0..4).map(move |_| s))
        .map(|s| {
            let (c, latencies, receiving) = (c.clone(), latencies.clone(), receiving.clone());
            tokio::spawn(async move {
                while receiving.load(Ordering::Relaxed) {
                    if let Some(body) = c.take(&format!("lat/Subscriptions/s{s}"), 1).await {
                        let sent: u128 = String::from_utf8_lossy(&body).parse().unwrap_or(0);
                        let now = origin.elapsed().as_micros();
                        lock(&latencies).push(now.saturating_sub(sent) as u64);
                    }
                }
            })
        })
        .collect();
    let total = (1000.0 * seconds) as u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sends = Vec::new();
    for _ in 0..total {
        tick.tick().await;
        let c = c.clone();
        sends.push(tokio::spawn(async move {
            c.send("lat", origin.elapsed().as_micros().to_string().into_bytes())
                .await
        }));
    }
    for s in sends {
        let _ = s.await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while lock(&latencies).len() < (total * 3) as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    receiving.store(false, Ordering::Relaxed);
    for r in receivers {
        let _ = r.await;
    }
    let l = sorted(&latencies);
    crate::report::series("emulator over REST, 1,000 msg/s to 3 subscriptions", &l);
    let pct = |p: f64| percentile_ms(&l, p);
    out!(
        "{:<62} {:>12.2} ms  ({} of {} copies received)",
        "end-to-end latency p50 at 1,000 msg/s to 3 subscriptions",
        pct(0.50),
        l.len(),
        total * 3
    );
    let disk = beside.writer().longest_sync;
    report.limit(
        "end-to-end latency p99 at 1,000 msg/s to 3 subscriptions",
        pct(0.99),
        "ms",
        2.0,
        &format!(
            ", durable; T at 4,000 req/s: p99 {floor:.2} ms; {}",
            crate::stats::longest_sync(disk)
        ),
    );
    report.limit(
        "  ... and against 3 x T's p99 at the same request rate",
        pct(0.99),
        "ms",
        (3.0 * floor * 100.0).round() / 100.0,
        "",
    );
    Ok(pct(0.99))
}
