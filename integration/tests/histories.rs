//! Random histories over 2 to 5 backplane nodes on one emulator: broadcasts to everyone or
//! to rooms with exceptions, events to one node, joining and leaving rooms, requests, node
//! crashes and restarts, emulator restarts, and the emulator's clock moved past the lock
//! duration. After quiescence every live node's application has exactly what it should:
//! rooms and exceptions applied, none of its own broadcasts, each event once, in order per
//! origin and lane, nothing acknowledged missing; every request answered by the live nodes.
//! 64 cases by default (`PROPTEST_CASES` for more); failures print each node's report and
//! are kept in `proptest-regressions/histories.txt`.
//!
//! The same property holds with the emulator injecting faults on every messaging
//! operation (its seeded fault injection): ServerBusy, throttling (429), lost
//! acknowledgements of sends and completes, lost locks and duplicate deliveries (16 cases
//! by default).

use std::time::Duration;

use backplane::node::NodeConfig;
use proptest::prelude::*;
use testkit::cluster::Cluster;

const ROOMS: [&str; 3] = ["red", "green", "blue"];

#[derive(Debug, Clone)]
enum Op {
    Publish(usize, Vec<usize>, Vec<usize>),
    PublishTo(usize, usize),
    Join(usize, usize),
    Leave(usize, usize),
    Request(usize, usize),
    Crash(usize),
    Restart(usize),
    RestartBus,
    /// Seconds, past the subscriptions' 60 s lock duration: locked messages come again.
    Advance(u64),
}

fn rooms() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..ROOMS.len(), 0..=2)
}

fn op(nodes: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..nodes, rooms(), rooms()).prop_map(|(i, r, e)| Op::Publish(i, r, e)),
        3 => (0..nodes, 0..nodes).prop_map(|(i, j)| Op::PublishTo(i, j)),
        3 => (0..nodes, 0..ROOMS.len()).prop_map(|(i, r)| Op::Join(i, r)),
        2 => (0..nodes, 0..ROOMS.len()).prop_map(|(i, r)| Op::Leave(i, r)),
        1 => (0..nodes, 0..nodes).prop_map(|(i, j)| Op::Request(i, j)),
        1 => (0..nodes).prop_map(Op::Crash),
        1 => (0..nodes).prop_map(Op::Restart),
        1 => Just(Op::RestartBus),
        1 => prop::sample::select(vec![61u64, 125]).prop_map(Op::Advance),
    ]
}

fn history() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (2usize..=5).prop_flat_map(|n| (Just(n), prop::collection::vec(op(n), 1..30)))
}

fn names(rooms: &[usize]) -> Vec<String> {
    rooms.iter().map(|r| ROOMS[*r].to_string()).collect()
}

/// Faults on messaging (never on management: a node must be able to start), seeded.
fn faults(seed: u64) -> emulator::faults::FaultPlan {
    let plan = format!(
        r#"{{"seed": {seed}, "rules": [
            {{"operations": ["send", "peekLock", "complete"], "probability": 0.08,
              "effect": {{"type": "serverBusy", "retryAfter": "0"}}}},
            {{"operations": ["send", "peekLock"], "probability": 0.04,
              "effect": {{"type": "status", "status": 429, "retryAfter": "0"}}}},
            {{"operations": ["send", "complete"], "probability": 0.05,
              "effect": {{"type": "dropAfterApply"}}}},
            {{"operations": ["complete"], "probability": 0.05, "effect": {{"type": "lockLost"}}}},
            {{"operations": ["peekLock"], "probability": 0.05,
              "effect": {{"type": "duplicateDelivery"}}}}
        ]}}"#
    );
    emulator::faults::FaultPlan::parse(plan.as_bytes()).expect("a valid plan")
}

async fn run(n: usize, ops: &[Op]) -> Result<(), String> {
    run_with(n, ops, None).await.map(|_| ())
}

async fn run_with(
    n: usize,
    ops: &[Op],
    faults: Option<emulator::faults::FaultPlan>,
) -> Result<u64, String> {
    let config = NodeConfig {
        receivers: 2,
        receive_timeout: Duration::from_millis(500),
        gap_timeout: Duration::from_millis(500),
        heartbeat_interval: Duration::from_secs(1),
        // Longer than any history: only the clock moves idle time, never past this.
        idle_delete: Duration::from_secs(24 * 3600),
        ..NodeConfig::default()
    };
    let mut cluster = Cluster::start_with_faults(n, "histories", config, faults).await?;
    for op in ops {
        let step = match op {
            Op::Publish(i, r, e) => cluster.publish(*i, names(r), names(e)).await,
            Op::PublishTo(i, j) => cluster.publish_to(*i, *j).await,
            Op::Join(i, r) => cluster.set_room(*i, ROOMS[*r], true).await,
            Op::Leave(i, r) => cluster.set_room(*i, ROOMS[*r], false).await,
            Op::Request(i, j) => cluster.request(*i, *j).await,
            Op::Crash(i) => {
                cluster.crash(*i).await;
                Ok(())
            }
            Op::Restart(i) => cluster.restart(*i).await,
            Op::RestartBus => cluster.restart_bus().await,
            Op::Advance(s) => cluster.advance(Duration::from_secs(*s)).await,
        };
        if let Err(e) = step {
            return Err(format!("{op:?} failed: {e}\n{}", cluster.report()));
        }
    }
    cluster.check().await?;
    let injected = cluster.faults_injected();
    cluster.shutdown().await?;
    Ok(injected)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/histories.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn nodes_on_the_emulator_get_exactly_their_events((n, ops) in history()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let outcome = rt.block_on(run(n, &ops));
        prop_assert!(outcome.is_ok(), "{} nodes, {:?}\n{}", n, ops, outcome.err().unwrap_or_default());
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse::<u32>().ok()).map_or(16, |c| c.div_ceil(4)),
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/histories.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn nodes_get_exactly_their_events_through_injected_faults((n, ops) in history(), seed in any::<u64>()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let outcome = rt.block_on(run_with(n, &ops, Some(faults(seed))));
        prop_assert!(outcome.is_ok(), "{} nodes, seed {}, {:?}\n{}", n, seed, ops, outcome.err().unwrap_or_default());
    }
}

/// One fixed history under faults, checked to have met some: the property above runs
/// with faults that really fire (the count survives the bus restart).
#[test]
fn a_fixed_history_meets_injected_faults_and_still_holds() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut ops = Vec::new();
    for i in 0..12 {
        ops.push(Op::Publish(i % 3, vec![], vec![]));
        ops.push(Op::PublishTo(i % 3, (i + 1) % 3));
    }
    ops.push(Op::RestartBus);
    ops.push(Op::Publish(0, vec![0], vec![]));
    let injected = rt
        .block_on(run_with(3, &ops, Some(faults(7))))
        .unwrap_or_else(|report| panic!("{report}"));
    println!("{injected} faults injected");
    assert!(injected >= 3, "only {injected} faults injected");
}

/// Shrunk from a failure the property found (a race in the harness, fixed there): an
/// event for rooms a node's client is not in, published just before the client joins one
/// of them, must not reach the client; the join waits until the node took it from the bus.
#[test]
fn regression_join_right_after_a_publish_for_that_room() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ops = [
        Op::Publish(0, vec![1, 0], vec![]),
        Op::Join(1, 0),
        Op::Publish(0, vec![0], vec![]),
        Op::RestartBus,
        Op::Advance(61),
        Op::Publish(0, vec![0], vec![2]),
    ];
    if let Err(report) = rt.block_on(run(2, &ops)) {
        panic!("{report}");
    }
}
