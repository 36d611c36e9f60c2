//! Three socketioxide chat servers behind one emulator, scaled out by the backplane's
//! adapter, driven by the real Socket.IO client (npm `socket.io-client` 4).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use backplane::node::NodeConfig;
use backplane::socketio::AdapterOptions;
use demo::chat::{ChatNode, ChatOptions};
use integration::sio::{ClientEvent, SioAgent, message_texts};
use serde_json::{Value, json};
use testkit::InProcessEmulator;

const WAIT: Duration = Duration::from_secs(30);

fn options(emulator: &InProcessEmulator, name: &str, topic: &str) -> ChatOptions {
    ChatOptions {
        name: name.into(),
        connection_string: emulator.connection_string(),
        topic: topic.into(),
        bind: "127.0.0.1:0".parse().expect("an address"),
        assets: None,
        client_js: None,
        adapter: AdapterOptions {
            node: NodeConfig {
                receive_timeout: Duration::from_secs(2),
                heartbeat_interval: Duration::from_millis(250),
                dead_after: Duration::from_secs(5),
                ..NodeConfig::default()
            },
            request_timeout: Duration::from_secs(2),
            ..AdapterOptions::default()
        },
        namespaces: vec!["/".into(), "/other".into()],
    }
}

/// Starts `names.len()` chat nodes and waits until each sees all.
async fn cluster(emulator: &InProcessEmulator, names: &[&str]) -> Vec<ChatNode> {
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(
            ChatNode::start(options(emulator, name, "chat"))
                .await
                .expect("chat node starts"),
        );
    }
    see_each_other(&nodes).await;
    nodes
}

/// Polls (with a deadline) until every node counts all of them live.
async fn see_each_other(nodes: &[ChatNode]) {
    let counted = || async {
        let counts: Vec<usize> = nodes.iter().map(|n| n.state.server_count()).collect();
        match counts.iter().all(|c| *c == nodes.len()) {
            true => Ok(()),
            false => Err(counts),
        }
    };
    if let Err(counts) = testkit::wait_until(WAIT, Duration::from_millis(20), counted).await {
        panic!("nodes never saw each other: {counts:?}");
    }
}

