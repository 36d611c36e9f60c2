//! Hand-off: a message sent while receivers are parked goes to them with the send's own
//! durable write (no second write for the removal or the lock) and arrives as a taken
//! message would: received and deleted, it is gone for good; locked, it is settled as any
//! lock. A receiver that cannot take it leaves it receivable.

mod common;

use std::time::Duration;

use common::*;
use emulator::broker::{Outgoing, ReceiveMode, ReceiveTarget};
use emulator::model::Address;

fn durable(dir: &std::path::Path) -> emulator::Settings {
    emulator::Settings {
        location: emulator::store::Location::Directory(dir.join("data")),
        ..emulator::Settings::in_memory()
    }
}

fn subscription_target(name: &str) -> ReceiveTarget {
    ReceiveTarget {
        address: Address::Subscription("t".into(), name.into()),
        dead_letter: false,
    }
}

/// Waits (with a deadline) until `n` receives are parked on `target`.
async fn parked(server: &Server, target: &ReceiveTarget, n: usize) {
    let ready = || async {
        match server.broker.waiting_receivers(target).unwrap() {
            k if k >= n => Ok(()),
            k => Err(k),
        }
    };
    testkit::wait_until(POLL_DEADLINE, POLL_EVERY, ready)
        .await
        .expect("the receives never parked");
}

/// `method` on `path` (a messaging path such as `/q/messages/head?timeout=0`), signed.
async fn call(c: &Client, method: &str, path: &str) -> Reply {
    c.send(method, path, None, &[], Some(c.token())).await
}

/// A receive-and-delete long poll on `path`, answered whole.
fn long_poll(c: &Client, path: &str) -> tokio::task::JoinHandle<Reply> {
    let (c, url) = (c.clone(), format!("{path}/messages/head?timeout=60"));
    tokio::spawn(async move { c.send("DELETE", &url, None, &[], Some(c.token())).await })
}

#[tokio::test]
async fn parked_receivers_get_the_message_in_the_sends_own_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(durable(dir.path())).await;
    let c = server.client();
    c.put("/t", topic("")).await;
    for s in ["a", "b", "c"] {
        c.put(&format!("/t/Subscriptions/{s}"), subscription(""))
            .await;
    }
    // `a` and `b` have a receiver parked; `c` has none and keeps its copy.
    let waiters = [
        long_poll(&c, "/t/Subscriptions/a"),
        long_poll(&c, "/t/Subscriptions/b"),
    ];
    parked(&server, &subscription_target("a"), 1).await;
    parked(&server, &subscription_target("b"), 1).await;
    let before = server.broker.writer_stats();
    let sent = c
        .post_message(
            "/t/messages",
            "handed",
            &[("k", "\"v\""), ("BrokerProperties", r#"{"TimeToLive":30}"#)],
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    for waiter in waiters {
        let r = tokio::time::timeout(Duration::from_secs(60), waiter)
            .await
            .expect("the long poll answers")
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "handed"));
        assert_eq!(r.header("k").as_deref(), Some("\"v\""));
        let broker = r.broker();
        assert_eq!(broker["DeliveryCount"], 1);
        assert_eq!(broker["SequenceNumber"], 1);
        assert_eq!(broker["TimeToLive"], 30.0);
        assert!(broker.get("LockToken").is_none(), "received and deleted");
    }
    let writes = server.broker.writer_stats().since(&before).requests;
    assert_eq!(
        writes, 1,
        "the send and both removals are one durable write, not one each"
    );
    let count = |s: &'static str| {
        let c = c.clone();
        async move {
            let d = c.get(&format!("/t/Subscriptions/{s}")).await.description();
            text(&d, "MessageCount")
        }
    };
    assert_eq!(
        (count("a").await, count("b").await, count("c").await),
        ("0".into(), "0".into(), "1".into())
    );
    server.stop().await;

    // After a restart the handed copies stay gone and the third is still there.
    let server = Server::start(durable(dir.path())).await;
    let c = server.client();
    for s in ["a", "b"] {
        let r = call(
            &c,
            "DELETE",
            &format!("/t/Subscriptions/{s}/messages/head?timeout=0"),
        )
        .await;
        assert_eq!(r.status, 204, "subscription {s} got its copy back");
    }
    let r = call(&c, "DELETE", "/t/Subscriptions/c/messages/head?timeout=0").await;
    assert_eq!((r.status, r.body.as_str()), (200, "handed"));
    // Its last copy gone, the message itself is released.
    assert_eq!(text(&c.get("/t").await.description(), "SizeInBytes"), "0");
    server.stop().await;
}

