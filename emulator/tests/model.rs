//! Model test: random sequences of send, peek-lock, receive-and-delete, complete, unlock,
//! renew, clock advance and restart, on a queue and on a topic with a filtered
//! subscription, checked against a small reference model after every step.
//! 256 cases by default; more with `PROPTEST_CASES`.

use std::collections::BTreeMap;
use std::path::Path;

use emulator::Broker;
use emulator::broker::{Outgoing, ReceiveMode, ReceiveTarget, Received, Settle};
use emulator::clock::Clock;
use emulator::model::Address;
use emulator::model::message::{DeadLetter, MessageProps};
use emulator::store::{Durability, Location, Options, Store};
use proptest::prelude::*;
use servicebus_wire::description::ParsedDescription;
use servicebus_wire::{
    EntityDescription, EntityKind, Filter, RuleAction, RuleDescription, TimeSpan,
};

const LOCK_SECS: i64 = 30;
const MAX_DELIVERY: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Recv {
    Queue,
    QueueDead,
    All,
    Even,
}

const RECEIVABLES: [Recv; 4] = [Recv::Queue, Recv::QueueDead, Recv::All, Recv::Even];

impl Recv {
    fn target(self) -> ReceiveTarget {
        match self {
            Recv::Queue => ReceiveTarget {
                address: Address::Queue("q".into()),
                dead_letter: false,
            },
            Recv::QueueDead => ReceiveTarget {
                address: Address::Queue("q".into()),
                dead_letter: true,
            },
            Recv::All => ReceiveTarget {
                address: Address::Subscription("t".into(), "all".into()),
                dead_letter: false,
            },
            Recv::Even => ReceiveTarget {
                address: Address::Subscription("t".into(), "even".into()),
                dead_letter: false,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    SendQueue(u8),
    SendTopic(u8),
    PeekLock(Recv),
    ReceiveAndDelete(Recv),
    /// A peek of up to 5 messages from a sequence number (AMQP's `peek-message`).
    Peek(Recv, u64),
    Complete(usize),
    Unlock(usize),
    /// AMQP's dead-letter settlement (`rejected` with `com.microsoft:dead-letter`).
    DeadLetter(usize),
    /// AMQP's deferral (`modified` with undeliverable-here).
    Defer(usize),
    Renew(usize),
    Advance(i64),
    Restart,
    /// A restart that finds no index snapshot (as after a crash): the index is rebuilt
    /// from the records.
    Rebuild,
}

fn op() -> impl Strategy<Value = Op> {
    let recv = prop::sample::select(RECEIVABLES.to_vec());
    prop_oneof![
        4 => any::<u8>().prop_map(Op::SendQueue),
        3 => any::<u8>().prop_map(Op::SendTopic),
        4 => recv.clone().prop_map(Op::PeekLock),
        2 => recv.clone().prop_map(Op::ReceiveAndDelete),
        1 => (recv, 0u64..40).prop_map(|(r, from)| Op::Peek(r, from)),
        2 => any::<usize>().prop_map(Op::Complete),
        2 => any::<usize>().prop_map(Op::Unlock),
        1 => any::<usize>().prop_map(Op::DeadLetter),
        1 => any::<usize>().prop_map(Op::Defer),
        1 => any::<usize>().prop_map(Op::Renew),
        2 => prop::sample::select(vec![10i64, 31]).prop_map(Op::Advance),
        1 => Just(Op::Restart),
        1 => Just(Op::Rebuild),
    ]
}

/// One message in one receivable, as the model sees it.
#[derive(Debug, Clone, PartialEq)]
struct M {
    n: u8,
    deliveries: u32,
    /// Lock expiry (model seconds), while locked.
    locked_until: Option<i64>,
    dead: bool,
    /// Deferred: out of normal delivery, still peeked.
    deferred: bool,
}

#[derive(Debug, Default)]
struct Model {
    now: i64,
    queue_seq: u64,
    topic_seq: u64,
    /// Per receivable (the queue's DLQ lives in `Recv::Queue` with `dead`).
    messages: BTreeMap<Recv, BTreeMap<u64, M>>,
}

impl Model {
    fn home(r: Recv) -> Recv {
        if r == Recv::QueueDead { Recv::Queue } else { r }
    }

    /// Releases a lock: back to ready, or dead-lettered at the maximum (main queue only).
    fn release(m: &mut M) {
        m.locked_until = None;
        if !m.dead && m.deliveries >= MAX_DELIVERY {
            m.dead = true;
        }
    }

    fn expire_locks(&mut self) {
        let now = self.now;
        for msgs in self.messages.values_mut() {
            for m in msgs.values_mut() {
                if m.locked_until.is_some_and(|u| u <= now) {
                    Self::release(m);
                }
            }
        }
    }

    fn take(&mut self, r: Recv, lock: bool) -> Option<(u64, u8, u32)> {
        self.expire_locks();
        let dead = r == Recv::QueueDead;
        let now = self.now;
        let msgs = self.messages.entry(Self::home(r)).or_default();
        let (&seq, m) = msgs
            .iter_mut()
            .find(|(_, m)| m.locked_until.is_none() && m.dead == dead && !m.deferred)?;
        m.deliveries += 1;
        let out = (seq, m.n, m.deliveries);
        if lock {
            m.locked_until = Some(now + LOCK_SECS);
        } else {
            msgs.remove(&seq);
        }
        Some(out)
    }
}

fn description(kind: EntityKind) -> ParsedDescription {
    let mut d = EntityDescription::defaults(kind);
    d.lock_duration = TimeSpan::from_secs(LOCK_SECS);
    d.max_delivery_count = MAX_DELIVERY;
    ParsedDescription {
        description: d,
        present: Vec::new(),
        default_rule: None,
    }
}

async fn open(dir: &Path, clock: &Clock, window: usize) -> Broker {
    let store = Store::open(&Options {
        location: Location::Directory(dir.to_path_buf()),
        cache_bytes: 1 << 20,
        durability: Durability::None,
    })
    .unwrap();
    Broker::open_with_window(store, clock.clone(), window)
        .await
        .unwrap()
}

/// A broker over a new folder with a manual clock.
async fn fresh(window: usize) -> (tempfile::TempDir, Clock, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap());
    let broker = open(dir.path(), &clock, window).await;
    (dir, clock, broker)
}

/// Creates topic `t` with these subscriptions (each with the default rule).
async fn topic_with(broker: &Broker, subscriptions: &[&str]) {
    broker
        .put_entity("t", description(EntityKind::Topic), false)
        .await
        .unwrap();
    for sub in subscriptions {
        broker
            .put_subscription("t", sub, description(EntityKind::Subscription), false)
            .await
            .unwrap();
    }
}

/// Replaces subscription `sub`'s default rule (of topic `t`) with one SQL filter rule,
/// named after the subscription.
async fn sql_rule_only(broker: &Broker, sub: &str, expression: &str) {
    broker.delete_rule("t", sub, "$Default").await.unwrap();
    let rule = RuleDescription::sql(expression);
    broker.put_rule("t", sub, sub, rule, false).await.unwrap();
}

/// Receives and deletes, in order, everything subscription `sub` of topic `t` holds.
async fn drain(broker: &Broker, sub: &str) -> Vec<Received> {
    let target = ReceiveTarget {
        address: Address::Subscription("t".into(), sub.into()),
        dead_letter: false,
    };
    let mut out = Vec::new();
    while let Some(m) = broker
        .receive(
            &target,
            ReceiveMode::ReceiveAndDelete,
            std::time::Duration::ZERO,
        )
        .await
        .unwrap()
    {
        out.push(m);
    }
    out
}

fn outgoing(n: u8) -> Outgoing {
    Outgoing {
        props: MessageProps {
            user: vec![("n".into(), n.to_string())],
            ..MessageProps::default()
        },
        body: vec![n],
        time_to_live: None,
        scheduled_at: None,
    }
}

/// Checks the counts management reports against the model.
fn check_counts(broker: &Broker, model: &Model, step: usize) -> Result<(), TestCaseError> {
    for (r, view) in [
        (Recv::Queue, broker.get_entity("q")),
        (Recv::All, broker.get_subscription("t", "all")),
        (Recv::Even, broker.get_subscription("t", "even")),
    ] {
        let counts = view.unwrap().unwrap().runtime.counts;
        let msgs = model.messages.get(&r);
        // Deferred messages stay in the main queue and count as active, as on the service;
        // the model sends nothing scheduled.
        let count = |dead: bool| msgs.map_or(0, |m| m.values().filter(|m| m.dead == dead).count());
        prop_assert_eq!(
            (counts.active, counts.dead_letter, counts.scheduled),
            (count(false) as u64, count(true) as u64, 0),
            "step {}: counts of {:?}",
            step,
            r
        );
    }
    Ok(())
}

/// `window`: ready deliveries each subqueue keeps in memory; small ones make most sends
/// and every restart go through the cold path (sequence numbers only, read in later).
async fn run(ops: Vec<Op>, window: usize) -> Result<(), TestCaseError> {
    let (dir, clock, mut broker) = fresh(window).await;
    broker
        .put_entity("q", description(EntityKind::Queue), false)
        .await
        .unwrap();
    topic_with(&broker, &["all", "even"]).await;
    sql_rule_only(&broker, "even", "n % 2 = 0").await;

    let mut model = Model::default();
    // Locks handed out: (receivable, token, sequence number).
    let mut locks: Vec<(Recv, String, u64)> = Vec::new();
    let zero = std::time::Duration::ZERO;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::SendQueue(n) => {
                broker.send("q", vec![outgoing(n)]).await.unwrap();
                model.queue_seq += 1;
                model.messages.entry(Recv::Queue).or_default().insert(
                    model.queue_seq,
                    M {
                        n,
                        deliveries: 0,
                        locked_until: None,
                        dead: false,
                        deferred: false,
                    },
                );
            }
            Op::SendTopic(n) => {
                broker.send("t", vec![outgoing(n)]).await.unwrap();
                model.topic_seq += 1;
                let m = M {
                    n,
                    deliveries: 0,
                    locked_until: None,
                    dead: false,
                    deferred: false,
                };
                model
                    .messages
                    .entry(Recv::All)
                    .or_default()
                    .insert(model.topic_seq, m.clone());
                if n % 2 == 0 {
                    model
                        .messages
                        .entry(Recv::Even)
                        .or_default()
                        .insert(model.topic_seq, m);
                }
            }
            Op::Peek(r, from) => {
                model.expire_locks();
                let got: Vec<(u64, u8)> = broker
                    .peek(&r.target(), from, 5)
                    .unwrap()
                    .into_iter()
                    .map(|(m, _)| (m.sequence_number, m.body[0]))
                    .collect();
                let dead = r == Recv::QueueDead;
                let want: Vec<(u64, u8)> = model
                    .messages
                    .get(&Model::home(r))
                    .map(|msgs| {
                        msgs.range(from..)
                            .filter(|(_, m)| m.dead == dead)
                            .map(|(seq, m)| (*seq, m.n))
                            .take(5)
                            .collect()
                    })
                    .unwrap_or_default();
                prop_assert_eq!(got, want, "step {}: {:?}", step, op);
            }
            Op::PeekLock(r) | Op::ReceiveAndDelete(r) => {
                let lock = matches!(op, Op::PeekLock(_));
                let mode = if lock {
                    ReceiveMode::PeekLock
                } else {
                    ReceiveMode::ReceiveAndDelete
                };
                let got: Option<Received> = broker.receive(&r.target(), mode, zero).await.unwrap();
                let want = model.take(r, lock);
                let got_summary = got
                    .as_ref()
                    .map(|m| (m.sequence_number, m.body[0], m.delivery_count));
                prop_assert_eq!(got_summary, want, "step {}: {:?}", step, op);
                if let Some(m) = got.filter(|_| lock) {
                    locks.push((r, m.lock.unwrap().0.to_string(), m.sequence_number));
                }
            }
            Op::Complete(i) | Op::Unlock(i) | Op::DeadLetter(i) | Op::Defer(i) | Op::Renew(i) => {
                if locks.is_empty() {
                    continue;
                }
                let (r, token, seq) = locks[i % locks.len()].clone();
                let how = match op {
                    Op::Complete(_) => Settle::Complete,
                    Op::Unlock(_) => Settle::Unlock,
                    Op::DeadLetter(_) => Settle::DeadLetter(DeadLetter {
                        reason: "r".into(),
                        description: "d".into(),
                    }),
                    Op::Defer(_) => Settle::Defer,
                    _ => Settle::Renew,
                };
                let real = broker
                    .settle(&r.target(), &seq.to_string(), &token, how.clone())
                    .await;
                model.expire_locks();
                let now = model.now;
                let msgs = model.messages.entry(Model::home(r)).or_default();
                // A lock is good while held and not expired; a token is used once (the model
                // cannot tell two locks of one message apart, so only the newest counts).
                let newest = locks
                    .iter()
                    .rev()
                    .find(|(lr, _, ls)| *lr == r && *ls == seq)
                    .map(|(_, t, _)| t.clone());
                let held = newest.as_deref() == Some(token.as_str())
                    && msgs.get(&seq).is_some_and(|m| {
                        m.locked_until.is_some_and(|u| u > now) && m.dead == (r == Recv::QueueDead)
                    });
                prop_assert_eq!(
                    real.is_ok(),
                    held,
                    "step {}: {:?} on {:?} seq {}: {:?}",
                    step,
                    how,
                    r,
                    seq,
                    real
                );
                if held {
                    match how {
                        Settle::Complete => {
                            msgs.remove(&seq);
                        }
                        Settle::Unlock => Model::release(msgs.get_mut(&seq).unwrap()),
                        Settle::DeadLetter(_) => {
                            let m = msgs.get_mut(&seq).unwrap();
                            m.locked_until = None;
                            m.dead = true;
                        }
                        Settle::Defer => {
                            let m = msgs.get_mut(&seq).unwrap();
                            m.locked_until = None;
                            // A dead-lettered message stays in the dead-letter queue.
                            m.deferred = !m.dead;
                        }
                        Settle::Renew => {
                            msgs.get_mut(&seq).unwrap().locked_until = Some(now + LOCK_SECS)
                        }
                    }
                }
                if how != Settle::Renew {
                    locks.retain(|(_, t, _)| *t != token);
                }
            }
            Op::Advance(secs) => {
                broker
                    .advance_clock(chrono::Duration::seconds(secs))
                    .await
                    .unwrap();
                model.now += secs;
                model.expire_locks();
            }
            Op::Restart | Op::Rebuild => {
                broker.close().await.unwrap();
                // The old handle holds sled's file lock until it is dropped.
                drop(broker);
                if op == Op::Rebuild {
                    let snapshot = dir.path().join("index.snapshot");
                    prop_assert!(
                        snapshot.exists(),
                        "step {step}: a clean close keeps the index"
                    );
                    std::fs::remove_file(snapshot).unwrap();
                }
                broker = open(dir.path(), &clock, window).await;
                for msgs in model.messages.values_mut() {
                    for m in msgs.values_mut() {
                        if m.locked_until.is_some() {
                            Model::release(m);
                        }
                    }
                }
                locks.clear();
            }
        }
        model.expire_locks();
        check_counts(&broker, &model, step)?;
    }
    broker.close().await.unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/model.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn broker_matches_the_model(
        ops in prop::collection::vec(op(), 1..40),
        window in prop::sample::select(vec![1usize, 2, 1024]),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, window))?;
    }
}

