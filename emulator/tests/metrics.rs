//! `GET /metrics`, read by the official Prometheus Python client's OpenMetrics parser
//! (`integration/compat/parse_metrics.py`), not by string matching: requests by operation
//! and status, messages by entity and state, sends and receives by entity, the group
//! commit histograms, connections, parked receives and injected faults.

mod common;

use common::{Client, Server, queue};
use serde_json::Value;

/// The samples of a scrape, as the parser read them.
async fn scrape(server: &Server) -> Vec<Value> {
    let text = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap();
    assert_eq!(text.status(), 200);
    assert!(
        text.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = text.text().await.unwrap();
    let mut child = tokio::process::Command::new(testkit::compat_python())
        .arg("parse_metrics.py")
        .current_dir(testkit::compat_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut child.stdin.take().unwrap(), text.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "the parser refused the text:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| s["labels"][*k].as_str() == Some(*v))
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))["value"]
        .as_f64()
        .unwrap()
}

async fn send(c: &Client, path: &str) {
    assert_eq!(c.post_message(path, "m", &[]).await.status, 201);
}

#[tokio::test]
async fn metrics_parse_as_openmetrics_and_count_what_happened() {
    let server = Server::memory().await;
    let c = server.client();
    assert_eq!(c.put("/orders", queue("")).await.status, 201);
    c.topic_with_subscription("news", "s").await;
    for _ in 0..3 {
        send(&c, "/orders/messages").await;
    }
    send(&c, "/news/messages").await;
    assert_eq!(c.drain("orders").await.len(), 3);
    send(&c, "/orders/messages").await;
    // A refused request, and an injected fault.
    let r = c
        .send("POST", "/orders/messages", Some("x".into()), &[], None)
        .await;
    assert_eq!(r.status, 401);
    let plan =
        r#"{"rules": [{"operations": ["send"], "times": 1, "effect": {"type": "serverBusy"}}]}"#;
    let set = c
        .send(
            "PUT",
            "/$emulator/faults",
            Some(plan.into()),
            &[],
            Some(c.token()),
        )
        .await;
    assert_eq!(set.status, 200);
    assert_eq!(
        c.post_message("/orders/messages", "m", &[]).await.status,
        503
    );
    // A parked long poll.
    assert_eq!(c.put("/idle", queue("")).await.status, 201);
    let waiting = {
        let c = c.clone();
        tokio::spawn(async move {
            c.send(
                "POST",
                "/idle/messages/head?timeout=60",
                None,
                &[],
                Some(c.token()),
            )
            .await
        })
    };
    server.parked("idle").await;

    let samples = scrape(&server).await;
    let requests = |operation: &str, status: &str| {
        value(
            &samples,
            "servicebus_emulator_requests_total",
            &[("operation", operation), ("status", status)],
        )
    };
    assert_eq!(requests("send", "201"), 5.0);
    assert_eq!(requests("send", "401"), 1.0);
    assert_eq!(requests("send", "503"), 1.0);
    assert_eq!(requests("receiveAndDelete", "200"), 3.0);
    assert_eq!(requests("receiveAndDelete", "204"), 1.0);
    assert_eq!(requests("manage", "201"), 4.0);
    let messages = |entity: &str, state: &str| {
        value(
            &samples,
            "servicebus_emulator_messages",
            &[("entity", entity), ("state", state)],
        )
    };
    assert_eq!(messages("orders", "active"), 1.0);
    assert_eq!(messages("news/Subscriptions/s", "active"), 1.0);
    assert_eq!(messages("orders", "deadLetter"), 0.0);
    let sent = |entity| {
        value(
            &samples,
            "servicebus_emulator_sent_messages_total",
            &[("entity", entity)],
        )
    };
    assert_eq!((sent("orders"), sent("news")), (4.0, 1.0));
    let received = value(
        &samples,
        "servicebus_emulator_received_messages_total",
        &[("entity", "orders")],
    );
    assert_eq!(received, 3.0);
    assert_eq!(
        value(&samples, "servicebus_emulator_parked_receives", &[]),
        1.0
    );
    assert!(
        value(
            &samples,
            "servicebus_emulator_connections",
            &[("protocol", "http")]
        ) >= 1.0
    );
    assert_eq!(
        value(&samples, "servicebus_emulator_faults_injected_total", &[]),
        1.0
    );
    // Every durable write went through a group commit: the histograms count them.
    let commits = value(
        &samples,
        "servicebus_emulator_group_commit_latency_seconds_count",
        &[],
    );
    let all = value(
        &samples,
        "servicebus_emulator_group_commit_latency_seconds_bucket",
        &[("le", "+Inf")],
    );
    assert!(commits >= 5.0 && all == commits, "{commits} {all}");
    let batches = value(
        &samples,
        "servicebus_emulator_group_commit_batch_size_count",
        &[],
    );
    assert_eq!(batches, commits);
    let requests_served = value(
        &samples,
        "servicebus_emulator_group_commit_batch_size_sum",
        &[],
    );
    assert!(requests_served >= commits);

    server.stop().await;
    let _ = waiting.await;
}
