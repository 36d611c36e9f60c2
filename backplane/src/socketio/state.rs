//! The state a server's namespaces share: the transport, the options and the node, started
//! with the first namespace and stopped with the last.

use super::*;

/// The state shared by the namespaces of one server: the transport and, once the first
/// namespace starts, the server's backplane node. Cheap to clone; keep a clone to call
/// [`AdapterState::shutdown`].
pub struct AdapterState<T: Transport + Clone = ServiceBusTransport> {
    pub(super) inner: Arc<StateInner<T>>,
}

impl<T: Transport + Clone> Clone for AdapterState<T> {
    fn clone(&self) -> Self {
        AdapterState {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Transport + Clone> fmt::Debug for AdapterState<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdapterState")
            .field("options", &self.inner.options)
            .field("node", &self.node_id())
            .finish_non_exhaustive()
    }
}

pub(super) struct StateInner<T: Transport> {
    /// One per partition (topic).
    pub(super) transports: Vec<T>,
    /// The server event handlers, registered before or after the node starts.
    pub(super) server_handlers: ServerHandlers,
    pub(super) options: AdapterOptions,
    /// The running node. A std mutex: never held across an await.
    pub(super) hub: Mutex<Option<Arc<Hub<T>>>>,
    /// Held while the node starts, so that two namespaces start one node.
    pub(super) starting: tokio::sync::Mutex<()>,
    /// The node's id once started.
    pub(super) node_id: OnceLock<NodeId>,
    pub(super) closed: AtomicBool,
}

impl AdapterState<ServiceBusTransport> {
    /// Connects to Service Bus (the emulator or a namespace) and creates `topic` if
    /// missing (and, with [`AdapterOptions::partitions`] K > 1, `topic-1` ..
    /// `topic-(K-1)`). Every server of the app uses the same topic.
    ///
    /// # Errors
    ///
    /// A malformed connection string, or a topic that cannot be created.
    pub async fn connect(
        connection_string: &str,
        topic: &str,
        options: AdapterOptions,
    ) -> Result<Self, Error> {
        let client = Client::from_connection_string(connection_string)?;
        let mut transports = Vec::with_capacity(options.partitions.max(1));
        for name in partition_topics(topic, options.partitions) {
            transports.push(ServiceBusTransport::new(client.clone(), &name).await?);
        }
        Ok(Self::with_transports(transports, options))
    }
}

impl<T: Transport + Clone> AdapterState<T> {
    /// A state over any transport (a [`MemoryTransport`] shared by servers in one process).
    pub fn with_transport(transport: T, options: AdapterOptions) -> Self {
        Self::with_transports(vec![transport], options)
    }

    /// A state over one transport per partition (topic), in the same order on every
    /// server; [`AdapterOptions::partitions`] is not read.
    ///
    /// ```
    /// use backplane::socketio::{AdapterOptions, AdapterState};
    /// use backplane::transport::MemoryTransport;
    ///
    /// // Four in-memory "topics", shared by every server of this process.
    /// let topics: Vec<MemoryTransport> = (0..4).map(|_| MemoryTransport::new()).collect();
    /// let state = AdapterState::with_transports(topics.clone(), AdapterOptions::default());
    /// assert_eq!(state.node_id(), None); // until socketioxide starts a namespace
    /// ```
    pub fn with_transports(transports: Vec<T>, options: AdapterOptions) -> Self {
        AdapterState {
            inner: Arc::new(StateInner {
                transports,
                server_handlers: ServerHandlers::default(),
                options,
                hub: Mutex::new(None),
                starting: tokio::sync::Mutex::new(()),
                node_id: OnceLock::new(),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The node's id (the server's socketioxide id) once a namespace has started.
    pub fn node_id(&self) -> Option<NodeId> {
        self.inner.node_id.get().cloned()
    }

    /// The live servers (the backplane's live nodes, this one included); 1 before the
    /// node starts.
    pub fn server_count(&self) -> usize {
        lock(&self.inner.hub)
            .as_ref()
            .map_or(1, |hub| hub.node.live_nodes().len())
    }

    /// Stops the node and deletes its subscription. Afterwards the state serves nothing.
    ///
    /// # Errors
    ///
    /// When the subscription cannot be deleted (the bus deletes it when idle anyway).
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.inner.stop(true).await
    }

    /// Stops the node as a crash would, leaving its subscription for the bus or the other
    /// nodes' janitors to delete (for fault tests).
    pub async fn crash(&self) {
        let _ = self.inner.stop(false).await;
    }
}

impl<T: Transport + Clone> StateInner<T> {
    /// Closes the state and stops its node, deleting the subscription or not.
    pub(super) async fn stop(&self, delete_subscription: bool) -> Result<(), Error> {
        self.closed.store(true, Ordering::SeqCst);
        let hub = lock(&self.hub).take();
        match hub {
            Some(hub) => hub.stop(delete_subscription).await,
            None => Ok(()),
        }
    }

    /// The server's hub, started on first use with the server's id as node id.
    pub(super) async fn hub(&self, uid: Uid) -> Result<Arc<Hub<T>>, Error> {
        let _starting = self.starting.lock().await;
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        if let Some(hub) = lock(&self.hub).as_ref() {
            return if hub.uid == uid {
                Ok(hub.clone())
            } else {
                Err(Error::SharedState)
            };
        }
        let node_id = node_of(uid)?;
        let config = NodeConfig {
            node_id: Some(node_id.clone()),
            ..self.options.node.clone()
        };
        let (node, events) = Node::start_partitioned(self.transports.clone(), config).await?;
        let hub = Arc::new(Hub {
            node,
            uid,
            handlers: Mutex::default(),
            server_handlers: self.server_handlers.clone(),
            responses: Arc::default(),
            dispatcher: Mutex::default(),
        });
        *lock(&hub.dispatcher) = Some(tokio::spawn(dispatch(Arc::downgrade(&hub), events)));
        let _ = self.node_id.set(node_id);
        *lock(&self.hub) = Some(hub.clone());
        Ok(hub)
    }
}

/// The topics of an app over `partitions` topics: `topic`, then `topic-1` ..
/// `topic-(partitions-1)` (at least the first).
pub(super) fn partition_topics(topic: &str, partitions: usize) -> Vec<String> {
    (0..partitions.max(1))
        .map(|k| match k {
            0 => topic.to_string(),
            k => format!("{topic}-{k}"),
        })
        .collect()
}
