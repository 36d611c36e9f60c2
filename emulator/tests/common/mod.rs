//! Shared test harness: an in-process emulator on 127.0.0.1:0 and a signing client.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use emulator::{Emulator, Settings};
use servicebus_wire::sas::sign;
use servicebus_wire::xml::{self, Element};
use tokio::sync::oneshot;

pub const KEY_NAME: &str = "RootManageSharedAccessKey";
/// How long a test polls for a state before it fails.
pub const POLL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// How often it polls.
pub const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(5);
pub const KEY: &str = "SAS_KEY_VALUE";

/// A running emulator; stops (and flushes) when dropped or on [`Server::stop`].
pub struct Server {
    pub addr: SocketAddr,
    /// The broker behind it, for state a client cannot see.
    pub broker: emulator::Broker,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), emulator::Error>>>,
}

impl Server {
    pub async fn start(settings: Settings) -> Server {
        let emulator = Emulator::open(settings).await.expect("emulator opens");
        let broker = emulator.broker().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(emulator.serve(listener, async {
            let _ = rx.await;
        }));
        Server {
            addr,
            broker,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn memory() -> Server {
        Self::start(Settings::in_memory()).await
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr, KEY_NAME, KEY)
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task
            .take()
            .unwrap()
            .await
            .unwrap()
            .expect("serve ends cleanly");
    }
}

impl Server {
    /// Waits (with a deadline, never a fixed sleep) until a receive is parked in a long
    /// poll on queue `queue`.
    pub async fn parked(&self, queue: &str) {
        let target = emulator::broker::ReceiveTarget {
            address: emulator::model::Address::Queue(queue.into()),
            dead_letter: false,
        };
        let parked = || async {
            match self.broker.waiting_receivers(&target).unwrap() {
                0 => Err(()),
                _ => Ok(()),
            }
        };
        testkit::wait_until(POLL_DEADLINE, POLL_EVERY, parked)
            .await
            .expect("the long poll never parked");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn xml(&self) -> Element {
        xml::parse(&self.body).unwrap_or_else(|e| panic!("not XML ({e}): {}", self.body))
    }

    /// The description element inside an entry.
    pub fn description(&self) -> Element {
        let entry = self.xml();
        assert_eq!(entry.name, "entry", "{}", self.body);
        entry.child("content").unwrap().children[0].clone()
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// The `<Detail>` of an error body.
    pub fn detail(&self) -> String {
        let e = self.xml();
        assert_eq!(e.name, "Error", "{}", self.body);
        assert_eq!(e.child("Code").unwrap().text, self.status.to_string());
        e.child("Detail").unwrap().text.clone()
    }

    /// Titles of a feed's entries.
    pub fn titles(&self) -> Vec<String> {
        let feed = self.xml();
        assert_eq!(feed.name, "feed", "{}", self.body);
        feed.children
            .iter()
            .filter(|c| c.name == "entry")
            .map(|e| e.child("title").unwrap().text.clone())
            .collect()
    }
}

/// Signs every request with a namespace-root token unless told otherwise.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    http: reqwest::Client,
    key_name: String,
    key: String,
}

impl Client {
    pub fn new(addr: SocketAddr, key_name: &str, key: &str) -> Client {
        Client {
            addr,
            http: reqwest::Client::new(),
            key_name: key_name.into(),
            key: key.into(),
        }
    }

    pub fn token(&self) -> String {
        let expiry = chrono::Utc::now().timestamp() + 3600;
        sign(
            &format!("http://{}/", self.addr),
            &self.key_name,
            &self.key,
            expiry,
        )
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
        auth: Option<String>,
    ) -> Reply {
        let url = format!("http://{}{path}", self.addr);
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req
                .header(
                    "content-type",
                    "application/atom+xml;type=entry;charset=utf-8",
                )
                .body(b),
            None => req.header("content-length", "0"),
        };
        let resp = req.send().await.expect("request sent");
        Reply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, &[], Some(self.token())).await
    }

    pub async fn put(&self, path: &str, body: String) -> Reply {
        self.send("PUT", path, Some(body), &[], Some(self.token()))
            .await
    }

    pub async fn update(&self, path: &str, body: String) -> Reply {
        self.send(
            "PUT",
            path,
            Some(body),
            &[("if-match", "*")],
            Some(self.token()),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send("DELETE", path, None, &[], Some(self.token()))
            .await
    }

    /// Creates topic `t` and its subscription `s` with default descriptions (each 201).
    pub async fn topic_with_subscription(&self, t: &str, s: &str) {
        assert_eq!(self.put(&format!("/{t}"), topic("")).await.status, 201);
        let path = format!("/{t}/Subscriptions/{s}");
        assert_eq!(self.put(&path, subscription("")).await.status, 201);
    }
}

/// An ATOM entry around a description element's XML.
pub fn entry(description: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">{description}</content></entry>"#
    )
}

pub fn queue(inner: &str) -> String {
    entry(&format!(
        r#"<QueueDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">{inner}</QueueDescription>"#
    ))
}

pub fn topic(inner: &str) -> String {
    entry(&format!(
        r#"<TopicDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">{inner}</TopicDescription>"#
    ))
}

pub fn subscription(inner: &str) -> String {
    entry(&format!(
        r#"<SubscriptionDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">{inner}</SubscriptionDescription>"#
    ))
}

pub fn rule(inner: &str) -> String {
    entry(&format!(
        r#"<RuleDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">{inner}</RuleDescription>"#
    ))
}

/// Child element names in order.
pub fn child_names(e: &Element) -> Vec<String> {
    e.children.iter().map(|c| c.name.clone()).collect()
}

/// Text of a child element.
pub fn text(e: &Element, name: &str) -> String {
    e.child(name)
        .unwrap_or_else(|| panic!("no <{name}> in <{}>", e.name))
        .text
        .clone()
}

pub mod hostile;
pub mod process;

impl Client {
    /// Sends a message with raw headers (BrokerProperties, custom properties, Content-Type).
    pub async fn post_message(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
        let url = format!("http://{}{path}", self.addr);
        let mut req = self
            .http
            .post(url)
            .header("authorization", self.token())
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request sent");
        Reply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }
}

impl Client {
    /// Receives and deletes every message of `queue` there is now, in order.
    pub async fn drain(&self, queue: &str) -> Vec<Reply> {
        let path = format!("/{queue}/messages/head?timeout=0");
        let mut got = Vec::new();
        loop {
            let r = self
                .send("DELETE", &path, None, &[], Some(self.token()))
                .await;
            if r.status == 204 {
                return got;
            }
            assert_eq!(r.status, 200, "{}", r.body);
            got.push(r);
        }
    }
}

impl Reply {
    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// The `BrokerProperties` header as JSON.
    pub fn broker(&self) -> serde_json::Value {
        let raw = self
            .header("brokerproperties")
            .unwrap_or_else(|| panic!("no BrokerProperties: {:?}", self.headers));
        serde_json::from_str(&raw).unwrap()
    }

    /// The path of the `Location` header (what a client settles on).
    pub fn location_path(&self) -> String {
        let location = self.header("location").expect("a Location header");
        let after_scheme = location.split_once("://").unwrap().1;
        after_scheme[after_scheme.find('/').unwrap()..].to_string()
    }
}