/// The texts of the `message` events `client` received.
fn texts(events: &HashMap<String, Vec<ClientEvent>>, client: &str) -> BTreeSet<String> {
    message_texts(events, client).into_iter().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn sorted(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_act_as_one() {
    let emulator = InProcessEmulator::start().await.expect("emulator starts");
    let nodes = cluster(&emulator, &["A", "B", "C"]).await;
    let mut agent = SioAgent::start().await.expect("node.js starts");

    // Two clients per server.
    let mut sids = HashMap::new();
    for (client, node) in [
        ("a1", 0),
        ("a2", 0),
        ("b1", 1),
        ("b2", 1),
        ("c1", 2),
        ("c2", 2),
    ] {
        let (sid, name) = agent
            .connect(client, &nodes[node].url())
            .await
            .expect("client connects");
        assert_eq!(name, ["A", "B", "C"][node]);
        sids.insert(client, sid);
    }
    for (client, room) in [
        ("a1", "red"),
        ("a2", "red"),
        ("a2", "blue"),
        ("b1", "red"),
        ("b2", "blue"),
        ("c1", "red"),
        ("c1", "blue"),
    ] {
        assert_eq!(
            agent.ask(client, "join", json!(room)).await,
            Ok(json!(true))
        );
    }
    assert_eq!(agent.ask("a1", "servers", Value::Null).await, Ok(json!(3)));

    // Room broadcasts with exceptions, from every server.
    let sent = [
        ("a1", json!({"text": "red from a1", "room": "red"})),
        (
            "b2",
            json!({"text": "all but blue from b2", "except": ["blue"]}),
        ),
        ("c2", json!({"text": "all from c2"})),
        (
            "a2",
            json!({"text": "blue but red from a2", "room": "blue", "except": ["red"]}),
        ),
    ];
    for (client, message) in sent {
        assert_eq!(agent.ask(client, "message", message).await, Ok(json!(true)));
    }
    // A fence per sending server: each node's broadcasts arrive in order, so once every
    // client has every fence, it has everything sent before it.
    for client in ["a1", "b1", "c1"] {
        let text = format!("fence from {client}");
        assert_eq!(
            agent.ask(client, "message", json!({"text": text})).await,
            Ok(json!(true))
        );
    }
    let fenced = |events: &HashMap<String, Vec<ClientEvent>>, client: &str| {
        let got = texts(events, client);
        ["a1", "b1", "c1"]
            .iter()
            .filter(|f| **f != client)
            .all(|f| got.contains(&format!("fence from {f}")))
    };
    let clients = ["a1", "a2", "b1", "b2", "c1", "c2"];
    assert!(
        agent
            .wait_until(WAIT, |ev| clients.iter().all(|c| fenced(ev, c)))
            .await,
        "fences did not arrive: {:?}",
        clients.map(|c| agent.received(c, "message"))
    );
    let fences = |me: &str| {
        ["a1", "b1", "c1"]
            .iter()
            .filter(|f| **f != me)
            .map(|f| format!("fence from {f}"))
            .collect::<BTreeSet<_>>()
    };
    let expected: [(&str, &[&str]); 6] = [
        ("a1", &["all but blue from b2", "all from c2"]),
        ("a2", &["red from a1", "all from c2"]),
        (
            "b1",
            &["red from a1", "all but blue from b2", "all from c2"],
        ),
        ("b2", &["all from c2", "blue but red from a2"]),
        ("c1", &["red from a1", "all from c2"]),
        ("c2", &["all but blue from b2"]),
    ];
    let events = {
        let mut all = HashMap::new();
        for c in clients {
            all.insert(c.to_string(), agent.events(c));
        }
        all
    };
    for (client, want) in expected {
        let mut want = set(want);
        want.extend(fences(client));
        assert_eq!(texts(&events, client), want, "what {client} received");
        let count = events[client]
            .iter()
            .filter(|e| e.name == "message")
            .count();
        assert_eq!(count, want.len(), "{client} received a message twice");
    }

    // Acknowledgements from clients on every server come back to the asker.
    let answers = agent
        .ask("c1", "poll", json!("lunch?"))
        .await
        .expect("poll");
    let answered: BTreeSet<String> = answers
        .as_array()
        .expect("a list")
        .iter()
        .map(|a| {
            a["answer"]["client"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(answered, set(&["a1", "a2", "b1", "b2", "c2"]));

    // fetch_sockets and rooms across servers.
    let all: BTreeSet<String> = sids.values().cloned().collect();
    assert_eq!(
        sorted(&agent.ask("b1", "who", Value::Null).await.expect("who")),
        all
    );
    let red: BTreeSet<String> = ["a1", "a2", "b1", "c1"]
        .iter()
        .map(|c| sids[c].clone())
        .collect();
    assert_eq!(
        sorted(&agent.ask("b2", "who", json!("red")).await.expect("who")),
        red
    );
    let rooms = sorted(&agent.ask("c2", "rooms", Value::Null).await.expect("rooms"));
    assert!(rooms.contains("red") && rooms.contains("blue"), "{rooms:?}");

    // Remote join and leave: a client on A puts c2 (on C) in "green", b1 (on B) talks there.
    let c2 = json!({"sid": sids["c2"], "room": "green"});
    assert_eq!(agent.ask("a1", "invite", c2.clone()).await, Ok(json!(true)));
    let green = sorted(&agent.ask("b1", "who", json!("green")).await.expect("who"));
    assert_eq!(green, set(&[&sids["c2"]]));
    let hello = json!({"text": "hello green", "room": "green"});
    assert_eq!(agent.ask("b1", "message", hello).await, Ok(json!(true)));
    assert!(
        agent
            .wait_until(WAIT, |ev| texts(ev, "c2").contains("hello green"))
            .await
    );
    assert_eq!(agent.ask("a1", "evict", c2).await, Ok(json!(true)));
    let green = sorted(&agent.ask("b1", "who", json!("green")).await.expect("who"));
    assert!(green.is_empty(), "{green:?}");

    // Remote disconnect: a1 (on A) kicks b2 (on B).
    assert_eq!(
        agent.ask("a1", "kick", json!(sids["b2"])).await,
        Ok(json!(true))
    );
    assert!(
        agent
            .wait_until(WAIT, |ev| ev
                .get("b2")
                .is_some_and(|e| e.iter().any(|e| e.name == "disconnect")))
            .await,
        "b2 was not disconnected"
    );
    let mut left = all.clone();
    left.remove(&sids["b2"]);
    assert_eq!(
        sorted(&agent.ask("c1", "who", Value::Null).await.expect("who")),
        left
    );

    for node in nodes {
        node.shutdown().await.expect("clean shutdown");
    }
    emulator.stop().await.expect("emulator stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_does_not_hang_the_others() {
    let emulator = InProcessEmulator::start().await.expect("emulator starts");
    let mut nodes = cluster(&emulator, &["A", "B", "C"]).await;
    let mut agent = SioAgent::start().await.expect("node.js starts");
    let mut sids = HashMap::new();
    for (client, node) in [("a1", 0), ("b1", 1), ("c1", 2)] {
        let (sid, _) = agent
            .connect(client, &nodes[node].url())
            .await
            .expect("connects");
        sids.insert(client, sid);
    }
    // C dies without a word: its node stops, its subscription stays, A and B still count
    // it live until its heartbeats are missed.
    let c = nodes.pop().expect("three nodes");
    c.crash().await;

    let who = agent
        .ask("a1", "who", Value::Null)
        .await
        .expect("who answers");
    assert_eq!(sorted(&who), set(&[&sids["a1"], &sids["b1"]]));
    let answers = agent
        .ask("a1", "poll", json!("still there?"))
        .await
        .expect("poll answers");
    let answered: Vec<&str> = answers
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|a| a["answer"]["client"].as_str())
        .collect();
    assert_eq!(answered, vec!["b1"]);
    // Broadcasts keep flowing between the survivors.
    assert_eq!(
        agent
            .ask("b1", "message", json!({"text": "after the crash"}))
            .await,
        Ok(json!(true))
    );
    assert!(
        agent
            .wait_until(WAIT, |ev| texts(ev, "a1").contains("after the crash"))
            .await
    );
    // Once C's heartbeats are missed, the survivors count two servers.
    assert!(
        agent_wait_servers(&mut agent, "a1", 2).await,
        "the dead server was never left out"
    );
    for node in nodes {
        node.shutdown().await.expect("clean shutdown");
    }
    emulator.stop().await.expect("emulator stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_is_announced_to_every_client_by_server_side_emit() {
    let emulator = InProcessEmulator::start().await.expect("emulator starts");
    let mut nodes = cluster(&emulator, &["A", "B"]).await;
    let mut agent = SioAgent::start().await.expect("node.js starts");
    for (client, node) in [("a1", 0), ("b1", 1)] {
        agent
            .connect(client, &nodes[node].url())
            .await
            .expect("connects");
    }
    nodes.push(
        ChatNode::start(options(&emulator, "C", "chat"))
            .await
            .expect("C starts"),
    );
    let announced = |events: &HashMap<String, Vec<ClientEvent>>| {
        ["a1", "b1"].iter().all(|client| {
            events.get(*client).is_some_and(|seen| {
                seen.iter()
                    .any(|e| e.name == "server-joined" && e.data == json!({"node": "C"}))
            })
        })
    };
    assert!(
        agent.wait_until(WAIT, announced).await,
        "{:?}",
        agent.events("a1")
    );
    // Once each, from the one server-side emit.
    for client in ["a1", "b1"] {
        assert_eq!(agent.received(client, "server-joined").len(), 1);
    }
    for node in nodes {
        node.shutdown().await.expect("clean shutdown");
    }
    emulator.stop().await.expect("emulator stops");
}

async fn agent_wait_servers(agent: &mut SioAgent, client: &str, want: u64) -> bool {
    let until = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < until {
        if agent.ask(client, "servers", Value::Null).await == Ok(json!(want)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_kept_apart() {
    let emulator = InProcessEmulator::start().await.expect("emulator starts");
    // A and B serve "/" and "/other", C serves "/" alone. Requests wait for every live
    // server (a ten-minute timeout here): C must answer for the namespace it lacks.
    let mut nodes = Vec::new();
    for (name, namespaces) in [
        ("A", &["/", "/other"][..]),
        ("B", &["/", "/other"]),
        ("C", &["/"]),
    ] {
        let mut o = options(&emulator, name, "chat-ns");
        o.namespaces = namespaces.iter().map(|n| n.to_string()).collect();
        o.adapter.request_timeout = Duration::from_secs(600);
        nodes.push(ChatNode::start(o).await.expect("chat node starts"));
    }
    see_each_other(&nodes).await;
    let mut agent = SioAgent::start().await.expect("node.js starts");
    let mut sids = HashMap::new();
    for (client, node, ns) in [
        ("a1", 0, ""),
        ("oa", 0, "/other"),
        ("b1", 1, ""),
        ("ob", 1, "/other"),
        ("c1", 2, ""),
    ] {
        let url = format!("{}{ns}", nodes[node].url());
        let (sid, _) = agent.connect(client, &url).await.expect("client connects");
        sids.insert(client, sid);
    }
    // Both from node A, in this order: once b1 and c1 have the second, their nodes have
    // handled the first.
    let other = json!({"text": "other only"});
    assert_eq!(agent.ask("oa", "message", other).await, Ok(json!(true)));
    let root = json!({"text": "root only"});
    assert_eq!(agent.ask("a1", "message", root).await, Ok(json!(true)));
    assert!(
        agent
            .wait_until(WAIT, |ev| ["b1", "c1"]
                .iter()
                .all(|c| texts(ev, c).contains("root only"))
                && texts(ev, "ob").contains("other only"))
            .await
    );
    for client in ["b1", "c1"] {
        assert_eq!(agent.received(client, "message").len(), 1, "{client}");
    }
    assert_eq!(agent.received("ob", "message").len(), 1);

    let who_other = sorted(&agent.ask("ob", "who", Value::Null).await.expect("who"));
    assert_eq!(who_other, set(&[&sids["oa"], &sids["ob"]]));
    let who_root = sorted(&agent.ask("b1", "who", Value::Null).await.expect("who"));
    assert_eq!(who_root, set(&[&sids["a1"], &sids["b1"], &sids["c1"]]));

    for node in nodes {
        node.shutdown().await.expect("clean shutdown");
    }
    emulator.stop().await.expect("emulator stops");
}
