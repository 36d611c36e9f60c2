//! AMQP figures (issue 17), SASL PLAIN with the development key, beside T and the REST
//! figures of the same run. Throughput is measured with a lean client (`amqp_raw`) and
//! again through fe2o3-amqp's client (the AMQP library the Rust Service Bus crates are
//! built on), latency through fe2o3-amqp's and again through the lean client (so that
//! the client's own share shows): durable sends with 64 in flight on one link,
//! peek-lock + complete with credit 64, the end-to-end latency at 1,000 msg/s to 3
//! subscriptions, and the memory 1,000 idle connections take.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::types::definitions::SenderSettleMode;
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::{Binary, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};

use crate::*;

/// The REST figures of the same run the AMQP ones are read beside.
pub(crate) struct Rest {
    /// Peek-lock + complete, msg/s (not measured with `--latency-only`).
    pub(crate) peek_lock: Option<f64>,
    /// End-to-end p99 at 1,000 msg/s to 3 subscriptions, ms.
    pub(crate) p99: f64,
    /// T's p99 at 4,000 req/s, ms.
    pub(crate) e2e_floor: f64,
}

/// An AMQP connection over SASL PLAIN, with Nagle's algorithm off: with it on, fe2o3's
/// small flow frames wait for the broker's delayed ACK (a 45 ms stall each time a
/// receiver's credit runs out).
async fn connect(
    amqp: SocketAddr,
    name: &str,
) -> anyhow::Result<fe2o3_amqp::connection::ConnectionHandle<()>> {
    let stream = tokio::net::TcpStream::connect(amqp).await?;
    stream.set_nodelay(true)?;
    Connection::builder()
        .container_id(name)
        .hostname("127.0.0.1")
        .sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Plain {
            username: KEY_NAME.into(),
            password: KEY.into(),
        })
        .open_with_stream(stream)
        .await
        .context("AMQP connection to the emulator")
}

fn message(body: Vec<u8>) -> Message<Body<Value>> {
    Message::builder()
        .body(Body::Data(vec![Binary::from(body).into()].into()))
        .build()
}

/// Sends for `phase` with `in_flight` deliveries outstanding on one link; accepted msg/s.
async fn send_rate(
    amqp: SocketAddr,
    queue: &str,
    in_flight: usize,
    phase: Duration,
) -> anyhow::Result<f64> {
    let mut connection = connect(amqp, "bench-send").await?;
    let mut session = Session::begin(&mut connection).await?;
    let mut sender = Sender::attach(&mut session, "bench-sender", queue).await?;
    let mut pending = std::collections::VecDeque::new();
    let (start, mut accepted) = (Instant::now(), 0u64);
    while start.elapsed() < phase {
        while pending.len() < in_flight {
            pending.push_back(sender.send_batchable(message(payload())).await?);
        }
        if let Some(outcome) = pending.pop_front() {
            outcome
                .await?
                .accepted_or("not accepted")
                .map_err(anyhow::Error::msg)?;
            accepted += 1;
        }
    }
    let rate = accepted as f64 / start.elapsed().as_secs_f64();
    for outcome in pending {
        let _ = outcome.await;
    }
    sender.close().await?;
    session.end().await?;
    connection.close().await?;
    Ok(rate)
}

