//! Emulator benchmarks. Every figure is printed beside T, a trivial axum `POST` handler
//! measured in the same run with the same client (reqwest, keep-alive), because absolute
//! numbers drift from machine to machine (`PERF-NOTES.md`). Loopback only; every load loop
//! is bounded in time and count.

mod socketio;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use testkit::process::ChildEmulator;

/// Emulator benchmarks, each figure beside a baseline measured in the same run.
/// The same allocator as the emulator binary (the emulator runs in this process).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds each throughput phase runs.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Concurrent senders for single sends (and for T).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Messages (1 KB) stored for the large-store figures; 0 skips them.
    #[arg(long, default_value_t = 1_000_000)]
    stored: u64,
    /// Seconds of the mixed stress run; 0 skips it.
    #[arg(long, default_value_t = 60)]
    stress_secs: u64,
    /// Write acknowledgement of the in-process emulator: full (fsync, the targets' setting)
    /// or none (to see what the fsyncs cost).
    #[arg(long, value_enum, default_value = "full")]
    durability: emulator::config::DurabilityFlag,
    /// Skip the emulator's own figures (T is always measured).
    #[arg(long)]
    skip_emulator: bool,
    /// Of the emulator's figures, measure only the end-to-end latency (quick to repeat).
    #[arg(long)]
    latency_only: bool,
    /// Skip the backplane figures.
    #[arg(long)]
    skip_backplane: bool,
    /// Skip the Socket.IO adapter figures (they need Node.js and npm).
    #[arg(long)]
    skip_socketio: bool,
    /// Concurrent publishers per backplane node (packing packs what they publish while a
    /// message is in flight).
    #[arg(long, default_value_t = 256)]
    bp_publishers: usize,
    /// The emulator binary (release), for start-up, RSS and disk figures.
    #[arg(long, default_value = "target/release/emulator")]
    emulator_binary: PathBuf,
}

