//! The peer users would pick instead of a Service Bus backplane: Redis. The bench starts
//! Debian's `redis-server` itself (bound to 127.0.0.1 on a free port, nothing persisted,
//! killed when dropped; `scripts/bench` installs the package when it is missing) and
//! measures raw pub/sub end-to-end latency at the emulator's end-to-end rate. The
//! Socket.IO workload through socketioxide's own Redis adapter is in `socketio.rs`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use redis::AsyncCommands as _;

use crate::*;

/// A `redis-server` of the bench's own.
#[derive(Debug)]
pub(crate) struct Redis {
    /// `redis://127.0.0.1:port`.
    pub(crate) url: String,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts `redis-server` and waits (10 s at most) until it answers `PING`; `None` when
    /// it is not installed.
    pub(crate) async fn start() -> anyhow::Result<Option<Redis>> {
        let installed = std::process::Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status();
        if !matches!(installed, Ok(s) if s.success()) {
            return Ok(None);
        }
        // A free port: redis takes no port 0 (that turns TCP off).
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let port_arg = port.to_string();
        let child = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port_arg])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str())?;
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                break;
            }
            anyhow::ensure!(Instant::now() < until, "redis-server did not answer PING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Some(Redis {
            url,
            child,
            _dir: dir,
        }))
    }

    /// Stops the server.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Raw Redis pub/sub at 1,000 msg/s to 3 subscribers, as the emulator's end-to-end phase
/// (a timestamp as the message, one publish per millisecond tick, each from a task of its
/// own): p50 and p99 in ms, copies received and expected.
pub(crate) async fn pubsub_latency(
    redis: &Redis,
    seconds: f64,
) -> anyhow::Result<(f64, f64, usize, u64)> {
    let client = redis::Client::open(redis.url.as_str())?;
    let origin = Instant::now();
    let total = (1000.0 * seconds) as u64;
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop_at = tokio::time::Instant::now() + Duration::from_secs_f64(seconds + 30.0);
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe("lat").await?;
        let latencies = latencies.clone();
        subscribers.push(tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            for _ in 0..total {
                let Ok(Some(m)) = tokio::time::timeout_at(stop_at, messages.next()).await else {
                    break;
                };
                let now = origin.elapsed().as_micros();
                let sent: u128 = std::str::from_utf8(m.get_payload_bytes())
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                lock(&latencies).push(now.saturating_sub(sent) as u64);
            }
        }));
    }
    let publisher = client.get_multiplexed_async_connection().await?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut publishes = Vec::new();
    for _ in 0..total {
        tick.tick().await;
        let mut publisher = publisher.clone();
        publishes.push(tokio::spawn(async move {
            let stamp = origin.elapsed().as_micros().to_string();
            publisher.publish::<_, _, usize>("lat", stamp).await
        }));
    }
    for p in publishes {
        p.await??;
    }
    for s in subscribers {
        s.await?;
    }
    let l = sorted(&latencies);
    crate::report::series("Redis pub/sub (peer, in memory), 1,000 msg/s to 3", &l);
    Ok((
        percentile_ms(&l, 0.50),
        percentile_ms(&l, 0.99),
        l.len(),
        total * 3,
    ))
}
