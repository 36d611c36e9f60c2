//! A message published by the npm `azure-sb` client in the backplane's envelope format
//! (documented in `integration/compat/envelope.js`) is delivered by a backplane node.

use std::time::Duration;

use backplane::ids::NodeId;
use backplane::node::{Node, NodeConfig};
use backplane::servicebus::Client;
use backplane::transport::ServiceBusTransport;
use testkit::{InProcessEmulator, compat_dir, ensure_compat_packages};

#[tokio::test]
async fn an_azure_sb_client_publishes_to_backplane_nodes() {
    ensure_compat_packages();
    let emulator = InProcessEmulator::start().await.unwrap();
    let client = Client::from_connection_string(&emulator.connection_string()).unwrap();
    let transport = ServiceBusTransport::new(client, "interop").await.unwrap();
    let config = NodeConfig {
        node_id: Some(NodeId::new("rust-node").unwrap()),
        receive_timeout: Duration::from_secs(1),
        ..NodeConfig::default()
    };
    let (node, mut events) = Node::start(transport, config).await.unwrap();

    let output = tokio::process::Command::new("node")
        .arg("envelope.js")
        .current_dir(compat_dir())
        .env("EMULATOR_URL", format!("http://{}", emulator.addr()))
        .env("TOPIC", "interop")
        .env("ORIGIN", "js-node")
        .env("PAYLOAD", "hello from azure-sb")
        .output()
        .await
        .expect("node must be installed (Node.js 20+)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
        .await
        .expect("delivered in time")
        .unwrap();
    assert_eq!(event.origin, NodeId::new("js-node").unwrap());
    assert_eq!(event.payload, b"hello from azure-sb");
    assert_eq!(event.rooms, Some((vec!["lobby".to_string()], vec![])));
    node.shutdown().await.unwrap();
    emulator.stop().await.unwrap();
}
