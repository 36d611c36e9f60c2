//! Room broadcasts between real Socket.IO clients (npm `socket.io-client`, run by
//! `integration/compat/sio-bench.js`): across two socketioxide servers through the
//! backplane's Service Bus adapter and the emulator, beside one server with socketioxide's
//! own in-process adapter and two servers with socketioxide's own Redis adapter
//! (`socketioxide-redis`, the peer), in one run.

use std::net::SocketAddr;
use std::time::Duration;

use backplane::node::NodeConfig;
use backplane::socketio::{AdapterOptions, AdapterState, ClusterEmitter, ServiceBusAdapter};
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::{Adapter, Emitter, LocalAdapter};
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};
use tokio::task::JoinHandle;

use crate::redis_peer::Redis;
use crate::stats::Report;

/// (events/s, p50 ms, p99 ms, delivered, expected) of one client run.
type Figures = (f64, f64, f64, u64, u64);

/// The relay every server runs: `join` a room, `bench` events go to their `room` (or room
/// "bench") as `m`.
fn relay<A: Adapter>(socket: SocketRef<A>) {
    socket.on(
        "join",
        async |socket: SocketRef<A>, Data(room): Data<String>, ack: AckSender<A>| {
            socket.join(room);
            let _ = ack.send(&true);
        },
    );
    socket.on(
        "bench",
        async |socket: SocketRef<A>, Data(v): Data<Value>| {
            let room = v["room"].as_str().unwrap_or("bench").to_string();
            let _ = socket.to(room).emit("m", &v).await;
        },
    );
}

async fn serve(
    layer: socketioxide::layer::SocketIoLayer<impl Adapter>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(demo::no_delay(listener), app).await;
    });
    Ok((addr, task))
}

/// One run of the client script: (events/s, p50 ms, p99 ms, delivered, expected). A paced
/// run's latencies also go to the report's CDF, as `name`'s.
async fn clients(
    name: &str,
    (send, recv): (SocketAddr, SocketAddr),
    messages: usize,
    rate: usize,
    rooms: usize,
) -> anyhow::Result<Figures> {
    let output = tokio::process::Command::new("node")
        .arg("sio-bench.js")
        .current_dir(testkit::compat_dir())
        .env("SEND_URL", format!("http://{send}"))
        .env("RECV_URL", format!("http://{recv}"))
        .env("RECEIVERS", "4")
        .env("MESSAGES", messages.to_string())
        .env("RATE", rate.to_string())
        .env("ROOMS", rooms.to_string())
        .kill_on_drop(true)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "sio-bench.js failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let v: Value = serde_json::from_slice(&output.stdout)?;
    if rate > 0 {
        // Sorted already; milliseconds to microseconds for the report's CDF.
        let samples: Vec<u64> = v["samples"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64))
            .into_iter()
            .flatten()
            .map(|ms| (ms * 1000.0) as u64)
            .collect();
        let name = name.trim_start_matches("socket.io room broadcast, ");
        crate::report::series(&format!("Socket.IO {name}, paced {rate}/s"), &samples);
    }
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok((
        f("rate"),
        f("p50"),
        f("p99"),
        v["delivered"].as_u64().unwrap_or(0),
        v["expected"].as_u64().unwrap_or(0),
    ))
}

fn print(name: &str, (rate, p50, p99, delivered, expected): Figures) {
    out!(
        "{name:<62} {rate:>12.0} events/s  p50 {p50:.2} ms  p99 {p99:.2} ms  ({delivered}/{expected} delivered)"
    );
}

/// Rooms of the partitioned runs.
const ROOMS: usize = 8;

/// A socketioxide server with the Service Bus adapter: its address, task, state and io.
type SbServer = (
    SocketAddr,
    JoinHandle<()>,
    AdapterState,
    SocketIo<ServiceBusAdapter<Emitter>>,
);

/// Two relay servers with the Service Bus adapter on `topic` (over `partitions` topics),
/// once they count each other.
async fn service_bus_servers(
    connection: &str,
    topic: &str,
    partitions: usize,
) -> anyhow::Result<Vec<SbServer>> {
    let options = AdapterOptions {
        node: NodeConfig {
            receive_timeout: Duration::from_secs(5),
            ..NodeConfig::default()
        },
        partitions,
        ..AdapterOptions::default()
    };
    let mut servers = Vec::new();
    for _ in 0..2 {
        let state = AdapterState::connect(connection, topic, options.clone()).await?;
        let (layer, io) = SocketIo::builder()
            .with_adapter::<ServiceBusAdapter<Emitter>>(state.clone())
            .build_layer();
        io.ns("/", async |s: SocketRef<ServiceBusAdapter<Emitter>>| {
            relay(s)
        })
        .await?;
        let (addr, task) = serve(layer).await?;
        servers.push((addr, task, state, io));
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while servers.iter().any(|s| s.2.server_count() < 2) && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(servers)
}

/// How fast a [`ClusterEmitter`] publishes room emits (each acknowledged by the bus), 64
/// at a time, with two servers receiving them.
async fn emitter_rate(connection: &str, seconds: f64) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    let servers = service_bus_servers(connection, "sio-emitter", 1).await?;
    let emitter = ClusterEmitter::connect(connection, "sio-emitter", 1).await?;
    let count = ((seconds * 2_000.0) as usize).clamp(1_000, 20_000);
    let start = std::time::Instant::now();
    let failed = futures_util::stream::iter(0..count)
        .map(|i| {
            let emitter = &emitter;
            async move {
                let room = format!("bench-{}", i % ROOMS);
                emitter.of("/").to(room).emit("m", &i).await.is_err()
            }
        })
        .buffer_unordered(64)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let elapsed = start.elapsed().as_secs_f64();
    out!(
        "{:<62} {:>12.0} emits/s  ({} of {count} failed)",
        "cluster emitter (worker process) publishing room emits",
        count as f64 / elapsed,
        failed
    );
    stop(servers).await;
    Ok(())
}

