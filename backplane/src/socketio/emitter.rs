//! The cluster emitter: a process that is no Socket.IO server (a worker, a cron job) emits
//! to the rooms and namespaces of the cluster, and makes sockets join, leave or disconnect,
//! as `@socket.io/redis-emitter` does for Redis.
//!
//! Wire format (any language can emit; `integration/compat/emitter.js` does with the npm
//! `@azure/service-bus` client). Each order is one backplane event (envelope v1, see
//! `integration/compat/envelope.js`: kind broadcast, the emitter's own origin id (1-40
//! letters, digits, `-` or `_`, new per run), numbered from 1 per partition, message
//! `Label`/subject `bp-all`, property `bp_origin` = the origin) whose payload is
//!
//! ```text
//! 0x04 | namespace length (u16, big endian) | namespace | JSON order
//! ```
//!
//! and the JSON order is one of
//!
//! ```json
//! {"op": "emit", "event": "news", "data": {"any": "JSON"}, "to": ["room"], "except": ["room"]}
//! {"op": "join", "rooms": ["vip"], "sid": "socket id"}
//! {"op": "leave", "rooms": ["vip"], "to": ["room"]}
//! {"op": "disconnect", "sid": "socket id"}
//! ```
//!
//! `to` (rooms; every socket when absent or empty), `except` and `sid` (one socket) select
//! the sockets, as `io.to(..).except(..)` and `io.to(socket_id)` do; `data` is the event's one
//! argument. Each server encodes the event with its own parser, so the emitter works with
//! socketioxide's default and MessagePack parsers alike; binary attachments cannot be
//! carried. With partitioned topics, an emit to rooms goes to the topic of its least room,
//! everything else to the first topic, as the adapter does.

use std::str::FromStr;
use std::sync::atomic::AtomicU64;

use serde::Deserialize;
use socketioxide_core::adapter::BroadcastFlags;
use socketioxide_core::parser::Parse;

use crate::envelope::{self, Envelope, Event, Kind, Target};
use crate::node::partition_of;
use crate::transport::Audience;

use super::*;

/// What a cluster emitter asks the servers to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(super) enum Op {
    /// Emit `event` with `data` to the selected sockets.
    Emit {
        event: String,
        #[serde(default)]
        data: serde_json::Value,
    },
    /// The selected sockets join `rooms`.
    Join { rooms: Vec<String> },
    /// The selected sockets leave `rooms`.
    Leave { rooms: Vec<String> },
    /// The selected sockets are disconnected.
    Disconnect,
}

/// An order and the sockets it is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Order {
    #[serde(flatten)]
    pub(super) op: Op,
    /// Rooms; every socket when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) except: Vec<String>,
    /// One socket, by id (then `to` and `except` are not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) sid: Option<String>,
}

/// Emits to the sockets of a cluster of socketioxide servers (running the backplane's
/// adapter) from a process that is not one of them.
///
/// ```no_run
/// use backplane::socketio::ClusterEmitter;
///
/// # async fn run() -> Result<(), backplane::socketio::Error> {
/// let connection = "Endpoint=sb://127.0.0.1:5300;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";
/// let emitter = ClusterEmitter::connect(connection, "chat", 1).await?;
/// emitter.of("/").to("lobby").except("muted").emit("news", &"deploy at 5").await?;
/// emitter.of("/").socket("aBcD1234aBcD1234").join(["vip"]).await?;
/// emitter.of("/admin").disconnect().await?;
/// # Ok(()) }
/// ```
pub struct ClusterEmitter<T: Transport = ServiceBusTransport> {
    origin: NodeId,
    transports: Vec<T>,
    /// The next number per partition.
    next_seq: Vec<AtomicU64>,
}

impl<T: Transport> fmt::Debug for ClusterEmitter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterEmitter")
            .field("origin", &self.origin)
            .field("partitions", &self.transports.len())
            .finish_non_exhaustive()
    }
}

impl ClusterEmitter<ServiceBusTransport> {
    /// Connects to the app's topic (and its `partitions - 1` partition topics, as
    /// [`AdapterOptions::partitions`] of the servers), creating them if missing.
    ///
    /// # Errors
    ///
    /// A malformed connection string, or a topic that cannot be created.
    pub async fn connect(
        connection_string: &str,
        topic: &str,
        partitions: usize,
    ) -> Result<Self, Error> {
        let client = Client::from_connection_string(connection_string)?;
        let mut transports = Vec::new();
        for name in state::partition_topics(topic, partitions) {
            transports.push(ServiceBusTransport::new(client.clone(), &name).await?);
        }
        Self::new(transports)
    }
}

