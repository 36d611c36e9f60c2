//! Server-side emit: the servers of a cluster send each other events, as Socket.IO's
//! `serverSideEmit` does, optionally collecting an answer from each within a timeout.

use futures_util::future::BoxFuture;

use crate::node::{Ask, Replies};

use super::*;

/// An answer from a server with a handler for the event.
const HANDLED: u8 = 1;
/// The answer of a server without a handler for the event.
const UNHANDLED: u8 = 0;

/// Runs a server event and gives the encoded answer (`None` when it cannot be encoded).
pub(super) type ServerHandler =
    Arc<dyn Fn(ServerEvent) -> BoxFuture<'static, Option<Vec<u8>>> + Send + Sync>;

/// The server event handlers of one server, by event name.
pub(super) type ServerHandlers = Arc<Mutex<HashMap<String, ServerHandler>>>;

/// An event another server sent with [`AdapterState::server_side_emit`] or
/// [`AdapterState::server_side_emit_with_ack`], as a handler of
/// [`AdapterState::on_server_event`] gets it.
///
/// ```no_run
/// # use backplane::socketio::{AdapterState, ServerEvent};
/// # fn register(state: &AdapterState) {
/// state.on_server_event("joined", async |event: ServerEvent| {
///     let region: String = event.data().unwrap_or_default();
///     println!("{} ({}) sent {}", event.from(), region, event.event());
/// });
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ServerEvent {
    from: NodeId,
    event: String,
    data: Vec<u8>,
}

impl ServerEvent {
    /// The server that sent it (its node id, which is its socketioxide server id).
    pub fn from(&self) -> &NodeId {
        &self.from
    }

    /// The event's name.
    pub fn event(&self) -> &str {
        &self.event
    }

    /// The event's data, decoded as the sender encoded it.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the data is not a `D`.
    pub fn data<D: DeserializeOwned>(&self) -> Result<D, Error> {
        Ok(rmp_serde::from_slice(&self.data)?)
    }
}

/// What [`AdapterState::server_side_emit_with_ack`] got back.
///
/// ```no_run
/// # use std::time::Duration;
/// # use backplane::socketio::{AdapterState, ServerAcks};
/// # async fn ask(state: &AdapterState) -> Result<(), backplane::socketio::Error> {
/// let acks: ServerAcks<u32> = state
///     .server_side_emit_with_ack("connected-users", &(), Duration::from_secs(1))
///     .await?;
/// let total: u32 = acks.answers.iter().map(|(_, n)| n).sum();
/// if !acks.missing.is_empty() {
///     println!("{} server(s) did not answer: the total is partial", acks.missing.len());
/// }
/// # let _ = total;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ServerAcks<A> {
    /// Each answering server's answer, in arrival order.
    pub answers: Vec<(NodeId, A)>,
    /// Servers asked that did not answer within the timeout (dead or slow), or whose answer
    /// was not an `A`.
    pub missing: Vec<NodeId>,
    /// Servers that have no handler for the event (they said so at once).
    pub unhandled: Vec<NodeId>,
}

impl<T: Transport + Clone> AdapterState<T> {
    /// Handles the server event `event` sent by the other servers; the handler's return
    /// value is the answer to [`AdapterState::server_side_emit_with_ack`] (ignored for
    /// [`AdapterState::server_side_emit`]). A second handler for the same event replaces the
    /// first. Handlers run on their own task, one per event.
    ///
    /// ```no_run
    /// # use backplane::socketio::{AdapterState, ServerEvent};
    /// # fn register(state: &AdapterState) {
    /// state.on_server_event("load", async |event: ServerEvent| {
    ///     let asked: String = event.data().unwrap_or_default();
    ///     format!("{asked}: 0.42") // the answer
    /// });
    /// # }
    /// ```
    pub fn on_server_event<F, Fut, R>(&self, event: &str, handler: F)
    where
        F: Fn(ServerEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Serialize + Send + 'static,
    {
        let handler: ServerHandler = Arc::new(move |event: ServerEvent| {
            let answer = handler(event);
            Box::pin(async move {
                match rmp_serde::to_vec(&answer.await) {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        tracing::warn!(error = %e, "a server event's answer cannot be encoded");
                        None
                    }
                }
            })
        });
        lock(&self.inner.server_handlers).insert(event.to_string(), handler);
    }

