//! One AMQP connection: its task reads frames, answers them, and writes what the link
//! tasks report. It is the only writer of the socket, and it holds
//! every session's and link's state, so no lock guards them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::frames::amqp::{Frame, FrameBody};
use fe2o3_amqp_types::definitions::{AmqpError, ConnectionError, ErrorCondition};
use fe2o3_amqp_types::definitions::{Fields, Handle};
use fe2o3_amqp_types::performatives::{Begin, Close, Detach, End, Flow, Open};
use fe2o3_amqp_types::primitives::{Symbol, Value};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cbs::Tokens;
use super::io::{self, FrameReader, IoError, Principal};
use super::link::{self, Credit, Event, Lock};
use super::stream::{ReadHalf, Stream, WriteHalf};
use super::{CHANNEL_MAX, Context, MAX_FRAME_SIZE, settling};
use crate::broker::ReceiveTarget;

mod attach;
mod deliver;
mod incoming;
mod requests;

/// Frames a session takes before it advertises its window again.
const INCOMING_WINDOW: u32 = 5000;
/// Link credit granted to a client's sender link: deliveries in flight per link.
pub(super) const LINK_CREDIT: u32 = 256;
/// Reports from link tasks waiting for the connection task.
const EVENTS: usize = 256;
/// How long a client has for the protocol headers and SASL.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one connection until either side closes it or `stop` is cancelled.
pub(super) async fn run(mut stream: Stream, context: Arc<Context>, stop: CancellationToken) {
    let peer = stream.peer();
    let principal = tokio::select! {
        () = stop.cancelled() => return,
        shaken = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            io::handshake(&mut stream, &context.keys),
        ) => match shaken {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::info!(?peer, error = %e, "AMQP connection refused");
                return;
            }
            Err(_) => return,
        },
    };
    let (read, write) = stream.split();
    let reader = FrameReader::new(read, MAX_FRAME_SIZE);
    let (events_tx, events) = mpsc::channel(EVENTS);
    let (settler, settle_requests) = mpsc::channel(EVENTS);
    let settling = Task(tokio::spawn(settling::settle_task(
        context.clone(),
        settle_requests,
        events_tx.clone(),
    )));
    let mut connection = Connection {
        settler,
        _settling: settling,
        context,
        out: BufWriter::new(write),
        max_frame_out: 512,
        principal,
        tokens: Tokens::default(),
        sessions: HashMap::new(),
        events: events_tx,
        next_serial: 0,
        opened: false,
        heartbeat: None,
    };
    if let Err(e) = connection.serve(reader, events, stop).await {
        tracing::debug!(?peer, error = %e, "AMQP connection ended");
    }
}

/// A link's task, stopped when the link goes.
#[derive(Debug)]
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a link does.
#[derive(Debug)]
enum Work {
    /// The client sends messages to a queue or topic.
    SendTo {
        deliveries: mpsc::Sender<link::Incoming>,
        _task: Task,
    },
    /// The client sends requests to `$cbs` or a `$management` node.
    Requests { node: link::Node },
    /// The broker sends a queue's or subscription's messages.
    ReceiveFrom {
        credit: Arc<Credit>,
        target: ReceiveTarget,
        _task: Task,
    },
    /// The broker sends responses to the requests of the link's node.
    Replies {
        credit: Arc<Credit>,
        node: link::Node,
        /// The client's own address for the link (its target), which requests name.
        address: Option<String>,
        queue: VecDeque<Vec<u8>>,
        next_tag: u32,
    },
}

/// An attached link.
#[derive(Debug)]
struct Link {
    serial: u64,
    name: String,
    role: Work,
    /// A delivery from the client still arriving (`more`).
    partial: Option<Partial>,
    /// Credit left that we granted the client (its sender links).
    credit_left: u32,
    /// The client's deliveries we took and have not answered.
    outstanding: u32,
    /// The client's delivery-count, as we count its transfers.
    delivery_count: u32,
    /// Largest message accepted.
    max_message_size: u64,
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Work::ReceiveFrom { credit, .. } | Work::Replies { credit, .. } = &self.role {
            credit.close();
        }
    }
}

/// A delivery arriving in several transfers.
#[derive(Debug)]
struct Partial {
    delivery_id: u32,
    settled: bool,
    format: u32,
    bytes: Vec<u8>,
}

