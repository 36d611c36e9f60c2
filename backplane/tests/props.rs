//! Property test over random histories of 2 to 5 nodes: publish to all, publish to one
//! node, crash, restart. After quiescence every live node has received exactly what it
//! should: every broadcast published by another node after it started and every event sent
//! to it, once each, none of its own, nothing a publisher was told was delivered missing, and
//! in per-origin order within each lane: an origin's broadcasts in publish order, its events
//! to this node in publish order (the two lanes are not ordered relative to each other).
//! 64 cases by default; more with `PROPTEST_CASES`.

use std::collections::BTreeMap;
use std::time::Duration;

use backplane::ids::NodeId;
use backplane::node::{Node, NodeConfig, Received};
use backplane::transport::MemoryTransport;
use proptest::prelude::*;
use tokio::sync::mpsc::Receiver;

#[derive(Debug, Clone)]
enum Op {
    Publish(usize),
    PublishTo(usize, usize),
    Crash(usize),
    Restart(usize),
}

fn op(nodes: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..nodes).prop_map(Op::Publish),
        3 => (0..nodes, 0..nodes).prop_map(|(a, b)| Op::PublishTo(a, b)),
        1 => (0..nodes).prop_map(Op::Crash),
        1 => (0..nodes).prop_map(Op::Restart),
    ]
}

fn history() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (2usize..=5).prop_flat_map(|n| (Just(n), prop::collection::vec(op(n), 1..40)))
}

/// A slot: the node running there (if any) and what it must and did receive.
struct Slot {
    node: Option<Node<MemoryTransport>>,
    events: Option<Receiver<Received>>,
    /// Expected payloads by (origin, lane), in publish order; lane true = sent to this node.
    expected: BTreeMap<(NodeId, bool), Vec<Vec<u8>>>,
    generation: usize,
}

fn config(slot: usize, generation: usize) -> NodeConfig {
    NodeConfig {
        node_id: Some(NodeId::new(&format!("s{slot}-g{generation}")).unwrap()),
        receivers: 2,
        receive_timeout: Duration::from_millis(500),
        gap_timeout: Duration::from_millis(300),
        ..NodeConfig::default()
    }
}

async fn run(n: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let transport = MemoryTransport::new();
    let mut slots: Vec<Slot> = Vec::new();
    for i in 0..n {
        let (node, events) = Node::start(transport.clone(), config(i, 0)).await.unwrap();
        slots.push(Slot {
            node: Some(node),
            events: Some(events),
            expected: BTreeMap::new(),
            generation: 0,
        });
    }
    let mut counter = 0u32;
    for op in &ops {
        match *op {
            Op::Publish(i) | Op::PublishTo(i, _) => {
                let Some(node) = slots[i].node.as_ref() else {
                    continue;
                };
                counter += 1;
                let origin = node.id().clone();
                let payload = format!("{origin}#{counter}").into_bytes();
                let target = match *op {
                    Op::PublishTo(_, j) if j != i && slots[j].node.is_some() => Some(j),
                    Op::PublishTo(..) => continue,
                    _ => None,
                };
                match target {
                    Some(j) => {
                        let to = slots[j].node.as_ref().unwrap().id().clone();
                        node.publish_to(&to, payload.clone()).await.unwrap();
                        slots[j]
                            .expected
                            .entry((origin, true))
                            .or_default()
                            .push(payload);
                    }
                    None => {
                        node.publish(vec![], vec![], payload.clone()).await.unwrap();
                        for (k, slot) in slots.iter_mut().enumerate() {
                            if k != i && slot.node.is_some() {
                                slot.expected
                                    .entry((origin.clone(), false))
                                    .or_default()
                                    .push(payload.clone());
                            }
                        }
                    }
                }
            }
            Op::Crash(i) => {
                if let Some(node) = slots[i].node.take() {
                    node.crash().await;
                    slots[i].events = None;
                    slots[i].expected.clear();
                }
            }
            Op::Restart(i) => {
                if let Some(node) = slots[i].node.take() {
                    node.crash().await;
                }
                slots[i].generation += 1;
                let (node, events) = Node::start(transport.clone(), config(i, slots[i].generation))
                    .await
                    .unwrap();
                slots[i] = Slot {
                    node: Some(node),
                    events: Some(events),
                    expected: BTreeMap::new(),
                    generation: slots[i].generation,
                };
            }
        }
    }
    // Quiescence: every live node gets what it should (deadline, no fixed sleep).
    for (i, slot) in slots.iter_mut().enumerate() {
        let (Some(node), Some(events)) = (slot.node.as_ref(), slot.events.as_mut()) else {
            continue;
        };
        let want: usize = slot.expected.values().map(Vec::len).sum();
        let mut got: BTreeMap<(NodeId, bool), Vec<Vec<u8>>> = BTreeMap::new();
        let arrived =
            testkit::collect_until(Duration::from_secs(30), events, |g| g.len() >= want).await;
        for e in arrived {
            prop_assert_ne!(&e.origin, node.id(), "slot {} received its own event", i);
            got.entry((e.origin.clone(), e.rooms.is_none()))
                .or_default()
                .push(e.payload);
        }
        // Anything more would be a duplicate or a stray: it would be here within the
        // duplicate's own delivery time, which the wait above already allowed for.
        while let Ok(e) = events.try_recv() {
            got.entry((e.origin.clone(), e.rooms.is_none()))
                .or_default()
                .push(e.payload);
        }
        prop_assert_eq!(
            &got,
            &slot.expected,
            "slot {} ({}) after {:?}",
            i,
            node.id(),
            ops
        );
    }
    for slot in slots {
        if let Some(node) = slot.node {
            node.shutdown().await.unwrap();
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/props.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_live_node_gets_exactly_its_events_in_order((n, ops) in history()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(n, ops))?;
    }
}
