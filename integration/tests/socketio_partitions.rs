//! Room broadcasts spread over four topics (`AdapterOptions::partitions`): three chat
//! servers, the real Socket.IO client, every room's messages in order and exactly once on
//! every server, and each of the four topics carrying some of them.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use backplane::node::{NodeConfig, partition_of};
use backplane::socketio::AdapterOptions;
use demo::chat::{ChatNode, ChatOptions};
use integration::sio::{ClientEvent, SioAgent, message_texts};
use serde_json::json;
use testkit::InProcessEmulator;

const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: usize = 4;
const PER_ROOM: usize = 12;

fn options(emulator: &InProcessEmulator, name: &str) -> ChatOptions {
    ChatOptions {
        name: name.into(),
        connection_string: emulator.connection_string(),
        topic: "parts".into(),
        bind: "127.0.0.1:0".parse().expect("an address"),
        assets: None,
        client_js: None,
        adapter: AdapterOptions {
            node: NodeConfig {
                receive_timeout: Duration::from_secs(2),
                heartbeat_interval: Duration::from_millis(250),
                ..NodeConfig::default()
            },
            request_timeout: Duration::from_secs(2),
            partitions: PARTITIONS,
        },
        namespaces: vec!["/".into()],
    }
}

/// Rooms until every partition has at least one.
fn rooms() -> Vec<String> {
    let mut rooms = Vec::new();
    let mut covered = BTreeSet::new();
    for i in 0.. {
        let room = format!("room-{i}");
        covered.insert(partition_of(std::slice::from_ref(&room), PARTITIONS));
        rooms.push(room);
        if covered.len() == PARTITIONS && rooms.len() >= 6 {
            return rooms;
        }
    }
    unreachable!()
}

/// Messages the emulator took in per entity, from its `/metrics`.
async fn sent_per_topic(emulator: &InProcessEmulator) -> HashMap<String, u64> {
    let text = reqwest::get(format!("http://{}/metrics", emulator.addr()))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter_map(|line| line.strip_prefix("servicebus_emulator_sent_messages_total{entity=\""))
        .filter_map(|rest| {
            let (entity, value) = rest.split_once("\"} ")?;
            Some((entity.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_broadcasts_over_four_topics_keep_order_per_room_exactly_once() {
    let emulator = InProcessEmulator::start().await.expect("emulator starts");
    let mut nodes = Vec::new();
    for name in ["A", "B", "C"] {
        nodes.push(
            ChatNode::start(options(&emulator, name))
                .await
                .expect("chat node starts"),
        );
    }
    let mut agent = SioAgent::start().await.expect("node.js starts");
    let rooms = rooms();
    agent
        .connect("sender", &nodes[0].url())
        .await
        .expect("connects");
    let mut receivers = Vec::new();
    for (node, server) in [(1, "b"), (2, "c")] {
        for room in &rooms {
            let client = format!("{server}-{room}");
            agent
                .connect(&client, &nodes[node].url())
                .await
                .expect("connects");
            assert_eq!(
                agent.ask(&client, "join", json!(room)).await,
                Ok(json!(true))
            );
            receivers.push((client, room.clone()));
        }
    }

    // Interleaved across rooms, each acknowledged (published) before the next.
    for i in 0..PER_ROOM {
        for room in &rooms {
            let sent = agent
                .ask(
                    "sender",
                    "message",
                    json!({"text": format!("{room}:{i}"), "room": room}),
                )
                .await;
            assert_eq!(sent, Ok(json!(true)));
        }
    }
    let want =
        |room: &str| -> Vec<String> { (0..PER_ROOM).map(|i| format!("{room}:{i}")).collect() };
    let all_arrived = |events: &HashMap<String, Vec<ClientEvent>>| {
        receivers
            .iter()
            .all(|(client, _)| message_texts(events, client).len() >= PER_ROOM)
    };
    assert!(
        agent.wait_until(WAIT, all_arrived).await,
        "not every message arrived"
    );
    let events: HashMap<String, Vec<ClientEvent>> = receivers
        .iter()
        .map(|(client, _)| (client.clone(), agent.events(client)))
        .collect();
    for (client, room) in &receivers {
        assert_eq!(message_texts(&events, client), want(room), "{client}");
    }

    // Every topic carried some of the broadcasts.
    let sent = sent_per_topic(&emulator).await;
    eprintln!("messages per entity: {sent:?}");
    for k in 0..PARTITIONS {
        let topic = match k {
            0 => "parts".to_string(),
            k => format!("parts-{k}"),
        };
        assert!(
            sent.get(&topic).copied().unwrap_or(0) > 0,
            "{topic}: {sent:?}"
        );
    }
    for node in nodes {
        node.shutdown().await.expect("clean shutdown");
    }
    emulator.stop().await.expect("emulator stops");
}
