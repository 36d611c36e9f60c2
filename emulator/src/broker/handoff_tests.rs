//! When the receivers of a hand-off answer, against the send's write: the store's writer
//! is held shut, so "before the write is durable" is a state the test holds, not a race.

use std::time::Duration;

use servicebus_wire::description::ParsedDescription;
use servicebus_wire::{EntityDescription, EntityKind};

use super::{Broker, Outgoing, ReceiveMode, ReceiveTarget, Received, Settle};
use crate::clock::Clock;
use crate::model::Address;
use crate::model::message::MessageProps;
use crate::store::{Durability, Location, Options, Store};

const LONG: Duration = Duration::from_secs(60);

/// A broker on a durable store in `dir`, with queue `q`.
async fn broker(dir: &std::path::Path) -> Broker {
    let store = Store::open(&Options {
        location: Location::Directory(dir.join("data")),
        cache_bytes: 1 << 20,
        durability: Durability::Full,
    })
    .unwrap();
    let broker = Broker::open(store, Clock::System).await.unwrap();
    let queue = ParsedDescription {
        description: EntityDescription::defaults(EntityKind::Queue),
        present: Vec::new(),
        default_rule: None,
    };
    broker.put_entity("q", queue, false).await.unwrap();
    broker
}

fn q() -> ReceiveTarget {
    ReceiveTarget {
        address: Address::Queue("q".into()),
        dead_letter: false,
    }
}

fn message(body: &str) -> Vec<Outgoing> {
    vec![Outgoing {
        props: MessageProps::default(),
        body: body.as_bytes().to_vec(),
        time_to_live: None,
        scheduled_at: None,
    }]
}

/// A send of `body` to `q` on a task of its own.
fn send(broker: &Broker, body: &str) -> tokio::task::JoinHandle<super::Result<()>> {
    let (broker, messages) = (broker.clone(), message(body));
    tokio::spawn(async move { broker.send("q", messages).await })
}

/// A receive on `q` on a task of its own, waiting up to a minute.
fn receive(
    broker: &Broker,
    mode: ReceiveMode,
) -> tokio::task::JoinHandle<super::Result<Option<Received>>> {
    let broker = broker.clone();
    tokio::spawn(async move { broker.receive(&q(), mode, LONG).await })
}

/// Polls `condition` until it holds; panics with `what` after a minute.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let holds = || std::future::ready(if condition() { Ok(()) } else { Err(()) });
    testkit::wait_until(LONG, Duration::from_millis(1), holds)
        .await
        .expect(what);
}

/// What a receive on `q` that waits for nothing gets (receive-and-delete).
async fn take_now(broker: &Broker) -> Option<Received> {
    broker
        .receive(&q(), ReceiveMode::ReceiveAndDelete, Duration::ZERO)
        .await
        .unwrap()
}

/// The message `receiver` answers with, within a minute (`what` says why it should).
async fn answer(
    receiver: tokio::task::JoinHandle<super::Result<Option<Received>>>,
    what: &str,
) -> Received {
    tokio::time::timeout(LONG, receiver)
        .await
        .expect(what)
        .unwrap()
        .unwrap()
        .expect("a message")
}

async fn parked(broker: &Broker) {
    until("the receive never parked", || {
        broker.waiting_receivers(&q()).unwrap() == 1
    })
    .await;
}

/// Waits until the store has been handed `n` writes in all.
async fn submitted(broker: &Broker, n: u64) {
    until("the send never reached the writer", || {
        broker.store.submitted() >= n
    })
    .await;
}

#[tokio::test]
async fn a_receive_and_delete_receiver_answers_before_the_send_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let receiver = receive(&broker, ReceiveMode::ReceiveAndDelete);
    parked(&broker).await;
    let hold = broker.store.hold_writer();
    let sent = send(&broker, "early");
    let got = answer(receiver, "the receiver answers while the write waits").await;
    assert_eq!(
        (got.sequence_number, got.body.as_slice()),
        (1, &b"early"[..])
    );
    assert!(
        !sent.is_finished(),
        "the sender is not answered before its write is durable"
    );
    drop(hold);
    sent.await.unwrap().unwrap();
    let again = take_now(&broker).await;
    assert!(again.is_none(), "received and deleted: gone");
    broker.close().await.unwrap();
}

/// Spawns a settlement of `got`'s lock on a task of its own.
fn settle(
    broker: &Broker,
    got: &Received,
    how: Settle,
) -> tokio::task::JoinHandle<super::Result<Option<chrono::DateTime<chrono::Utc>>>> {
    let (broker, (token, _)) = (broker.clone(), got.lock.expect("a lock"));
    tokio::spawn(async move { broker.settle_token(&q(), token, how).await })
}

