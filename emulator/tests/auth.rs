//! SAS over HTTP: 401 for a missing, malformed, wrong, expired or out-of-scope token, 403
//! for a valid token without the right, and the health check open to all.

mod common;

use common::*;
use emulator::auth::SharedAccessKey;
use servicebus_wire::sas::sign;

async fn server_with_keys() -> Server {
    let mut settings = emulator::Settings::in_memory();
    settings
        .keys
        .push("sender:Send:s3nd".parse::<SharedAccessKey>().unwrap());
    settings
        .keys
        .push("listener:Listen:l1sten".parse::<SharedAccessKey>().unwrap());
    Server::start(settings).await
}

#[tokio::test]
async fn unauthenticated_requests_get_401() {
    let server = server_with_keys().await;
    let c = server.client();
    let root = format!("http://{}/", server.addr);
    let now = chrono::Utc::now().timestamp();
    let cases = [
        (None, "40102"),
        (Some("Bearer abc".to_string()), "40102"),
        (Some("SharedAccessSignature sr=x&se=1".to_string()), "40105"),
        (Some(sign(&root, KEY_NAME, "wrong", now + 60)), "40103"),
        (Some(sign(&root, "nobody", KEY, now + 60)), "40103"),
        (Some(sign(&root, KEY_NAME, KEY, now - 1)), "40106"),
        (
            Some(sign(
                &format!("http://{}/other", server.addr),
                KEY_NAME,
                KEY,
                now + 60,
            )),
            "40104",
        ),
    ];
    for (auth, code) in cases {
        let r = c
            .send("GET", "/$Resources/Queues", None, &[], auth.clone())
            .await;
        assert_eq!(r.status, 401, "{auth:?}: {}", r.body);
        assert_eq!(r.content_type(), "application/xml; charset=utf-8");
        assert!(
            r.detail().starts_with(&format!("SubCode={code}.")),
            "{auth:?}: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn rights_are_enforced() {
    let server = server_with_keys().await;
    let root = server.client();
    root.topic_with_subscription("t", "s").await;

    let sender = Client::new(server.addr, "sender", "s3nd");
    let r = sender.put("/q", queue("")).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.detail().contains("'Manage' claim(s) are required"),
        "{}",
        r.body
    );
    assert_eq!(sender.get("/t").await.status, 403);

    let listener = Client::new(server.addr, "listener", "l1sten");
    assert_eq!(
        listener.get("/t/Subscriptions/s/Rules").await.status,
        200,
        "list rules: Manage or Listen"
    );
    assert_eq!(listener.get("/t/Subscriptions/s").await.status, 403);
    assert_eq!(
        listener.get("/$namespaceinfo").await.status,
        200,
        "any valid token"
    );

    // An entity-scoped token covers the entity and what is below it, nothing else.
    let scoped = sign(
        &format!("http://{}/t", server.addr),
        KEY_NAME,
        KEY,
        chrono::Utc::now().timestamp() + 60,
    );
    let r = root
        .send("GET", "/t/Subscriptions/s", None, &[], Some(scoped.clone()))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        root.send("GET", "/t2", None, &[], Some(scoped))
            .await
            .status,
        401
    );
}
