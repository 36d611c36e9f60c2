//! Real Socket.IO clients for tests: npm `socket.io-client` in a Node.js process
//! (`compat/sio-agent.js`), driven line by line, recording what each client receives.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use testkit::lock;

/// How long one command may take before the test fails instead of hanging.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// An event a client received.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientEvent {
    /// The event's name (`disconnect` for a disconnection).
    pub name: String,
    /// Its first argument (the reason for `disconnect`).
    pub data: Value,
}

/// The `text` fields of the `message` events `client` received, in arrival order (as the
/// chat's clients see chat messages).
pub fn message_texts(events: &HashMap<String, Vec<ClientEvent>>, client: &str) -> Vec<String> {
    events
        .get(client)
        .into_iter()
        .flatten()
        .filter(|e| e.name == "message")
        .filter_map(|e| e.data["text"].as_str().map(str::to_string))
        .collect()
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;
type Seen = Arc<Mutex<HashMap<String, Vec<ClientEvent>>>>;

/// A Node.js process running Socket.IO clients; killed when dropped.
#[derive(Debug)]
pub struct SioAgent {
    child: Child,
    stdin: ChildStdin,
    next: u64,
    pending: Pending,
    seen: Seen,
    changed: Arc<Notify>,
    reader: JoinHandle<()>,
}

impl SioAgent {
    /// Starts the agent (installing the locked npm packages first if needed).
    ///
    /// # Errors
    ///
    /// When `node` cannot be started.
    pub async fn start() -> std::io::Result<SioAgent> {
        testkit::ensure_compat_packages();
        let dir = testkit::compat_dir();
        let mut child = Command::new("node")
            .arg(dir.join("sio-agent.js"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let pending: Pending = Arc::default();
        let seen: Seen = Arc::default();
        let changed = Arc::new(Notify::new());
        let reader = tokio::spawn(read_lines(
            BufReader::new(stdout),
            pending.clone(),
            seen.clone(),
            changed.clone(),
        ));
        Ok(SioAgent {
            child,
            stdin,
            next: 1,
            pending,
            seen,
            changed,
            reader,
        })
    }

    async fn call(&mut self, mut command: Value) -> Result<Value, String> {
        let id = self.next;
        self.next += 1;
        command["id"] = json!(id);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let mut line = command.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("agent stdin: {e}"))?;
        let reply = tokio::time::timeout(COMMAND_DEADLINE, rx)
            .await
            .map_err(|_| format!("no answer to {command} within {COMMAND_DEADLINE:?}"))?
            .map_err(|_| "the agent exited".to_string())?;
        if reply["ok"] == json!(true) {
            Ok(reply)
        } else {
            Err(format!("{command} failed: {}", reply["error"]))
        }
    }

    /// Connects client `client` to a chat node; returns its socket id and node name.
    ///
    /// # Errors
    ///
    /// When the client cannot connect.
    pub async fn connect(&mut self, client: &str, url: &str) -> Result<(String, String), String> {
        let reply = self
            .call(json!({ "op": "connect", "client": client, "url": url }))
            .await?;
        let text = |k: &str| reply[k].as_str().unwrap_or_default().to_string();
        Ok((text("sid"), text("node")))
    }

    /// Emits an event and waits for the server's acknowledgement; returns its answer.
    ///
    /// # Errors
    ///
    /// When the client is unknown or no answer comes.
    pub async fn ask(&mut self, client: &str, event: &str, data: Value) -> Result<Value, String> {
        let reply = self
            .call(json!({ "op": "emit", "client": client, "event": event, "data": data, "ack": true }))
            .await?;
        Ok(reply["answer"].clone())
    }

    /// Closes one client's connection.
    ///
    /// # Errors
    ///
    /// When the agent is gone.
    pub async fn close(&mut self, client: &str) -> Result<(), String> {
        self.call(json!({ "op": "close", "client": client }))
            .await
            .map(|_| ())
    }

    /// What `client` received so far.
    pub fn events(&self, client: &str) -> Vec<ClientEvent> {
        lock(&self.seen).get(client).cloned().unwrap_or_default()
    }

    /// The `data` of every event named `name` that `client` received.
    pub fn received(&self, client: &str, name: &str) -> Vec<Value> {
        self.events(client)
            .into_iter()
            .filter(|e| e.name == name)
            .map(|e| e.data)
            .collect()
    }

    /// Waits until `done` holds over what the clients received, or `deadline` passes;
    /// returns whether it held.
    pub async fn wait_until(
        &self,
        deadline: Duration,
        done: impl Fn(&HashMap<String, Vec<ClientEvent>>) -> bool,
    ) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.changed.notified();
            if done(&lock(&self.seen)) {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return done(&lock(&self.seen));
            }
        }
    }
}

impl Drop for SioAgent {
    fn drop(&mut self) {
        self.reader.abort();
        let _ = self.child.start_kill();
    }
}

async fn read_lines(
    mut stdout: BufReader<tokio::process::ChildStdout>,
    pending: Pending,
    seen: Seen,
    changed: Arc<Notify>,
) {
    let mut line = String::new();
    loop {
        line.clear();
        match stdout.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(id) = message["id"].as_u64() {
            if let Some(tx) = lock(&pending).remove(&id) {
                let _ = tx.send(message);
            }
            continue;
        }
        let client = message["client"].as_str().unwrap_or_default().to_string();
        let event = match message["event"].as_str() {
            Some("recv") => ClientEvent {
                name: message["name"].as_str().unwrap_or_default().to_string(),
                data: message["data"].clone(),
            },
            Some("disconnect") => ClientEvent {
                name: "disconnect".into(),
                data: message["reason"].clone(),
            },
            _ => continue,
        };
        lock(&seen).entry(client).or_default().push(event);
        changed.notify_waiters();
    }
    // Wake waiters: nothing more will come.
    lock(&pending).clear();
    changed.notify_waiters();
}
