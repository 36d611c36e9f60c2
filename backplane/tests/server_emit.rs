//! Server-side emit across three socketioxide servers on the emulator: events to every other
//! server, answers collected within a timeout, a dead server reported and never waited for
//! beyond the timeout.
#![cfg(feature = "socketioxide")]

use std::time::Duration;

use backplane::node::NodeConfig;
use backplane::socketio::{AdapterOptions, AdapterState, ServerEvent, ServiceBusAdapter};
use socketioxide::SocketIo;
use socketioxide::adapter::Emitter;
use socketioxide::extract::SocketRef;
use testkit::InProcessEmulator;
use tokio::sync::mpsc;

type Adapter = ServiceBusAdapter<Emitter>;

/// A bound on every wait, far above what each step needs.
const WAIT: Duration = Duration::from_secs(30);

struct Server {
    state: AdapterState,
    _io: SocketIo<Adapter>,
    /// The server events this server's `notice` handler saw: (sender, text).
    notices: mpsc::UnboundedReceiver<(String, String)>,
}

async fn server(emulator: &InProcessEmulator, name: &'static str) -> Server {
    let options = AdapterOptions {
        node: NodeConfig {
            receive_timeout: Duration::from_secs(2),
            ..NodeConfig::default()
        },
        ..AdapterOptions::default()
    };
    let state = AdapterState::connect(&emulator.connection_string(), "servers", options)
        .await
        .expect("the adapter connects");
    let (tx, notices) = mpsc::unbounded_channel();
    state.on_server_event("notice", move |event: ServerEvent| {
        let text: String = event.data().expect("a text");
        let _ = tx.send((event.from().to_string(), text));
        async {}
    });
    state.on_server_event("load", move |event: ServerEvent| {
        let asked: String = event.data().unwrap_or_default();
        async move { format!("{name}:{asked}") }
    });
    let (_svc, io) = SocketIo::builder()
        .with_adapter::<Adapter>(state.clone())
        .build_svc();
    io.ns("/", async |_: SocketRef<Adapter>| {})
        .await
        .expect("the namespace starts");
    Server {
        state,
        _io: io,
        notices,
    }
}

fn id(server: &Server) -> String {
    server.state.node_id().expect("started").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_emit_to_each_other_and_collect_answers_without_waiting_for_the_dead() {
    let emulator = InProcessEmulator::start().await.expect("emulator starts");
    let a = server(&emulator, "a").await;
    let mut b = server(&emulator, "b").await;
    let mut c = server(&emulator, "c").await;

    // An event without answers reaches every other server once, never the sender.
    a.state
        .server_side_emit("notice", "a joined")
        .await
        .expect("emitted");
    for peer in [&mut b, &mut c] {
        let seen = tokio::time::timeout(WAIT, peer.notices.recv())
            .await
            .expect("the notice in time")
            .expect("the handler runs");
        assert_eq!(seen, (id(&a), "a joined".to_string()));
    }

    // With answers: one from each other server.
    let acks = tokio::time::timeout(
        WAIT,
        a.state
            .server_side_emit_with_ack::<_, String>("load", "cpu", Duration::from_secs(10)),
    )
    .await
    .expect("the answers in time")
    .expect("emitted");
    let mut answers: Vec<(String, String)> = acks
        .answers
        .iter()
        .map(|(n, a)| (n.to_string(), a.clone()))
        .collect();
    answers.sort();
    let mut want = vec![(id(&b), "b:cpu".to_string()), (id(&c), "c:cpu".to_string())];
    want.sort();
    assert_eq!(answers, want);
    assert!(
        acks.missing.is_empty() && acks.unhandled.is_empty(),
        "{acks:?}"
    );

    // An event nobody handles is answered "unhandled" at once, not after the timeout.
    let acks = tokio::time::timeout(
        WAIT,
        a.state
            .server_side_emit_with_ack::<_, String>("nobody", &(), Duration::from_secs(600)),
    )
    .await
    .expect("the unhandled answers come before the timeout")
    .expect("emitted");
    let mut unhandled: Vec<String> = acks.unhandled.iter().map(|n| n.to_string()).collect();
    unhandled.sort();
    let mut want = vec![id(&b), id(&c)];
    want.sort();
    assert_eq!(unhandled, want);

    // A dead server: the live one's answer comes back, the dead one is missing, and the
    // call ends at its timeout.
    let dead = id(&c);
    c.state.crash().await;
    let acks = tokio::time::timeout(
        WAIT,
        a.state
            .server_side_emit_with_ack::<_, String>("load", "mem", Duration::from_secs(2)),
    )
    .await
    .expect("never hangs past the timeout")
    .expect("emitted");
    let answers: Vec<(String, String)> = acks
        .answers
        .iter()
        .map(|(n, a)| (n.to_string(), a.clone()))
        .collect();
    assert_eq!(answers, vec![(id(&b), "b:mem".to_string())]);
    let missing: Vec<String> = acks.missing.iter().map(|n| n.to_string()).collect();
    assert_eq!(missing, vec![dead]);

    // Before its first namespace a state cannot emit; after shutdown it says so.
    let idle = AdapterState::connect(
        &emulator.connection_string(),
        "servers",
        AdapterOptions::default(),
    )
    .await
    .expect("connects");
    assert!(matches!(
        idle.server_side_emit("notice", "x").await,
        Err(backplane::socketio::Error::NotReady)
    ));
    a.state.shutdown().await.expect("shut down");
    assert!(matches!(
        a.state.server_side_emit("notice", "x").await,
        Err(backplane::socketio::Error::Closed)
    ));
    b.state.shutdown().await.expect("shut down");
}
