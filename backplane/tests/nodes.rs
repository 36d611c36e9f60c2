//! Three nodes over the memory transport and over the emulator (Service Bus transport):
//! broadcasts reach the other nodes once each in per-origin order and never the publisher;
//! a targeted event reaches its target only; an oversized event is a typed error.

use std::collections::HashMap;
use std::time::Duration;

use backplane::ids::NodeId;
use backplane::node::{Ask, Node, NodeConfig, PublishError, Received};
use backplane::servicebus::Client;
use backplane::transport::{MemoryTransport, ServiceBusTransport, Transport};
use testkit::InProcessEmulator;
use tokio::sync::mpsc::Receiver;

const EVENTS: u64 = 25;

fn config(name: &str) -> NodeConfig {
    NodeConfig {
        node_id: Some(NodeId::new(name).unwrap()),
        receivers: 3,
        receive_timeout: Duration::from_secs(1),
        ..NodeConfig::default()
    }
}

/// Collects events until `want` arrived or the deadline passes (no fixed sleeps).
async fn collect(stream: &mut Receiver<Received>, want: usize) -> Vec<Received> {
    testkit::collect_until(Duration::from_secs(60), stream, |got| got.len() >= want).await
}

async fn exercise<T: Transport + Clone>(transport: T) {
    let names = ["node-a", "node-b", "node-c"];
    let mut nodes = Vec::new();
    let mut streams = Vec::new();
    for name in names {
        let (node, stream) = Node::start(transport.clone(), config(name)).await.unwrap();
        nodes.push(node);
        streams.push(stream);
    }
    for i in 1..=EVENTS {
        for node in &nodes {
            node.publish(
                vec!["lobby".into()],
                vec!["muted".into()],
                format!("{}:{i}", node.id()).into_bytes(),
            )
            .await
            .unwrap();
        }
    }
    for (k, stream) in streams.iter_mut().enumerate() {
        let me = nodes[k].id().clone();
        let got = collect(stream, (2 * EVENTS) as usize).await;
        assert_eq!(
            got.len(),
            (2 * EVENTS) as usize,
            "{me} received {} events: {:?}",
            got.len(),
            got.iter()
                .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
                .collect::<Vec<_>>()
        );
        let mut by_origin: HashMap<NodeId, Vec<u64>> = HashMap::new();
        for e in &got {
            assert_ne!(e.origin, me, "a node never receives its own broadcast");
            assert_eq!(
                e.rooms,
                Some((vec!["lobby".to_string()], vec!["muted".to_string()]))
            );
            assert_eq!(e.request, None);
            let text = String::from_utf8(e.payload.clone()).unwrap();
            let (origin, i) = text.split_once(':').unwrap();
            assert_eq!(origin, e.origin.as_str());
            by_origin
                .entry(e.origin.clone())
                .or_default()
                .push(i.parse().unwrap());
        }
        for (origin, numbers) in by_origin {
            assert_eq!(
                numbers,
                (1..=EVENTS).collect::<Vec<_>>(),
                "{me}: events of {origin} once each, in order"
            );
        }
    }
    // A targeted event reaches its target only.
    nodes[0]
        .publish_to(nodes[1].id(), b"just for b".to_vec())
        .await
        .unwrap();
    let to_b = collect(&mut streams[1], 1).await;
    assert_eq!(to_b.len(), 1);
    assert_eq!(
        (to_b[0].payload.as_slice(), &to_b[0].rooms),
        (&b"just for b"[..], &None)
    );
    // Then a broadcast from b: c gets only that (the targeted one never reached it).
    nodes[1]
        .publish(vec![], vec![], b"after".to_vec())
        .await
        .unwrap();
    let at_c = collect(&mut streams[2], 1).await;
    assert_eq!(
        at_c.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
        [b"after".to_vec()]
    );
    // One event larger than a message: a typed error, nothing sent.
    let huge = vec![0u8; transport.max_message_bytes() + 1];
    assert!(matches!(
        nodes[0].publish(vec![], vec![], huge).await,
        Err(PublishError::TooLarge(_))
    ));
    assert_eq!(
        nodes[0]
            .counters()
            .published
            .load(std::sync::atomic::Ordering::Relaxed),
        EVENTS + 1
    );
    let before = transport.nodes().await.unwrap().len();
    assert_eq!(before, 3);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    assert!(
        transport.nodes().await.unwrap().is_empty(),
        "graceful shutdown removes each node's place"
    );
}

