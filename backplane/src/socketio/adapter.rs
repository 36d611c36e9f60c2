//! The namespace adapter: socketioxide's `CoreAdapter` over the server's hub.

use super::*;

/// Acknowledgements buffered per broadcast before the reader takes them; beyond, late
/// ones are dropped with a warning.
const ACK_BUFFER: usize = 1024;

/// The namespace adapter socketioxide creates per namespace.
pub struct BackplaneAdapter<E, T: Transport + Clone = ServiceBusTransport> {
    local: CoreLocalAdapter<E>,
    uid: Uid,
    state: Arc<StateInner<T>>,
    hub: OnceLock<Arc<Hub<T>>>,
}

impl<E, T: Transport + Clone> fmt::Debug for BackplaneAdapter<E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackplaneAdapter")
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

impl<E, T: Transport + Clone> DefinedAdapter for BackplaneAdapter<E, T> {}

impl<E: SocketEmitter, T: Transport + Clone> BackplaneAdapter<E, T> {
    fn hub(&self) -> Result<&Arc<Hub<T>>, Error> {
        self.hub.get().ok_or(Error::NotReady)
    }

    /// Whether `opts` concerns sockets of other servers.
    fn is_remote(&self, opts: &BroadcastOptions) -> bool {
        !opts.is_local(self.uid) && opts.server_id != Some(self.uid)
    }

    /// How many servers answer a request with these options.
    fn answering(hub: &Hub<T>, opts: &BroadcastOptions) -> usize {
        if opts.server_id.is_some() {
            1
        } else {
            hub.node.live_nodes().len().saturating_sub(1)
        }
    }

    /// Joins (`join`) or leaves `rooms` for the sockets `opts` selects, on every server
    /// concerned.
    async fn change_rooms(
        &self,
        opts: BroadcastOptions,
        rooms: Vec<Room>,
        join: bool,
    ) -> Result<(), Error> {
        if self.is_remote(&opts) {
            let kind = if join {
                RequestTypeOut::AddSockets(&rooms)
            } else {
                RequestTypeOut::DelSockets(&rooms)
            };
            let req = RequestOut::new(self.uid, kind, &opts);
            self.send_req(req, opts.server_id).await?;
        }
        if join {
            self.local.add_sockets(opts, rooms);
        } else {
            self.local.del_sockets(opts, rooms);
        }
        Ok(())
    }

    async fn send_req(&self, req: RequestOut<'_>, target: Option<Uid>) -> Result<(), Error> {
        self.hub()?
            .send_request(self.local.path(), &req, target, None)
            .await
    }

    /// The answers of type `kind` to request `id`: at most `count`, until the timeout.
    fn answers<D: DeserializeOwned>(
        &self,
        hub: &Hub<T>,
        id: Sid,
        kind: ResponseTypeId,
        count: usize,
    ) -> impl Stream<Item = Response<D>> + use<D, E, T> {
        let rx = insert_response_handler(&hub.responses, id, count);
        let decoded = ChanStream::new(rx).filter_map(|bytes| {
            future::ready(match decode_response::<D>(bytes) {
                Ok(res) => Some(res),
                Err(e) => {
                    tracing::warn!(error = %e, "dropping an undecodable answer");
                    None
                }
            })
        });
        wait_responses(
            decoded,
            hub.responses.clone(),
            id,
            kind,
            count,
            self.state.options.request_timeout,
        )
    }
}

/// What initialising a namespace returns: await it (`io.ns(..).await?`) to know the node
/// runs; socketioxide spawns it for dynamic namespaces.
#[must_use = "await the namespace's initialisation"]
pub struct InitRes(Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>);

impl fmt::Debug for InitRes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InitRes")
    }
}

impl Future for InitRes {
    type Output = Result<(), Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl Spawnable for InitRes {
    fn spawn(self) {
        tokio::spawn(async move {
            if let Err(e) = self.await {
                tracing::error!(error = %e, "could not start the namespace's adapter");
            }
        });
    }
}

impl<E: SocketEmitter, T: Transport + Clone> CoreAdapter<E> for BackplaneAdapter<E, T> {
    type Error = Error;
    type State = AdapterState<T>;
    type AckStream = Either<E::AckStream, AckStream<E, ChanStream<Vec<u8>>, Vec<u8>>>;
    type InitRes = InitRes;

    fn new(state: &Self::State, local: CoreLocalAdapter<E>) -> Self {
        BackplaneAdapter {
            uid: local.server_id(),
            local,
            state: state.inner.clone(),
            hub: OnceLock::new(),
        }
    }

    fn init(self: Arc<Self>, on_success: impl FnOnce() + Send + 'static) -> Self::InitRes {
        InitRes(Box::pin(async move {
            let hub = self.state.hub(self.uid).await?;
            let me = Arc::downgrade(&self);
            let sink: RequestSink = Arc::new(move |req| {
                if let Some(adapter) = me.upgrade() {
                    match req {
                        Inbound::Request(req) => adapter.recv_req(req),
                        Inbound::Order(order) => adapter.apply_order(order),
                    }
                }
            });
            lock(&hub.handlers).insert(self.local.path().to_string(), sink);
            let _ = self.hub.set(hub);
            on_success();
            Ok(())
        }))
    }

    async fn close(&self) -> Result<(), Self::Error> {
        let Ok(hub) = self.hub() else { return Ok(()) };
        let last = {
            let mut handlers = lock(&hub.handlers);
            handlers.remove(self.local.path().as_str());
            handlers.is_empty()
        };
        if last {
            self.state.stop(true).await?;
        }
        Ok(())
    }

