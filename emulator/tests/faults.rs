//! Seeded fault injection (`--faults`, `PUT /$emulator/faults`) and the control API: each
//! effect as a client meets it, the same seed giving the same faults, counts, bad plans
//! answered 400 naming the problem, and peek, purge, reset and clock.

mod common;

use common::{Client, Server, queue};

async fn put_plan(c: &Client, plan: &str) -> common::Reply {
    c.send(
        "PUT",
        "/$emulator/faults",
        Some(plan.to_string()),
        &[],
        Some(c.token()),
    )
    .await
}

fn json(r: &common::Reply) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

async fn setup(c: &Client) {
    assert_eq!(c.put("/orders", queue("")).await.status, 201);
    assert_eq!(c.put("/audit", queue("")).await.status, 201);
}

async fn counts(c: &Client) -> serde_json::Value {
    json(&c.get("/$emulator/faults").await)
}

#[tokio::test]
async fn busy_throttled_and_gone_answer_without_applying() {
    let server = Server::memory().await;
    let c = server.client();
    setup(&c).await;
    let plan = r#"{"seed": 1, "rules": [
        {"operations": ["send"], "entities": ["ord*"], "times": 1,
         "effect": {"type": "serverBusy", "retryAfter": "3"}},
        {"operations": ["send"], "entities": ["orders"], "times": 1,
         "effect": {"type": "status", "status": 429, "retryAfter": "Thu, 01 Jan 1970 00:00:00 GMT"}},
        {"operations": ["send"], "entities": ["orders"], "times": 1,
         "effect": {"type": "status", "status": 410}},
        {"operations": ["send"], "entities": ["orders"], "times": 1,
         "effect": {"type": "status", "status": 500}}
    ]}"#;
    assert_eq!(put_plan(&c, plan).await.status, 200);
    let statuses = [
        (503, Some("3")),
        (429, Some("Thu, 01 Jan 1970 00:00:00 GMT")),
        (410, None),
        (500, None),
        (201, None),
    ];
    for (status, retry_after) in statuses {
        let r = c.post_message("/orders/messages", "m", &[]).await;
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(r.header("retry-after").as_deref(), retry_after);
        if status != 201 {
            assert!(r.body.contains("injected fault"), "{}", r.body);
        }
    }
    // Another entity is untouched; only the last send was applied.
    assert_eq!(
        c.post_message("/audit/messages", "a", &[]).await.status,
        201
    );
    assert_eq!(c.drain("orders").await.len(), 1);
    let seen = counts(&c).await;
    assert_eq!(seen["injected"], 4);
    assert_eq!(seen["counts"][0]["matched"], 5);
    assert_eq!(seen["counts"][0]["injected"], 1);
    server.stop().await;
}

#[tokio::test]
async fn a_lost_ack_applies_the_send_and_closes_the_connection_unanswered() {
    let server = Server::memory().await;
    let c = server.client();
    setup(&c).await;
    let plan = r#"{"rules": [{"operations": ["send"], "entities": ["orders"], "times": 1,
        "effect": {"type": "dropAfterApply"}}]}"#;
    assert_eq!(put_plan(&c, plan).await.status, 200);
    let lost = reqwest::Client::new()
        .post(format!("http://{}/orders/messages", server.addr))
        .header("authorization", c.token())
        .body("sent once, acknowledged never")
        .send()
        .await;
    let error = lost.expect_err("no answer on a dropped connection");
    assert!(!error.is_status(), "{error:?}");
    // The send was applied: a client that retries would now make a duplicate.
    let got = c.drain("orders").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "sent once, acknowledged never");
    server.stop().await;
}

#[tokio::test]
async fn a_lost_lock_and_a_duplicate_delivery_bring_the_message_back() {
    let server = Server::memory().await;
    let c = server.client();
    setup(&c).await;
    let plan = r#"{"rules": [
        {"operations": ["complete"], "times": 1, "effect": {"type": "lockLost"}},
        {"operations": ["peekLock"], "entities": ["audit"], "times": 1,
         "effect": {"type": "duplicateDelivery"}}
    ]}"#;
    assert_eq!(put_plan(&c, plan).await.status, 200);
    let lock = |c: &Client, q: &str| {
        let (c, path) = (c.clone(), format!("/{q}/messages/head?timeout=5"));
        async move { c.send("POST", &path, None, &[], Some(c.token())).await }
    };
    let complete = |c: &Client, r: &common::Reply| {
        let (c, path) = (c.clone(), r.location_path());
        async move { c.delete(&path).await }
    };

    // lockLost: the settle is answered 404 and the message comes back, counted.
    assert_eq!(
        c.post_message("/orders/messages", "o", &[]).await.status,
        201
    );
    let first = lock(&c, "orders").await;
    assert_eq!(first.status, 201);
    let refused = complete(&c, &first).await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    let again = lock(&c, "orders").await;
    assert_eq!((again.status, again.body.as_str()), (201, "o"));
    assert_eq!(again.broker()["DeliveryCount"], 2);
    assert_eq!(complete(&c, &again).await.status, 200);

    // duplicateDelivery: the same message is delivered to the next receiver too; the first
    // receiver's lock is gone.
    assert_eq!(
        c.post_message("/audit/messages", "a", &[]).await.status,
        201
    );
    let first = lock(&c, "audit").await;
    let second = lock(&c, "audit").await;
    assert_eq!((first.status, second.status), (201, 201));
    assert_eq!(
        first.broker()["SequenceNumber"],
        second.broker()["SequenceNumber"]
    );
    assert_eq!(complete(&c, &first).await.status, 404);
    assert_eq!(complete(&c, &second).await.status, 200);
    assert_eq!(counts(&c).await["injected"], 2);
    server.stop().await;
}