async fn stop(servers: Vec<SbServer>) {
    for (_, task, state, io) in servers {
        io.close().await;
        task.abort();
        let _ = state.shutdown().await;
    }
}

/// Prints the Socket.IO figures: the in-process adapter on one server, then the Service
/// Bus adapter across two servers through the emulator at `connection`, then (when
/// `redis` runs) socketioxide's Redis adapter across two servers, and the Service Bus
/// adapter's figures as ratios of Redis's.
pub(crate) async fn figures(
    connection: &str,
    seconds: f64,
    redis: Option<&Redis>,
    report: &mut Report,
) -> anyhow::Result<()> {
    testkit::ensure_compat_packages();
    out!("");
    let messages = 20_000;
    let paced_rate = 500;
    let paced_messages = ((seconds * paced_rate as f64) as usize).max(500);

    let (layer, io) = SocketIo::builder()
        .with_adapter::<LocalAdapter>(())
        .build_layer();
    io.ns("/", async |s: SocketRef<LocalAdapter>| relay(s));
    let (local, local_task) = serve(layer).await?;
    let runs = |name: &'static str, send, recv| async move {
        let unpaced = clients(name, (send, recv), messages, 0, 1).await?;
        print(name, unpaced);
        let paced = clients(name, (send, recv), paced_messages, paced_rate, 1).await?;
        print(&format!("  same, paced {paced_rate} msgs/s"), paced);
        anyhow::Ok((unpaced, paced))
    };
    runs(
        "socket.io room broadcast, 1 server, in-process adapter",
        local,
        local,
    )
    .await?;
    local_task.abort();

    let servers = service_bus_servers(connection, "sio-bench", 1).await?;
    let (a, b) = (servers[0].0, servers[1].0);
    let service_bus = runs(
        "socket.io room broadcast, 2 servers, Service Bus adapter",
        a,
        b,
    )
    .await?;
    stop(servers).await;

    // Room broadcasts over 8 rooms, the adapter on one topic and on four (partitions).
    let mut by_partitions = Vec::new();
    for k in [1, 4] {
        let servers = service_bus_servers(connection, &format!("sio-rooms-{k}"), k).await?;
        let name = format!("  8 rooms, Service Bus adapter on {k} topic(s)");
        let figures = clients(&name, (servers[0].0, servers[1].0), messages, 0, ROOMS).await?;
        print(&name, figures);
        by_partitions.push(figures.0);
        stop(servers).await;
    }
    out!(
        "  4 topics against 1: {:.0}% of the events/s",
        100.0 * by_partitions[1] / by_partitions[0]
    );
    emitter_rate(connection, seconds).await?;

    let Some(redis) = redis else {
        return Ok(());
    };
    let mut servers = Vec::new();
    for _ in 0..2 {
        // socketioxide-redis speaks RESP3 (redis 7 and later).
        let client = redis::Client::open(format!("{}/?protocol=resp3", redis.url))?;
        let adapter = RedisAdapterCtr::new_with_redis(&client).await?;
        let (layer, io) = SocketIo::builder()
            .with_adapter::<RedisAdapter<Emitter>>(adapter)
            .build_layer();
        io.ns("/", async |s: SocketRef<RedisAdapter<Emitter>>| relay(s))
            .await?;
        let (addr, task) = serve(layer).await?;
        servers.push((addr, task, io));
    }
    let (a, b) = (servers[0].0, servers[1].0);
    let peer = runs(
        "socket.io room broadcast, 2 servers, socketioxide-redis (peer)",
        a,
        b,
    )
    .await?;
    for (_, task, io) in servers {
        io.close().await;
        task.abort();
    }
    report.ratio(
        "Service Bus adapter events/s against Redis's",
        service_bus.0.0,
        "events/s",
        peer.0.0,
        "socketioxide-redis",
        1.0,
    );
    let paced_limit = (peer.1.2 * 1.5 * 100.0).round() / 100.0;
    report.limit(
        &format!("Service Bus adapter paced {paced_rate}/s p99 against Redis's"),
        service_bus.1.2,
        "ms",
        paced_limit,
        &format!(", 1.5x socketioxide-redis's {:.2} ms", peer.1.2),
    );
    Ok(())
}
