//! The emulator process killed with SIGKILL while a backplane node publishes, and restarted
//! on the same address and store, repeatedly: every event whose publish was acknowledged
//! reaches the other node exactly once, in order. 10 cycles by default; more with
//! `KILL_CYCLES`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backplane::ids::NodeId;
use backplane::node::{Node, NodeConfig};
use backplane::servicebus::Client;
use backplane::transport::ServiceBusTransport;
use testkit::process::ChildEmulator;

/// The emulator binary (this package's copy) as a child process on `bind`.
async fn start(cwd: &std::path::Path, bind: &str, args: &[&str]) -> ChildEmulator {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_emulator-child"));
    ChildEmulator::start_on(binary, cwd, bind, args)
        .await
        .expect("the emulator binary starts")
}

/// Acknowledged publishes to wait for in each cycle before the kill.
const ACKS_PER_CYCLE: usize = 30;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn sigkill_during_backplane_traffic_loses_nothing_acknowledged() {
    let cycles: usize = std::env::var("KILL_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let bind = format!("127.0.0.1:{}", free_port());
    // A small window: most deliveries go cold, and every restart files them as ranges.
    let args = ["--data-dir", "data", "--index-window", "16"];
    let mut process = start(dir.path(), &bind, &args).await;
    let client = Client::from_connection_string(&process.connection_string).unwrap();
    let transport = ServiceBusTransport::new(client, "killed").await.unwrap();
    let config = |name: &str| NodeConfig {
        node_id: Some(NodeId::new(name).unwrap()),
        receivers: 3,
        receive_timeout: Duration::from_secs(1),
        gap_timeout: Duration::from_millis(500),
        ..NodeConfig::default()
    };
    let (a, _a_events) = Node::start(transport.clone(), config("kill-a"))
        .await
        .unwrap();
    let (b, mut b_events) = Node::start(transport.clone(), config("kill-b"))
        .await
        .unwrap();
    let a = Arc::new(a);
    let acknowledged = Arc::new(Mutex::new(Vec::<u32>::new()));
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));

    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = {
            let (a, acknowledged, next, stop) =
                (a.clone(), acknowledged.clone(), next.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if a.publish(vec![], vec![], i.to_be_bytes().to_vec())
                        .await
                        .is_ok()
                    {
                        acknowledged.lock().unwrap().push(i);
                    }
                }
            })
        };
        // Wait (deadline, no fixed sleep) for this cycle's acknowledgements, then kill -9.
        let target = (cycle + 1) * ACKS_PER_CYCLE;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while acknowledged.lock().unwrap().len() < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cycle {cycle}: publishing stalled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut child = process.child;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        process = start(dir.path(), &bind, &args).await;
        stop.store(true, Ordering::Relaxed);
        publisher.await.unwrap();
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    let last = *acknowledged.last().unwrap();
    let number = |e: &backplane::Received| u32::from_be_bytes(e.payload[..].try_into().unwrap());
    let delivered: Vec<u32> =
        testkit::collect_until(Duration::from_secs(120), &mut b_events, |got| {
            got.last().map(number) == Some(last)
        })
        .await
        .iter()
        .map(number)
        .collect();
    assert_eq!(
        delivered.last(),
        Some(&last),
        "every acknowledged event arrives"
    );
    assert!(
        delivered.windows(2).all(|w| w[0] < w[1]),
        "in order, once each: {delivered:?}"
    );
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|i| delivered.binary_search(i).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}"
    );
    println!(
        "{cycles} SIGKILL cycles: {} publishes acknowledged, {} delivered (unacknowledged ones may arrive too)",
        acknowledged.len(),
        delivered.len()
    );
    let Ok(a) = Arc::try_unwrap(a) else {
        panic!("a is still shared")
    };
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    assert_eq!(process.terminate().await, Ok(Some(0)));
}
