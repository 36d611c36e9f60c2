//! The soak's traffic: what each connection does, valid and malformed, and what it records.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use rand::rngs::SmallRng;
use reqwest::StatusCode;

/// The entities the soak uses.
pub(crate) const QUEUE: &str = "soak-q";
/// The topic, and its subscriptions with what each one's rules select.
pub(crate) const TOPIC: &str = "soak-t";
/// `all` ($Default), `even` (`n % 2 = 0`), `like` (`tag LIKE 'k%1'`), `tagged` (`n > 5`,
/// with an action; no $Default).
pub(crate) const SUBSCRIPTIONS: [&str; 4] = ["all", "even", "like", "tagged"];

/// Whether subscription `s` receives a message with property `n` and `tag`.
pub(crate) fn selects(s: &str, n: u64, tag: &str) -> bool {
    match s {
        "all" => true,
        "even" => n.is_multiple_of(2),
        "like" => tag.starts_with('k') && tag.ends_with('1'),
        _ => n > 5,
    }
}

/// What the whole run saw.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// Acknowledged sends, by queue or subscription.
    pub(crate) acked: HashMap<String, HashSet<String>>,
    /// Messages received (completed or received-and-deleted), with how often.
    pub(crate) received: HashMap<String, HashMap<String, u32>>,
    /// Answers by status, valid and malformed requests together.
    pub(crate) statuses: HashMap<u16, u64>,
    /// Requests that failed below HTTP (connection reset by a 431 close, say), by kind.
    pub(crate) transport_errors: u64,
    /// Valid operations (long polls that found nothing excepted), in microseconds.
    pub(crate) latency: Option<hdrhistogram::Histogram<u64>>,
    /// Operations done.
    pub(crate) operations: u64,
}

impl Record {
    fn status(&mut self, s: StatusCode) {
        *self.statuses.entry(s.as_u16()).or_default() += 1;
    }

    fn took(&mut self, since: Instant) {
        let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        if let Some(h) = &mut self.latency {
            let _ = h.record(micros.max(1));
        }
    }

    fn ack(&mut self, to: &str, id: String) {
        self.acked.entry(to.to_string()).or_default().insert(id);
    }

    fn got(&mut self, from: &str, id: String) {
        *self
            .received
            .entry(from.to_string())
            .or_default()
            .entry(id)
            .or_default() += 1;
    }
}

/// One connection's worker.
pub(crate) struct Worker {
    pub(crate) id: usize,
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) record: Arc<Mutex<Record>>,
    pub(crate) rng: SmallRng,
    pub(crate) next: u64,
}