/// The statuses of 60 sends under a probability plan with `seed`.
async fn run(seed: u64) -> Vec<u16> {
    let server = Server::memory().await;
    let c = server.client();
    setup(&c).await;
    let plan = format!(
        r#"{{"seed": {seed}, "rules": [
            {{"operations": ["send"], "probability": 0.25, "effect": {{"type": "serverBusy", "retryAfter": "0"}}}},
            {{"operations": ["send"], "probability": 0.25, "effect": {{"type": "status", "status": 500}}}}
        ]}}"#
    );
    assert_eq!(put_plan(&c, &plan).await.status, 200);
    let mut statuses = Vec::new();
    for i in 0..60 {
        let q = if i % 3 == 0 { "audit" } else { "orders" };
        statuses.push(
            c.post_message(&format!("/{q}/messages"), "m", &[])
                .await
                .status,
        );
    }
    server.stop().await;
    statuses
}

#[tokio::test]
async fn the_same_seed_gives_the_same_faults_for_the_same_requests() {
    let (a, b, other) = (run(42).await, run(42).await, run(43).await);
    assert_eq!(a, b);
    assert_ne!(a, other);
    for status in [201, 500, 503] {
        assert!(a.contains(&status), "{a:?}");
    }
}

#[tokio::test]
async fn bad_control_requests_are_answered_400_naming_the_problem() {
    let server = Server::memory().await;
    let c = server.client();
    for (plan, says) in [
        ("{", "EOF"),
        (
            r#"{"rules": [{"operations": ["send"], "probability": 7, "effect": {"type": "dropAfterApply"}}]}"#,
            "rules[0]: probability is 7",
        ),
        (
            r#"{"rules": [{"operations": ["send"], "effect": {"type": "status", "status": 404}}]}"#,
            "500, 429 or 410",
        ),
    ] {
        let r = put_plan(&c, plan).await;
        assert_eq!(r.status, 400, "{}", r.body);
        let body = json(&r);
        assert!(body["error"].as_str().unwrap().contains(says), "{body}");
    }
    assert_eq!(counts(&c).await["plan"], serde_json::Value::Null);
    let r = c.get("/$emulator/peek/orders?count=lots").await;
    assert_eq!(r.status, 400);
    assert!(json(&r)["error"].as_str().unwrap().contains("count"));
    assert_eq!(c.get("/$emulator/nothing").await.status, 404);
    // The control API needs Manage.
    let r = c.send("GET", "/$emulator/faults", None, &[], None).await;
    assert_eq!(r.status, 401);
    server.stop().await;
}

#[tokio::test]
async fn peek_purge_reset_and_clock() {
    let server = Server::memory().await;
    let c = server.client();
    setup(&c).await;
    c.topic_with_subscription("news", "s").await;
    for body in ["one", "two", "three"] {
        let r = c
            .post_message("/orders/messages", body, &[("Priority", "\"high\"")])
            .await;
        assert_eq!(r.status, 201);
    }
    assert_eq!(c.post_message("/news/messages", "n", &[]).await.status, 201);

    // Peek: no lock, no delivery count, any number of times.
    for _ in 0..2 {
        let peeked = json(&c.get("/$emulator/peek/orders?count=2").await);
        let messages = peeked["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0]["body"], "one");
        assert_eq!(messages[0]["state"], "active");
        assert_eq!(messages[0]["deliveryCount"], 0);
        assert_eq!(
            messages[0]["userProperties"]["priority"], "\"high\"",
            "{peeked}"
        );
    }
    let from = json(&c.get("/$emulator/peek/orders?from=3").await);
    assert_eq!(from["messages"][0]["body"], "three");

    // Purge empties a queue; reset of a topic empties its subscriptions.
    let purged = c
        .send(
            "POST",
            "/$emulator/purge/orders",
            None,
            &[],
            Some(c.token()),
        )
        .await;
    assert_eq!(json(&purged)["purged"], 3);
    assert!(c.drain("orders").await.is_empty());
    let reset = c
        .send("POST", "/$emulator/reset/news", None, &[], Some(c.token()))
        .await;
    assert_eq!(json(&reset)["purged"], 1);
    assert_eq!(c.get("/news/Subscriptions/s").await.status, 200);

    // Reset of everything deletes every entity.
    let reset = c
        .send("POST", "/$emulator/reset", None, &[], Some(c.token()))
        .await;
    assert_eq!(json(&reset)["deleted"], 3);
    let r = c.get("/$emulator/peek/orders").await;
    assert_eq!(r.status, 404, "{}", r.body);

    let clock = json(&c.get("/$emulator/clock").await);
    assert_eq!(clock["manual"], false);
    assert!(clock["now"].as_str().unwrap().starts_with("20"));
    server.stop().await;
}