/// A delivery of ours the client has not settled.
#[derive(Debug, Clone)]
struct Unsettled {
    serial: u64,
    lock: Lock,
    target: ReceiveTarget,
}

/// A transfer waiting for the session's window.
#[derive(Debug)]
struct Pending {
    handle: u32,
    tag: Vec<u8>,
    settled: bool,
    payload: Vec<u8>,
    unsettled: Option<Unsettled>,
}

/// One AMQP session (its channel is the client's, used for both directions).
#[derive(Debug, Default)]
struct Session {
    next_outgoing_id: u32,
    next_incoming_id: u32,
    incoming_left: u32,
    remote_incoming_window: u32,
    next_delivery_id: u32,
    links: HashMap<u32, Link>,
    unsettled: HashMap<u32, Unsettled>,
    pending: VecDeque<Pending>,
}

impl Session {
    fn by_serial(&mut self, serial: u64) -> Option<(u32, &mut Link)> {
        self.links
            .iter_mut()
            .find(|(_, l)| l.serial == serial)
            .map(|(h, l)| (*h, l))
    }
}

/// The connection's state.
#[derive(Debug)]
struct Connection {
    context: Arc<Context>,
    out: BufWriter<WriteHalf>,
    /// The client's max-frame-size: no frame we write is larger.
    max_frame_out: u32,
    principal: Principal,
    tokens: Tokens,
    sessions: HashMap<u16, Session>,
    events: mpsc::Sender<Event>,
    next_serial: u64,
    opened: bool,
    heartbeat: Option<Duration>,
    /// Settlements to apply, for the connection's settling task.
    settler: mpsc::Sender<settling::Request>,
    _settling: Task,
}

/// Writes one frame to the (buffered) socket.
/// Most frames and events handled between two flushes of the socket.
const MOST_BEFORE_FLUSH: usize = 256;

async fn write(
    out: &mut BufWriter<WriteHalf>,
    channel: u16,
    body: FrameBody,
) -> Result<(), IoError> {
    let bytes = io::encode_amqp(Frame::new(channel, body))?;
    out.write_all(&bytes).await?;
    Ok(())
}

fn connection_error(e: &IoError) -> Option<fe2o3_amqp_types::definitions::Error> {
    let condition = match e {
        IoError::Framing(_) => ErrorCondition::ConnectionError(ConnectionError::FramingError),
        IoError::Decode(_) => ErrorCondition::AmqpError(AmqpError::DecodeError),
        IoError::Io(_) | IoError::Protocol(_) => return None,
    };
    Some(link::error(condition, e.to_string()))
}