/// Lets every other task run many times over.
async fn others_run() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_peek_lock_receiver_answers_before_the_send_is_durable_and_settles_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let receiver = receive(&broker, ReceiveMode::PeekLock);
    parked(&broker).await;
    let hold = broker.store.hold_writer();
    let sent = send(&broker, "locked");
    let got = answer(receiver, "the receiver answers while the write waits").await;
    assert_eq!(got.body, b"locked");
    // Its settlement waits for the lock, which is filed once the write is durable.
    let completed = settle(&broker, &got, Settle::Complete);
    others_run().await;
    assert!(!sent.is_finished(), "the sender waits for the write");
    assert!(
        !completed.is_finished(),
        "the settlement waits for the write"
    );
    drop(hold);
    sent.await.unwrap().unwrap();
    completed
        .await
        .unwrap()
        .expect("the lock is filed once the write is durable");
    assert!(take_now(&broker).await.is_none(), "completed: gone");
    broker.close().await.unwrap();
}

#[tokio::test]
async fn a_message_abandoned_before_its_send_is_durable_comes_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let receiver = receive(&broker, ReceiveMode::PeekLock);
    parked(&broker).await;
    let hold = broker.store.hold_writer();
    let sent = send(&broker, "back");
    let got = answer(receiver, "the receiver answers while the write waits").await;
    let abandoned = settle(&broker, &got, Settle::Unlock);
    others_run().await;
    assert!(!abandoned.is_finished(), "the abandon waits for the write");
    // Nothing is receivable before the message is stored.
    assert!(take_now(&broker).await.is_none());
    drop(hold);
    sent.await.unwrap().unwrap();
    abandoned.await.unwrap().expect("abandoned once filed");
    let again = take_now(&broker).await.expect("the message is back");
    assert_eq!(
        (again.sequence_number, again.delivery_count, again.body),
        (1, 2, b"back".to_vec())
    );
    broker.close().await.unwrap();
}

#[tokio::test]
async fn nothing_is_handed_off_past_a_message_on_its_way_to_be_filed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let hold = broker.store.hold_writer();
    let before = broker.store.submitted();
    // Sent while no one waits: filed once durable.
    let first = send(&broker, "first");
    submitted(&broker, before + 1).await;
    // A receiver parks on the still empty queue, then a second message comes.
    let receiver = receive(&broker, ReceiveMode::ReceiveAndDelete);
    parked(&broker).await;
    let second = send(&broker, "second");
    submitted(&broker, before + 2).await;
    drop(hold);
    let got = answer(receiver, "the receiver answers").await;
    assert_eq!(got.body, b"first", "the older message comes first");
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    let next = take_now(&broker).await.expect("the second is filed");
    assert_eq!(next.body, b"second");
    broker.close().await.unwrap();
}

/// A batch of `n` messages `m0`, `m1`...
fn batch(n: usize) -> Vec<Outgoing> {
    (0..n).flat_map(|i| message(&format!("m{i}"))).collect()
}

fn bodies(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

#[tokio::test]
async fn a_receiver_with_room_for_several_is_handed_a_whole_batch_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let b = broker.clone();
    let receiver = tokio::spawn(async move {
        let never = std::future::pending();
        b.receive_many(&q(), ReceiveMode::ReceiveAndDelete, 10, LONG, never, Ok)
            .await
    });
    parked(&broker).await;
    let before = broker.writer_stats();
    broker.send("q", batch(3)).await.unwrap();
    let got = receiver.await.unwrap().unwrap();
    assert_eq!(bodies(&got), ["m0", "m1", "m2"]);
    let seqs: Vec<u64> = got.iter().map(|r| r.sequence_number).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(
        broker.writer_stats().since(&before).requests,
        1,
        "the batch and its three removals are one write"
    );
    let left = take_now(&broker).await;
    assert!(left.is_none(), "all three were handed off");
    broker.close().await.unwrap();
}

#[tokio::test]
async fn a_receiver_with_room_for_one_is_handed_the_first_and_the_rest_wait_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let receiver = receive(&broker, ReceiveMode::PeekLock);
    parked(&broker).await;
    broker.send("q", batch(3)).await.unwrap();
    let first = receiver.await.unwrap().unwrap().expect("the first");
    assert_eq!(first.body, b"m0");
    let b = broker.clone();
    let never = std::future::pending();
    let rest = b
        .receive_many(&q(), ReceiveMode::PeekLock, 10, Duration::ZERO, never, Ok)
        .await
        .unwrap();
    assert_eq!(bodies(&rest), ["m1", "m2"]);
    for r in std::iter::once(first).chain(rest) {
        let (token, _) = r.lock.expect("a lock");
        broker
            .settle_token(&q(), token, Settle::Complete)
            .await
            .unwrap();
    }
    broker.close().await.unwrap();
}
