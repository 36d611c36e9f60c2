//! The multi-node chat: an axum + socketioxide server scaled out by the backplane's
//! Service Bus adapter. It is the quick-start demo (`scripts/demo.sh`), what the adapter's
//! tests drive with the real Socket.IO client, and what the adapter's benchmark measures.
//!
//! Client events (each answers through the acknowledgement when the client asks for one):
//!
//! | event | data | effect | answer |
//! |---|---|---|---|
//! | `join` / `leave` | room | the socket joins or leaves it | `true` |
//! | `message` | `{text, name?, room?, except?: [room]}` | `message` to the other sockets (of the room, minus `except`), on every node | `true` |
//! | `poll` | any | `poll` to every other socket, with acknowledgement | `[{sid, answer}]`, what came back within 2 s |
//! | `who` | room or null | | ids of the sockets (in the room) on every node |
//! | `rooms` | | | every room of every node |
//! | `invite` / `evict` | `{sid, room}` | that socket, wherever it is, joins or leaves the room | whether it was found |
//! | `kick` | sid | that socket, wherever it is, is disconnected | whether it was found |
//! | `servers` | | | live servers (this one included) |
//!
//! Each socket gets `welcome` `{node, sid}` on connection. `message` events carry
//! `{name, text, room, from, node}`. When a node starts, it tells the others with a
//! server-side emit (`joined`), and their sockets get `server-joined` `{node}`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use backplane::socketio::{
    AdapterOptions, AdapterState, Error as AdapterError, ServerEvent, ServiceBusAdapter,
};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Emitter;
use socketioxide::extract::{AckSender, Data, SocketRef};
use tokio::task::JoinHandle;
use tower_http::services::{ServeDir, ServeFile};

/// The adapter the chat runs on.
pub type Adapter = ServiceBusAdapter<Emitter>;
type Socket = SocketRef<Adapter>;

/// How a chat node starts.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// The node's name, shown to clients.
    pub name: String,
    /// Service Bus (or emulator) connection string.
    pub connection_string: String,
    /// The topic the nodes share.
    pub topic: String,
    /// Where to listen (port 0: any free port).
    pub bind: SocketAddr,
    /// The page's folder (served at `/`), if any.
    pub assets: Option<PathBuf>,
    /// The official Socket.IO browser bundle (served at `/socket.io.min.js`), if any.
    pub client_js: Option<PathBuf>,
    /// The adapter's settings.
    pub adapter: AdapterOptions,
    /// The namespaces served, each with the same chat (default `/` alone); namespaces are
    /// kept apart across nodes.
    pub namespaces: Vec<String>,
}

/// A running chat node.
#[derive(Debug)]
pub struct ChatNode {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The node's Socket.IO handle.
    pub io: SocketIo<Adapter>,
    /// The adapter's state (node id, live servers, shutdown).
    pub state: AdapterState,
    server: JoinHandle<()>,
}

/// Why a chat node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The adapter could not start.
    #[error("adapter: {0}")]
    Adapter(#[from] AdapterError),
    /// The address could not be bound.
    #[error("bind: {0}")]
    Bind(#[from] std::io::Error),
}

#[derive(Debug, Deserialize)]
struct Message {
    text: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    except: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Target {
    sid: String,
    #[serde(default)]
    room: Option<String>,
}

struct Ctx {
    name: String,
    io: SocketIo<Adapter>,
    state: AdapterState,
}

impl ChatNode {
    /// Starts a node: connects the adapter, binds, serves.
    ///
    /// # Errors
    ///
    /// When the adapter cannot start or the address cannot be bound.
    pub async fn start(options: ChatOptions) -> Result<ChatNode, ChatError> {
        let state = AdapterState::connect(
            &options.connection_string,
            &options.topic,
            options.adapter.clone(),
        )
        .await?;
        let (layer, io) = SocketIo::builder()
            .with_adapter::<Adapter>(state.clone())
            .build_layer();
        let ctx = Arc::new(Ctx {
            name: options.name.clone(),
            io: io.clone(),
            state: state.clone(),
        });
        announce_joiners(&state, &io, &options.namespaces);
        for ns in &options.namespaces {
            let ctx = ctx.clone();
            io.ns(ns.clone(), move |socket: Socket| {
                on_connect(ctx.clone(), socket)
            })
            .await?;
        }

        state.server_side_emit("joined", &options.name).await?;

        let mut app = Router::new();
        if let Some(js) = &options.client_js {
            app = app.route_service("/socket.io.min.js", ServeFile::new(js));
        }
        if let Some(dir) = &options.assets {
            app = app.fallback_service(ServeDir::new(dir));
        }
        let app = app.layer(layer);
        let listener = tokio::net::TcpListener::bind(options.bind).await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(crate::no_delay(listener), app).await {
                tracing::error!(error = %e, "chat server stopped");
            }
        });
        tracing::info!(node = %options.name, %addr, "chat node listening");
        Ok(ChatNode {
            addr,
            io,
            state,
            server,
        })
    }

    /// The page's address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every socket and deletes the node's subscription.
    ///
    /// # Errors
    ///
    /// When the subscription cannot be deleted.
    pub async fn shutdown(self) -> Result<(), AdapterError> {
        self.io.close().await;
        self.server.abort();
        self.state.shutdown().await
    }

    /// Stops as a crash would: connections dropped, the subscription left behind.
    pub async fn crash(self) {
        self.server.abort();
        self.state.crash().await;
    }
}

