//! The Rust SDK's released Service Bus crate, `azure_messaging_servicebus` 0.21 (the legacy
//! REST client of the `legacy` branch; the AMQP crate that replaces it is unreleased), sends,
//! receives and settles against the emulator: queue and topic clients, receive-and-delete,
//! peek-lock with its `BrokerProperties`, renew, unlock and delete through the lock's
//! `Location`, custom properties, a wrong key.
//!
//! The crate builds every URL as `https://{namespace}.servicebus.windows.net/...` and has no
//! endpoint setting; its one seam is the `HttpClient` it is given. So the test gives it one
//! that sends each request, unchanged but for scheme, host and port, to the emulator. What
//! the crate signs (`sr` names the Azure host), sends and parses is its own.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use azure_core_legacy::{HttpClient, Request, Response, StatusCode};
use azure_messaging_servicebus::prelude::*;
use azure_messaging_servicebus::service_bus::SendMessageOptions;
use common::*;

/// Sends the crate's requests to the emulator at `addr` over plain HTTP.
#[derive(Debug)]
struct ToEmulator {
    addr: SocketAddr,
    http: reqwest::Client,
}

#[async_trait::async_trait]
impl HttpClient for ToEmulator {
    async fn execute_request(&self, request: &Request) -> azure_core_legacy::Result<Response> {
        let mut request = request.clone();
        let url = request.url_mut();
        url.set_scheme("http").expect("http is a scheme");
        url.set_host(Some(&self.addr.ip().to_string()))
            .expect("an IP is a host");
        url.set_port(Some(self.addr.port())).expect("a port");
        self.http.execute_request(&request).await
    }
}

fn http(server: &Server) -> Arc<dyn HttpClient> {
    Arc::new(ToEmulator {
        addr: server.addr,
        http: reqwest::Client::new(),
    })
}

fn status(e: &azure_core_legacy::Error) -> Option<StatusCode> {
    match e.kind() {
        azure_core_legacy::error::ErrorKind::HttpResponse { status, .. } => Some(*status),
        _ => None,
    }
}

#[tokio::test]
async fn the_released_rust_crate_sends_receives_and_settles() {
    let server = Server::memory().await;
    let c = server.client();
    assert_eq!(c.put("/legacy", queue("")).await.status, 201);
    let namespace = emulator::Settings::in_memory().namespace;
    let queue = QueueClient::new(http(&server), namespace.as_str(), "legacy", KEY_NAME, KEY)
        .expect("a queue client");

    // Send with a content type, broker-settable properties left to the service, and a
    // custom property; receive-and-delete gives the body back.
    let options = SendMessageOptions {
        content_type: Some("text/plain".into()),
        custom_properties: Some(HashMap::from([("color".into(), "blue".into())])),
        ..SendMessageOptions::default()
    };
    queue
        .send_message("first", Some(options))
        .await
        .expect("sent");
    assert_eq!(
        queue.receive_and_delete_message().await.expect("received"),
        "first"
    );

    // Peek-lock: the crate parses BrokerProperties (RFC 2822 dates, lock token, state)
    // and keeps the lock's Location for settling.
    queue.send_message("second", None).await.expect("sent");
    let locked = queue
        .peek_lock_message2(Some(Duration::from_secs(5)))
        .await
        .expect("locked");
    assert_eq!(locked.body(), "second");
    assert_eq!(locked.status(), &StatusCode::Created);
    let props = locked.broker_properties().expect("BrokerProperties parsed");
    assert_eq!(props.delivery_count, 1);
    assert_eq!(props.state, "Active");
    assert!(!props.lock_token.is_empty() && !props.message_id.is_empty());
    locked.renew_message_lock().await.expect("lock renewed");
    locked.unlock_message().await.expect("unlocked");

    // Unlocked, it comes back with a higher delivery count; delete settles it.
    let again = queue
        .peek_lock_message2(Some(Duration::from_secs(5)))
        .await
        .expect("locked again");
    let props = again.broker_properties().expect("BrokerProperties parsed");
    assert_eq!((again.body().as_str(), props.delivery_count), ("second", 2));
    again.delete_message().await.expect("completed");
    assert_eq!(c.drain("legacy").await.len(), 0, "nothing left");
    // A lock already settled is gone.
    let gone = again.delete_message().await.expect_err("settled twice");
    assert_eq!(status(&gone), Some(StatusCode::NotFound), "{gone:?}");

    // Topics: the sender and a subscription's receiver.
    c.topic_with_subscription("news", "all").await;
    let topic_client = TopicClient::new(http(&server), namespace.as_str(), "news", KEY_NAME, KEY)
        .expect("a topic client");
    topic_client
        .topic_sender()
        .send_message("headline", None)
        .await
        .expect("published");
    let receiver = topic_client.subscription_receiver("all");
    assert_eq!(
        receiver
            .receive_and_delete_message()
            .await
            .expect("received"),
        "headline"
    );

    // A wrong key: the crate's error carries the 401.
    let wrong = QueueClient::new(
        http(&server),
        namespace.as_str(),
        "legacy",
        KEY_NAME,
        "nope",
    )
    .expect("a queue client");
    let refused = wrong.send_message("x", None).await.expect_err("refused");
    assert_eq!(
        status(&refused),
        Some(StatusCode::Unauthorized),
        "{refused:?}"
    );
    // A missing queue: 404.
    let missing = QueueClient::new(http(&server), namespace.as_str(), "nowhere", KEY_NAME, KEY)
        .expect("a queue client");
    let err = missing.send_message("x", None).await.expect_err("no queue");
    assert_eq!(status(&err), Some(StatusCode::NotFound), "{err:?}");
    server.stop().await;
}