/// Deleting a subscription whose deliveries are cold (past a window of one) releases the
/// topic's messages it alone held, and only those: the other subscription still receives
/// every body, and the topic's size falls to zero once both are gone.
#[tokio::test]
async fn deleting_a_subscription_with_cold_deliveries_releases_its_messages() {
    let (_dir, _clock, broker) = fresh(1).await;
    topic_with(&broker, &["a", "b"]).await;
    for n in 0..4 {
        broker.send("t", vec![outgoing(n)]).await.unwrap();
    }
    let size = |b: &Broker| b.get_entity("t").unwrap().unwrap().runtime.size_in_bytes;
    assert!(size(&broker) > 0);
    broker.delete_subscription("t", "a").await.unwrap();
    let bodies: Vec<u8> = drain(&broker, "b")
        .await
        .iter()
        .map(|m| m.body[0])
        .collect();
    assert_eq!(bodies, vec![0, 1, 2, 3]);
    assert_eq!(size(&broker), 0);
    broker.close().await.unwrap();
}

/// A sender that goes away once its writes are submitted (hyper drops the handler when the
/// client disconnects) still leaves a receivable message, not one stored but never filed.
#[tokio::test]
async fn a_send_abandoned_after_its_write_is_still_delivered() {
    let dir = tempfile::tempdir().unwrap();
    // Durable writes: each send waits for a sync, so its first poll finds it waiting.
    let store = Store::open(&Options {
        location: Location::Directory(dir.path().to_path_buf()),
        cache_bytes: 1 << 20,
        durability: Durability::Full,
    })
    .unwrap();
    let clock = Clock::manual(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap());
    let broker = Broker::open(store, clock).await.unwrap();
    broker
        .put_entity("q", description(EntityKind::Queue), false)
        .await
        .unwrap();
    // Each send is polled once (its write is submitted on the first poll), then dropped.
    const SENDS: u8 = 20;
    let mut abandoned = 0;
    for n in 0..SENDS {
        let mut send = std::pin::pin!(broker.send("q", vec![outgoing(n)]));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if send.as_mut().poll(&mut cx).is_pending() {
            abandoned += 1;
        }
    }
    assert!(
        abandoned > 0,
        "no send was still waiting for its write when dropped"
    );
    let target = ReceiveTarget {
        address: Address::Queue("q".into()),
        dead_letter: false,
    };
    let mut bodies = Vec::new();
    while bodies.len() < usize::from(SENDS) {
        let got = broker
            .receive(
                &target,
                ReceiveMode::ReceiveAndDelete,
                std::time::Duration::from_secs(30),
            )
            .await
            .unwrap();
        match got {
            Some(m) => bodies.push(m.body[0]),
            None => break,
        }
    }
    bodies.sort_unstable();
    assert_eq!(bodies, (0..SENDS).collect::<Vec<_>>());
    broker.close().await.unwrap();
}

