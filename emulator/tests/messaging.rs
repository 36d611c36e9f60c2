//! The messaging runtime over HTTP: send, receive, lock, settle, rules, dead-letter, TTL,
//! scheduling, long polls and recovery.

mod common;

use common::*;
use emulator::config::ClockMode;

async fn manual() -> Server {
    Server::start(emulator::Settings {
        clock: ClockMode::Manual,
        ..emulator::Settings::in_memory()
    })
    .await
}

async fn advance(c: &Client, seconds: u64) {
    let r = c
        .send(
            "POST",
            &format!("/$emulator/clock/advance?seconds={seconds}"),
            None,
            &[],
            Some(c.token()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn peek(c: &Client, path: &str) -> Reply {
    c.send(
        "POST",
        &format!("{path}/messages/head?timeout=0"),
        None,
        &[],
        Some(c.token()),
    )
    .await
}

async fn take(c: &Client, path: &str) -> Reply {
    c.send(
        "DELETE",
        &format!("{path}/messages/head?timeout=0"),
        None,
        &[],
        Some(c.token()),
    )
    .await
}

#[tokio::test]
async fn queue_send_peek_lock_renew_unlock_complete() {
    let server = Server::memory().await;
    let c = server.client();
    assert_eq!(
        c.put("/q", queue("<LockDuration>PT30S</LockDuration>"))
            .await
            .status,
        201
    );
    // As legacy Node sends it: JSON numbers, unescaped quotes, dates with +0000.
    let sent = c
        .post_message(
            "/q/messages?timeout=60",
            "hello",
            &[
                ("brokerproperties", r#"{"MessageId":"m-1","Label":"greeting","CorrelationId":"c-1","TimeToLive":3600,"State":"Active","SequenceNumber":99}"#),
                ("content-type", "text/plain"),
                ("color", "\"red\""),
                ("n", "42"),
                ("flag", "true"),
                ("ratio", "2.5"),
                ("when", "\"Tue, 02 Jan 2024 03:04:05 GMT+0000\""),
                ("quote", "\"say \"hi\"\""),
            ],
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    assert_eq!(text(&c.get("/q").await.description(), "MessageCount"), "1");

    let m = peek(&c, "/q").await;
    assert_eq!(m.status, 201, "{}", m.body);
    assert_eq!(m.body, "hello");
    assert_eq!(m.header("content-type").as_deref(), Some("text/plain"));
    for (name, value) in [
        ("color", "\"red\""),
        ("n", "42"),
        ("flag", "true"),
        ("ratio", "2.5"),
        ("when", "\"Tue, 02 Jan 2024 03:04:05 GMT+0000\""),
        ("quote", "\"say \"hi\"\""),
    ] {
        assert_eq!(
            m.header(name).as_deref(),
            Some(value),
            "{name} comes back exactly as sent"
        );
    }
    let b = m.broker();
    assert_eq!(b["MessageId"], "m-1");
    assert_eq!(b["Label"], "greeting");
    assert_eq!(b["CorrelationId"], "c-1");
    assert_eq!(
        b["SequenceNumber"], 1,
        "broker-set fields sent by a client are ignored"
    );
    assert_eq!(b["DeliveryCount"], 1);
    assert_eq!(b["State"], "Active");
    assert_eq!(b["TimeToLive"], 3600.0);
    let token = b["LockToken"].as_str().unwrap().to_string();
    assert!(b["LockedUntilUtc"].as_str().unwrap().ends_with("GMT"));
    assert!(b["EnqueuedTimeUtc"].as_str().unwrap().ends_with("GMT"));
    assert_eq!(
        m.header("location"),
        Some(format!("http://{}/q/messages/1/{token}", server.addr))
    );
    // Nothing else is receivable while it is locked.
    assert_eq!(peek(&c, "/q").await.status, 204);

    let settle = |method: &'static str, path: String| {
        let c = c.clone();
        async move {
            c.send(method, &path, None, &[], Some(c.token()))
                .await
                .status
        }
    };
    assert_eq!(
        settle("POST", format!("/q/messages/1/{token}")).await,
        200,
        "renew"
    );
    assert_eq!(
        settle("PUT", format!("/q/messages/m-1/{token}")).await,
        200,
        "unlock by message id"
    );
    assert_eq!(
        settle("PUT", format!("/q/messages/1/{token}")).await,
        404,
        "the lock is gone"
    );

    let again = peek(&c, "/q").await;
    assert_eq!(again.broker()["DeliveryCount"], 2);
    let token = again.broker()["LockToken"].as_str().unwrap().to_string();
    assert_eq!(
        settle("DELETE", format!("/q/messages/2/{token}")).await,
        404,
        "wrong sequence number"
    );
    assert_eq!(
        settle("DELETE", "/q/messages/1/not-a-token".to_string()).await,
        404
    );
    assert_eq!(
        settle("DELETE", again.location_path()).await,
        200,
        "complete at Location"
    );
    assert_eq!(
        settle("DELETE", again.location_path()).await,
        404,
        "complete twice"
    );
    assert_eq!(peek(&c, "/q").await.status, 204);
    assert_eq!(text(&c.get("/q").await.description(), "MessageCount"), "0");
}

#[tokio::test]
async fn receive_and_delete_batches_and_errors() {
    let server = Server::memory().await;
    let c = server.client();
    c.put(
        "/q",
        queue("<MaxMessageSizeInKilobytes>1</MaxMessageSizeInKilobytes>"),
    )
    .await;
    // Batch as legacy Python sends it: values as strings.
    let batch = r#"[{"Body": "b-1", "UserProperties": {"i": "1", "color": "red"}, "BrokerProperties": {"MessageId": "b-1", "TimeToLive": "60"}}, {"Body": "b-2", "UserProperties": {"flag": "false"}}, {"Body": "aGk=", "IsBodyBase64": true}]"#;
    let sent = c
        .post_message(
            "/q/messages",
            batch,
            &[(
                "content-type",
                "application/vnd.microsoft.servicebus.json; charset=utf-8",
            )],
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let first = take(&c, "/q").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, "b-1");
    assert_eq!(first.header("i").as_deref(), Some("1"));
    assert_eq!(first.header("color").as_deref(), Some("\"red\""));
    assert!(
        first.header("location").is_none(),
        "no Location without a lock"
    );
    assert!(first.broker().get("LockToken").is_none());
    assert_eq!(first.broker()["MessageId"], "b-1");
    assert_eq!(
        take(&c, "/q").await.header("flag").as_deref(),
        Some("false")
    );
    assert_eq!(take(&c, "/q").await.body, "hi");
    assert_eq!(take(&c, "/q").await.status, 204);

    // Errors, each in the Service Bus format, and nothing enqueued.
    let too_big = "x".repeat(1100);
    let r = c.post_message("/q/messages", &too_big, &[]).await;
    assert_eq!(r.status, 403);
    assert!(
        r.detail().starts_with("SubCode=40300") && r.detail().contains("too large"),
        "{}",
        r.body
    );
    let r = c
        .post_message(
            "/q/messages",
            &format!(r#"[{{"Body":"ok"}},{{"Body":"{too_big}"}}]"#),
            &[("content-type", "application/vnd.microsoft.servicebus.json")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        take(&c, "/q").await.status,
        204,
        "no part of a refused batch is enqueued"
    );
    let r = c
        .post_message(
            "/q/messages",
            "x",
            &[("brokerproperties", r#"{"TimeToLive":"soon"}"#)],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.detail().contains("TimeToLive"), "{}", r.body);
    let r = c
        .post_message(
            "/q/messages",
            "[1]",
            &[("content-type", "application/vnd.microsoft.servicebus.json")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.detail().contains("message 0"), "{}", r.body);
    assert_eq!(c.post_message("/nope/messages", "x", &[]).await.status, 404);
    assert_eq!(take(&c, "/nope").await.status, 404);
    assert_eq!(
        c.send(
            "POST",
            "/q/messages/head?timeout=soon",
            None,
            &[],
            Some(c.token())
        )
        .await
        .status,
        400
    );

    // Rights: Send cannot receive, Listen cannot send.
    let mut settings = emulator::Settings::in_memory();
    settings.keys.push("s:Send:k".parse().unwrap());
    settings.keys.push("l:Listen:k".parse().unwrap());
    let server = Server::start(settings).await;
    server.client().put("/q", queue("")).await;
    let sender = Client::new(server.addr, "s", "k");
    let listener = Client::new(server.addr, "l", "k");
    assert_eq!(
        sender.post_message("/q/messages", "x", &[]).await.status,
        201
    );
    assert_eq!(take(&sender, "/q").await.status, 403);
    assert_eq!(
        listener.post_message("/q/messages", "x", &[]).await.status,
        403
    );
    assert_eq!(take(&listener, "/q").await.status, 200);
}

#[tokio::test]
async fn topic_fan_out_through_rules() {
    let server = Server::memory().await;
    let c = server.client();
    c.put("/t", topic("")).await;
    for s in ["all", "red", "corr", "tagged", "none"] {
        assert_eq!(
            c.put(&format!("/t/Subscriptions/{s}"), subscription(""))
                .await
                .status,
            201
        );
    }
    for s in ["red", "corr", "tagged", "none"] {
        assert_eq!(
            c.delete(&format!("/t/Subscriptions/{s}/Rules/$Default"))
                .await
                .status,
            200
        );
    }
    let sql = |e: &str| {
        rule(&format!(
            r#"<Filter i:type="SqlFilter"><SqlExpression>{e}</SqlExpression></Filter>"#
        ))
    };
    assert_eq!(
        c.put(
            "/t/Subscriptions/red/Rules/r",
            sql("color = 'red' AND n &gt; 5")
        )
        .await
        .status,
        201
    );
    assert_eq!(c.put("/t/Subscriptions/corr/Rules/r", rule(r#"<Filter i:type="CorrelationFilter"><To>node-a</To><Properties><KeyValueOfstringanyType><Key>kind</Key><Value i:type="d6p1:string" xmlns:d6p1="http://www.w3.org/2001/XMLSchema">reply</Value></KeyValueOfstringanyType></Properties></Filter>"#)).await.status, 201);
    assert_eq!(c.put("/t/Subscriptions/tagged/Rules/r", rule(r#"<Filter i:type="SqlFilter"><SqlExpression>sys.Label = 'x'</SqlExpression></Filter><Action i:type="SqlRuleAction"><SqlExpression>SET tagged = 'yes'; REMOVE color</SqlExpression></Action>"#)).await.status, 201);

    let send = |body: &'static str,
                broker: &'static str,
                color: &'static str,
                n: &'static str,
                kind: &'static str| {
        let c = c.clone();
        async move {
            c.post_message(
                "/t/messages",
                body,
                &[
                    ("brokerproperties", broker),
                    ("color", color),
                    ("n", n),
                    ("kind", kind),
                ],
            )
            .await
            .status
        }
    };
    assert_eq!(
        send(
            "1",
            r#"{"Label":"x","To":"node-a"}"#,
            "\"red\"",
            "9",
            "\"reply\""
        )
        .await,
        201
    );
    assert_eq!(
        send("2", r#"{"Label":"y"}"#, "\"red\"", "1", "\"other\"").await,
        201
    );
    assert_eq!(
        send("3", r#"{"To":"node-b"}"#, "\"blue\"", "9", "\"reply\"").await,
        201
    );

    let drain = |sub: &'static str| {
        let c = c.clone();
        async move {
            let mut bodies = Vec::new();
            loop {
                let r = take(&c, &format!("/t/Subscriptions/{sub}")).await;
                if r.status == 204 {
                    return bodies;
                }
                bodies.push((
                    r.body.clone(),
                    r.header("tagged"),
                    r.header("color"),
                    r.header("rulename"),
                    r.broker()["SequenceNumber"].as_u64().unwrap(),
                ));
            }
        }
    };
    let all = drain("all").await;
    assert_eq!(
        all.iter().map(|m| (m.0.as_str(), m.4)).collect::<Vec<_>>(),
        [("1", 1), ("2", 2), ("3", 3)],
        "topic sequence numbers kept in each copy"
    );
    assert_eq!(
        drain("red")
            .await
            .iter()
            .map(|m| m.0.as_str())
            .collect::<Vec<_>>(),
        ["1"]
    );
    assert_eq!(
        drain("corr")
            .await
            .iter()
            .map(|m| m.0.as_str())
            .collect::<Vec<_>>(),
        ["1"]
    );
    let tagged = drain("tagged").await;
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0].1.as_deref(), Some("\"yes\""), "the action's SET");
    assert_eq!(tagged[0].2, None, "the action's REMOVE");
    assert_eq!(
        tagged[0].3.as_deref(),
        Some("\"r\""),
        "RuleName of the rule with the action"
    );
    assert!(drain("none").await.is_empty(), "no rules, no messages");
    assert_eq!(
        text(&c.get("/t").await.description(), "SubscriptionCount"),
        "5"
    );
}

#[tokio::test]
async fn long_poll_wakes_on_send() {
    let server = Server::memory().await;
    let c = server.client();
    c.put("/q", queue("")).await;
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            c.send(
                "POST",
                "/q/messages/head?timeout=120",
                None,
                &[],
                Some(c.token()),
            )
            .await
        })
    };
    // Wait until the receive is parked, then send.
    server.parked("q").await;
    assert_eq!(c.post_message("/q/messages", "wake", &[]).await.status, 201);
    let r = tokio::time::timeout(std::time::Duration::from_secs(60), waiter)
        .await
        .expect("the long poll answers once a message arrives")
        .unwrap();
    assert_eq!((r.status, r.body.as_str()), (201, "wake"));
}

#[tokio::test]
async fn lock_expiry_max_delivery_and_dead_letter_queue() {
    let server = manual().await;
    let c = server.client();
    c.put(
        "/q",
        queue("<LockDuration>PT30S</LockDuration><MaxDeliveryCount>2</MaxDeliveryCount>"),
    )
    .await;
    c.post_message(
        "/q/messages",
        "poison",
        &[("brokerproperties", r#"{"MessageId":"p"}"#)],
    )
    .await;
    let first = peek(&c, "/q").await;
    assert_eq!(first.broker()["DeliveryCount"], 1);
    advance(&c, 31).await;
    // The lock expired: receivable again, and settling with the old lock fails.
    assert_eq!(
        c.send("DELETE", &first.location_path(), None, &[], Some(c.token()))
            .await
            .status,
        404
    );
    let second = peek(&c, "/q").await;
    assert_eq!(second.status, 201);
    assert_eq!(second.broker()["DeliveryCount"], 2);
    assert_eq!(
        c.send("PUT", &second.location_path(), None, &[], Some(c.token()))
            .await
            .status,
        200
    );
    // Past MaxDeliveryCount: dead-lettered with the reason.
    assert_eq!(peek(&c, "/q").await.status, 204);
    let d = c.get("/q").await.description();
    let counts = d.child("CountDetails").unwrap();
    assert_eq!(text(counts, "ActiveMessageCount"), "0");
    assert_eq!(text(counts, "DeadLetterMessageCount"), "1");
    let dead = peek(&c, "/q/$DeadLetterQueue").await;
    assert_eq!(dead.status, 201, "{}", dead.body);
    assert_eq!(dead.body, "poison");
    assert_eq!(
        dead.header("deadletterreason").as_deref(),
        Some("\"MaxDeliveryCountExceeded\"")
    );
    assert!(
        dead.location_path()
            .contains("/q/$DeadLetterQueue/messages/1/")
    );
    assert_eq!(
        c.send("DELETE", &dead.location_path(), None, &[], Some(c.token()))
            .await
            .status,
        200
    );
    assert_eq!(text(&c.get("/q").await.description(), "MessageCount"), "0");
}

#[tokio::test]
async fn ttl_and_scheduled_messages_follow_the_clock() {
    let server = manual().await;
    let c = server.client();
    c.put(
        "/drop",
        queue("<DefaultMessageTimeToLive>PT1M</DefaultMessageTimeToLive>"),
    )
    .await;
    c.put(
        "/keep",
        queue("<DeadLetteringOnMessageExpiration>true</DeadLetteringOnMessageExpiration>"),
    )
    .await;
    c.post_message("/drop/messages", "a", &[]).await;
    c.post_message(
        "/drop/messages",
        "b",
        &[("brokerproperties", r#"{"TimeToLive":600}"#)],
    )
    .await;
    c.post_message(
        "/keep/messages",
        "k",
        &[("brokerproperties", r#"{"TimeToLive":10}"#)],
    )
    .await;
    advance(&c, 61).await;
    // The entity's one minute caps the message's ten.
    assert_eq!(take(&c, "/drop").await.status, 204);
    assert_eq!(
        text(&c.get("/drop").await.description(), "MessageCount"),
        "0"
    );
    assert_eq!(take(&c, "/keep").await.status, 204);
    let dead = take(&c, "/keep/$DeadLetterQueue").await;
    assert_eq!((dead.status, dead.body.as_str()), (200, "k"));
    assert_eq!(
        dead.header("deadletterreason").as_deref(),
        Some("\"TTLExpiredException\"")
    );

    let at = |secs: i64| {
        httpdate::fmt_http_date(
            std::time::SystemTime::now() + std::time::Duration::from_secs(secs as u64),
        )
    };
    let later = format!(r#"{{"ScheduledEnqueueTimeUtc":"{}"}}"#, at(3600));
    c.post_message("/drop/messages", "later", &[("brokerproperties", &later)])
        .await;
    assert_eq!(take(&c, "/drop").await.status, 204);
    let counts = c.get("/drop").await.description();
    assert_eq!(
        text(
            counts.child("CountDetails").unwrap(),
            "ScheduledMessageCount"
        ),
        "1"
    );
    // Past the scheduled time (the clock is 61 s ahead already), within the queue's one
    // minute to live, which starts at activation.
    advance(&c, 3560).await;
    assert_eq!(take(&c, "/drop").await.body, "later");
}

#[tokio::test]
async fn restart_brings_back_unsettled_messages_with_their_delivery_counts() {
    let dir = tempfile::tempdir().unwrap();
    let settings = || emulator::Settings {
        location: emulator::store::Location::Directory(dir.path().join("data")),
        ..emulator::Settings::in_memory()
    };
    let server = Server::start(settings()).await;
    let c = server.client();
    c.put("/q", queue("")).await;
    c.put("/t", topic("")).await;
    c.put("/t/Subscriptions/s", subscription("")).await;
    for body in ["1", "2", "3"] {
        c.post_message("/q/messages", body, &[]).await;
    }
    c.post_message("/t/messages", "topic", &[("k", "\"v\"")])
        .await;
    let locked = peek(&c, "/q").await;
    assert_eq!(locked.body, "1");
    let done = peek(&c, "/q").await;
    assert_eq!(
        c.send("DELETE", &done.location_path(), None, &[], Some(c.token()))
            .await
            .status,
        200
    );
    server.stop().await;

    let server = Server::start(settings()).await;
    let c = server.client();
    assert_eq!(text(&c.get("/q").await.description(), "MessageCount"), "2");
    let back = peek(&c, "/q").await;
    assert_eq!(
        back.body, "1",
        "the locked message is back, its lock released"
    );
    assert_eq!(back.broker()["DeliveryCount"], 2, "its delivery count kept");
    assert_eq!(take(&c, "/q").await.body, "3", "the completed one is gone");
    let t = take(&c, "/t/Subscriptions/s").await;
    assert_eq!(
        (t.body.as_str(), t.header("k").as_deref()),
        ("topic", Some("\"v\""))
    );
    c.post_message("/q/messages", "4", &[]).await;
    let four = take(&c, "/q").await;
    assert_eq!(
        four.broker()["SequenceNumber"],
        4,
        "sequence numbers are not reused"
    );
    server.stop().await;
}

#[tokio::test]
async fn duplicate_detection_within_the_window() {
    let server = manual().await;
    let c = server.client();
    c.put("/dedup", queue("<RequiresDuplicateDetection>true</RequiresDuplicateDetection><DuplicateDetectionHistoryTimeWindow>PT1M</DuplicateDetectionHistoryTimeWindow>")).await;
    c.put("/plain", queue("")).await;
    for path in ["/dedup/messages", "/plain/messages"] {
        for body in ["first", "again"] {
            let r = c
                .post_message(
                    path,
                    body,
                    &[("brokerproperties", r#"{"MessageId":"same"}"#)],
                )
                .await;
            assert_eq!(r.status, 201, "a duplicate is accepted");
        }
    }
    assert_eq!(take(&c, "/dedup").await.body, "first");
    assert_eq!(
        take(&c, "/dedup").await.status,
        204,
        "the duplicate was dropped"
    );
    assert_eq!(take(&c, "/plain").await.body, "first");
    assert_eq!(
        take(&c, "/plain").await.body,
        "again",
        "no detection without RequiresDuplicateDetection"
    );
    advance(&c, 61).await;
    c.post_message(
        "/dedup/messages",
        "later",
        &[("brokerproperties", r#"{"MessageId":"same"}"#)],
    )
    .await;
    assert_eq!(
        take(&c, "/dedup").await.body,
        "later",
        "outside the window it is new"
    );
}

#[tokio::test]
async fn idle_entities_are_deleted() {
    let server = manual().await;
    let c = server.client();
    c.put("/t", topic("")).await;
    c.put(
        "/t/Subscriptions/polled",
        subscription("<AutoDeleteOnIdle>PT5M</AutoDeleteOnIdle>"),
    )
    .await;
    c.put(
        "/t/Subscriptions/idle",
        subscription("<AutoDeleteOnIdle>PT5M</AutoDeleteOnIdle>"),
    )
    .await;
    c.put("/q", queue("<AutoDeleteOnIdle>PT5M</AutoDeleteOnIdle>"))
        .await;
    c.post_message("/t/messages", "m", &[]).await;
    advance(&c, 240).await;
    // An empty receive counts as use.
    assert_eq!(take(&c, "/t/Subscriptions/polled").await.body, "m");
    assert_eq!(take(&c, "/t/Subscriptions/polled").await.status, 204);
    advance(&c, 120).await;
    assert_eq!(
        c.get("/t/Subscriptions/idle").await.xml().name,
        "feed",
        "the idle subscription is gone"
    );
    assert_eq!(
        c.get("/q").await.xml().name,
        "feed",
        "the idle queue is gone"
    );
    assert_eq!(c.get("/t/Subscriptions/polled").await.status, 200);
    assert_eq!(c.get("/t/Subscriptions").await.titles(), ["polled"]);
    assert_eq!(
        c.get("/t").await.status,
        200,
        "the topic never idles by default"
    );
}

#[tokio::test]
async fn a_receiver_that_went_away_takes_nothing() {
    let server = Server::memory().await;
    let c = server.client();
    c.put("/q", queue("")).await;
    let target = emulator::broker::ReceiveTarget {
        address: emulator::model::Address::Queue("q".into()),
        dead_letter: false,
    };
    // A client that gives up on its long poll (and closes the connection) after 300 ms.
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let url = format!("http://{}/q/messages/head?timeout=60", server.addr);
    let gone = impatient
        .post(url)
        .header("authorization", c.token())
        .header("content-length", "0")
        .send()
        .await;
    assert!(gone.is_err(), "the client timed out");
    // Wait (deadline, no fixed sleep) until the server dropped that parked receive.
    let released = || async {
        match server.broker.waiting_receivers(&target).unwrap() {
            0 => Ok(()),
            n => Err(n),
        }
    };
    testkit::wait_until(POLL_DEADLINE, POLL_EVERY, released)
        .await
        .expect("the abandoned long poll is still parked");
    c.post_message("/q/messages", "precious", &[]).await;
    let r = take(&c, "/q").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "precious"),
        "the message was neither locked nor consumed for the vanished client"
    );
}
