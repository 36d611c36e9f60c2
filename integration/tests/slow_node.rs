//! A node whose application stops reading stalls nobody else: its bounded queue fills, its
//! receivers pause and its messages wait on the bus, while the other nodes keep receiving.
//! Once it reads again it gets everything, once each, in order.

use std::time::Duration;

use backplane::ids::NodeId;
use backplane::node::{Node, NodeConfig, Received};
use backplane::servicebus::Client;
use backplane::transport::ServiceBusTransport;
use testkit::InProcessEmulator;
use tokio::sync::mpsc::Receiver;

const EVENTS: u32 = 300;
const CAPACITY: usize = 4;
const DEADLINE: Duration = Duration::from_secs(60);

fn config(name: &str, capacity: usize) -> NodeConfig {
    NodeConfig {
        node_id: Some(NodeId::new(name).expect("an id")),
        receivers: 2,
        receive_timeout: Duration::from_secs(1),
        channel_capacity: capacity,
        ..NodeConfig::default()
    }
}

async fn take(events: &mut Receiver<Received>, n: u32) -> Vec<u32> {
    let mut got = Vec::new();
    while got.len() < n as usize {
        let event = tokio::time::timeout(DEADLINE, events.recv())
            .await
            .expect("events keep coming")
            .expect("the node runs");
        got.push(u32::from_be_bytes(
            event.payload[..4].try_into().expect("4 bytes"),
        ));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_does_not_stall_the_others() {
    let emulator = InProcessEmulator::start().await.expect("emulator starts");
    let client = Client::from_connection_string(&emulator.connection_string()).expect("client");
    let transport = ServiceBusTransport::new(client, "slow")
        .await
        .expect("topic");
    let (publisher, _) = Node::start(transport.clone(), config("publisher", 1024))
        .await
        .expect("publisher starts");
    let (fast, mut fast_events) = Node::start(transport.clone(), config("fast", 1024))
        .await
        .expect("fast node starts");
    let (slow, mut slow_events) = Node::start(transport.clone(), config("slow", CAPACITY))
        .await
        .expect("slow node starts");

    for i in 0..EVENTS {
        publisher
            .publish(vec![], vec![], i.to_be_bytes().to_vec())
            .await
            .expect("publish acknowledged");
    }
    // The slow node's application reads nothing meanwhile; the fast node gets everything.
    assert_eq!(
        take(&mut fast_events, EVENTS).await,
        (0..EVENTS).collect::<Vec<_>>()
    );
    let handed = slow
        .counters()
        .delivered
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        handed <= CAPACITY as u64,
        "the slow node handed over {handed} events into a queue of {CAPACITY}"
    );

    // Reading again, it gets the backlog from the bus: all, once, in order.
    assert_eq!(
        take(&mut slow_events, EVENTS).await,
        (0..EVENTS).collect::<Vec<_>>()
    );
    assert!(
        slow_events.try_recv().is_err(),
        "nothing more (no duplicates)"
    );

    for node in [publisher, fast, slow] {
        node.shutdown().await.expect("clean shutdown");
    }
    emulator.stop().await.expect("emulator stops");
}