/// A topic's plain copy rides in its stored message and leaves a tombstone when settled
/// first; a copy made by a rule action has its own records. A rebuild from the records
/// (no snapshot) must bring back exactly the unsettled copy, overrides included, and the
/// last settle must release the message.
#[tokio::test]
async fn settled_and_action_copies_survive_a_rebuild_as_they_were() {
    let (dir, clock, broker) = fresh(1024).await;
    topic_with(&broker, &["plain", "tagged"]).await;
    broker.delete_rule("t", "tagged", "$Default").await.unwrap();
    let tag = RuleDescription {
        filter: Filter::True,
        action: RuleAction::Sql {
            expression: "SET tag = 'yes'".into(),
            compatibility_level: 20,
            parameters: vec![],
        },
        name: None,
    };
    broker
        .put_rule("t", "tagged", "tag", tag, false)
        .await
        .unwrap();
    broker
        .send("t", vec![outgoing(7), outgoing(8)])
        .await
        .unwrap();
    let target = |sub: &str| ReceiveTarget {
        address: Address::Subscription("t".into(), sub.into()),
        dead_letter: false,
    };
    let zero = std::time::Duration::ZERO;
    // The plain copy of 7 is settled (a tombstone: the tagged copy still holds it).
    let got = broker
        .receive(&target("plain"), ReceiveMode::ReceiveAndDelete, zero)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.body, vec![7]);
    broker.close().await.unwrap();
    drop(broker);
    std::fs::remove_file(dir.path().join("index.snapshot")).unwrap();
    let broker = open(dir.path(), &clock, 1024).await;
    let bodies = |sub: &'static str| {
        let broker = &broker;
        async move {
            let tagged = |m: &Received| {
                m.props
                    .user
                    .iter()
                    .any(|(n, v)| n == "tag" && v == "\"yes\"")
            };
            let got = drain(broker, sub).await;
            got.iter()
                .map(|m| (m.body[0], tagged(m)))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(bodies("plain").await, vec![(8, false)], "7 stays settled");
    assert_eq!(bodies("tagged").await, vec![(7, true), (8, true)]);
    let topic = broker.get_entity("t").unwrap().unwrap();
    assert_eq!(
        topic.runtime.size_in_bytes, 0,
        "the last copies released their messages"
    );
}

