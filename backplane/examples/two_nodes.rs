//! Two backplane nodes talking through Service Bus: run the emulator first
//! (`cargo run --release -p emulator`), then `cargo run -p backplane --example two_nodes`.
//! Set `SERVICEBUS_CONNECTION_STRING` to use a real namespace instead.

use std::time::Duration;

use backplane::ids::NodeId;
use backplane::node::{Ask, Node, NodeConfig};
use backplane::servicebus::Client;
use backplane::transport::ServiceBusTransport;

const EMULATOR: &str = "Endpoint=sb://127.0.0.1:5300;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connection =
        std::env::var("SERVICEBUS_CONNECTION_STRING").unwrap_or_else(|_| EMULATOR.to_string());
    let client = Client::from_connection_string(&connection)?;
    let transport = ServiceBusTransport::new(client, "backplane-example").await?;
    let config = |name: &str| NodeConfig {
        node_id: Some(NodeId::new(name).expect("a valid id")),
        receive_timeout: Duration::from_secs(5),
        ..NodeConfig::default()
    };
    let (alice, _alice_events) = Node::start(transport.clone(), config("alice")).await?;
    let (bob, mut bob_events) = Node::start(transport, config("bob")).await?;

    for text in ["hello", "from", "alice"] {
        alice
            .publish(vec!["lobby".into()], vec![], text.as_bytes().to_vec())
            .await?;
    }
    for _ in 0..3 {
        let event = bob_events.recv().await.ok_or("bob stopped")?;
        println!(
            "bob got {:?} from {} (rooms {:?})",
            String::from_utf8_lossy(&event.payload),
            event.origin,
            event.rooms
        );
    }

    // Request/response: bob answers alice's question.
    let answering = tokio::spawn(async move {
        while let Some(event) = bob_events.recv().await {
            if event.request.is_some() {
                let _ = bob.reply(&event, b"bob is here".to_vec()).await;
                return bob;
            }
        }
        bob
    });
    let replies = alice
        .request(Ask::All, b"who is there?".to_vec(), Duration::from_secs(10))
        .await?;
    for (node, answer) in &replies.replies {
        println!("{node} answered {:?}", String::from_utf8_lossy(answer));
    }
    println!(
        "missing: {:?}; live nodes seen by alice: {:?}",
        replies.missing,
        alice.live_nodes()
    );
    let bob = answering.await?;
    alice.shutdown().await?;
    bob.shutdown().await?;
    Ok(())
}