impl Connection {
    async fn serve(
        &mut self,
        mut frames: FrameReader<ReadHalf>,
        mut events: mpsc::Receiver<Event>,
        stop: CancellationToken,
    ) -> Result<(), IoError> {
        let mut beat = tokio::time::interval(Duration::from_secs(3600));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut go_on = tokio::select! {
                frame = frames.next() => self.on_read(frame, &mut beat).await?,
                Some(event) = events.recv() => {
                    self.on_event(event).await?;
                    true
                }
                _ = beat.tick(), if self.heartbeat.is_some() => {
                    write(&mut self.out, 0, FrameBody::Empty).await?;
                    true
                }
                () = stop.cancelled() => {
                    let forced = link::error(
                        ErrorCondition::ConnectionError(ConnectionError::ConnectionForced),
                        "The emulator is stopping.",
                    );
                    self.close(Some(forced)).await?;
                    false
                }
            };
            // Whatever else is ready goes out in the same flush: one write for a burst of
            // dispositions or transfers, not one each.
            let mut more = 0;
            while go_on && more < MOST_BEFORE_FLUSH {
                more += 1;
                if let Ok(event) = events.try_recv() {
                    self.on_event(event).await?;
                } else if let Some(frame) = frames.buffered().transpose() {
                    go_on = self.on_read(frame.map(Some), &mut beat).await?;
                } else {
                    break;
                }
            }
            self.out.flush().await?;
            if !go_on {
                return Ok(());
            }
        }
    }

    /// Handles what was read; false once the connection is over.
    async fn on_read(
        &mut self,
        frame: Result<Option<Frame>, IoError>,
        beat: &mut tokio::time::Interval,
    ) -> Result<bool, IoError> {
        match frame {
            Ok(Some(frame)) => {
                let had_heartbeat = self.heartbeat;
                let go_on = self.on_frame(frame).await?;
                if self.heartbeat != had_heartbeat
                    && let Some(every) = self.heartbeat
                {
                    *beat = tokio::time::interval(every);
                    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                Ok(go_on)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                if let Some(error) = connection_error(&e) {
                    let _ = self.close(Some(error)).await;
                }
                Err(e)
            }
        }
    }

    async fn close(
        &mut self,
        error: Option<fe2o3_amqp_types::definitions::Error>,
    ) -> Result<(), IoError> {
        if !self.opened {
            self.open_reply().await?;
        }
        write(&mut self.out, 0, FrameBody::Close(Close { error })).await?;
        self.out.flush().await?;
        Ok(())
    }

    async fn open_reply(&mut self) -> Result<(), IoError> {
        self.opened = true;
        let mut properties = Fields::default();
        properties.insert(Symbol::from("product"), Value::from("servicebus-emulator"));
        properties.insert(
            Symbol::from("version"),
            Value::from(env!("CARGO_PKG_VERSION")),
        );
        let open = Open {
            container_id: self.context.namespace.clone(),
            hostname: None,
            max_frame_size: MAX_FRAME_SIZE.into(),
            channel_max: CHANNEL_MAX.into(),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: Some(properties),
        };
        write(&mut self.out, 0, FrameBody::Open(open)).await
    }

    /// Handles one frame; `false` when the connection is done.
    async fn on_frame(&mut self, frame: Frame) -> Result<bool, IoError> {
        let channel = frame.channel;
        match frame.body {
            FrameBody::Open(open) => {
                if self.opened {
                    return Err(IoError::Protocol("a second open".into()));
                }
                self.max_frame_out = open.max_frame_size.0.clamp(512, MAX_FRAME_SIZE * 4);
                // Half the client's idle time-out, so an idle connection stays alive.
                self.heartbeat = open
                    .idle_time_out
                    .filter(|ms| *ms > 0)
                    .map(|ms| Duration::from_millis(u64::from(ms) / 2));
                self.open_reply().await?;
            }
            FrameBody::Empty => {}
            _ if !self.opened => {
                return Err(IoError::Protocol("a frame before open".into()));
            }
            FrameBody::Begin(begin) => self.begin(channel, begin).await?,
            FrameBody::Attach(attach) => self.attach(channel, attach).await?,
            FrameBody::Flow(flow) => self.flow(channel, flow).await?,
            FrameBody::Transfer {
                performative,
                payload,
            } => self.transfer(channel, performative, &payload).await?,
            FrameBody::Disposition(d) => self.disposition(channel, d).await?,
            FrameBody::Detach(detach) => self.detach(channel, detach).await?,
            FrameBody::End(_) => {
                if self.sessions.remove(&channel).is_some() {
                    write(&mut self.out, channel, FrameBody::End(End { error: None })).await?;
                }
            }
            FrameBody::Close(_) => {
                write(&mut self.out, 0, FrameBody::Close(Close { error: None })).await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn begin(&mut self, channel: u16, begin: Begin) -> Result<(), IoError> {
        if channel > CHANNEL_MAX || self.sessions.contains_key(&channel) {
            let error = link::error(
                ErrorCondition::ConnectionError(ConnectionError::FramingError),
                format!("channel {channel} is in use or over channel-max {CHANNEL_MAX}"),
            );
            self.close(Some(error)).await?;
            return Err(IoError::Protocol("bad channel".into()));
        }
        let session = Session {
            next_incoming_id: begin.next_outgoing_id,
            incoming_left: INCOMING_WINDOW,
            remote_incoming_window: begin.incoming_window,
            ..Session::default()
        };
        self.sessions.insert(channel, session);
        let reply = Begin {
            remote_channel: Some(channel),
            next_outgoing_id: 0,
            incoming_window: INCOMING_WINDOW,
            outgoing_window: u32::MAX,
            handle_max: Handle::default(),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        write(&mut self.out, channel, FrameBody::Begin(reply)).await
    }

    /// A session-level flow (no handle) telling the client our window.
    async fn session_flow(&mut self, channel: u16) -> Result<(), IoError> {
        let Some(session) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        session.incoming_left = INCOMING_WINDOW;
        let flow = Flow {
            next_incoming_id: Some(session.next_incoming_id),
            incoming_window: INCOMING_WINDOW,
            next_outgoing_id: session.next_outgoing_id,
            outgoing_window: u32::MAX,
            handle: None,
            delivery_count: None,
            link_credit: None,
            available: None,
            drain: false,
            echo: false,
            properties: None,
        };
        write(&mut self.out, channel, FrameBody::Flow(flow)).await
    }

    /// A link-level flow: the credit we grant a client's sender link, or the state of our
    /// sender link (`drain` set when answering a drain).
    async fn link_flow(
        &mut self,
        channel: u16,
        handle: u32,
        delivery_count: u32,
        link_credit: u32,
        drain: bool,
    ) -> Result<(), IoError> {
        let Some(session) = self.sessions.get(&channel) else {
            return Ok(());
        };
        let flow = Flow {
            next_incoming_id: Some(session.next_incoming_id),
            incoming_window: session.incoming_left,
            next_outgoing_id: session.next_outgoing_id,
            outgoing_window: u32::MAX,
            handle: Some(Handle(handle)),
            delivery_count: Some(delivery_count),
            link_credit: Some(link_credit),
            available: None,
            drain,
            echo: false,
            properties: None,
        };
        write(&mut self.out, channel, FrameBody::Flow(flow)).await
    }

    async fn flow(&mut self, channel: u16, flow: Flow) -> Result<(), IoError> {
        let Some(session) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        session.remote_incoming_window = flow
            .next_incoming_id
            .unwrap_or(0)
            .wrapping_add(flow.incoming_window)
            .wrapping_sub(session.next_outgoing_id);
        if let Some(Handle(handle)) = flow.handle
            && let Some(link) = session.links.get(&handle)
            && let Work::ReceiveFrom { credit, .. } | Work::Replies { credit, .. } = &link.role
        {
            let credit = credit.clone();
            credit.flow(
                flow.delivery_count,
                flow.link_credit.unwrap_or(0),
                flow.drain,
            );
            let is_replies = matches!(link.role, Work::Replies { .. });
            if is_replies {
                self.send_replies(channel, handle).await?;
            }
            // Nothing to send (or replies, which are all sent): a drain ends now.
            if let Some(count) = credit.finish_drain(is_replies) {
                self.link_flow(channel, handle, count, 0, true).await?;
            } else if flow.echo {
                let (count, left) = credit.snapshot();
                self.link_flow(channel, handle, count, left, false).await?;
            }
        }
        self.flush_pending(channel).await
    }

    async fn detach(&mut self, channel: u16, detach: Detach) -> Result<(), IoError> {
        let handle = detach.handle.0;
        if self.forget_link(channel, handle) {
            let reply = Detach {
                handle: Handle(handle),
                closed: detach.closed,
                error: None,
            };
            write(&mut self.out, channel, FrameBody::Detach(reply)).await?;
        }
        Ok(())
    }

    /// Detaches a link of ours with an error (closed).
    async fn detach_with(
        &mut self,
        channel: u16,
        handle: u32,
        error: fe2o3_amqp_types::definitions::Error,
    ) -> Result<(), IoError> {
        self.forget_link(channel, handle);
        let detach = Detach {
            handle: Handle(handle),
            closed: true,
            error: Some(error),
        };
        write(&mut self.out, channel, FrameBody::Detach(detach)).await
    }

    /// Removes a link with its unsettled deliveries and waiting transfers (its task stops
    /// as it drops); whether there was one.
    fn forget_link(&mut self, channel: u16, handle: u32) -> bool {
        let Some(session) = self.sessions.get_mut(&channel) else {
            return false;
        };
        let Some(link) = session.links.remove(&handle) else {
            return false;
        };
        session.unsettled.retain(|_, u| u.serial != link.serial);
        session.pending.retain(|p| p.handle != handle);
        true
    }

    /// The link `serial` names on `channel`, with its handle.
    fn by_serial(&mut self, channel: u16, serial: u64) -> Option<(u32, &mut Link)> {
        self.sessions.get_mut(&channel)?.by_serial(serial)
    }

    /// The link of `handle` on `channel`.
    fn link_mut(&mut self, channel: u16, handle: u32) -> Option<&mut Link> {
        self.sessions.get_mut(&channel)?.links.get_mut(&handle)
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }
}