/// A rebuild walks the lower and the upper half of an owner's sequence numbers apart, on
/// two threads when they span many: here a topic whose 65,536 middle messages matched no
/// subscription. Every message comes back once, in order, through a window of two (so
/// most of them through the cold path).
#[tokio::test]
async fn a_rebuild_over_a_wide_span_of_sequence_numbers_keeps_their_order() {
    let (dir, clock, broker) = fresh(2).await;
    topic_with(&broker, &["kept"]).await;
    sql_rule_only(&broker, "kept", "n IS NOT NULL").await;
    // Messages no rule matches are not stored, but take their sequence numbers.
    let filler = || Outgoing {
        props: MessageProps {
            user: vec![("f".into(), "1".into())],
            ..MessageProps::default()
        },
        body: vec![],
        time_to_live: None,
        scheduled_at: None,
    };
    broker
        .send("t", (0..3).map(outgoing).collect())
        .await
        .unwrap();
    for _ in 0..64 {
        broker
            .send("t", (0..1024).map(|_| filler()).collect())
            .await
            .unwrap();
    }
    broker
        .send("t", (3..6).map(outgoing).collect())
        .await
        .unwrap();
    broker.close().await.unwrap();
    drop(broker);
    std::fs::remove_file(dir.path().join("index.snapshot")).unwrap();
    let broker = open(dir.path(), &clock, 2).await;
    let got: Vec<(u8, u64)> = drain(&broker, "kept")
        .await
        .iter()
        .map(|m| (m.body[0], m.sequence_number))
        .collect();
    let bodies: Vec<u8> = got.iter().map(|(b, _)| *b).collect();
    assert_eq!(bodies, vec![0, 1, 2, 3, 4, 5]);
    assert!(
        got[5].1 - got[0].1 > 65_536,
        "the kept messages span more than 65,536 sequence numbers: {got:?}"
    );
    let topic = broker.get_entity("t").unwrap().unwrap();
    assert_eq!(topic.runtime.size_in_bytes, 0, "everything released");
    broker.close().await.unwrap();
}