const KEY_NAME: &str = "RootManageSharedAccessKey";
const KEY: &str = "SAS_KEY_VALUE";
const KB: usize = 1024;

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        let base = format!("http://{addr}");
        let expiry = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
        .unwrap_or(0)
            + 4 * 3600;
        let token = servicebus_wire::sas::sign(&format!("{base}/"), KEY_NAME, KEY, expiry);
        Client {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .expect("client builds"),
            base,
            token,
        }
    }

    async fn put(&self, path: &str, description: &str) -> anyhow::Result<()> {
        let body = format!(
            r#"<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">{description}</content></entry>"#
        );
        let r = self
            .http
            .put(format!("{}{path}", self.base))
            .header("authorization", &self.token)
            .body(body)
            .send()
            .await?;
        if r.status() != 201 {
            bail!(
                "PUT {path}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// A queue's `MessageCount` as management reports it.
    async fn message_count(&self, name: &str) -> anyhow::Result<u64> {
        let text = self
            .http
            .get(format!("{}/{name}", self.base))
            .header("authorization", &self.token)
            .send()
            .await?
            .text()
            .await?;
        let count = text
            .split("MessageCount>")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .with_context(|| format!("no MessageCount for {name}"))?;
        Ok(count.parse()?)
    }

    async fn queue(&self, name: &str) -> anyhow::Result<()> {
        self.put(&format!("/{name}"), r#"<QueueDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"><LockDuration>PT5M</LockDuration></QueueDescription>"#).await
    }

    async fn topic(&self, name: &str, subscriptions: usize) -> anyhow::Result<()> {
        self.put(&format!("/{name}"), r#"<TopicDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"/>"#).await?;
        for i in 0..subscriptions {
            self.put(&format!("/{name}/Subscriptions/s{i}"), r#"<SubscriptionDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"><LockDuration>PT5M</LockDuration></SubscriptionDescription>"#).await?;
        }
        Ok(())
    }

    async fn send(&self, entity: &str, body: Vec<u8>) -> bool {
        let r = self
            .http
            .post(format!("{}/{entity}/messages", self.base))
            .header("authorization", &self.token)
            .body(body)
            .send()
            .await;
        matches!(r, Ok(r) if r.status() == 201)
    }

    async fn send_batch(&self, entity: &str, body: String) -> bool {
        let r = self
            .http
            .post(format!("{}/{entity}/messages", self.base))
            .header("authorization", &self.token)
            .header("content-type", "application/vnd.microsoft.servicebus.json")
            .body(body)
            .send()
            .await;
        matches!(r, Ok(r) if r.status() == 201)
    }

    /// Receive-and-delete with a long poll; the body when a message came.
    async fn take(&self, receivable: &str, timeout_secs: u32) -> Option<Vec<u8>> {
        let url = format!(
            "{}/{receivable}/messages/head?timeout={timeout_secs}",
            self.base
        );
        let r = self
            .http
            .delete(url)
            .header("authorization", &self.token)
            .header("content-length", "0")
            .send()
            .await
            .ok()?;
        if r.status() != 200 {
            return None;
        }
        r.bytes().await.ok().map(|b| b.to_vec())
    }

    /// Peek-lock then complete at `Location`; true when both succeeded.
    async fn lock_and_complete(&self, receivable: &str) -> bool {
        let url = format!("{}/{receivable}/messages/head?timeout=0", self.base);
        let Ok(r) = self
            .http
            .post(url)
            .header("authorization", &self.token)
            .header("content-length", "0")
            .send()
            .await
        else {
            return false;
        };
        if r.status() != 201 {
            return false;
        }
        let Some(location) = r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_string)
        else {
            return false;
        };
        let _ = r.bytes().await;
        matches!(self.http.delete(location).header("authorization", &self.token).header("content-length", "0").send().await, Ok(d) if d.status() == 200)
    }
}

fn payload() -> Vec<u8> {
    vec![b'x'; KB]
}

fn batch_body(n: usize) -> String {
    let body = "x".repeat(KB);
    let one = format!(r#"{{"Body":"{body}"}}"#);
    format!("[{}]", vec![one; n].join(","))
}

/// Runs `workers` copies of `work` until `duration` passes (each call is one unit when it
/// returns true); returns units per second.
async fn rate<F, Fut>(workers: usize, duration: Duration, work: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = u64> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let work = Arc::new(work);
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|i| {
            let (done, stop, work) = (done.clone(), stop.clone(), work.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = work(i).await;
                    if n == 0 {
                        break;
                    }
                    done.fetch_add(n, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    counted as f64 / elapsed.as_secs_f64()
}

struct Report {
    misses: usize,
}

impl Report {
    fn baseline(&self, name: &str, value: f64, unit: &str) {
        println!("{name:<62} {value:>12.0} {unit}");
    }

    /// A figure beside its baseline, with the target ratio.
    fn ratio(
        &mut self,
        name: &str,
        value: f64,
        unit: &str,
        baseline: f64,
        baseline_name: &str,
        target: f64,
    ) {
        let r = value / baseline;
        let ok = r >= target;
        self.misses += usize::from(!ok);
        println!(
            "{name:<62} {value:>12.0} {unit}  = {:>5.0}% of {baseline_name} (target >= {:.0}%)  {}",
            r * 100.0,
            target * 100.0,
            if ok { "ok" } else { "MISSED" }
        );
    }

    fn limit(&mut self, name: &str, value: f64, unit: &str, limit: f64, context: &str) {
        let ok = value <= limit;
        self.misses += usize::from(!ok);
        println!(
            "{name:<62} {value:>12.2} {unit}  (target <= {limit} {unit}{context})  {}",
            if ok { "ok" } else { "MISSED" }
        );
    }
}

async fn start_emulator(
    dir: &Path,
    durability: emulator::config::DurabilityFlag,
) -> anyhow::Result<(
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)> {
    let settings = emulator::Settings {
        location: emulator::store::Location::Directory(dir.to_path_buf()),
        durability: durability.into(),
        ..emulator::Settings::in_memory()
    };
    let emulator = emulator::Emulator::open(settings).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = emulator
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((addr, stop, task))
}

async fn trivial_server() -> anyhow::Result<SocketAddr> {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As the emulator binary does (see its main): no transparent huge pages.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let args = Args::parse();
    let phase = Duration::from_secs_f64(args.seconds);
    let mut report = Report { misses: 0 };
    println!(
        "emulator benchmarks: {} s per phase, {} concurrent senders, reqwest client, loopback\n",
        args.seconds, args.concurrency
    );

    // T: the trivial handler with the same client and concurrency.
    let trivial = trivial_server().await?;
    let t = t_rate(trivial, args.concurrency, phase).await?;
    report.baseline("T: trivial axum POST 1 KB -> 201", t, "req/s");
    let (p50, p99) = paced_trivial(trivial, args.seconds, 1).await;
    println!(
        "{:<62} {p50:>12.2} ms p50  {p99:.2} ms p99",
        "T paced at 1,000 req/s (latency floor of client + server)"
    );
    // The end-to-end phase makes 4 requests per message (a send, then a receive on each
    // of 3 subscriptions): its latency is read beside T at that rate.
    let (p50, e2e_floor) = paced_trivial(trivial, args.seconds, 4).await;
    println!(
        "{:<62} {p50:>12.2} ms p50  {e2e_floor:.2} ms p99",
        "T paced at 4,000 req/s (the end-to-end phase's request rate)"
    );

    let (slow, slowest) = tokio::task::spawn_blocking(move || steadiness(phase)).await?;
    println!(
        "{:<62} {slow:>12.1} %  of 50 ms windows ran >= 2x slower than the median (slowest {slowest:.1}x)",
        "machine steadiness: fixed arithmetic on one thread"
    );

    let dir = tempfile::tempdir()?;
    if !args.skip_backplane {
        report.misses += backplane_figures(&args, dir.path(), trivial).await?;
    }
    if !args.skip_socketio {
        let (addr, stop, server) =
            start_emulator(&dir.path().join("socketio"), args.durability).await?;
        socketio::figures(
            &emulator::connection_string(addr, KEY_NAME, KEY),
            args.seconds,
        )
        .await?;
        let _ = stop.send(());
        let _ = server.await;
    }
    if args.skip_emulator {
        println!("\n{} target(s) missed", report.misses);
        return Ok(());
    }
    let (addr, stop, server) = start_emulator(&dir.path().join("main"), args.durability).await?;
    let c = Client::new(addr);

    if !args.latency_only {
        let beside = Beside {
            trivial,
            concurrency: args.concurrency,
            phase,
            last: t,
        };
        throughput(&c, &args, beside, &mut report).await?;
    }
    end_to_end(&c, args.seconds, e2e_floor, &mut report).await?;

    if args.stress_secs > 0 {
        stress(&c, args.stress_secs).await?;
    }
    let _ = stop.send(());
    let _ = server.await;

    if args.stored > 0 {
        stored(&args, &mut report, dir.path()).await?;
    }
    println!("\n{} target(s) missed", report.misses);
    Ok(())
}

/// Mixed send, peek-lock + complete and receive-and-delete at saturation, under a hard
/// timeout; fails loudly when progress stops (a stalled store).
async fn stress(c: &Client, seconds: u64) -> anyhow::Result<()> {
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
    println!(
        "{:<62} {:>12.0} op/s  ({ops} operations in {seconds} s, no stall)",
        "stress: mixed send / lock+complete / receive-and-delete",
        ops as f64 / seconds as f64
    );
    Ok(())
}

/// An emulator binary the bench started, and how long it took to print its address.
struct Child {
    emulator: ChildEmulator,
    started_in: Duration,
}

async fn spawn(binary: &Path, data: &Path) -> anyhow::Result<Child> {
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

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn disk_bytes(dir: &Path) -> u64 {
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

async fn terminate(child: Child) -> anyhow::Result<()> {
    child
        .emulator
        .terminate()
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(())
}

/// Start-up, RSS, disk and send rate with `args.stored` 1 KB messages stored.
async fn stored(args: &Args, report: &mut Report, dir: &Path) -> anyhow::Result<()> {
    // One start is at the mercy of the scheduler and a cold page cache: take the median
    // of three, each on a folder of its own.
    let mut starts = Vec::new();
    for i in 0..3 {
        let empty = spawn(&args.emulator_binary, &dir.join(format!("empty{i}"))).await?;
        starts.push(empty.started_in.as_secs_f64() * 1000.0);
        terminate(empty).await?;
    }
    starts.sort_by(f64::total_cmp);
    report.limit(
        "start-up, empty store (process start to listening, median of 3)",
        starts[1],
        "ms",
        50.0,
        "",
    );
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
    let body = Arc::new(batch_body(64));
    let requests = args.stored.div_ceil(64);
    let next = Arc::new(AtomicU64::new(0));
    let fill_start = Instant::now();
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
    let stored = requests * 64;
    println!(
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
    report.limit(
        &format!("start-up with {stored} messages stored (after a clean stop)"),
        restarted.started_in.as_secs_f64() * 1000.0,
        "ms",
        1000.0,
        "",
    );
    // Beside the figure above (the process that filled the store): what a fresh start over
    // the same store holds, to tell the index's share from what the fill left behind.
    println!(
        "{:<62} {:>12.2} MB",
        "  RSS right after that start-up",
        restarted.emulator.child.id().map_or(0.0, rss_mb)
    );
    // After a crash there is no index snapshot: the index is rebuilt from the records.
    restarted
        .emulator
        .kill()
        .await
        .map_err(anyhow::Error::msg)?;
    let rebuilt = spawn(&args.emulator_binary, &data).await?;
    println!(
        "{:<62} {:>12.2} ms",
        "  start-up after a SIGKILL (index rebuilt from the records)",
        rebuilt.started_in.as_secs_f64() * 1000.0
    );
    terminate(rebuilt).await?;
    Ok(())
}

/// Three backplane nodes, each with 16 concurrent publishers for `args.seconds`: events/s
/// delivered (each event reaches the two other nodes) and end-to-end latency. `trivial` is
/// T's address: the paced figure is read beside T at the same request rate. Returns how
/// many of the backplane's targets were missed.
async fn backplane_figures(args: &Args, dir: &Path, trivial: SocketAddr) -> anyhow::Result<usize> {
    use backplane::transport::{MemoryTransport, ServiceBusTransport};
    println!();
    let saturate = Load::Saturate(args.bp_publishers);
    let mut misses = 0;
    let memory = backplane_run(MemoryTransport::new(), true, args.seconds, saturate).await?;
    print_backplane("backplane, 3 nodes, memory transport", memory);
    let (addr, stop, server) = start_emulator(&dir.join("backplane"), args.durability).await?;
    let client = backplane::servicebus::Client::from_connection_string(
        &emulator::connection_string(addr, KEY_NAME, KEY),
    )?;
    for (packing, topic) in [(true, "bp-packed"), (false, "bp-single")] {
        let transport = ServiceBusTransport::new(client.clone(), topic).await?;
        let figures = backplane_run(transport, packing, args.seconds, saturate).await?;
        let name = format!(
            "backplane, 3 nodes, emulator, packing {}, {} publishers/node",
            if packing { "on" } else { "off" },
            args.bp_publishers
        );
        print_backplane(&name, figures);
        if packing {
            let ok = figures.0 >= 100_000.0;
            misses += usize::from(!ok);
            println!(
                "  target >= 100,000 events/s with packing: {}",
                if ok { "ok" } else { "MISSED" }
            );
        }
    }
    let paced_transport = ServiceBusTransport::new(client.clone(), "bp-paced").await?;
    let paced = backplane_run(paced_transport, true, args.seconds, Load::Paced(1000)).await?;
    print_backplane(
        "backplane, 3 nodes, emulator, packing on, paced 1,000 events/s",
        paced,
    );
    // A paced event costs 5 requests (counted: 5,017 req/s): its send, and a peek-lock and
    // a complete on each of the 2 other nodes.
    let (floor_p50, floor_p99) = paced_trivial(trivial, args.seconds, 5).await;
    println!(
        "{:<62} {floor_p50:>12.2} ms p50  {floor_p99:.2} ms p99",
        "  T paced at 5,000 req/s (that phase's request rate)"
    );
    misses += usize::from(paced.2 >= 5.0);
    println!(
        "  target p99 < 5 ms at 1,000 events/s: {}",
        if paced.2 < 5.0 { "ok" } else { "MISSED" }
    );
    let _ = stop.send(());
    let _ = server.await;
    println!();
    Ok(misses)
}

fn print_backplane(name: &str, (rate, p50, p99): (f64, f64, f64)) {
    println!("{name:<62} {rate:>12.0} events/s delivered  p50 {p50:.2} ms  p99 {p99:.2} ms");
}

/// Events sent before this (micros since the run began) are not timed.
const WARM_UP_MICROS: u64 = 500_000;

/// How a backplane run loads the nodes.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// This many publishers per node, each publishing as fast as acknowledged.
    Saturate(usize),
    /// This many events per second across the 3 nodes, evenly paced.
    Paced(u32),
}

async fn backplane_run<T: backplane::transport::Transport + Clone>(
    transport: T,
    packing: bool,
    seconds: f64,
    load: Load,
) -> anyhow::Result<(f64, f64, f64)> {
    use backplane::node::{Node, NodeConfig};
    let origin = Instant::now();
    let mut nodes = Vec::new();
    let mut receivers = Vec::new();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let delivered = Arc::new(AtomicU64::new(0));
    for _ in 0..3 {
        let config = NodeConfig {
            packing,
            receive_timeout: Duration::from_secs(2),
            ..NodeConfig::default()
        };
        let (node, mut events) = Node::start(transport.clone(), config).await?;
        nodes.push(Arc::new(node));
        let (latencies, delivered) = (latencies.clone(), delivered.clone());
        receivers.push(tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                let sent = u64::from_be_bytes(e.payload[..8].try_into().unwrap_or([0; 8]));
                delivered.fetch_add(1, Ordering::Relaxed);
                // Latency in steady state: nodes joining a stream hold its first events for
                // a short start window, so events sent in the first half second are not timed.
                if sent < WARM_UP_MICROS {
                    continue;
                }
                let now = u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX);
                latencies
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(now.saturating_sub(sent));
            }
        }));
    }
    let published = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    let (per_node, interval) = match load {
        Load::Saturate(n) => (n.max(1), None),
        Load::Paced(rate) => (
            1,
            Some(Duration::from_secs_f64(3.0 / f64::from(rate.max(1)))),
        ),
    };
    for node in &nodes {
        for _ in 0..per_node {
            let (node, published, stop) = (node.clone(), published.clone(), stop.clone());
            publishers.push(tokio::spawn(async move {
                let mut tick = interval.map(tokio::time::interval);
                while !stop.load(Ordering::Relaxed) {
                    if let Some(t) = tick.as_mut() {
                        t.tick().await;
                    }
                    let mut payload = u64::try_from(origin.elapsed().as_micros())
                        .unwrap_or(0)
                        .to_be_bytes()
                        .to_vec();
                    payload.resize(100, b'x');
                    if node
                        .publish(vec!["room".into()], vec![], payload)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    published.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        let _ = tokio::time::timeout(Duration::from_secs(30), p).await;
    }
    let want = published.load(Ordering::Relaxed) * 2;
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    for node in nodes {
        if let Ok(node) = Arc::try_unwrap(node) {
            let _ = node.shutdown().await;
        }
    }
    for r in receivers {
        r.abort();
    }
    let l = sorted(&latencies);
    let pct = |p: f64| percentile_ms(&l, p);
    let got = delivered.load(Ordering::Relaxed);
    if got < want {
        println!("  (only {got} of {want} deliveries arrived within the deadline)");
    }
    Ok((got as f64 / elapsed, pct(0.50), pct(0.99)))
}

/// The trivial handler at `per_ms` thousand requests/s, `per_ms` requests per millisecond
/// tick: the latency floor of this client, server and machine at that rate, beside which
/// latency targets are read. Returns p50 and p99 in milliseconds.
async fn paced_trivial(addr: SocketAddr, seconds: f64, per_ms: usize) -> (f64, f64) {
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
    let pct = |p: f64| percentile_ms(&l, p);
    (pct(0.50), pct(0.99))
}

/// How steady the machine's CPU is: a fixed piece of arithmetic counted per 50 ms window
/// for `length`, on one thread while the bench runs nothing else. Returns the share of
/// windows (%) that did at most half the median window's work, and how many times slower
/// than the median the slowest one ran. When such windows are more than 1% of the time, a
/// p99 latency lands in them whatever the code under test does.
fn steadiness(length: Duration) -> (f64, f64) {
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

/// The latencies collected so far, sorted.
fn sorted(latencies: &std::sync::Mutex<Vec<u64>>) -> Vec<u64> {
    let mut l = latencies
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    l.sort_unstable();
    l
}

/// The `p` quantile of sorted microsecond samples, in milliseconds (0 when empty).
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

/// T's rate over `phase`: the trivial handler at `trivial` with the same client and
/// concurrency as the figures it is read beside.
async fn t_rate(trivial: SocketAddr, concurrency: usize, phase: Duration) -> anyhow::Result<f64> {
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

/// T measured again after each throughput figure: the figure is read beside the mean of
/// T just before and just after it, since the machine's speed drifts over a run (T alone
/// moves by tens of percent between phases of a few seconds here).
struct Beside {
    trivial: SocketAddr,
    concurrency: usize,
    phase: Duration,
    /// The last T measured.
    last: f64,
}

impl Beside {
    /// Measures T again and returns the mean of it and the T before.
    async fn t(&mut self) -> anyhow::Result<f64> {
        let after = t_rate(self.trivial, self.concurrency, self.phase).await?;
        let mean = (self.last + after) / 2.0;
        self.last = after;
        Ok(mean)
    }
}

/// The throughput figures: single and batch sends, both receive modes, fan-out.
async fn throughput(
    c: &Client,
    args: &Args,
    mut beside: Beside,
    report: &mut Report,
) -> anyhow::Result<()> {
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

    // Batch send: 64 x 1 KB per request.
    c.queue("batch").await?;
    let body = Arc::new(batch_body(64));
    let cb = c.clone();
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

    // Receive-and-delete and peek-lock + complete from prefilled queues, 16 receivers.
    for (queue, name, target) in [
        ("rd", "receive-and-delete, 16 receivers", 0.30),
        ("pl", "peek-lock + complete, 16 receivers", 0.15),
    ] {
        c.queue(queue).await?;
        let fill = ((t * args.seconds * target * 1.5) as usize).max(2_000) / 64 + 1;
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
        let cr = c.clone();
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
    }

    // Fan-out cost: 10 subscriptions against 1.
    c.topic("one", 1).await?;
    c.topic("ten", 10).await?;
    let mut fan = [0.0; 2];
    for (i, topic) in ["one", "ten"].into_iter().enumerate() {
        let cf = c.clone();
        fan[i] = rate(args.concurrency, phase, move |_| {
            let c = cf.clone();
            async move { u64::from(c.send(topic, payload()).await) }
        })
        .await;
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
    Ok(())
}

/// End-to-end latency at 1,000 msg/s to 3 subscriptions, durable; `floor` is T's p99 at
/// the same request rate (ms), printed beside it.
async fn end_to_end(
    c: &Client,
    seconds: f64,
    floor: f64,
    report: &mut Report,
) -> anyhow::Result<()> {
    c.topic("lat", 3).await?;
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
                        latencies
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(now.saturating_sub(sent) as u64);
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
    while latencies
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len()
        < (total * 3) as usize
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    receiving.store(false, Ordering::Relaxed);
    for r in receivers {
        let _ = r.await;
    }
    let l = sorted(&latencies);
    let pct = |p: f64| percentile_ms(&l, p);
    println!(
        "{:<62} {:>12.2} ms  ({} of {} copies received)",
        "end-to-end latency p50 at 1,000 msg/s to 3 subscriptions",
        pct(0.50),
        l.len(),
        total * 3
    );
    report.limit(
        "end-to-end latency p99 at 1,000 msg/s to 3 subscriptions",
        pct(0.99),
        "ms",
        2.0,
        &format!(", durable; T at 4,000 req/s: p99 {floor:.2} ms"),
    );

    Ok(())
}
