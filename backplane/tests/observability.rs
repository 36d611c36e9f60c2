//! A node as an operator sees it: its counters through the `metrics` facade (read with
//! metrics-util's debugging recorder, as an exporter would), spans on publish and receive
//! carrying the origin and sequence number, and the health check across a bus outage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backplane::ids::NodeId;
use backplane::node::{Node, NodeConfig, Received};
use backplane::servicebus::Client;
use backplane::transport::{MemoryTransport, ServiceBusTransport};
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::sync::mpsc::Receiver;
use tracing_subscriber::layer::SubscriberExt as _;

fn config(name: &str) -> NodeConfig {
    NodeConfig {
        node_id: Some(NodeId::new(name).unwrap()),
        receivers: 2,
        receive_timeout: Duration::from_millis(200),
        ..NodeConfig::default()
    }
}

async fn next(events: &mut Receiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .expect("an event in time")
        .expect("the node runs")
}

/// Every metric the recorder holds now. A snapshot resets what it read (counters and gauges
/// read 0 until the next export), so each check reads one snapshot.
fn snapshot(snapshotter: &Snapshotter) -> Vec<(CompositeKey, DebugValue)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect()
}

/// The value of the metric `name` labelled `node` in `snapshot`.
fn value(snapshot: &[(CompositeKey, DebugValue)], name: &str, node: &str) -> Option<f64> {
    snapshot
        .iter()
        .find(|(key, _)| {
            key.key().name() == name
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "node" && l.value() == node)
        })
        .map(|(_, v)| match v {
            DebugValue::Counter(c) => *c as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(_) => f64::NAN,
        })
}

/// Every span's name and fields, those given at creation and those recorded later.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<SpanLog>>);

#[derive(Default)]
struct SpanLog {
    spans: Vec<(String, String)>,
    /// Where each live span id's entry is (the subscriber reuses ids of closed spans).
    at: HashMap<u64, usize>,
}

impl<S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>>
    tracing_subscriber::Layer<S> for Spans
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let name = attrs.metadata().name().to_string();
        let mut log = self.0.lock().unwrap();
        let at = log.spans.len();
        log.spans.push((name, fields.0));
        log.at.insert(id.into_u64(), at);
    }

    fn on_record(
        &self,
        span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        let mut log = self.0.lock().unwrap();
        if let Some(&at) = log.at.get(&span.into_u64()) {
            log.spans[at].1.push_str(&fields.0);
        }
    }
}

#[derive(Default)]
struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

#[tokio::test]
async fn counters_are_exported_and_publish_and_receive_are_traced() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    let spans = Spans::default();
    // The test runs on one thread (tokio's test runtime): every task sees this subscriber.
    let _traced = tracing::subscriber::set_default(
        tracing_subscriber::registry()
            .with(spans.clone())
            .with(tracing_subscriber::filter::LevelFilter::DEBUG),
    );

    let transport = MemoryTransport::new();
    let (a, _a_events) = Node::start(transport.clone(), config("obs-a"))
        .await
        .unwrap();
    let (b, mut b_events) = Node::start(transport.clone(), config("obs-b"))
        .await
        .unwrap();
    for i in 0..3u8 {
        a.publish(vec![], vec![], vec![i]).await.unwrap();
    }
    let mut received = Vec::new();
    for _ in 0..3 {
        received.push(next(&mut b_events).await);
    }
    // Every export sets all of them, so one snapshot after an export holds them together.
    let exported = || async {
        let now = snapshot(&snapshotter);
        let published = value(&now, "backplane_events_published_total", "obs-a");
        let received = value(&now, "backplane_events_received_total", "obs-b");
        let live = value(&now, "backplane_live_nodes", "obs-b");
        let duplicates = value(&now, "backplane_duplicates_suppressed_total", "obs-b");
        match (published, received, live, duplicates) {
            (Some(3.0), Some(3.0), Some(2.0), Some(0.0)) => Ok(()),
            other => Err(other),
        }
    };
    testkit::wait_until(Duration::from_secs(30), Duration::from_millis(20), exported)
        .await
        .expect("the counters reach the recorder");

    // Heartbeats take sequence numbers too: the events' own are what the spans must carry.
    let seen = spans.0.lock().unwrap().spans.clone();
    let has = |name: &str, needles: &[&str]| {
        seen.iter().any(|(n, f)| {
            n == name
                && needles
                    .iter()
                    .all(|x| f.split(' ').any(|field| field == *x))
        })
    };
    for event in &received {
        assert_eq!(event.origin.as_str(), "obs-a");
        let seq = format!("seq={}", event.seq);
        assert!(
            has("backplane.publish", &["origin=obs-a", &seq]),
            "{seq}: {seen:?}"
        );
        assert!(
            has("backplane.receive", &["node=obs-b", "origin=obs-a", &seq]),
            "{seq}: {seen:?}"
        );
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_follows_the_bus_down_and_back() {
    let emulator = testkit::InProcessEmulator::start().await.unwrap();
    let addr = emulator.addr();
    let client = Client::from_connection_string(&emulator.connection_string()).unwrap();
    let transport = ServiceBusTransport::new(client, "probe").await.unwrap();
    let (node, _events) = Node::start(transport, config("health-a")).await.unwrap();
    let answered = || async {
        let h = node.health();
        (h.connected && h.last_contact.is_some())
            .then_some(())
            .ok_or(h)
    };
    testkit::wait_until(Duration::from_secs(30), Duration::from_millis(10), answered)
        .await
        .expect("the bus answers");
    assert!(node.health().subscription_present);

    // The bus goes away: the node reports it is not connected.
    emulator.stop().await.unwrap();
    let down = || async { (!node.health().connected).then_some(()).ok_or(()) };
    testkit::wait_until(Duration::from_secs(60), Duration::from_millis(10), down)
        .await
        .expect("a failed receive shows");

    // It comes back empty (in memory): the node finds its subscription gone, opens it
    // again, and reports connected with its place present.
    let back = testkit::InProcessEmulator::start_on(emulator::Settings::in_memory(), addr)
        .await
        .unwrap();
    let healthy = || async {
        let h = node.health();
        (h.connected && h.subscription_present)
            .then_some(())
            .ok_or(h)
    };
    testkit::wait_until(Duration::from_secs(60), Duration::from_millis(10), healthy)
        .await
        .expect("the node recovers");
    node.shutdown().await.ok();
    back.stop().await.unwrap();
}