    async fn server_count(&self) -> Result<u16, Self::Error> {
        let live = self.hub()?.node.live_nodes().len();
        Ok(u16::try_from(live).unwrap_or(u16::MAX))
    }

    async fn broadcast(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
    ) -> Result<(), BroadcastError> {
        if self.is_remote(&opts) {
            let req = RequestOut::new(self.uid, RequestTypeOut::Broadcast(&packet), &opts);
            // The partition of its room: the least by name, so that the same rooms in
            // another order go the same way.
            let room = opts.rooms.iter().min().map(|r| r.as_ref());
            let hub = self.hub().map_err(AdapterError::from)?;
            hub.send_request(self.local.path(), &req, opts.server_id, room)
                .await
                .map_err(AdapterError::from)?;
        }
        self.local.broadcast(packet, opts)?;
        Ok(())
    }

    async fn broadcast_with_ack(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        timeout: Option<Duration>,
    ) -> Result<Self::AckStream, Self::Error> {
        if !self.is_remote(&opts) {
            let (local, _) = self.local.broadcast_with_ack(packet, opts, timeout);
            return Ok(Either::Left(local));
        }
        let hub = self.hub()?;
        let req = RequestOut::new(self.uid, RequestTypeOut::BroadcastWithAck(&packet), &opts)
            .with_ack_timeout(timeout);
        let id = req.id;
        let servers = Self::answering(hub, &opts);
        let (tx, rx) = mpsc::channel(servers + ACK_BUFFER);
        lock(&hub.responses).insert(id, tx);
        if let Err(e) = self.send_req(req, opts.server_id).await {
            lock(&hub.responses).remove(&id);
            return Err(e);
        }
        let (local, _) = self.local.broadcast_with_ack(packet, opts, timeout);
        let wait = self
            .state
            .options
            .request_timeout
            .saturating_add(timeout.unwrap_or(self.local.ack_timeout()));
        Ok(Either::Right(AckStream::new(
            local,
            ChanStream::new(rx),
            decode_response::<E::AckError>,
            wait,
            u16::try_from(servers).unwrap_or(u16::MAX),
            id,
            hub.responses.clone(),
        )))
    }

    async fn add_sockets(
        &self,
        opts: BroadcastOptions,
        rooms: impl RoomParam,
    ) -> Result<(), Error> {
        self.change_rooms(opts, rooms.into_room_iter().collect(), true)
            .await
    }

    async fn del_sockets(
        &self,
        opts: BroadcastOptions,
        rooms: impl RoomParam,
    ) -> Result<(), Error> {
        self.change_rooms(opts, rooms.into_room_iter().collect(), false)
            .await
    }

    async fn disconnect_socket(&self, opts: BroadcastOptions) -> Result<(), BroadcastError> {
        if self.is_remote(&opts) {
            let req = RequestOut::new(self.uid, RequestTypeOut::DisconnectSockets, &opts);
            self.send_req(req, opts.server_id)
                .await
                .map_err(AdapterError::from)?;
        }
        self.local
            .disconnect_socket(opts)
            .map_err(BroadcastError::Socket)
    }

    async fn rooms(&self, opts: BroadcastOptions) -> Result<Vec<Room>, Error> {
        if !self.is_remote(&opts) {
            return Ok(self.local.rooms(opts).into_iter().collect());
        }
        let hub = self.hub()?;
        let req = RequestOut::new(self.uid, RequestTypeOut::AllRooms, &opts);
        let count = Self::answering(hub, &opts);
        let answers = self.answers::<()>(hub, req.id, ResponseTypeId::AllRooms, count);
        self.send_req(req, opts.server_id).await?;
        let mut rooms = self.local.rooms(opts);
        let mut answers = std::pin::pin!(answers);
        while let Some(answer) = answers.next().await {
            rooms.extend(answer.into_rooms().unwrap_or_default());
        }
        Ok(rooms.into_iter().collect())
    }

    async fn fetch_sockets(&self, opts: BroadcastOptions) -> Result<Vec<RemoteSocketData>, Error> {
        if !self.is_remote(&opts) {
            return Ok(self.local.fetch_sockets(opts));
        }
        let hub = self.hub()?;
        let req = RequestOut::new(self.uid, RequestTypeOut::FetchSockets, &opts);
        let count = Self::answering(hub, &opts);
        let answers =
            self.answers::<RemoteSocketData>(hub, req.id, ResponseTypeId::FetchSockets, count);
        self.send_req(req, opts.server_id).await?;
        let mut sockets = self.local.fetch_sockets(opts);
        let mut answers = std::pin::pin!(answers);
        while let Some(answer) = answers.next().await {
            sockets.extend(answer.into_fetch_sockets().unwrap_or_default());
        }
        Ok(sockets)
    }

    fn get_local(&self) -> &CoreLocalAdapter<E> {
        &self.local
    }
}

impl<E: SocketEmitter, T: Transport + Clone> RemoteRequestHandler<E> for BackplaneAdapter<E, T> {
    type Error = Error;

    fn local(&self) -> &CoreLocalAdapter<E> {
        &self.local
    }

    fn send_res<D: Serialize + fmt::Debug + Send + 'static>(
        &self,
        req_id: Sid,
        req_origin: Uid,
        res: Response<D>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let hub = self.hub().cloned();
        let body = rmp_serde::to_vec(&res);
        async move { hub?.send_response(req_id, req_origin, body?).await }
    }
}
