//! `soak`: the emulator binary under minutes of mixed valid and malformed traffic over many
//! connections (issue 15). It prints RSS at start, peak and end, the p99 of valid
//! operations, the 5xx and panic counts, and whether every acknowledged message was
//! received exactly once; it exits non-zero when a requirement is missed.
//!
//! Requirements: no 5xx, no panic, peak RSS at most `--max-rss-mb` (256), every
//! acknowledged message received exactly once. Everything targets 127.0.0.1 and stops at
//! `--seconds`.

mod traffic;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use rand::SeedableRng as _;
use servicebus_wire::sas::sign;
use testkit::process::ChildEmulator;
use traffic::{QUEUE, Record, SUBSCRIPTIONS, TOPIC, Worker, drain, lock};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Mixed valid and malformed traffic against the emulator binary.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds of traffic.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Connections, one worker each.
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// The emulator binary (a release build).
    #[arg(long, default_value = "target/release/emulator")]
    emulator_binary: PathBuf,
    /// Peak RSS allowed, in MiB.
    #[arg(long, default_value_t = 256)]
    max_rss_mb: u64,
    /// Seed of the traffic's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    testkit::process::status_kib(pid, field).unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("emulator.log");
    let binary = std::fs::canonicalize(&args.emulator_binary)
        .with_context(|| format!("no emulator binary at {}", args.emulator_binary.display()))?;
    let max_connections = (args.connections + 64).to_string();
    let emulator = ChildEmulator::start_logged(
        &binary,
        dir.path(),
        "127.0.0.1:0",
        &["--data-dir", "data", "--max-connections", &max_connections],
        Some(&log),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let pid = emulator.child.id().context("no pid")?;
    let base = format!("http://{}", emulator.addr);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let expiry = i64::try_from(now)? + 86_400;
    let token = sign(
        &format!("{base}/"),
        "RootManageSharedAccessKey",
        "SAS_KEY_VALUE",
        expiry,
    );
    let http = reqwest::Client::new();
    setup(&http, &base, &token).await?;
    let rss_start = rss_kib(pid, "VmRSS");
    println!(
        "soak: {} connections for {} s against {} (pid {pid}); RSS at start {} MiB",
        args.connections,
        args.seconds,
        emulator.addr,
        rss_start / 1024
    );

    let record = Arc::new(Mutex::new(Record {
        latency: Some(hdrhistogram::Histogram::new(3)?),
        ..Record::default()
    }));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut peak = rss_start;
    {
        let mut workers = tokio::task::JoinSet::new();
        for id in 0..args.connections {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a client");
            let mut worker = Worker {
                id,
                http,
                base: base.clone(),
                token: token.clone(),
                record: record.clone(),
                rng: rand::rngs::SmallRng::seed_from_u64(
                    args.seed.wrapping_mul(1_000_003) + id as u64,
                ),
                next: 0,
            };
            workers.spawn(async move {
                while Instant::now() < deadline {
                    worker.step().await;
                }
            });
        }
        let all = async { while workers.join_next().await.is_some() {} };
        tokio::pin!(all);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut last_report = Instant::now();
        loop {
            tokio::select! {
                () = &mut all => break,
                _ = tick.tick() => {
                    peak = peak.max(rss_kib(pid, "VmRSS"));
                    if last_report.elapsed() >= Duration::from_secs(30) {
                        last_report = Instant::now();
                        let r = lock(&record);
                        println!(
                            "  {:>4} s: {} operations, RSS {} MiB (peak {} MiB), 5xx {}",
                            args.seconds.saturating_sub(deadline.saturating_duration_since(Instant::now()).as_secs()),
                            r.operations,
                            rss_kib(pid, "VmRSS") / 1024,
                            peak / 1024,
                            r.statuses.iter().filter(|(s, _)| **s >= 500).map(|(_, n)| n).sum::<u64>()
                        );
                    }
                }
            }
        }
    }
    drain(&http, &base, &token, &format!("/{QUEUE}"), QUEUE, &record).await;
    for s in SUBSCRIPTIONS {
        drain(
            &http,
            &base,
            &token,
            &format!("/{TOPIC}/Subscriptions/{s}"),
            &format!("{TOPIC}/{s}"),
            &record,
        )
        .await;
    }
    peak = peak.max(rss_kib(pid, "VmHWM"));
    let rss_end = rss_kib(pid, "VmRSS");
    let code = emulator.terminate().await.map_err(anyhow::Error::msg)?;
    let panics = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("panicked"))
        .count();
    report(
        &lock(&record),
        rss_start,
        peak,
        rss_end,
        panics,
        code,
        args.max_rss_mb,
    )
}