/// A std mutex: nothing awaits under it.
pub(crate) fn lock(m: &Mutex<Record>) -> std::sync::MutexGuard<'_, Record> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Worker {
    fn unique(&mut self) -> String {
        self.next += 1;
        format!("w{}-{}", self.id, self.next)
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Option<(StatusCode, reqwest::header::HeaderMap, Vec<u8>)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", &self.token)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        match req.send().await {
            Ok(r) => {
                let (status, headers) = (r.status(), r.headers().clone());
                let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                lock(&self.record).status(status);
                Some((status, headers, body))
            }
            Err(_) => {
                lock(&self.record).transport_errors += 1;
                None
            }
        }
    }

    /// One operation, drawn by weight.
    pub(crate) async fn step(&mut self) {
        lock(&self.record).operations += 1;
        // Weighted so that receivers keep up with senders (about 28 messages in a hundred
        // operations to the queue against 32 receives; 20 subscription copies against 25),
        // and the backlog, hence the store, stays bounded over a long run.
        match self.rng.random_range(0..100) {
            0..10 => self.send_queue().await,
            10..14 => self.batch_queue().await,
            14..22 => self.send_topic().await,
            22..54 => self.receive_queue().await,
            54..79 => self.receive_subscription().await,
            79..84 => self.manage().await,
            _ => self.malformed().await,
        }
    }

    async fn send_queue(&mut self) {
        let id = self.unique();
        let props = format!(r#"{{"MessageId":"{id}"}}"#);
        let started = Instant::now();
        let answer = self
            .request(
                reqwest::Method::POST,
                &format!("/{QUEUE}/messages"),
                &[("BrokerProperties", props)],
                id.clone().into_bytes(),
            )
            .await;
        if let Some((StatusCode::CREATED, ..)) = answer {
            let mut r = lock(&self.record);
            r.took(started);
            r.ack(QUEUE, id);
        }
    }

    async fn batch_queue(&mut self) {
        let ids: Vec<String> = (0..self.rng.random_range(1..9))
            .map(|_| self.unique())
            .collect();
        let items: Vec<String> = ids
            .iter()
            .map(|id| format!(r#"{{"Body":"{id}","BrokerProperties":{{"MessageId":"{id}"}}}}"#))
            .collect();
        let body = format!("[{}]", items.join(",")).into_bytes();
        let started = Instant::now();
        let batch = (
            "content-type",
            "application/vnd.microsoft.servicebus.json".to_string(),
        );
        if let Some((StatusCode::CREATED, ..)) = self
            .request(
                reqwest::Method::POST,
                &format!("/{QUEUE}/messages"),
                &[batch],
                body,
            )
            .await
        {
            let mut r = lock(&self.record);
            r.took(started);
            for id in ids {
                r.ack(QUEUE, id);
            }
        }
    }

    async fn send_topic(&mut self) {
        let id = self.unique();
        let n: u64 = self.rng.random_range(0..10);
        let tag = ["k1", "k21", "x1", "k2", "kk1"][self.rng.random_range(0..5)];
        let headers = [
            ("BrokerProperties", format!(r#"{{"MessageId":"{id}"}}"#)),
            ("n", n.to_string()),
            ("tag", format!("\"{tag}\"")),
        ];
        let started = Instant::now();
        if let Some((StatusCode::CREATED, ..)) = self
            .request(
                reqwest::Method::POST,
                &format!("/{TOPIC}/messages"),
                &headers,
                id.clone().into_bytes(),
            )
            .await
        {
            let mut r = lock(&self.record);
            r.took(started);
            for s in SUBSCRIPTIONS.iter().filter(|s| selects(s, n, tag)) {
                r.ack(&format!("{TOPIC}/{s}"), id.clone());
            }
        }
    }

    /// Receives with a long poll of 0 to 3 s. Only polls of 0 s are timed as a whole
    /// (a longer one waits for a message by design); the settle always is.
    async fn receive_queue(&mut self) {
        let wait = self.rng.random_range(0..4);
        let mut started = Instant::now();
        let path = format!("/{QUEUE}/messages/head?timeout={wait}");
        let Some((StatusCode::CREATED, headers, body)) = self
            .request(reqwest::Method::POST, &path, &[], Vec::new())
            .await
        else {
            return;
        };
        let Some(location) = headers.get("location").and_then(|v| v.to_str().ok()) else {
            return;
        };
        let Some(settle) = location
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
        else {
            return;
        };
        if wait > 0 {
            started = Instant::now();
        }
        if let Some((StatusCode::OK, ..)) = self
            .request(reqwest::Method::DELETE, &settle, &[], Vec::new())
            .await
        {
            let mut r = lock(&self.record);
            r.took(started);
            r.got(QUEUE, String::from_utf8_lossy(&body).into_owned());
        }
    }

    async fn receive_subscription(&mut self) {
        // In proportion to what each one receives: all 8, even 4, like 4.8, tagged 3.2.
        let s = match self.rng.random_range(0..20) {
            0..8 => SUBSCRIPTIONS[0],
            8..12 => SUBSCRIPTIONS[1],
            12..17 => SUBSCRIPTIONS[2],
            _ => SUBSCRIPTIONS[3],
        };
        let wait = self.rng.random_range(0..4);
        let path = format!("/{TOPIC}/Subscriptions/{s}/messages/head?timeout={wait}");
        let started = Instant::now();
        if let Some((StatusCode::OK, _, body)) = self
            .request(reqwest::Method::DELETE, &path, &[], Vec::new())
            .await
        {
            let mut r = lock(&self.record);
            if wait == 0 {
                r.took(started);
            }
            r.got(
                &format!("{TOPIC}/{s}"),
                String::from_utf8_lossy(&body).into_owned(),
            );
        }
    }

    async fn manage(&mut self) {
        let name = format!("tmp-{}-{}", self.id, self.next % 3);
        let entry = servicebus_wire::atom::request_entry(
            &servicebus_wire::EntityDescription::defaults(servicebus_wire::EntityKind::Queue)
                .to_request_xml(None),
        );
        let started = Instant::now();
        let put = self
            .request(
                reqwest::Method::PUT,
                &format!("/{name}"),
                &[],
                entry.into_bytes(),
            )
            .await;
        let _ = self
            .request(reqwest::Method::GET, &format!("/{name}"), &[], Vec::new())
            .await;
        let _ = self
            .request(
                reqwest::Method::DELETE,
                &format!("/{name}"),
                &[],
                Vec::new(),
            )
            .await;
        if let Some((StatusCode::CREATED, ..)) = put {
            lock(&self.record).took(started);
        }
        self.next += 1;
    }

    /// A request a careless or hostile client would send; its answer must be below 500.
    async fn malformed(&mut self) {
        let post = reqwest::Method::POST;
        let queue = format!("/{QUEUE}/messages");
        let bad_props = |v: &str| vec![("BrokerProperties", v.to_string())];
        match self.rng.random_range(0..12) {
            0 => drop(
                self.request(post, &queue, &bad_props("{not json"), b"x".to_vec())
                    .await,
            ),
            1 => drop(
                self.request(
                    post,
                    &queue,
                    &bad_props(r#"{"TimeToLive":"1e400"}"#),
                    b"x".to_vec(),
                )
                .await,
            ),
            2 => drop(
                self.request(
                    post,
                    &queue,
                    &bad_props(r#"{"TimeToLiveTimeSpan":"inf.00:00:00"}"#),
                    b"x".to_vec(),
                )
                .await,
            ),
            3 => drop(
                self.request(
                    reqwest::Method::PUT,
                    "/bad-xml",
                    &[],
                    b"<entry><content>".to_vec(),
                )
                .await,
            ),
            4 => {
                let decls: String = (0..300).map(|i| format!(" xmlns:p{i}=\"u{i}\"")).collect();
                let body = format!("<QueueDescription{decls}/>").into_bytes();
                drop(
                    self.request(reqwest::Method::PUT, "/ns-bomb", &[], body)
                        .await,
                );
            }
            5 => {
                let mut req = self.http.post(format!("{}{queue}", self.base)).body("x");
                req = req.header(
                    "authorization",
                    "SharedAccessSignature sr=q&sig=AAAA&se=1&skn=x",
                );
                match req.send().await {
                    Ok(r) => lock(&self.record).status(r.status()),
                    Err(_) => lock(&self.record).transport_errors += 1,
                }
            }
            6 => drop(
                self.request(
                    reqwest::Method::GET,
                    "/%2E%2E/x/messages/1/2",
                    &[],
                    Vec::new(),
                )
                .await,
            ),
            7 => drop(
                self.request(post, &queue, &[], vec![b'x'; 300 * 1024])
                    .await,
            ),
            8 => {
                let rule = "<entry xmlns=\"http://www.w3.org/2005/Atom\"><content><RuleDescription xmlns=\"http://schemas.microsoft.com/netservices/2010/10/servicebus/connect\"><Filter xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\" i:type=\"SqlFilter\"><SqlExpression>a LIKE ((</SqlExpression></Filter></RuleDescription></content></entry>";
                let path = format!("/{TOPIC}/Subscriptions/all/Rules/bad");
                drop(
                    self.request(reqwest::Method::PUT, &path, &[], rule.as_bytes().to_vec())
                        .await,
                );
            }
            9 => {
                let batch = (
                    "content-type",
                    "application/vnd.microsoft.servicebus.json".to_string(),
                );
                let body = format!("[{}{{}}]", "{},".repeat(4600)).into_bytes();
                drop(self.request(post, &queue, &[batch], body).await);
            }
            10 => {
                let huge = ("x-junk", "j".repeat(100 * 1024));
                drop(
                    self.request(reqwest::Method::GET, "/$namespaceinfo", &[huge], Vec::new())
                        .await,
                );
            }
            _ => drop(
                self.request(
                    post,
                    "/$emulator/clock/advance?seconds=1e300",
                    &[],
                    Vec::new(),
                )
                .await,
            ),
        }
    }
}

/// Drains `path` (a queue or subscription) with receive-and-delete, several receivers at
/// once, until it has given back as many distinct messages as were acknowledged to it (or
/// two minutes passed), recording what comes out under `name`.
pub(crate) async fn drain(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    name: &str,
    record: &Arc<Mutex<Record>>,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = || {
        let r = lock(record);
        r.acked.get(name).map_or(0, HashSet::len) <= r.received.get(name).map_or(0, HashMap::len)
    };
    let receiver = || async {
        while Instant::now() < deadline {
            let r = http
                .delete(format!("{base}{path}/messages/head?timeout=1"))
                .header("authorization", token)
                .send()
                .await;
            match r {
                Ok(r) if r.status() == StatusCode::OK => {
                    let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    lock(record).got(name, String::from_utf8_lossy(&body).into_owned());
                }
                // Empty for a second: done unless messages are still locked (they come
                // back when their lock expires, within the entity's lock duration).
                Ok(r) if r.status() == StatusCode::NO_CONTENT && done() => return,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    };
    futures_util::future::join_all((0..8).map(|_| receiver())).await;
}
