//! `GET /metrics`: OpenMetrics text (which Prometheus scrapes), encoded by
//! `prometheus-client`. Unauthenticated like `/health`: it shows counts and entity names,
//! never message content or keys, and the emulator binds to loopback by default.
//!
//! Request counts are kept here as requests finish; everything else is read from the
//! broker, the store writer, the fault injector and the connection gauges at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use servicebus_wire::EntityKind;

use super::AppState;
use crate::store::{BATCH_BUCKETS, Buckets, COMMIT_BUCKETS_US};

/// Entities listed per page while a scrape walks them.
const PAGE: usize = 1000;

/// Open connections, kept by the listeners (a guard per connection).
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) http: AtomicUsize,
    pub(crate) amqp: AtomicUsize,
}

/// Counts one open connection on `counter` while it lives.
#[derive(Debug)]
pub(crate) struct Open(Arc<Live>, fn(&Live) -> &AtomicUsize);

impl Open {
    pub(crate) fn new(live: &Arc<Live>, which: fn(&Live) -> &AtomicUsize) -> Self {
        which(live).fetch_add(1, Ordering::Relaxed);
        Open(live.clone(), which)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) operation: &'static str,
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntityLabels {
    entity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    entity: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

/// The counters kept between scrapes.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) live: Arc<Live>,
}

/// A store histogram as read at scrape time; dividing by `divisor` turns its unit into the
/// metric's.
#[derive(Debug)]
struct Snapshot<const N: usize> {
    buckets: Buckets<N>,
    bounds: &'static [u64],
    divisor: f64,
}

impl<const N: usize> TypedMetric for Snapshot<N> {
    const TYPE: MetricType = MetricType::Histogram;
}

impl<const N: usize> EncodeMetric for Snapshot<N> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let bounds = self
            .bounds
            .iter()
            .map(|b| *b as f64 / self.divisor)
            .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds.zip(self.buckets.counts).collect();
        let count = self.buckets.counts.iter().sum();
        encoder.encode_histogram::<NoLabelSet>(
            self.buckets.sum as f64 / self.divisor,
            count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Serves a scrape.
pub(super) fn scrape(state: &AppState) -> Response {
    match render(state) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => super::ApiError::from(e).render(&state.namespace, "/metrics"),
    }
}

fn render(state: &AppState) -> Result<String, crate::broker::Error> {
    let mut registry = Registry::with_prefix("servicebus_emulator");
    registry.register(
        "requests",
        "REST requests answered, by operation and status",
        state.metrics.requests.clone(),
    );

    let messages = Family::<MessageLabels, Gauge>::default();
    for (entity, counts) in message_counts(state)? {
        for (label, value) in [
            ("active", counts.active),
            ("deadLetter", counts.dead_letter),
            ("scheduled", counts.scheduled),
        ] {
            let labels = MessageLabels {
                entity: entity.clone(),
                state: label,
            };
            messages
                .get_or_create(&labels)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }
    registry.register(
        "messages",
        "Messages held, by queue or subscription and state",
        messages,
    );

    let (sent, received) = (
        Family::<EntityLabels, Counter>::default(),
        Family::<EntityLabels, Counter>::default(),
    );
    let mut parked = 0;
    for t in state.broker.traffic() {
        let labels = EntityLabels { entity: t.path };
        if t.kind != EntityKind::Subscription {
            sent.get_or_create(&labels).inc_by(t.sent);
        }
        if t.kind != EntityKind::Topic {
            received.get_or_create(&labels).inc_by(t.received);
        }
        parked += t.waiting;
    }
    registry.register(
        "sent_messages",
        "Messages accepted, by queue or topic (REST and AMQP)",
        sent,
    );
    registry.register(
        "received_messages",
        "Messages received, by queue or subscription (REST and AMQP)",
        received,
    );
    let gauge = |value: usize| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        g
    };
    registry.register(
        "parked_receives",
        "Receives waiting in a long poll now",
        gauge(parked),
    );
    let connections = Family::<ProtocolLabels, Gauge>::default();
    let live = &state.metrics.live;
    for (protocol, value) in [("http", &live.http), ("amqp", &live.amqp)] {
        connections
            .get_or_create(&ProtocolLabels { protocol })
            .set(i64::try_from(value.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
    }
    registry.register("connections", "Open connections, by protocol", connections);

    let faults = Counter::<u64>::default();
    faults.inc_by(state.faults.injected());
    registry.register("faults_injected", "Faults injected since the start", faults);

    let writer = state.broker.writer_stats();
    registry.register(
        "group_commit_latency_seconds",
        "Store write cycles (group commits), from start to acknowledgement",
        Snapshot {
            buckets: writer.commit_latency,
            bounds: &COMMIT_BUCKETS_US,
            divisor: 1e6,
        },
    );
    registry.register(
        "group_commit_batch_size",
        "Write requests served per store write cycle (group commit)",
        Snapshot {
            buckets: writer.batch_size,
            bounds: &BATCH_BUCKETS,
            divisor: 1.0,
        },
    );
    let mut text = String::new();
    // Writing to a String does not fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    Ok(text)
}

/// Every queue's and subscription's counts.
fn message_counts(
    state: &AppState,
) -> Result<Vec<(String, servicebus_wire::description::CountDetails)>, crate::broker::Error> {
    let broker = &state.broker;
    let mut out = Vec::new();
    for kind in [EntityKind::Queue, EntityKind::Topic] {
        let mut skip = 0;
        loop {
            let page = broker.list_entities(kind, skip, PAGE)?;
            let n = page.items.len();
            for view in page.items {
                if kind == EntityKind::Queue {
                    out.push((view.record.name, view.runtime.counts));
                    continue;
                }
                let topic = view.record.name;
                let mut sub_skip = 0;
                loop {
                    let subs = broker.list_subscriptions(&topic, sub_skip, PAGE)?;
                    let m = subs.items.len();
                    for sub in subs.items {
                        out.push((
                            format!("{topic}/Subscriptions/{}", sub.record.name),
                            sub.runtime.counts,
                        ));
                    }
                    sub_skip += m;
                    if m == 0 || sub_skip >= subs.total {
                        break;
                    }
                }
            }
            skip += n;
            if n == 0 || skip >= page.total {
                break;
            }
        }
    }
    Ok(out)
}
