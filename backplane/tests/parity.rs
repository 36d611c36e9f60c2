//! Parity: the backplane scenario against a real namespace when
//! `SERVICEBUS_CONNECTION_STRING` is set (it creates the topic `backplane-parity` and
//! deletes the nodes' subscriptions at the end); skipped, with the reason printed, when it
//! is not. The same scenario runs against the emulator in `nodes.rs` and `faults.rs`.

use std::time::Duration;

use backplane::ids::NodeId;
use backplane::node::{Ask, Node, NodeConfig};
use backplane::servicebus::Client;
use backplane::transport::ServiceBusTransport;

#[tokio::test]
async fn the_backplane_against_a_real_namespace() {
    let Ok(connection) = std::env::var("SERVICEBUS_CONNECTION_STRING") else {
        println!(
            "skipped: SERVICEBUS_CONNECTION_STRING is not set (see README, 'Parity with a real namespace')"
        );
        return;
    };
    let client = Client::from_connection_string(&connection).expect("a valid connection string");
    let transport = ServiceBusTransport::new(client, "backplane-parity")
        .await
        .expect("the topic can be created");
    let run = NodeId::random();
    let config = |name: &str| NodeConfig {
        node_id: Some(NodeId::new(&format!("{name}-{run}")).unwrap()),
        receive_timeout: Duration::from_secs(20),
        ..NodeConfig::default()
    };
    let (a, _a_events) = Node::start(transport.clone(), config("pa")).await.unwrap();
    let (b, mut b_events) = Node::start(transport.clone(), config("pb")).await.unwrap();
    for i in 0..20u8 {
        a.publish(vec!["lobby".into()], vec![], vec![i])
            .await
            .unwrap();
    }
    a.publish_to(b.id(), b"direct".to_vec()).await.unwrap();
    let mut broadcasts = Vec::new();
    let mut direct = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while broadcasts.len() < 20 || direct.is_empty() {
        let e = tokio::time::timeout_at(deadline, b_events.recv())
            .await
            .expect("events in time")
            .unwrap();
        if e.rooms.is_some() {
            broadcasts.push(e.payload[0])
        } else {
            direct.push(e.payload)
        }
    }
    assert_eq!(broadcasts, (0..20).collect::<Vec<u8>>());
    assert_eq!(direct, [b"direct".to_vec()]);
    let answering = tokio::spawn(async move {
        while let Some(e) = b_events.recv().await {
            if e.request.is_some() {
                b.reply(&e, b"pong".to_vec()).await.unwrap();
                return b;
            }
        }
        b
    });
    let replies = a
        .request(Ask::All, b"ping".to_vec(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(replies.replies.len(), 1);
    let b = answering.await.unwrap();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
