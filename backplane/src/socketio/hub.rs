//! One server's node and the routing of what it receives: requests to the namespaces,
//! answers to the requests waiting for them.

use super::*;

/// What a namespace is asked to do: a server's request, or a cluster emitter's order.
#[expect(
    clippy::large_enum_variant,
    reason = "moved once per event into the namespace's sink, never stored"
)]
pub(super) enum Inbound {
    /// A request of another server (socketioxide's remote-adapter format).
    Request(RequestIn),
    /// An order of a [`ClusterEmitter`](super::ClusterEmitter).
    Order(Order),
}

/// Applies a request or order to one namespace's sockets.
pub(super) type RequestSink = Arc<dyn Fn(Inbound) + Send + Sync>;

/// One server's node and the routing of what it receives.
pub(super) struct Hub<T: Transport> {
    pub(super) node: Node<T>,
    pub(super) uid: Uid,
    /// The namespaces of this server, by path. A std mutex: never held across an await.
    pub(super) handlers: Mutex<HashMap<String, RequestSink>>,
    /// The server event handlers (shared with the state, where they are registered).
    pub(super) server_handlers: ServerHandlers,
    /// Requests of this server waiting for answers, by request id.
    pub(super) responses: Arc<Mutex<ResponseHandlers<Vec<u8>>>>,
    pub(super) dispatcher: Mutex<Option<JoinHandle<()>>>,
}

impl<T: Transport> Hub<T> {
    pub(super) async fn stop(&self, delete_subscription: bool) -> Result<(), Error> {
        if let Some(task) = lock(&self.dispatcher).take() {
            task.abort();
        }
        if delete_subscription {
            self.node.shutdown().await?;
        } else {
            self.node.crash().await;
        }
        Ok(())
    }

    /// Publishes a request to every other node, or to `target` alone. A broadcast with a
    /// `room` goes to that room's partition.
    pub(super) async fn send_request(
        &self,
        ns: &str,
        req: &RequestOut<'_>,
        target: Option<Uid>,
        room: Option<&str>,
    ) -> Result<(), Error> {
        let body = rmp_serde::to_vec(req)?;
        let payload = frame::request(ns, &body).map_err(|_| Error::Namespace)?;
        match target {
            Some(uid) => self.node.publish_to(&node_of(uid)?, payload).await?,
            None => {
                let route = room.map(|r| vec![r.to_string()]).unwrap_or_default();
                self.node.publish(route, vec![], payload).await?
            }
        }
        Ok(())
    }

    /// Publishes an encoded answer to the node that asked.
    pub(super) async fn send_response(
        &self,
        id: Sid,
        origin: Uid,
        body: Vec<u8>,
    ) -> Result<(), Error> {
        let payload = frame::response(id, &body);
        self.node.publish_to(&node_of(origin)?, payload).await?;
        Ok(())
    }

    pub(super) fn on_event(self: &Arc<Self>, received: &Received) {
        match frame::decode(&received.payload) {
            Ok(Frame::Server { event, body }) => self.on_server_event(received, event, body),
            Ok(Frame::Emit { ns, body }) => match serde_json::from_slice::<Order>(body) {
                Ok(order) => match lock(&self.handlers).get(ns).cloned() {
                    Some(sink) => sink(Inbound::Order(order)),
                    None => tracing::debug!(ns, "an emitter's order for an absent namespace"),
                },
                Err(e) => tracing::warn!(error = %e, "dropping an undecodable emitter order"),
            },
            Ok(Frame::Request { ns, body }) => match rmp_serde::from_slice::<RequestIn>(body) {
                Ok(req) => {
                    let sink = lock(&self.handlers).get(ns).cloned();
                    match sink {
                        Some(sink) => sink(Inbound::Request(req)),
                        None => self.answer_empty(req),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "dropping an undecodable adapter request"),
            },
            Ok(Frame::Response { id, body }) => {
                let waiting = lock(&self.responses).get(&id).cloned();
                if let Some(tx) = waiting
                    && tx.try_send(body.to_vec()).is_err()
                {
                    tracing::warn!(request = %id, "answer buffer full; dropping an answer");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "dropping a backplane event that is no adapter frame")
            }
        }
    }

    /// Answers a request for a namespace this server does not have with nothing, so the
    /// asker need not wait for its timeout.
    pub(super) fn answer_empty(self: &Arc<Self>, req: RequestIn) {
        let empty = match req.r#type {
            RequestTypeIn::BroadcastWithAck(_) => ResponseType::<()>::BroadcastAckCount(0),
            RequestTypeIn::AllRooms => ResponseType::AllRooms(HashSet::new()),
            RequestTypeIn::FetchSockets => ResponseType::FetchSockets(Vec::new()),
            _ => return,
        };
        let res = Response {
            node_id: self.uid,
            r#type: empty,
        };
        let hub = self.clone();
        tokio::spawn(async move {
            let sent = match rmp_serde::to_vec(&res) {
                Ok(body) => hub.send_response(req.id, req.node_id, body).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = sent {
                tracing::warn!(error = %e, "could not answer a request for an absent namespace");
            }
        });
    }
}

/// Routes the node's events to the namespaces and waiting requests, in arrival order.
pub(super) async fn dispatch<T: Transport>(
    hub: Weak<Hub<T>>,
    mut events: mpsc::Receiver<Received>,
) {
    while let Some(event) = events.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        hub.on_event(&event);
    }
}

/// A server's node id is its socketioxide id.
pub(super) fn node_of(uid: Uid) -> Result<NodeId, Error> {
    NodeId::new(&uid.to_string()).map_err(Error::NodeId)
}

/// Reads an answer; a malformed one is dropped with a warning.
pub(super) fn decode_response<D: DeserializeOwned>(
    bytes: Vec<u8>,
) -> Result<Response<D>, Box<dyn std::error::Error + Send>> {
    rmp_serde::from_slice(&bytes).map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send>)
}