    /// Sends `event` with `data` to every other server of the cluster, without waiting for
    /// answers.
    ///
    /// ```no_run
    /// # async fn announce(state: &backplane::socketio::AdapterState) -> Result<(), backplane::socketio::Error> {
    /// state.server_side_emit("joined", &"eu-west-2").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] before the first namespace started; encoding or publishing
    /// failures.
    pub async fn server_side_emit<D: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &D,
    ) -> Result<(), Error> {
        let hub = self.running()?;
        let payload = server_frame(event, data)?;
        hub.node.publish(vec![], vec![], payload).await?;
        Ok(())
    }

    /// Sends `event` with `data` to every other server and collects their answers (the
    /// return values of their handlers) for up to `timeout`. A dead server is reported in
    /// `missing` after the timeout; the call never hangs longer.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn ask(state: &backplane::socketio::AdapterState) -> Result<(), backplane::socketio::Error> {
    /// let acks = state
    ///     .server_side_emit_with_ack::<_, String>("load", "cpu", Duration::from_secs(2))
    ///     .await?;
    /// for (server, load) in &acks.answers {
    ///     println!("{server}: {load}");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`AdapterState::server_side_emit`], or when the servers cannot be listed.
    pub async fn server_side_emit_with_ack<D: Serialize + ?Sized, A: DeserializeOwned>(
        &self,
        event: &str,
        data: &D,
        timeout: Duration,
    ) -> Result<ServerAcks<A>, Error> {
        let hub = self.running()?;
        let payload = server_frame(event, data)?;
        let Replies { replies, missing } = hub.node.request(Ask::All, payload, timeout).await?;
        let mut acks = ServerAcks {
            answers: Vec::with_capacity(replies.len()),
            missing,
            unhandled: Vec::new(),
        };
        for (server, reply) in replies {
            match reply.split_first() {
                Some((&UNHANDLED, _)) => acks.unhandled.push(server),
                Some((&HANDLED, body)) => match rmp_serde::from_slice(body) {
                    Ok(answer) => acks.answers.push((server, answer)),
                    Err(e) => {
                        tracing::warn!(%server, error = %e, "a server's answer is not the type asked");
                        acks.missing.push(server);
                    }
                },
                _ => acks.missing.push(server),
            }
        }
        Ok(acks)
    }

    /// The hub, once a namespace started it.
    fn running(&self) -> Result<Arc<Hub<T>>, Error> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        lock(&self.inner.hub).clone().ok_or(Error::NotReady)
    }
}

fn server_frame<D: Serialize + ?Sized>(event: &str, data: &D) -> Result<Vec<u8>, Error> {
    let body = rmp_serde::to_vec(data)?;
    frame::server(event, &body).map_err(|_| Error::Namespace)
}

impl<T: Transport> Hub<T> {
    /// Runs the handler of a server event from another server, and answers when asked.
    pub(super) fn on_server_event(self: &Arc<Self>, received: &Received, event: &str, body: &[u8]) {
        let handler = lock(&self.server_handlers).get(event).cloned();
        let asked = received.request.is_some();
        if handler.is_none() && !asked {
            tracing::debug!(event, "no handler for a server event");
            return;
        }
        let hub = self.clone();
        let received = received.clone();
        let event = ServerEvent {
            from: received.origin.clone(),
            event: event.to_string(),
            data: body.to_vec(),
        };
        tokio::spawn(async move {
            let reply = match handler {
                Some(handler) => match handler(event).await {
                    Some(answer) => [&[HANDLED][..], &answer].concat(),
                    None => return,
                },
                None => vec![UNHANDLED],
            };
            if asked && let Err(e) = hub.node.reply(&received, reply).await {
                tracing::warn!(error = %e, "could not answer a server event");
            }
        });
    }
}
