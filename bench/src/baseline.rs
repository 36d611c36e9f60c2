//! The baselines measured in the same run: T (a trivial axum handler with the same
//! client), T paced at a request rate, and the machine's steadiness.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::*;

pub(crate) async fn trivial_server() -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/t",
        axum::routing::post(|_body: axum::body::Bytes| async { axum::http::StatusCode::CREATED }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// The trivial handler at `per_ms` thousand requests/s, `per_ms` requests per millisecond
/// tick: the latency floor of this client, server and machine at that rate, beside which
/// latency targets are read. Returns p50 and p99 in milliseconds.
pub(crate) async fn paced_trivial(addr: SocketAddr, seconds: f64, per_ms: usize) -> (f64, f64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client builds");
    let url = format!("http://{addr}/t");
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut tasks = Vec::new();
    for _ in 0..(1000.0 * seconds) as usize {
        tick.tick().await;
        for _ in 0..per_ms {
            let (http, url) = (http.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let start = Instant::now();
                let _ = http.post(url).body(payload()).send().await;
                start.elapsed().as_micros() as u64
            }));
        }
    }
    let mut l = Vec::new();
    for t in tasks {
        if let Ok(v) = t.await {
            l.push(v);
        }
    }
    l.sort_unstable();
    let name = format!("T paced at {per_ms},000 req/s (the floor)");
    crate::report::series(&name, &l);
    let pct = |p: f64| percentile_ms(&l, p);
    (pct(0.50), pct(0.99))
}

/// How steady the machine's CPU is: a fixed piece of arithmetic counted per 50 ms window
/// for `length`, on one thread while the bench runs nothing else. Returns the share of
/// windows (%) that did at most half the median window's work, and how many times slower
/// than the median the slowest one ran. When such windows are more than 1% of the time, a
/// p99 latency lands in them whatever the code under test does.
pub(crate) fn steadiness(length: Duration) -> (f64, f64) {
    const WINDOW: Duration = Duration::from_millis(50);
    let windows = (length.as_millis() / WINDOW.as_millis()).max(1) as u32;
    let start = Instant::now();
    let mut acc = 1.0_f64;
    let mut done: Vec<u64> = (1..=windows)
        .map(|i| {
            let end = start + WINDOW * i;
            let mut units = 0;
            while Instant::now() < end {
                for _ in 0..2000 {
                    acc = std::hint::black_box(acc * 1.000_000_1 + 1e-7);
                }
                units += 1;
            }
            units
        })
        .collect();
    done.sort_unstable();
    let median = done[done.len() / 2] as f64;
    let slow = done.iter().filter(|&&u| u as f64 * 2.0 <= median).count();
    (
        100.0 * slow as f64 / done.len() as f64,
        median / done[0].max(1) as f64,
    )
}

/// T's rate over `phase`: the trivial handler at `trivial` with the same client and
/// concurrency as the figures it is read beside.
pub(crate) async fn t_rate(
    trivial: SocketAddr,
    concurrency: usize,
    phase: Duration,
) -> anyhow::Result<f64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let url = format!("http://{trivial}/t");
    Ok(rate(concurrency, phase, move |_| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            u64::from(
                matches!(http.post(url).body(payload()).send().await, Ok(r) if r.status() == 201),
            )
        }
    })
    .await)
}

/// The disk's own latency at the rate the end-to-end phase syncs: 1 KB appended to a file
/// in `dir` and `fdatasync`ed, paced at 1,000 per second for `seconds`, on a thread of its
/// own while the bench runs nothing else. Every durable answer waits for one such sync, so
/// its tail is the floor of the emulator's durable tail. Returns p50, p99 and p99.9 (ms).
pub(crate) fn disk_floor(dir: &std::path::Path, seconds: f64) -> std::io::Result<(f64, f64, f64)> {
    let l = disk_syncs(dir, seconds, payload().len(), true)?;
    let pct = |p: f64| percentile_ms(&l, p);
    Ok((pct(0.50), pct(0.99), pct(0.999)))
}

/// The disk alone as the store writer uses it when saturated: `bytes` appended and
/// `fdatasync`ed back to back for `seconds`. The writer's longest cycle is read beside its
/// maximum, so a stall can be told from the disk's own. Returns p99.9 and the maximum (ms).
pub(crate) fn disk_saturated(
    dir: &std::path::Path,
    seconds: f64,
    bytes: usize,
) -> std::io::Result<(f64, f64)> {
    let l = disk_syncs(dir, seconds, bytes, false)?;
    Ok((percentile_ms(&l, 0.999), percentile_ms(&l, 1.0)))
}

/// The latencies (µs, sorted) of appends of `bytes` to a new file in `dir`, each followed
/// by `fdatasync`, for `seconds`: paced at 1,000 per second or back to back.
fn disk_syncs(
    dir: &std::path::Path,
    seconds: f64,
    bytes: usize,
    paced: bool,
) -> std::io::Result<Vec<u64>> {
    use std::io::Write as _;
    let path = dir.join("disk-floor");
    let mut file = std::fs::File::create(&path)?;
    let record = vec![b'x'; bytes.max(1)];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut l = Vec::new();
    for i in 0u64.. {
        let due = if paced {
            start + Duration::from_millis(i)
        } else {
            Instant::now()
        };
        if due >= end {
            break;
        }
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let begun = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        l.push(begun.elapsed().as_micros() as u64);
    }
    drop(file);
    std::fs::remove_file(&path)?;
    l.sort_unstable();
    Ok(l)
}
