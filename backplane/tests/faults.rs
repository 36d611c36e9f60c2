//! Faults against the emulator: a crashed node's subscription is deleted by
//! AutoDeleteOnIdle (the emulator's clock is moved, nothing sleeps) while the others go on;
//! the bus restarting mid-stream loses nothing acknowledged and delivers nothing twice.

use std::time::Duration;

use backplane::ids::NodeId;
use backplane::node::{Node, NodeConfig, Received};
use backplane::servicebus::Client;
use backplane::transport::{ServiceBusTransport, Transport};
use emulator::config::ClockMode;
use testkit::InProcessEmulator;
use tokio::sync::mpsc::Receiver;

fn config(name: &str, receivers: usize) -> NodeConfig {
    NodeConfig {
        node_id: Some(NodeId::new(name).unwrap()),
        receivers,
        receive_timeout: Duration::from_secs(1),
        ..NodeConfig::default()
    }
}

async fn next(stream: &mut Receiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(60), stream.recv())
        .await
        .expect("an event in time")
        .expect("the node runs")
}

#[tokio::test]
async fn a_crashed_node_is_cleaned_up_and_the_others_go_on() {
    let emulator = InProcessEmulator::start_with(emulator::Settings {
        clock: ClockMode::Manual,
        ..emulator::Settings::in_memory()
    })
    .await
    .unwrap();
    let client = Client::from_connection_string(&emulator.connection_string()).unwrap();
    let transport = ServiceBusTransport::new(client, "faults").await.unwrap();
    // One receiver for a, so that its next poll provably starts after an event is handled.
    let (a, mut a_events) = Node::start(transport.clone(), config("node-a", 1))
        .await
        .unwrap();
    let (b, _b_events) = Node::start(transport.clone(), config("node-b", 1))
        .await
        .unwrap();
    let (c, _c_events) = Node::start(transport.clone(), config("node-c", 1))
        .await
        .unwrap();
    b.crash().await;

    emulator
        .advance_clock(Duration::from_secs(180))
        .await
        .unwrap();
    // a polls after the move: it handles one event, then its single receiver polls again.
    for n in 0..2u8 {
        c.publish_to(a.id(), vec![n]).await.unwrap();
        assert_eq!(next(&mut a_events).await.payload, vec![n]);
    }
    emulator
        .advance_clock(Duration::from_secs(180))
        .await
        .unwrap();

    let nodes = transport.nodes().await.unwrap();
    assert!(
        !nodes.contains(&NodeId::new("node-b").unwrap()),
        "the crashed node's subscription is gone: {nodes:?}"
    );
    assert!(
        nodes.contains(a.id()),
        "a live node keeps its subscription by polling: {nodes:?}"
    );
    c.publish(vec![], vec![], b"still here".to_vec())
        .await
        .unwrap();
    assert_eq!(next(&mut a_events).await.payload, b"still here");
    a.shutdown().await.unwrap();
    c.crash().await;
}