/// Receives and completes for `phase` with credit `credit` on one link; msg/s.
async fn peek_lock_rate(
    amqp: SocketAddr,
    queue: &str,
    credit: u32,
    phase: Duration,
) -> anyhow::Result<f64> {
    let mut connection = connect(amqp, "bench-receive").await?;
    let mut session = Session::begin(&mut connection).await?;
    let mut receiver = Receiver::builder()
        .name("bench-receiver")
        .source(queue)
        .credit_mode(CreditMode::Auto(credit))
        .attach(&mut session)
        .await?;
    let (start, mut done) = (Instant::now(), 0u64);
    while start.elapsed() < phase {
        let delivery = receiver.recv::<Body<Value>>().await?;
        receiver.accept(&delivery).await?;
        done += 1;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    let _ = receiver.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    Ok(rate)
}

/// End-to-end latency at 1,000 msg/s to 3 subscriptions, receivers in receive-and-delete
/// mode on their own connections; the p99 in ms.
async fn end_to_end(
    c: &Client,
    amqp: SocketAddr,
    seconds: f64,
) -> anyhow::Result<(f64, f64, usize, u64)> {
    c.topic("amqp-lat", 3).await?;
    let origin = Instant::now();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let total = (1000.0 * seconds) as u64;
    // Receivers stop once they have their copies, or at this deadline (a receive is not
    // cancelled before: fe2o3's would drop what it was handed).
    let stop_at = tokio::time::Instant::now() + Duration::from_secs_f64(seconds + 30.0);
    let mut receivers = Vec::new();
    for s in 0..3 {
        let mut connection = connect(amqp, &format!("bench-lat-{s}")).await?;
        let mut session = Session::begin(&mut connection).await?;
        let mut receiver = Receiver::builder()
            .name(format!("lat-{s}"))
            .source(format!("amqp-lat/Subscriptions/s{s}"))
            .sender_settle_mode(SenderSettleMode::Settled)
            .credit_mode(CreditMode::Auto(64))
            .attach(&mut session)
            .await?;
        let latencies = latencies.clone();
        receivers.push(tokio::spawn(async move {
            for _ in 0..total {
                let got = tokio::time::timeout_at(stop_at, receiver.recv::<Body<Value>>()).await;
                let Ok(Ok(delivery)) = got else { break };
                let now = origin.elapsed().as_micros();
                // Settled already (receive-and-delete); fe2o3's receiver grants credit again
                // only as deliveries are disposed of.
                let _ = receiver.accept(&delivery).await;
                if let Body::Data(data) = delivery.body() {
                    let sent: u128 = data
                        .first()
                        .and_then(|d| std::str::from_utf8(&d.0).ok())
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0);
                    lock(&latencies).push(now.saturating_sub(sent) as u64);
                }
            }
            let _ = receiver.close().await;
            let _ = session.end().await;
            let _ = connection.close().await;
        }));
    }
    let mut connection = connect(amqp, "bench-lat-send").await?;
    let mut session = Session::begin(&mut connection).await?;
    let mut sender = Sender::attach(&mut session, "lat-sender", "amqp-lat").await?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut outcomes = Vec::new();
    for _ in 0..total {
        tick.tick().await;
        let body = origin.elapsed().as_micros().to_string().into_bytes();
        outcomes.push(sender.send_batchable(message(body)).await?);
    }
    for o in outcomes {
        let _ = o.await;
    }
    for r in receivers {
        let _ = r.await;
    }
    let _ = sender.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    let l = sorted(&latencies);
    crate::report::series("emulator over AMQP, 1,000 msg/s to 3 subscriptions", &l);
    Ok((
        percentile_ms(&l, 0.50),
        percentile_ms(&l, 0.99),
        l.len(),
        total * 3,
    ))
}