impl<T: Transport> ClusterEmitter<T> {
    /// An emitter over one transport per partition, in the servers' order.
    ///
    /// ```
    /// use backplane::socketio::ClusterEmitter;
    /// use backplane::transport::MemoryTransport;
    ///
    /// // The in-memory bus the servers of this process share.
    /// let bus = MemoryTransport::new();
    /// let emitter = ClusterEmitter::new(vec![bus]).unwrap();
    /// assert!(emitter.origin().as_str().starts_with("emitter-"));
    /// assert!(ClusterEmitter::<MemoryTransport>::new(vec![]).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] when `transports` is empty.
    pub fn new(transports: Vec<T>) -> Result<Self, Error> {
        if transports.is_empty() {
            return Err(TransportError::NoTransport.into());
        }
        Ok(ClusterEmitter {
            origin: NodeId::new(&format!("emitter-{}", Uid::new()))?,
            next_seq: transports.iter().map(|_| AtomicU64::new(1)).collect(),
            transports,
        })
    }

    /// The origin id its events carry (new per emitter).
    pub fn origin(&self) -> &NodeId {
        &self.origin
    }

    /// Orders for the sockets of namespace `ns`.
    pub fn of(&self, ns: &str) -> Operators<'_, T> {
        Operators {
            emitter: self,
            ns: ns.to_string(),
            to: Vec::new(),
            except: Vec::new(),
            sid: None,
        }
    }

    /// Publishes one order, numbered in its partition.
    async fn send(&self, ns: &str, order: &Order, room: Option<&str>) -> Result<(), Error> {
        let body = serde_json::to_vec(order).map_err(|e| Error::Order(e.to_string()))?;
        let payload = frame::emit(ns, &body).map_err(|_| Error::Namespace)?;
        let route: Vec<String> = room.map(|r| vec![r.to_string()]).unwrap_or_default();
        let partition = partition_of(&route, self.transports.len());
        let transport = &self.transports[partition];
        let mut event = Event {
            seq: 0,
            kind: Kind::Broadcast,
            target: Target::Rooms {
                rooms: route,
                except: vec![],
            },
            payload,
        };
        envelope::check_fits(&self.origin, &event, transport.max_message_bytes())
            .map_err(PublishError::TooLarge)?;
        event.seq = self.next_seq[partition].fetch_add(1, Ordering::SeqCst);
        let bytes = Envelope {
            origin: self.origin.clone(),
            events: vec![event],
        }
        .encode();
        transport
            .publish(&self.origin, Audience::Others, bytes)
            .await
            .map_err(PublishError::from)?;
        Ok(())
    }
}

/// The sockets an order is for: built with [`ClusterEmitter::of`], narrowed with
/// [`Operators::to`], [`Operators::except`] or [`Operators::socket`], then spent by
/// [`Operators::emit`], [`Operators::join`], [`Operators::leave`] or
/// [`Operators::disconnect`].
///
/// ```no_run
/// # use backplane::socketio::ClusterEmitter;
/// # async fn run(emitter: &ClusterEmitter) -> Result<(), backplane::socketio::Error> {
/// // Everyone in "match-7" but the spectators hears the score...
/// emitter.of("/").to("match-7").except("spectators").emit("score", &[3, 1]).await?;
/// // ...then the players of "match-7" move to the lobby.
/// emitter.of("/").to("match-7").join(["lobby"]).await?;
/// emitter.of("/").to("match-7").leave(["match-7"]).await?;
/// // One socket, wherever it is connected, is asked to leave.
/// emitter.of("/").socket("aBcD1234aBcD1234").disconnect().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Operators<'a, T: Transport = ServiceBusTransport> {
    emitter: &'a ClusterEmitter<T>,
    ns: String,
    to: Vec<String>,
    except: Vec<String>,
    sid: Option<String>,
}

