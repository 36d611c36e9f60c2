//! The REST client against the emulator (in-process), and its retry rules against the
//! emulator's own fault injection.

use std::time::Duration;

use backplane::servicebus::{
    Client, ConnectionString, CorrelationFilter, EntityDescription, EntityKind, Error, Filter,
    Message, PropertyValue, RetryPolicy, RuleAction, RuleDescription, TimeSpan, subscription_path,
};
use testkit::InProcessEmulator;

async fn client() -> (InProcessEmulator, Client) {
    let emulator = InProcessEmulator::start().await.unwrap();
    let client = Client::from_connection_string(&emulator.connection_string()).unwrap();
    (emulator, client)
}

fn sql(expression: &str) -> RuleDescription {
    RuleDescription::sql(expression)
}

#[tokio::test]
async fn management_of_topics_subscriptions_and_rules() {
    let (_emulator, c) = client().await;
    let mut topic = EntityDescription::defaults(EntityKind::Topic);
    topic.default_message_time_to_live = TimeSpan::from_mins(90);
    assert!(c.create_topic_if_missing("events", &topic).await.unwrap());
    assert!(
        !c.create_topic_if_missing("events", &topic).await.unwrap(),
        "exists: not created again"
    );
    assert!(
        c.create_entity("events", &topic, None)
            .await
            .unwrap_err()
            .is_conflict()
    );
    let got = c.get_entity("events").await.unwrap().unwrap();
    assert_eq!(got.default_message_time_to_live, TimeSpan::from_mins(90));
    assert_eq!(
        c.get_entity("nope").await.unwrap(),
        None,
        "an empty feed means missing"
    );

    let mut sub = EntityDescription::defaults(EntityKind::Subscription);
    sub.auto_delete_on_idle = TimeSpan::from_mins(5);
    let only_mine = RuleDescription {
        filter: Filter::Correlation(CorrelationFilter {
            to: Some("node-a".into()),
            ..Default::default()
        }),
        action: RuleAction::Empty,
        name: Some("mine".into()),
    };
    assert!(
        c.create_subscription_if_missing("events", "node-a", &sub, Some(&only_mine))
            .await
            .unwrap()
    );
    assert!(
        !c.create_subscription_if_missing("events", "node-a", &sub, None)
            .await
            .unwrap()
    );
    assert!(
        c.create_subscription_if_missing("missing", "x", &sub, None)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(
        c.list_subscriptions("events")
            .await
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        ["node-a"]
    );
    let rules = c.list_rules("events", "node-a").await.unwrap();
    assert_eq!(
        rules.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["mine"]
    );
    assert_eq!(rules[0].1.filter, only_mine.filter);

    c.create_rule("events", "node-a", "red", &sql("color = 'red'"))
        .await
        .unwrap();
    assert!(matches!(
        c.get_rule("events", "node-a", "red")
            .await
            .unwrap()
            .unwrap()
            .filter,
        Filter::Sql { .. }
    ));
    let bad = c
        .create_rule("events", "node-a", "bad", &sql("color = "))
        .await
        .unwrap_err();
    assert!(
        matches!(&bad, Error::Service { status: 400, detail } if detail.contains("position 8")),
        "{bad:?}"
    );
    assert!(!bad.is_transient());
    assert!(c.delete_rule("events", "node-a", "red").await.unwrap());
    assert!(!c.delete_rule("events", "node-a", "red").await.unwrap());

    sub.max_delivery_count = 4;
    let updated = c
        .update_entity(&subscription_path("events", "node-a"), &sub)
        .await
        .unwrap();
    assert_eq!(updated.max_delivery_count, 4);
    assert_eq!(c.list_entities(EntityKind::Topic).await.unwrap().len(), 1);
    assert!(c.delete_entity("events").await.unwrap());
    assert!(!c.delete_entity("events").await.unwrap());
}

#[tokio::test]
async fn send_receive_and_settle() {
    let (_emulator, c) = client().await;
    assert!(c.create_queue_if_missing("jobs").await.unwrap());
    let mut m = Message::new("hello")
        .with_property("room", PropertyValue::String("lobby".into()))
        .with_property("seq", PropertyValue::Int(7));
    m.broker.message_id = Some("m-1".into());
    m.broker.to = Some("node-b".into());
    m.content_type = Some("application/json".into());
    c.send("jobs", &m).await.unwrap();
    c.send_batch(
        "jobs",
        &[Message::new("b1"), Message::new(vec![0xff, 0x01])],
    )
    .await
    .unwrap();

    let got = c
        .peek_lock("jobs", Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.body, b"hello");
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    assert_eq!(got.broker.message_id.as_deref(), Some("m-1"));
    assert_eq!(got.broker.to.as_deref(), Some("node-b"));
    assert_eq!(
        (got.broker.sequence_number, got.broker.delivery_count),
        (Some(1), Some(1))
    );
    assert_eq!(
        got.property("room"),
        Some(&PropertyValue::String("lobby".into()))
    );
    assert_eq!(got.property("seq"), Some(&PropertyValue::Int(7)));
    assert_eq!(
        got.properties.len(),
        2,
        "no other headers read as properties: {:?}",
        got.properties
    );
    c.renew(&got).await.unwrap();
    c.unlock(&got).await.unwrap();
    assert!(c.complete(&got).await.unwrap_err().is_lock_lost());
    let again = c
        .peek_lock("jobs", Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.broker.delivery_count, Some(2));
    c.complete(&again).await.unwrap();

    assert_eq!(
        c.receive_and_delete("jobs", Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap()
            .body,
        b"b1"
    );
    assert_eq!(
        c.receive_and_delete("jobs", Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap()
            .body,
        vec![0xff, 0x01]
    );
    assert_eq!(
        c.receive_and_delete("jobs", Duration::ZERO).await.unwrap(),
        None
    );
    assert!(
        c.send("nope", &Message::new("x"))
            .await
            .unwrap_err()
            .is_not_found()
    );
    let mut small = EntityDescription::defaults(EntityKind::Queue);
    small.max_message_size_in_kilobytes = 1;
    c.create_entity("small", &small, None).await.unwrap();
    assert!(
        c.send("small", &Message::new(vec![b'x'; 2048]))
            .await
            .unwrap_err()
            .is_too_large()
    );
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized_and_bad_strings_are_typed() {
    let (emulator, _) = client().await;
    let wrong = emulator
        .connection_string()
        .replace("SAS_KEY_VALUE", "nope");
    let c = Client::from_connection_string(&wrong).unwrap();
    let e = c.create_queue_if_missing("q").await.unwrap_err();
    assert!(e.is_unauthorized() && !e.is_transient(), "{e:?}");
    let e = Client::from_connection_string("Endpoint=sb://x;SharedAccessKeyName=a").unwrap_err();
    assert!(matches!(e, Error::ConnectionString(_)));
    assert!(format!("{e:?}").contains("SharedAccessKeyName"));
}

/// An emulator injecting the faults of `plan` (its fault injection, `--faults`), with a
/// queue `q`.
async fn faulty(plan: &str) -> InProcessEmulator {
    let emulator = InProcessEmulator::start_with(emulator::Settings {
        faults: Some(emulator::faults::FaultPlan::parse(plan.as_bytes()).unwrap()),
        ..emulator::Settings::in_memory()
    })
    .await
    .unwrap();
    let setup = Client::from_connection_string(&emulator.connection_string()).unwrap();
    assert!(setup.create_queue_if_missing("q").await.unwrap());
    emulator
}

/// How many sends the emulator answered with `status`, from its `/metrics`.
async fn sends(emulator: &InProcessEmulator, status: u16) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", emulator.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample =
        format!("servicebus_emulator_requests_total{{operation=\"send\",status=\"{status}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&sample))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn fast_retries(emulator: &InProcessEmulator, key: &str, retries: u32) -> Client {
    let cs = ConnectionString::parse(&format!(
        "Endpoint=sb://{};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={key};UseDevelopmentEmulator=true",
        emulator.addr()
    ))
    .unwrap();
    Client::new(
        &cs,
        RetryPolicy {
            max_retries: retries,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        },
    )
}

/// Counts, on one emulator, the messages `q` holds.
async fn held(emulator: &InProcessEmulator) -> usize {
    let c = Client::from_connection_string(&emulator.connection_string()).unwrap();
    let mut n = 0;
    while c
        .receive_and_delete("q", Duration::ZERO)
        .await
        .unwrap()
        .is_some()
    {
        n += 1;
    }
    n
}

#[tokio::test]
async fn retries_transient_failures_only() {
    // A client mistake (here a missing queue): one request, no retry.
    let emulator = faulty(r#"{"rules": []}"#).await;
    let e = fast_retries(&emulator, "SAS_KEY_VALUE", 5)
        .send("missing", &Message::new("x"))
        .await
        .unwrap_err();
    assert!(e.is_not_found() && !e.is_transient(), "{e:?}");
    assert_eq!(sends(&emulator, 404).await, 1);

    // 503 ServerBusy with Retry-After, then 500, then success: sent exactly once.
    let emulator = faulty(
        r#"{"rules": [
            {"operations": ["send"], "times": 1, "effect": {"type": "serverBusy", "retryAfter": "0"}},
            {"operations": ["send"], "times": 1, "effect": {"type": "status", "status": 500}}
        ]}"#,
    )
    .await;
    fast_retries(&emulator, "SAS_KEY_VALUE", 5)
        .send("q", &Message::new("x"))
        .await
        .unwrap();
    let statuses = (
        sends(&emulator, 503).await,
        sends(&emulator, 500).await,
        sends(&emulator, 201).await,
    );
    assert_eq!(statuses, (1, 1, 1));
    assert_eq!(held(&emulator).await, 1);

    // Retry-After as an HTTP date (here in the past: retry at once). Without it the client
    // would wait its backoff of an hour, and the deadline would fail the test.
    let emulator = faulty(
        r#"{"rules": [{"operations": ["send"], "times": 1,
            "effect": {"type": "serverBusy", "retryAfter": "Thu, 01 Jan 1970 00:00:00 GMT"}}]}"#,
    )
    .await;
    let patient = Client::new(
        &ConnectionString::parse(&emulator.connection_string()).unwrap(),
        RetryPolicy {
            max_retries: 1,
            base_delay: Duration::from_secs(3600),
            max_delay: Duration::from_secs(3600),
        },
    );
    tokio::time::timeout(
        Duration::from_secs(30),
        patient.send("q", &Message::new("x")),
    )
    .await
    .expect("a Retry-After date in the past means: retry now")
    .unwrap();
    assert_eq!(
        (sends(&emulator, 503).await, sends(&emulator, 201).await),
        (1, 1)
    );

    // Still busy after the retries: a transient error, nothing sent.
    let emulator = faulty(
        r#"{"rules": [{"operations": ["send"], "effect": {"type": "serverBusy", "retryAfter": "0"}}]}"#,
    )
    .await;
    let e = fast_retries(&emulator, "SAS_KEY_VALUE", 2)
        .send("q", &Message::new("x"))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(sends(&emulator, 503).await, 3);
    assert_eq!(held(&emulator).await, 0);

    // A 401 re-signs once, then is final.
    let emulator = faulty(r#"{"rules": []}"#).await;
    assert!(
        fast_retries(&emulator, "wrong-key", 5)
            .send("q", &Message::new("x"))
            .await
            .unwrap_err()
            .is_unauthorized()
    );
    assert_eq!(sends(&emulator, 401).await, 2);

    // Nobody listening: transient, retried.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cs = ConnectionString::parse(&format!(
        "Endpoint=sb://{closed};SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true"
    ))
    .unwrap();
    let e = Client::new(
        &cs,
        RetryPolicy {
            max_retries: 1,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        },
    )
    .send("q", &Message::new("x"))
    .await
    .unwrap_err();
    assert!(
        matches!(e, Error::Transport(_)) && e.is_transient(),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_lost_ack_is_retried_and_stores_the_message_twice() {
    // The send is applied, then the connection closes unanswered: the client retries (a
    // transport error is transient) and the message is stored twice, as on the service
    // without duplicate detection: at least once, which the backplane's node dedups.
    let emulator = faulty(
        r#"{"rules": [{"operations": ["send"], "times": 1, "effect": {"type": "dropAfterApply"}}]}"#,
    )
    .await;
    let c = fast_retries(&emulator, "SAS_KEY_VALUE", 3);
    c.send("q", &Message::new("once")).await.unwrap();
    assert_eq!(sends(&emulator, 201).await, 1, "the retry's answer");
    assert_eq!(held(&emulator).await, 2);
}

/// An emulator serving HTTPS with a CA generated into `dir` (`emulator --tls`), and its
/// connection string for `https://` (no `UseDevelopmentEmulator`).
async fn https_emulator(dir: &std::path::Path) -> (tokio::sync::oneshot::Sender<()>, String) {
    let settings = emulator::Settings {
        tls: Some(emulator::tls::TlsSource::Generated {
            dir: dir.to_path_buf(),
        }),
        ..emulator::Settings::in_memory()
    };
    let served = emulator::Emulator::open(settings).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(served.serve(listener, async {
        let _ = stopped.await;
    }));
    let connection = format!(
        "Endpoint=sb://{addr};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE"
    );
    (stop, connection)
}

#[tokio::test]
async fn over_https_trusting_the_emulators_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (_stop, connection) = https_emulator(dir.path()).await;
    let parsed = ConnectionString::parse(&connection).unwrap();
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let c = Client::with_ca(&parsed, RetryPolicy::default(), &ca).unwrap();
    assert!(c.base_url().starts_with("https://"), "{}", c.base_url());
    assert!(c.create_queue_if_missing("tls").await.unwrap());
    c.send("tls", &Message::new(b"over tls".to_vec()))
        .await
        .unwrap();
    let got = c
        .receive_and_delete("tls", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the message");
    assert_eq!(got.body, b"over tls");

    // Without the CA the public roots refuse the certificate: a transport error.
    let untrusting = Client::new(&parsed, RetryPolicy::none());
    let refused = untrusting.get_entity("tls").await.unwrap_err();
    assert!(matches!(refused, Error::Transport(_)), "{refused:?}");
    // A CA file that holds no certificate is refused up front.
    let bad = Client::with_ca(&parsed, RetryPolicy::default(), b"not a certificate").unwrap_err();
    assert!(matches!(bad, Error::Certificate(_)), "{bad:?}");
}

#[tokio::test]
async fn a_busy_namespace_holds_back_every_request_of_the_client() {
    // The first send to `q` is answered 503 ServerBusy with Retry-After 3 s. A send to
    // another queue, started while the client knows the namespace is busy, waits too
    // instead of reaching it: both land after the wait, not 3 s apart.
    let emulator = faulty(
        r#"{"rules": [{"operations": ["send"], "entities": ["q"], "times": 1,
            "effect": {"type": "serverBusy", "retryAfter": "3"}}]}"#,
    )
    .await;
    // Retry-After is honoured up to the policy's longest delay.
    let c = Client::new(
        &ConnectionString::parse(&emulator.connection_string()).unwrap(),
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(10),
        },
    );
    assert!(c.create_queue_if_missing("other").await.unwrap());
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.send("q", &Message::new("first")).await }
    });
    let busy = || async { c.busy_for_now().map(drop).ok_or(()) };
    testkit::wait_until(Duration::from_secs(30), Duration::from_millis(5), busy)
        .await
        .expect("the client learns that the namespace is busy");
    c.send("other", &Message::new("second")).await.unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(sends(&emulator, 503).await, 1);
    assert_eq!(c.busy_for_now(), None, "the wait is over");

    let enqueued = |queue: &'static str| {
        let c = c.clone();
        async move {
            let m = c
                .receive_and_delete(queue, Duration::ZERO)
                .await
                .unwrap()
                .expect("the message");
            m.broker.enqueued_time_utc.expect("EnqueuedTimeUtc")
        }
    };
    let (first_at, second_at) = (enqueued("q").await, enqueued("other").await);
    // Whole seconds on the wire: without the shared wait the second send would land about
    // 3 s before the first's retry.
    assert!(
        second_at >= first_at - chrono::Duration::seconds(1),
        "the second send went out during the wait: {second_at} vs {first_at}"
    );
}
