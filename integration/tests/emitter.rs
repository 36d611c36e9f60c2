//! The cluster emitter: a process that is no Socket.IO server emits to rooms of three chat
//! servers (over two partition topics), makes a socket join and leave a room and
//! disconnects one, all by id; a Node.js script does the same through the npm Service Bus
//! SDK (AMQP). Driven with the real Socket.IO client.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use backplane::node::NodeConfig;
use backplane::socketio::{AdapterOptions, ClusterEmitter};
use demo::chat::{ChatNode, ChatOptions};
use integration::sio::{ClientEvent, SioAgent};
use serde_json::{Value, json};
use testkit::InProcessEmulator;

const WAIT: Duration = Duration::from_secs(30);
const TOPIC: &str = "emitted";
const PARTITIONS: usize = 2;

fn options(emulator: &InProcessEmulator, name: &str) -> ChatOptions {
    ChatOptions {
        name: name.into(),
        connection_string: emulator.connection_string(),
        topic: TOPIC.into(),
        bind: "127.0.0.1:0".parse().expect("an address"),
        assets: None,
        client_js: None,
        adapter: AdapterOptions {
            node: NodeConfig {
                receive_timeout: Duration::from_secs(2),
                ..NodeConfig::default()
            },
            request_timeout: Duration::from_secs(2),
            partitions: PARTITIONS,
        },
        namespaces: vec!["/".into()],
    }
}

/// Who received an event named `name`, with what.
fn receivers(events: &HashMap<String, Vec<ClientEvent>>, name: &str) -> BTreeSet<String> {
    events
        .iter()
        .filter(|(_, seen)| seen.iter().any(|e| e.name == name))
        .map(|(client, _)| client.clone())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The socket ids in `room` (every socket with `Null`) as the cluster lists them.
async fn who(agent: &mut SioAgent, room: Value) -> BTreeSet<String> {
    let ids = agent.ask("a1", "who", room).await.expect("who answers");
    ids.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Polls `who` until it lists exactly `want`.
async fn wait_who(agent: &mut SioAgent, room: Value, want: BTreeSet<String>) {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let now = who(agent, room.clone()).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{room}: {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emitter_reaches_the_sockets_of_every_server_from_rust_and_from_node() {
    testkit::ensure_compat_packages();
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
    let mut sids = HashMap::new();
    for (client, node, rooms) in [
        ("a1", 0, vec!["news"]),
        ("b1", 1, vec!["news"]),
        ("c1", 2, vec!["news", "muted"]),
    ] {
        let (sid, _) = agent
            .connect(client, &nodes[node].url())
            .await
            .expect("connects");
        for room in rooms {
            assert_eq!(
                agent.ask(client, "join", json!(room)).await,
                Ok(json!(true))
            );
        }
        sids.insert(client, sid);
    }

    // Rooms and exceptions.
    let emitter = ClusterEmitter::connect(&emulator.connection_string(), TOPIC, PARTITIONS)
        .await
        .expect("the emitter connects");
    emitter
        .of("/")
        .to("news")
        .except("muted")
        .emit("headline", &json!({"n": 1}))
        .await
        .expect("emitted");
    let got = |events: &HashMap<String, Vec<ClientEvent>>| {
        receivers(events, "headline") == set(&["a1", "b1"])
    };
    assert!(
        agent.wait_until(WAIT, got).await,
        "{:?}",
        agent.events("c1")
    );
    assert_eq!(agent.received("a1", "headline"), vec![json!({"n": 1})]);

    // One socket by id joins a room, is reached there alone, and leaves it.
    emitter
        .of("/")
        .socket(&sids["c1"])
        .join(["vip"])
        .await
        .expect("join sent");
    wait_who(&mut agent, json!("vip"), set(&[&sids["c1"]])).await;
    emitter
        .of("/")
        .to("vip")
        .emit("vip-only", "hello")
        .await
        .expect("emitted");
    let got =
        |events: &HashMap<String, Vec<ClientEvent>>| receivers(events, "vip-only") == set(&["c1"]);
    assert!(agent.wait_until(WAIT, got).await);
    emitter
        .of("/")
        .socket(&sids["c1"])
        .leave(["vip"])
        .await
        .expect("leave sent");
    wait_who(&mut agent, json!("vip"), BTreeSet::new()).await;

    // From Node.js, through the npm SDK over AMQP: the same orders reach the same sockets.
    let orders = json!([
        {"op": "emit", "event": "from-node", "data": {"via": "amqp"}, "to": ["news"], "except": ["muted"]},
    ]);
    let output = tokio::process::Command::new("node")
        .arg("emitter.js")
        .current_dir(testkit::compat_dir())
        .env("CONNECTION_STRING", emulator.amqp_connection_string())
        .env("TOPIC", TOPIC)
        .env("ORDERS", orders.to_string())
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got = |events: &HashMap<String, Vec<ClientEvent>>| {
        receivers(events, "from-node") == set(&["a1", "b1"])
    };
    assert!(
        agent.wait_until(WAIT, got).await,
        "{:?}",
        agent.events("a1")
    );
    assert_eq!(
        agent.received("b1", "from-node"),
        vec![json!({"via": "amqp"})]
    );

    // A socket disconnected by id, wherever it is.
    emitter
        .of("/")
        .socket(&sids["b1"])
        .disconnect()
        .await
        .expect("disconnect sent");
    let gone = |events: &HashMap<String, Vec<ClientEvent>>| {
        events
            .get("b1")
            .is_some_and(|seen| seen.iter().any(|e| e.name == "disconnect"))
    };
    assert!(agent.wait_until(WAIT, gone).await);
    wait_who(&mut agent, Value::Null, set(&[&sids["a1"], &sids["c1"]])).await;

    // Each event arrived once.
    for (client, event) in [("a1", "headline"), ("b1", "headline"), ("c1", "vip-only")] {
        assert_eq!(agent.received(client, event).len(), 1, "{client} {event}");
    }
    for node in nodes {
        node.shutdown().await.expect("clean shutdown");
    }
    emulator.stop().await.expect("emulator stops");
}