impl<T: Transport> Operators<'_, T> {
    /// Only the sockets in `room` (or in any of the rooms given by repeated calls).
    pub fn to(mut self, room: impl Into<String>) -> Self {
        self.to.push(room.into());
        self
    }

    /// Leaves out the sockets in `room`.
    pub fn except(mut self, room: impl Into<String>) -> Self {
        self.except.push(room.into());
        self
    }

    /// Only the socket with this id, wherever it is connected.
    pub fn socket(mut self, sid: impl Into<String>) -> Self {
        self.sid = Some(sid.into());
        self
    }

    /// Emits `event` with `data` (its one argument) to the selected sockets.
    ///
    /// # Errors
    ///
    /// [`Error::Order`] when `data` is not JSON-representable, [`Error::Publish`] when
    /// the event is too large or the bus fails.
    pub async fn emit<D: Serialize + ?Sized>(self, event: &str, data: &D) -> Result<(), Error> {
        let data = serde_json::to_value(data).map_err(|e| Error::Order(e.to_string()))?;
        let room = self.to.iter().min().cloned();
        let op = Op::Emit {
            event: event.to_string(),
            data,
        };
        self.send(op, room.as_deref()).await
    }

    /// The selected sockets join `rooms`.
    ///
    /// # Errors
    ///
    /// As [`Operators::emit`].
    pub async fn join<R: Into<String>>(
        self,
        rooms: impl IntoIterator<Item = R>,
    ) -> Result<(), Error> {
        let rooms = rooms.into_iter().map(Into::into).collect();
        self.send(Op::Join { rooms }, None).await
    }

    /// The selected sockets leave `rooms`.
    ///
    /// # Errors
    ///
    /// As [`Operators::emit`].
    pub async fn leave<R: Into<String>>(
        self,
        rooms: impl IntoIterator<Item = R>,
    ) -> Result<(), Error> {
        let rooms = rooms.into_iter().map(Into::into).collect();
        self.send(Op::Leave { rooms }, None).await
    }

    /// The selected sockets are disconnected.
    ///
    /// # Errors
    ///
    /// As [`Operators::emit`].
    pub async fn disconnect(self) -> Result<(), Error> {
        self.send(Op::Disconnect, None).await
    }

    async fn send(self, op: Op, room: Option<&str>) -> Result<(), Error> {
        let order = Order {
            op,
            to: self.to,
            except: self.except,
            sid: self.sid,
        };
        self.emitter.send(&self.ns, &order, room).await
    }
}

impl<E: SocketEmitter, T: Transport + Clone> BackplaneAdapter<E, T> {
    /// Carries out an emitter's order on this server's sockets.
    pub(super) fn apply_order(&self, order: Order) {
        if let Err(e) = self.try_apply_order(order) {
            tracing::warn!(error = %e, "dropping an emitter's order");
        }
    }

    fn try_apply_order(&self, order: Order) -> Result<(), String> {
        let mut opts = BroadcastOptions::default();
        match &order.sid {
            Some(sid) => opts.sid = Some(Sid::from_str(sid).map_err(|e| e.to_string())?),
            None => {
                opts.add_flag(BroadcastFlags::Broadcast);
                opts.rooms = order.to.into_iter().map(Room::from).collect();
                opts.except = order.except.into_iter().map(Room::from).collect();
            }
        }
        let local = self.get_local();
        match order.op {
            Op::Emit { event, data } => {
                let value = local
                    .parser()
                    .encode_value(&data, Some(&event))
                    .map_err(|e| e.to_string())?;
                let packet = Packet::event(local.path().clone(), value);
                local.broadcast(packet, opts).map_err(|e| format!("{e:?}"))
            }
            Op::Join { rooms } => {
                local.add_sockets(opts, rooms.into_iter().map(Room::from).collect::<Vec<_>>());
                Ok(())
            }
            Op::Leave { rooms } => {
                local.del_sockets(opts, rooms.into_iter().map(Room::from).collect::<Vec<_>>());
                Ok(())
            }
            Op::Disconnect => local.disconnect_socket(opts).map_err(|e| format!("{e:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_read_as_documented() {
        let emit: Order = serde_json::from_str(
            r#"{"op": "emit", "event": "news", "data": {"a": 1}, "to": ["r"], "except": ["x"]}"#,
        )
        .unwrap();
        assert_eq!(
            emit,
            Order {
                op: Op::Emit {
                    event: "news".into(),
                    data: serde_json::json!({"a": 1})
                },
                to: vec!["r".into()],
                except: vec!["x".into()],
                sid: None,
            }
        );
        let join: Order =
            serde_json::from_str(r#"{"op": "join", "rooms": ["vip"], "sid": "abc"}"#).unwrap();
        assert_eq!(
            join.op,
            Op::Join {
                rooms: vec!["vip".into()]
            }
        );
        assert_eq!(join.sid.as_deref(), Some("abc"));
        let gone: Order = serde_json::from_str(r#"{"op": "disconnect"}"#).unwrap();
        assert_eq!(gone.op, Op::Disconnect);
        assert!(serde_json::from_str::<Order>(r#"{"op": "explode"}"#).is_err());
        // What the emitter writes reads back the same.
        let text = serde_json::to_string(&emit).unwrap();
        assert_eq!(serde_json::from_str::<Order>(&text).unwrap(), emit);
    }
}