#[tokio::test]
async fn a_bus_restart_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let settings = || emulator::Settings {
        location: emulator::store::Location::Directory(dir.path().join("bus")),
        ..emulator::Settings::in_memory()
    };
    let emulator = InProcessEmulator::start_with(settings()).await.unwrap();
    let addr = emulator.addr();
    let client = Client::from_connection_string(&emulator.connection_string()).unwrap();
    let transport = ServiceBusTransport::new(client, "restart").await.unwrap();
    let (a, _a_events) = Node::start(transport.clone(), config("node-a", 2))
        .await
        .unwrap();
    let (b, mut b_events) = Node::start(transport.clone(), config("node-b", 3))
        .await
        .unwrap();
    for i in 1..=10u8 {
        a.publish(vec![], vec![], vec![i]).await.unwrap();
    }
    emulator.stop().await.unwrap();
    let emulator = InProcessEmulator::start_on(settings(), addr).await.unwrap();
    for i in 11..=20u8 {
        a.publish(vec![], vec![], vec![i]).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 20 {
        got.push(next(&mut b_events).await.payload[0]);
    }
    assert_eq!(
        got,
        (1..=20).collect::<Vec<u8>>(),
        "every acknowledged event once, in order"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    emulator.stop().await.unwrap();
}

#[tokio::test]
async fn the_janitor_deletes_a_dead_nodes_subscription() {
    let transport = backplane::transport::MemoryTransport::new();
    let fast = |name: &str| NodeConfig {
        heartbeat_interval: Duration::from_millis(50),
        dead_after: Duration::from_millis(500),
        ..config(name, 1)
    };
    let (a, _a_events) = Node::start(transport.clone(), fast("jan-a")).await.unwrap();
    let (b, _b_events) = Node::start(transport.clone(), fast("jan-b")).await.unwrap();
    let b_id = b.id().clone();
    // Poll (deadline, no fixed sleep) until a has heard b, then b dies.
    let every = Duration::from_millis(10);
    let heard = || async { a.live_nodes().contains(&b_id).then_some(()).ok_or(()) };
    testkit::wait_until(Duration::from_secs(30), every, heard)
        .await
        .expect("a never heard b");
    b.crash().await;
    let deleted = || async {
        (!transport.nodes().await.unwrap().contains(&b_id))
            .then_some(())
            .ok_or(())
    };
    testkit::wait_until(Duration::from_secs(30), every, deleted)
        .await
        .expect("the janitor never deleted b's subscription");
    assert_eq!(transport.nodes().await.unwrap(), vec![a.id().clone()]);
    assert_eq!(a.live_nodes(), vec![a.id().clone()]);
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn receive_and_delete_mode_delivers_in_order() {
    use backplane::node::ReceiveMode;
    let emulator = InProcessEmulator::start().await.unwrap();
    let client = Client::from_connection_string(&emulator.connection_string()).unwrap();
    let transport = ServiceBusTransport::new(client, "rnd").await.unwrap();
    let rnd = |name: &str| NodeConfig {
        receive_mode: ReceiveMode::ReceiveAndDelete,
        ..config(name, 3)
    };
    let (a, _a_events) = Node::start(transport.clone(), rnd("rnd-a")).await.unwrap();
    let (b, mut b_events) = Node::start(transport.clone(), rnd("rnd-b")).await.unwrap();
    for i in 1..=30u8 {
        a.publish(vec![], vec![], vec![i]).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 30 {
        got.push(next(&mut b_events).await.payload[0]);
    }
    assert_eq!(got, (1..=30).collect::<Vec<u8>>());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    emulator.stop().await.unwrap();
}

#[tokio::test]
async fn nodes_recover_when_the_topic_is_deleted() {
    let emulator = InProcessEmulator::start().await.unwrap();
    let client = Client::from_connection_string(&emulator.connection_string()).unwrap();
    let transport = ServiceBusTransport::new(client.clone(), "fragile")
        .await
        .unwrap();
    let fast = |name: &str| NodeConfig {
        heartbeat_interval: Duration::from_secs(3600),
        ..config(name, 2)
    };
    let (a, _a_events) = Node::start(transport.clone(), fast("frag-a"))
        .await
        .unwrap();
    let (b, mut b_events) = Node::start(transport.clone(), fast("frag-b"))
        .await
        .unwrap();
    a.publish(vec![], vec![], b"before".to_vec()).await.unwrap();
    assert_eq!(next(&mut b_events).await.payload, b"before");

    assert!(
        client.delete_entity("fragile").await.unwrap(),
        "the topic (and every subscription) is deleted"
    );
    // b's receivers find their subscription gone and re-create topic and subscription;
    // poll (deadline, no fixed sleep) until b's is back.
    let back = || async {
        let present = transport.nodes().await.map(|n| n.contains(b.id()));
        present.unwrap_or(false).then_some(()).ok_or(())
    };
    testkit::wait_until(Duration::from_secs(60), Duration::from_millis(20), back)
        .await
        .expect("b never re-created its subscription");
    a.publish(vec![], vec![], b"after".to_vec()).await.unwrap();
    assert_eq!(next(&mut b_events).await.payload, b"after");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    emulator.stop().await.unwrap();
}