/// A receive whose answer cannot be built takes nothing (issue 15, item 3): after a render
/// that fails or panics, in either mode, the message is still there, unlocked, with the
/// delivery count it had, and a restart finds it too.
#[tokio::test]
async fn a_receive_whose_answer_fails_takes_nothing() {
    let (dir, clock, broker) = fresh(1024).await;
    broker
        .put_entity("q", description(EntityKind::Queue), false)
        .await
        .unwrap();
    broker.send("q", vec![outgoing(7)]).await.unwrap();
    let target = ReceiveTarget {
        address: Address::Queue("q".into()),
        dead_letter: false,
    };
    let now = std::time::Duration::ZERO;
    for mode in [ReceiveMode::PeekLock, ReceiveMode::ReceiveAndDelete] {
        let failed = broker
            .receive_with(&target, mode, now, |_| {
                Err::<(), _>(emulator::broker::Error::ClockNotManual)
            })
            .await;
        assert!(failed.is_err(), "{mode:?}");
        let (b, t) = (broker.clone(), target.clone());
        let panicked = tokio::spawn(async move {
            b.receive_with(&t, mode, now, |_| -> emulator::broker::Result<()> {
                panic!("a bug while answering")
            })
            .await
        })
        .await;
        assert!(panicked.unwrap_err().is_panic(), "{mode:?}");
    }
    let got = broker
        .receive(&target, ReceiveMode::PeekLock, now)
        .await
        .unwrap()
        .expect("the message is still there");
    assert_eq!((got.body.clone(), got.delivery_count), (vec![7], 1));
    broker.close().await.unwrap();
    // The old handle holds sled's file lock until it is dropped.
    drop(broker);
    let broker = open(dir.path(), &clock, 1024).await;
    let got = broker
        .receive(&target, ReceiveMode::ReceiveAndDelete, now)
        .await
        .unwrap()
        .expect("and after a restart");
    assert_eq!(got.body, vec![7]);
    broker.close().await.unwrap();
}
