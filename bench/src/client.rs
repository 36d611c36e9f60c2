//! The benchmark's REST client of the emulator: signed sends, batches, receives, settles
//! and management, and the payloads it sends.

use std::net::SocketAddr;

use anyhow::{Context as _, bail};

use crate::*;

#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) token: String,
}

impl Client {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let base = format!("http://{addr}");
        let expiry = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
        .unwrap_or(0)
            + 4 * 3600;
        let token = servicebus_wire::sas::sign(&format!("{base}/"), KEY_NAME, KEY, expiry);
        Client {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .expect("client builds"),
            base,
            token,
        }
    }

    pub(crate) async fn put(&self, path: &str, description: &str) -> anyhow::Result<()> {
        let body = format!(
            r#"<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">{description}</content></entry>"#
        );
        let r = self
            .http
            .put(format!("{}{path}", self.base))
            .header("authorization", &self.token)
            .body(body)
            .send()
            .await?;
        if r.status() != 201 {
            bail!(
                "PUT {path}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// A queue's `MessageCount` as management reports it.
    pub(crate) async fn message_count(&self, name: &str) -> anyhow::Result<u64> {
        let text = self
            .http
            .get(format!("{}/{name}", self.base))
            .header("authorization", &self.token)
            .send()
            .await?
            .text()
            .await?;
        // Read with the wire crate's parser: the entry's content holds the description.
        let entry = servicebus_wire::xml::parse(&text)?;
        let count = entry
            .child("content")
            .and_then(|content| content.children.first())
            .and_then(|description| description.child("MessageCount"))
            .with_context(|| format!("no MessageCount for {name}"))?;
        Ok(count.trimmed_text().parse()?)
    }

    pub(crate) async fn queue(&self, name: &str) -> anyhow::Result<()> {
        self.put(&format!("/{name}"), r#"<QueueDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"><LockDuration>PT5M</LockDuration></QueueDescription>"#).await
    }

    pub(crate) async fn topic(&self, name: &str, subscriptions: usize) -> anyhow::Result<()> {
        self.put(&format!("/{name}"), r#"<TopicDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"/>"#).await?;
        for i in 0..subscriptions {
            self.put(&format!("/{name}/Subscriptions/s{i}"), r#"<SubscriptionDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"><LockDuration>PT5M</LockDuration></SubscriptionDescription>"#).await?;
        }
        Ok(())
    }

    pub(crate) async fn send(&self, entity: &str, body: Vec<u8>) -> bool {
        let r = self
            .http
            .post(format!("{}/{entity}/messages", self.base))
            .header("authorization", &self.token)
            .body(body)
            .send()
            .await;
        matches!(r, Ok(r) if r.status() == 201)
    }

    pub(crate) async fn send_batch(&self, entity: &str, body: String) -> bool {
        let r = self
            .http
            .post(format!("{}/{entity}/messages", self.base))
            .header("authorization", &self.token)
            .header("content-type", "application/vnd.microsoft.servicebus.json")
            .body(body)
            .send()
            .await;
        matches!(r, Ok(r) if r.status() == 201)
    }

    /// Receive-and-delete with a long poll; the body when a message came.
    pub(crate) async fn take(&self, receivable: &str, timeout_secs: u32) -> Option<Vec<u8>> {
        let url = format!(
            "{}/{receivable}/messages/head?timeout={timeout_secs}",
            self.base
        );
        let r = self
            .http
            .delete(url)
            .header("authorization", &self.token)
            .header("content-length", "0")
            .send()
            .await
            .ok()?;
        if r.status() != 200 {
            return None;
        }
        r.bytes().await.ok().map(|b| b.to_vec())
    }

    /// Peek-lock then complete at `Location`; true when both succeeded.
    pub(crate) async fn lock_and_complete(&self, receivable: &str) -> bool {
        let url = format!("{}/{receivable}/messages/head?timeout=0", self.base);
        let Ok(r) = self
            .http
            .post(url)
            .header("authorization", &self.token)
            .header("content-length", "0")
            .send()
            .await
        else {
            return false;
        };
        if r.status() != 201 {
            return false;
        }
        let Some(location) = r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_string)
        else {
            return false;
        };
        let _ = r.bytes().await;
        matches!(self.http.delete(location).header("authorization", &self.token).header("content-length", "0").send().await, Ok(d) if d.status() == 200)
    }
}

pub(crate) fn payload() -> Vec<u8> {
    vec![b'x'; KB]
}

pub(crate) fn batch_body(n: usize) -> String {
    let body = "x".repeat(KB);
    let one = format!(r#"{{"Body":"{body}"}}"#);
    format!("[{}]", vec![one; n].join(","))
}