/// The AMQP figures, each beside T (measured again after it) and the REST figure.
pub(crate) async fn figures(
    c: &Client,
    amqp: SocketAddr,
    beside: &mut Beside,
    rest: Rest,
    report: &mut Report,
) -> anyhow::Result<()> {
    out!("");
    if let Some(rest_peek_lock) = rest.peek_lock {
        let phase = beside.phase;
        c.queue("amqp-send").await?;
        beside.mark();
        let sent = crate::amqp_raw::send_rate(amqp, "amqp-send", 64, phase).await?;
        let t = beside.t().await?;
        report.ratio(
            "AMQP durable send, 1 KB, 64 in flight on one link",
            sent,
            "msg/s",
            t,
            &format!("T beside it, {t:.0} req/s; lean client"),
            1.0,
        );
        beside.writer();
        let sdk = send_rate(amqp, "amqp-send", 64, phase).await?;
        out!(
            "{:<62} {sdk:>12.0} msg/s  = {:>5.0}% of that T",
            "  same through fe2o3-amqp's client",
            100.0 * sdk / t
        );
        let prefilled = ((t * beside.phase.as_secs_f64()) as usize).max(2_000);
        prefill(c, "amqp-pl", prefilled).await?;
        beside.mark();
        let got = crate::amqp_raw::peek_lock_rate(amqp, "amqp-pl", 64, phase).await?;
        let t = beside.t().await?;
        report.ratio(
            "AMQP peek-lock + complete, credit 64, one link",
            got,
            "msg/s",
            t,
            &format!("T beside it, {t:.0} req/s; lean client"),
            0.50,
        );
        beside.writer();
        prefill(c, "amqp-pl-sdk", prefilled).await?;
        let sdk = peek_lock_rate(amqp, "amqp-pl-sdk", 64, phase).await?;
        out!(
            "{:<62} {sdk:>12.0} msg/s  = {:>5.0}% of that T",
            "  same through fe2o3-amqp's client",
            100.0 * sdk / t
        );
        // Like for like: general-purpose clients on both sides (reqwest for REST).
        report.ratio(
            "AMQP peek-lock + complete (fe2o3-amqp), against REST's",
            sdk,
            "msg/s",
            rest_peek_lock,
            &format!("REST peek-lock + complete, {rest_peek_lock:.0} msg/s"),
            3.0,
        );
        beside.writer();
    }
    beside.mark();
    let (p50, p99, got, want) = end_to_end(c, amqp, beside.phase.as_secs_f64()).await?;
    out!(
        "{:<62} {p50:>12.2} ms  ({got} of {want} copies received)",
        "AMQP end-to-end latency p50 at 1,000 msg/s to 3 subscriptions"
    );
    c.topic("amqp-lat-lean", 3).await?;
    let (lean, due) =
        crate::amqp_raw::end_to_end(amqp, "amqp-lat-lean", beside.phase.as_secs_f64()).await?;
    out!(
        "{:<62} {:>12.2} ms p50  {:.2} ms p99  ({} of {due} copies received)",
        "  same through the lean client",
        percentile_ms(&lean, 0.50),
        percentile_ms(&lean, 0.99),
        lean.len()
    );
    let disk = beside.writer().longest_sync;
    report.limit(
        "AMQP end-to-end latency p99 at 1,000 msg/s to 3 subscriptions",
        p99,
        "ms",
        2.0,
        &format!(
            ", durable; REST's {:.2} ms; T at 4,000 req/s: p99 {:.2} ms; {}",
            rest.p99,
            rest.e2e_floor,
            crate::stats::longest_sync(disk)
        ),
    );
    report.limit(
        "  ... and against REST's p99 in this run",
        p99,
        "ms",
        (rest.p99 * 100.0).round() / 100.0,
        "",
    );
    Ok(())
}

/// RSS of the release binary before and after 1,000 idle AMQP connections (each through
/// the header and `open`, then left alone).
pub(crate) async fn idle_connections(
    args: &Args,
    report: &mut Report,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let child = stored::spawn(&args.emulator_binary, &dir.join("idle")).await?;
    let pid = child.emulator.child.id().context("the emulator's pid")?;
    let amqp = child
        .emulator
        .amqp_addr
        .context("the emulator printed no AMQP address")?;
    let before = stored::rss_mb(pid);
    let open = [
        0u8, 0, 0, 17, 2, 0, 0, 0, 0x00, 0x53, 0x10, 0xc0, 0x04, 0x01, 0xa1, 0x01, b'x',
    ];
    let opened = Arc::new(AtomicU64::new(0));
    let mut connections = Vec::new();
    for _ in 0..1000 {
        let mut stream = tokio::net::TcpStream::connect(amqp).await?;
        stream.write_all(b"AMQP\x00\x01\x00\x00").await?;
        stream.write_all(&open).await?;
        let mut header = [0u8; 8];
        stream.read_exact(&mut header).await?;
        opened.fetch_add(1, Ordering::Relaxed);
        connections.push(stream);
    }
    // Let every connection task reach its idle state (the server's open is written).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = stored::rss_mb(pid);
    report.limit(
        &format!(
            "RSS added by {} idle AMQP connections",
            opened.load(Ordering::Relaxed)
        ),
        after - before,
        "MB",
        64.0,
        &format!(", release binary; {before:.1} MB before"),
    );
    drop(connections);
    stored::terminate(child).await
}