#[tokio::test]
async fn a_receiver_that_cannot_render_leaves_the_message_receivable() {
    let server = Server::memory().await;
    let c = server.client();
    c.put("/q", queue("")).await;
    let target = ReceiveTarget {
        address: Address::Queue("q".into()),
        dead_letter: false,
    };
    let failing = {
        let (broker, target) = (server.broker.clone(), target.clone());
        tokio::spawn(async move {
            let render = |_| -> emulator::broker::Result<()> {
                Err(emulator::broker::Error::Render {
                    reason: "cannot be written out".into(),
                })
            };
            broker
                .receive_with(
                    &target,
                    ReceiveMode::ReceiveAndDelete,
                    Duration::from_secs(60),
                    render,
                )
                .await
        })
    };
    server.parked("q").await;
    let message = Outgoing {
        props: Default::default(),
        body: b"kept".to_vec(),
        time_to_live: None,
        scheduled_at: None,
    };
    server.broker.send("q", vec![message]).await.unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(60), failing)
        .await
        .expect("the receive answers")
        .unwrap();
    assert!(
        matches!(failed, Err(emulator::broker::Error::Render { .. })),
        "{failed:?}"
    );
    let r = call(&c, "DELETE", "/q/messages/head?timeout=0").await;
    assert_eq!((r.status, r.body.as_str()), (200, "kept"));
    assert_eq!(
        r.broker()["DeliveryCount"],
        1,
        "the failed hand-off counted nothing"
    );
}

#[tokio::test]
async fn a_parked_peek_lock_receiver_gets_the_message_locked_in_the_sends_write() {
    let server = Server::memory().await;
    let c = server.client();
    c.put("/q", queue("<LockDuration>PT1M</LockDuration>"))
        .await;
    let peek_lock = |c: &Client| {
        let c = c.clone();
        tokio::spawn(async move {
            let url = "/q/messages/head?timeout=60";
            call(&c, "POST", url).await
        })
    };
    for (round, settle) in [(1, "DELETE"), (2, "PUT")] {
        let waiter = peek_lock(&c);
        server.parked("q").await;
        let before = server.broker.writer_stats();
        let body = format!("locked {round}");
        assert_eq!(c.post_message("/q/messages", &body, &[]).await.status, 201);
        let r = tokio::time::timeout(Duration::from_secs(60), waiter)
            .await
            .expect("the long poll answers")
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (201, body.as_str()));
        let broker = r.broker();
        assert_eq!(broker["DeliveryCount"], 1);
        assert!(broker["LockToken"].is_string(), "{broker}");
        assert!(broker["LockedUntilUtc"].is_string(), "{broker}");
        assert_eq!(
            server.broker.writer_stats().since(&before).requests,
            1,
            "the send and the lock are one durable write"
        );
        // Locked: nobody else gets it.
        let other = call(&c, "POST", "/q/messages/head?timeout=0").await;
        assert_eq!(other.status, 204);
        // Settled as any lock: completed (DELETE) or unlocked (PUT).
        let location = r.location_path();
        let settled = c.send(settle, &location, None, &[], Some(c.token())).await;
        assert_eq!(settled.status, 200, "{settle}: {}", settled.body);
    }
    // The unlocked one comes back with its delivery counted; the completed one is gone.
    let again = call(&c, "DELETE", "/q/messages/head?timeout=0").await;
    assert_eq!((again.status, again.body.as_str()), (200, "locked 2"));
    assert_eq!(again.broker()["DeliveryCount"], 2);
    let none = call(&c, "DELETE", "/q/messages/head?timeout=0").await;
    assert_eq!(none.status, 204);
}
