//! The harness's emulator is reachable through its own connection string, as an
//! application would reach it; the WebSocket servers' listener turns Nagle off.

use servicebus_wire::{ConnectionString, Credential, sas};
use testkit::{InProcessEmulator, KEY, KEY_NAME};

#[tokio::test]
async fn connection_string_reaches_the_emulator() {
    let emulator = InProcessEmulator::start().await.unwrap();
    let cs = ConnectionString::parse(&emulator.connection_string()).unwrap();
    assert_eq!(cs.base_url(), format!("http://{}", emulator.addr()));
    assert_eq!(
        cs.credential,
        Credential::Key {
            name: KEY_NAME.into(),
            key: KEY.into()
        }
    );

    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/health", cs.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let token = sas::sign(&format!("{}/", cs.base_url()), KEY_NAME, KEY, 4_102_444_800);
    let queues = http
        .get(format!("{}/$Resources/Queues", cs.base_url()))
        .header("authorization", token)
        .send()
        .await
        .unwrap();
    assert_eq!(queues.status(), 200);
    assert!(
        queues
            .text()
            .await
            .unwrap()
            .contains("<title type=\"text\">Queues</title>")
    );
    emulator.stop().await.unwrap();
}

#[tokio::test]
async fn no_delay_sets_tcp_nodelay_on_accepted_connections() {
    use axum::serve::Listener;
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = plain.local_addr().unwrap();
    let mut listener = demo::no_delay(plain);
    let client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (accepted, peer) = listener.accept().await;
    assert_eq!(peer, client.local_addr().unwrap());
    assert!(
        accepted.nodelay().unwrap(),
        "Nagle's algorithm is off on the server's side"
    );
}