/// When another node says it `joined` (a server-side emit), tells this node's sockets of
/// every namespace: `server-joined` `{node}`.
fn announce_joiners(state: &AdapterState, io: &SocketIo<Adapter>, namespaces: &[String]) {
    let io = io.clone();
    let namespaces = namespaces.to_vec();
    state.on_server_event("joined", move |event: ServerEvent| {
        let io = io.clone();
        let namespaces = namespaces.clone();
        async move {
            let node: String = event.data().unwrap_or_default();
            for ns in &namespaces {
                let Some(ns) = io.of(ns.as_str()) else {
                    continue;
                };
                let notice = json!({ "node": node });
                if let Err(e) = ns.local().emit("server-joined", &notice).await {
                    tracing::debug!(error = %e, "server-joined not sent");
                }
            }
        }
    });
}

fn answer(ack: AckSender<Adapter>, value: Value) {
    if let Err(e) = ack.send(&value) {
        tracing::debug!(error = %e, "could not answer");
    }
}

async fn on_connect(ctx: Arc<Ctx>, socket: Socket) {
    let welcome = json!({ "node": ctx.name, "sid": socket.id.to_string() });
    if let Err(e) = socket.emit("welcome", &welcome) {
        tracing::debug!(error = %e, "welcome not sent");
    }

    socket.on(
        "join",
        async |socket: Socket, Data(room): Data<String>, ack: AckSender<Adapter>| {
            socket.join(room);
            answer(ack, json!(true));
        },
    );
    socket.on(
        "leave",
        async |socket: Socket, Data(room): Data<String>, ack: AckSender<Adapter>| {
            socket.leave(room);
            answer(ack, json!(true));
        },
    );

    let c = ctx.clone();
    socket.on(
        "message",
        async move |socket: Socket, Data(m): Data<Message>, ack: AckSender<Adapter>| {
            let out = json!({
                "name": m.name,
                "text": m.text,
                "room": m.room,
                "from": socket.id.to_string(),
                "node": c.name,
            });
            let mut op = socket.broadcast();
            if let Some(room) = m.room {
                op = op.to(room);
            }
            if !m.except.is_empty() {
                op = op.except(m.except);
            }
            let sent = op.emit("message", &out).await;
            if let Err(e) = &sent {
                tracing::warn!(error = %e, "message broadcast failed");
            }
            answer(ack, json!(sent.is_ok()));
        },
    );

    socket.on(
        "poll",
        async |socket: Socket, Data(question): Data<Value>, ack: AckSender<Adapter>| {
            let answers = match socket
                .broadcast()
                .timeout(Duration::from_secs(2))
                .emit_with_ack::<_, Value>("poll", &question)
                .await
            {
                Ok(stream) => {
                    stream
                        .filter_map(async |(sid, res)| {
                            res.ok()
                                .map(|answer| json!({ "sid": sid.to_string(), "answer": answer }))
                        })
                        .collect::<Vec<_>>()
                        .await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "poll failed");
                    Vec::new()
                }
            };
            answer(ack, Value::Array(answers));
        },
    );

    let c = ctx.clone();
    socket.on(
        "who",
        async move |socket: Socket, Data(room): Data<Option<String>>, ack: AckSender<Adapter>| {
            let Some(ns) = c.io.of(socket.ns()) else {
                return answer(ack, json!([]));
            };
            let op = match room {
                Some(room) => ns.within(room),
                None => ns,
            };
            let ids: Vec<String> = match op.fetch_sockets().await {
                Ok(sockets) => sockets.iter().map(|s| s.data().id.to_string()).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "fetch_sockets failed");
                    Vec::new()
                }
            };
            answer(ack, json!(ids));
        },
    );

    let c = ctx.clone();
    socket.on(
        "rooms",
        async move |socket: Socket, ack: AckSender<Adapter>| {
            let Some(ns) = c.io.of(socket.ns()) else {
                return answer(ack, json!([]));
            };
            let rooms: Vec<String> = match ns.rooms().await {
                Ok(rooms) => rooms.into_iter().map(|r| r.to_string()).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "rooms failed");
                    Vec::new()
                }
            };
            answer(ack, json!(rooms));
        },
    );

    for (event, action) in [("invite", Action::Join), ("evict", Action::Leave)] {
        let c = ctx.clone();
        socket.on(
            event,
            async move |socket: Socket, Data(t): Data<Target>, ack: AckSender<Adapter>| {
                let found = match (find(&c.io, socket.ns(), &t.sid).await, t.room) {
                    (Some(remote), Some(room)) => {
                        let done = match action {
                            Action::Join => remote.join(room).await,
                            Action::Leave => remote.leave(room).await,
                        };
                        done.is_ok()
                    }
                    _ => false,
                };
                answer(ack, json!(found));
            },
        );
    }

    let c = ctx.clone();
    socket.on(
        "kick",
        async move |socket: Socket, Data(sid): Data<String>, ack: AckSender<Adapter>| {
            let found = match find(&c.io, socket.ns(), &sid).await {
                Some(remote) => remote.disconnect().await.is_ok(),
                None => false,
            };
            answer(ack, json!(found));
        },
    );

    let c = ctx;
    socket.on("servers", async move |ack: AckSender<Adapter>| {
        answer(ack, json!(c.state.server_count()));
    });
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Join,
    Leave,
}

/// A socket of namespace `ns` by id, on any node.
async fn find(
    io: &SocketIo<Adapter>,
    ns: &str,
    sid: &str,
) -> Option<socketioxide::socket::RemoteSocket<Adapter>> {
    let sockets = io.of(ns)?.fetch_sockets().await.ok()?;
    sockets.into_iter().find(|s| s.data().id.to_string() == sid)
}
