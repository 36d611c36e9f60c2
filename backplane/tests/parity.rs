//! Parity: the backplane scenario against a real namespace when
//! `SERVICEBUS_CONNECTION_STRING` is set (it creates the topic `backplane-parity` and
//! deletes the nodes' subscriptions at the end); skipped, with the reason printed, when it
//! is not. The same scenarios run against the emulator in `nodes.rs`, `faults.rs` and
//! `servicebus_client.rs`; pointing the variable at the emulator runs these here too.

use std::time::Duration;

use backplane::ids::NodeId;
use backplane::node::{Ask, Node, NodeConfig};
use backplane::servicebus::{Client, Message, PropertyValue};
use backplane::transport::ServiceBusTransport;

fn connection() -> Option<String> {
    let connection = std::env::var("SERVICEBUS_CONNECTION_STRING").ok();
    if connection.is_none() {
        println!(
            "skipped: SERVICEBUS_CONNECTION_STRING is not set (see README, 'Parity with a real namespace')"
        );
    }
    connection
}

/// The runtime scenario of `servicebus_client.rs` on a queue made for this run (deleted at
/// the end): send with properties, batch send, peek-lock, renew, unlock, delivery count,
/// complete, a settle on a lost lock, receive-and-delete, an empty receive.
#[tokio::test]
async fn the_runtime_against_a_real_namespace() {
    let Some(connection) = connection() else {
        return;
    };
    let c = Client::from_connection_string(&connection).expect("a valid connection string");
    let queue = format!("parity-runtime-{}", NodeId::random());
    assert!(c.create_queue_if_missing(&queue).await.unwrap());
    let mut m = Message::new("hello")
        .with_property("room", PropertyValue::String("lobby".into()))
        .with_property("seq", PropertyValue::Int(7));
    m.broker.message_id = Some("m-1".into());
    c.send(&queue, &m).await.unwrap();
    c.send_batch(&queue, &[Message::new("b1"), Message::new("b2")])
        .await
        .unwrap();
    let wait = Duration::from_secs(20);
    let got = c.peek_lock(&queue, wait).await.unwrap().expect("a message");
    assert_eq!(got.body, b"hello");
    assert_eq!(got.broker.message_id.as_deref(), Some("m-1"));
    assert_eq!(got.broker.delivery_count, Some(1));
    assert_eq!(
        got.property("room"),
        Some(&PropertyValue::String("lobby".into()))
    );
    assert_eq!(got.property("seq"), Some(&PropertyValue::Int(7)));
    c.renew(&got).await.unwrap();
    c.unlock(&got).await.unwrap();
    assert!(c.complete(&got).await.unwrap_err().is_lock_lost());
    let again = c
        .peek_lock(&queue, wait)
        .await
        .unwrap()
        .expect("the message again");
    assert_eq!(
        (again.body.as_slice(), again.broker.delivery_count),
        (&b"hello"[..], Some(2))
    );
    c.complete(&again).await.unwrap();
    for body in [&b"b1"[..], b"b2"] {
        let taken = c
            .receive_and_delete(&queue, wait)
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(taken.body, body);
    }
    assert_eq!(
        c.receive_and_delete(&queue, Duration::ZERO).await.unwrap(),
        None
    );
    assert!(c.delete_entity(&queue).await.unwrap());
}

#[tokio::test]
async fn the_backplane_against_a_real_namespace() {
    let Some(connection) = connection() else {
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
    let arrived = testkit::collect_until(Duration::from_secs(120), &mut b_events, |got| {
        got.len() >= 21 && got.iter().any(|e| e.rooms.is_none())
    })
    .await;
    let (broadcasts, direct): (Vec<_>, Vec<_>) =
        arrived.into_iter().partition(|e| e.rooms.is_some());
    let broadcasts: Vec<u8> = broadcasts.into_iter().map(|e| e.payload[0]).collect();
    let direct: Vec<Vec<u8>> = direct.into_iter().map(|e| e.payload).collect();
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