/// Answers every request with `answer` until aborted.
fn responder<T: Transport>(
    node: std::sync::Arc<Node<T>>,
    mut events: Receiver<Received>,
    answer: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if e.request.is_some() {
                node.reply(&e, answer.as_bytes().to_vec()).await.unwrap();
            }
        }
    })
}

async fn requests<T: Transport + Clone>(transport: T) {
    let (a, _a_events) = Node::start(transport.clone(), config("req-a"))
        .await
        .unwrap();
    let (b, b_events) = Node::start(transport.clone(), config("req-b"))
        .await
        .unwrap();
    let (c, c_events) = Node::start(transport.clone(), config("req-c"))
        .await
        .unwrap();
    let (b, c) = (std::sync::Arc::new(b), std::sync::Arc::new(c));
    let rb = responder(b.clone(), b_events, "pong-b");
    let rc = responder(c.clone(), c_events, "pong-c");

    let mut all = a
        .request(Ask::All, b"ping".to_vec(), Duration::from_secs(30))
        .await
        .unwrap();
    all.replies.sort();
    assert_eq!(
        all.replies,
        vec![
            (b.id().clone(), b"pong-b".to_vec()),
            (c.id().clone(), b"pong-c".to_vec())
        ]
    );
    assert!(all.missing.is_empty());
    let one = a
        .request(
            Ask::Node(b.id().clone()),
            b"ping".to_vec(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(
        (one.replies, one.missing),
        (vec![(b.id().clone(), b"pong-b".to_vec())], vec![])
    );

    // c dies: a request to all answers with b's reply and c missing, by the timeout.
    rc.abort();
    let _ = rc.await;
    let Ok(c) = std::sync::Arc::try_unwrap(c) else {
        panic!("c is still shared")
    };
    let c_id = c.id().clone();
    c.crash().await;
    let partial = a
        .request(Ask::All, b"ping".to_vec(), Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(partial.replies, vec![(b.id().clone(), b"pong-b".to_vec())]);
    assert_eq!(partial.missing, vec![c_id]);

    rb.abort();
    let _ = rb.await;
    let Ok(b) = std::sync::Arc::try_unwrap(b) else {
        panic!("b is still shared")
    };
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn three_nodes_over_memory() {
    exercise(MemoryTransport::new()).await;
}

#[tokio::test]
async fn requests_over_memory() {
    requests(MemoryTransport::new()).await;
}

#[tokio::test]
async fn requests_over_the_emulator() {
    let emulator = InProcessEmulator::start().await.unwrap();
    let client = Client::from_connection_string(&emulator.connection_string()).unwrap();
    requests(ServiceBusTransport::new(client, "requests").await.unwrap()).await;
    emulator.stop().await.unwrap();
}

#[tokio::test]
async fn three_nodes_over_the_emulator() {
    let emulator = InProcessEmulator::start().await.unwrap();
    let client = Client::from_connection_string(&emulator.connection_string()).unwrap();
    let transport = ServiceBusTransport::new(client, "backplane").await.unwrap();
    exercise(transport).await;
    emulator.stop().await.unwrap();
}

// postmortem: with packing off, 200 messages over 3 receivers once delivered event 128
// last: tokio's cooperative budget (128 operations per poll) made one receiver's channel
// send yield after the reorder buffer had released its event, and another receiver handed
// later events over first. Release-and-hand-over is now one turn (Shared::turn).
/// 200 broadcasts published at once: packed into one message (the current-thread runtime
/// lets every publish enqueue before the first send), or 200 messages with packing off;
/// the other node gets all 200 in order either way.
async fn packing<T: Transport + Clone>(transport: T, packing: bool) {
    let a_config = NodeConfig {
        packing,
        ..config(if packing { "pack-a" } else { "nopack-a" })
    };
    let (a, _a_events) = Node::start(transport.clone(), a_config).await.unwrap();
    let (b, mut b_events) = Node::start(
        transport.clone(),
        config(if packing { "pack-b" } else { "nopack-b" }),
    )
    .await
    .unwrap();
    let publishes = (0..200u32).map(|i| a.publish(vec![], vec![], i.to_be_bytes().to_vec()));
    for outcome in futures_join_all(publishes).await {
        outcome.unwrap();
    }
    let sent = a
        .counters()
        .messages_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    if packing {
        assert_eq!(sent, 1, "200 small events in one message");
    } else {
        assert_eq!(sent, 200);
    }
    let got = collect(&mut b_events, 200).await;
    let numbers: Vec<u32> = got
        .iter()
        .map(|e| u32::from_be_bytes(e.payload.clone().try_into().unwrap()))
        .collect();
    let c = b.counters();
    let detail = format!(
        "packing {packing}: duplicates {} gaps {} delivered {}",
        c.duplicates.load(std::sync::atomic::Ordering::Relaxed),
        c.gaps_skipped.load(std::sync::atomic::Ordering::Relaxed),
        c.delivered.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(numbers, (0..200).collect::<Vec<_>>(), "{detail}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Polls every future once before awaiting any (all publishes enqueue first).
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

#[tokio::test]
async fn packing_over_memory() {
    packing(MemoryTransport::new(), true).await;
    packing(MemoryTransport::new(), false).await;
}

#[tokio::test]
async fn packing_over_the_emulator() {
    let emulator = InProcessEmulator::start().await.unwrap();
    let client = Client::from_connection_string(&emulator.connection_string()).unwrap();
    let transport = ServiceBusTransport::new(client, "packing").await.unwrap();
    packing(transport.clone(), true).await;
    packing(transport, false).await;
    emulator.stop().await.unwrap();
}

#[tokio::test]
async fn duplicates_injected_by_the_bus_are_suppressed() {
    use backplane::envelope::{Envelope, Event, Kind, Target};
    use backplane::transport::Audience;
    let transport = MemoryTransport::new();
    let (b, mut events) = Node::start(transport.clone(), config("dup-b"))
        .await
        .unwrap();
    let origin = NodeId::new("dup-a").unwrap();
    let message = |seq: u64| {
        Envelope {
            origin: origin.clone(),
            events: vec![Event {
                seq,
                kind: Kind::Broadcast,
                target: Target::Rooms {
                    rooms: vec![],
                    except: vec![],
                },
                payload: vec![seq as u8],
            }],
        }
        .encode()
    };
    // The bus delivers 1, 2, 2, 1, 3, 3 (at-least-once): the application sees 1, 2, 3.
    for seq in [1, 2, 2, 1, 3, 3] {
        transport
            .publish(&origin, Audience::Others, message(seq))
            .await
            .unwrap();
    }
    let got = collect(&mut events, 3).await;
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    let all_seen = || async {
        match b
            .counters()
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            n if n >= 3 => Ok(()),
            n => Err(n),
        }
    };
    testkit::wait_until(Duration::from_secs(30), Duration::from_millis(5), all_seen)
        .await
        .expect("duplicates not all seen");
    assert!(
        tokio::time::timeout(Duration::from_millis(50), events.recv())
            .await
            .is_err(),
        "nothing more delivered"
    );
    b.shutdown().await.unwrap();
}

/// Partitioned over 3 topics by room: each room's events stay in order, every event
/// arrives once, and the rooms spread over the topics.
#[tokio::test]
async fn partitioning_over_three_topics_keeps_order_per_room() {
    let emulator = InProcessEmulator::start().await.unwrap();
    let client = Client::from_connection_string(&emulator.connection_string()).unwrap();
    let mut topics = Vec::new();
    for p in 0..3 {
        topics.push(
            ServiceBusTransport::new(client.clone(), &format!("part-{p}"))
                .await
                .unwrap(),
        );
    }
    let (a, _a_events) = Node::start_partitioned(topics.clone(), config("part-a"))
        .await
        .unwrap();
    let (b, mut b_events) = Node::start_partitioned(topics.clone(), config("part-b"))
        .await
        .unwrap();
    let rooms = ["red", "green", "blue", "amber", "teal", "plum"];
    for i in 0..60u8 {
        let room = rooms[usize::from(i) % rooms.len()];
        a.publish(vec![room.to_string()], vec![], vec![i])
            .await
            .unwrap();
    }
    let got = collect(&mut b_events, 60).await;
    assert_eq!(got.len(), 60);
    for room in rooms {
        let numbers: Vec<u8> = got
            .iter()
            .filter(|e| e.rooms.as_ref().unwrap().0 == [room.to_string()])
            .map(|e| e.payload[0])
            .collect();
        let expected: Vec<u8> = (0..60u8)
            .filter(|i| rooms[usize::from(*i) % rooms.len()] == room)
            .collect();
        assert_eq!(numbers, expected, "room {room} in order");
    }
    // Every node subscribes to every partition, and the test's rooms cover several.
    for p in 0..3 {
        assert_eq!(
            client
                .list_subscriptions(&format!("part-{p}"))
                .await
                .unwrap()
                .len(),
            2
        );
    }
    let partitions: std::collections::BTreeSet<usize> = rooms
        .iter()
        .map(|r| backplane::node::partition_of(&[r.to_string()], 3))
        .collect();
    assert!(
        partitions.len() > 1,
        "the test's rooms hash to several partitions: {partitions:?}"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    for p in 0..3 {
        assert!(
            client
                .list_subscriptions(&format!("part-{p}"))
                .await
                .unwrap()
                .is_empty(),
            "shutdown closes every partition"
        );
    }
    emulator.stop().await.unwrap();
}

// postmortem: targeted events once shared the broadcasts' numbering, so every node but the
// target saw a gap and held the origin's next broadcasts for the gap timeout (found by the
// paced latency benchmark: p99 near 200 ms). Targeted events now have their own lane.
#[tokio::test]
async fn a_targeted_event_leaves_no_gap_for_the_other_nodes() {
    let transport = MemoryTransport::new();
    let (a, _a_events) = Node::start(transport.clone(), config("lane-a"))
        .await
        .unwrap();
    let (b, mut b_events) = Node::start(transport.clone(), config("lane-b"))
        .await
        .unwrap();
    let (c, mut c_events) = Node::start(transport.clone(), config("lane-c"))
        .await
        .unwrap();
    a.publish(vec![], vec![], b"first".to_vec()).await.unwrap();
    a.publish_to(b.id(), b"only b".to_vec()).await.unwrap();
    a.publish_to(b.id(), b"only b again".to_vec())
        .await
        .unwrap();
    a.publish(vec![], vec![], b"second".to_vec()).await.unwrap();
    let at_c: Vec<Vec<u8>> = collect(&mut c_events, 2)
        .await
        .into_iter()
        .map(|e| e.payload)
        .collect();
    assert_eq!(at_c, [b"first".to_vec(), b"second".to_vec()]);
    assert_eq!(
        c.counters()
            .gaps_skipped
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no gap waited for at c"
    );
    let at_b: Vec<Vec<u8>> = collect(&mut b_events, 4)
        .await
        .into_iter()
        .map(|e| e.payload)
        .collect();
    assert_eq!(at_b.len(), 4);
    assert_eq!(
        b.counters()
            .gaps_skipped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}