/// Creates the queue, the topic and its subscriptions with their rules.
async fn setup(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<()> {
    use servicebus_wire::{EntityDescription, EntityKind, RuleDescription};
    let put = |path: String, body: String| async move {
        let r = http
            .put(format!("{base}{path}"))
            .header("authorization", token)
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "PUT {path}: {}", r.status());
        anyhow::Ok(())
    };
    let entity = |kind| {
        servicebus_wire::atom::request_entry(
            &EntityDescription::defaults(kind).to_request_xml(None),
        )
    };
    let mut queue = EntityDescription::defaults(EntityKind::Queue);
    queue.max_delivery_count = 100;
    put(
        format!("/{QUEUE}"),
        servicebus_wire::atom::request_entry(&queue.to_request_xml(None)),
    )
    .await?;
    put(format!("/{TOPIC}"), entity(EntityKind::Topic)).await?;
    let rules = [
        ("all", None),
        ("even", Some(RuleDescription::sql("n % 2 = 0"))),
        ("like", Some(RuleDescription::sql("tag LIKE 'k%1'"))),
        (
            "tagged",
            Some(RuleDescription {
                action: servicebus_wire::RuleAction::Sql {
                    expression: "SET seen = 'yes'".into(),
                    compatibility_level: 20,
                    parameters: vec![],
                },
                ..RuleDescription::sql("n > 5")
            }),
        ),
    ];
    for (s, rule) in rules {
        let sub = EntityDescription::defaults(EntityKind::Subscription);
        let rule = rule.map(|r| RuleDescription {
            name: Some("r".into()),
            ..r
        });
        put(
            format!("/{TOPIC}/Subscriptions/{s}"),
            servicebus_wire::atom::request_entry(&sub.to_request_xml(rule.as_ref())),
        )
        .await?;
    }
    Ok(())
}

fn report(
    r: &Record,
    rss_start: u64,
    peak: u64,
    rss_end: u64,
    panics: usize,
    exit: Option<i32>,
    max_rss_mb: u64,
) -> anyhow::Result<()> {
    let errors: u64 = r
        .statuses
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    let mut statuses: Vec<_> = r.statuses.iter().collect();
    statuses.sort();
    println!(
        "operations {}, answers by status {statuses:?}, transport errors {}",
        r.operations, r.transport_errors
    );
    if let Some(h) = &r.latency {
        println!(
            "valid operations: {} timed, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            h.len(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
    }
    println!(
        "RSS start {} MiB, peak {} MiB, end {} MiB",
        rss_start / 1024,
        peak / 1024,
        rss_end / 1024
    );
    println!("5xx answers {errors}, panics in the log {panics}, exit code after SIGTERM {exit:?}");
    let mut failures = Vec::new();
    for (to, acked) in &r.acked {
        let got = r.received.get(to);
        let missing = acked
            .iter()
            .filter(|id| got.is_none_or(|g| !g.contains_key(*id)))
            .count();
        let twice = got.map_or(0, |g| g.values().filter(|n| **n > 1).count());
        println!(
            "{to}: {} acknowledged, {missing} never received, {twice} received more than once",
            acked.len()
        );
        if missing > 0 || twice > 0 {
            failures.push(format!("{to}: {missing} missing, {twice} duplicated"));
        }
    }
    if errors > 0 {
        failures.push(format!("{errors} answers were 5xx"));
    }
    if panics > 0 {
        failures.push(format!("{panics} panics in the emulator's log"));
    }
    if peak / 1024 > max_rss_mb {
        failures.push(format!(
            "peak RSS {} MiB over {max_rss_mb} MiB",
            peak / 1024
        ));
    }
    if exit != Some(0) {
        failures.push(format!("the emulator exited with {exit:?}"));
    }
    if failures.is_empty() {
        println!("soak: every requirement met");
        Ok(())
    } else {
        bail!("soak failed: {}", failures.join("; "))
    }
}
