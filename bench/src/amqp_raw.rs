//! A lean AMQP 1.0 load client for the AMQP throughput figures (and the end-to-end latency
//! beside fe2o3-amqp's): one task per connection, one link each, frames encoded with the
//! emulator's own frame writer (`serde_amqp` for the performatives) and decoded with
//! fe2o3-amqp's frame decoder, the 1 KB message encoded once. It does what wrk does for
//! HTTP: it keeps the client's own cost small, so that the figure is the emulator's. It
//! still plays by the rules: SASL PLAIN, link credit and the session's incoming window are
//! respected, and every outcome is checked.
//!
//! fe2o3-amqp's own client (the library the Rust Service Bus crates are built on) runs
//! several tasks and channels per delivery; on two cores shared with the emulator it took
//! about as much CPU as the emulator's AMQP front-end, and the bench prints its figure too.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::{Buf as _, BytesMut};
use fe2o3_amqp::frames::amqp::{Frame, FrameBody, FrameDecoder};
use fe2o3_amqp::frames::sasl;
use fe2o3_amqp_types::definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp_types::messaging::message::__private::Deserializable;
use fe2o3_amqp_types::messaging::{Accepted, Body, Data, DeliveryState, Message, Source, Target};
use fe2o3_amqp_types::performatives::{
    Attach, Begin, ChannelMax, Disposition, Flow, MaxFrameSize, Open, Transfer,
};
use fe2o3_amqp_types::primitives::{Binary, Symbol, Value};
use fe2o3_amqp_types::sasl::{SaslCode, SaslInit};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder as _, Encoder as _};

use crate::{KEY, KEY_NAME, payload};

/// The session window each side is offered: far more than 64 deliveries in flight need.
const WINDOW: u32 = 1 << 20;

/// One connection with one session and one link on channel 0, handle 0.
struct Link {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
    /// The emulator's last flow: delivery-count + link-credit is how far we may send
    /// (sender), and next-incoming-id + incoming-window how far the session may.
    link_limit: u32,
    session_limit: u32,
    /// The emulator's next-outgoing-id at its begin, plus transfers received.
    next_incoming: u32,
}

impl Link {
    /// Connects, authenticates with SASL PLAIN and attaches a link with `role` to
    /// `address`; returns once the emulator attached its end.
    async fn attach(
        amqp: SocketAddr,
        role: Role,
        address: &str,
        settle: SenderSettleMode,
    ) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(amqp).await?;
        stream.set_nodelay(true)?;
        let mut link = Link {
            stream,
            input: BytesMut::with_capacity(1 << 16),
            output: BytesMut::with_capacity(1 << 16),
            link_limit: 0,
            session_limit: 0,
            next_incoming: 0,
        };
        link.sasl().await?;
        link.send(FrameBody::Open(Open {
            container_id: "bench-raw".into(),
            hostname: Some("127.0.0.1".into()),
            max_frame_size: MaxFrameSize(256 * 1024),
            channel_max: ChannelMax(0),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }))?;
        link.send(FrameBody::Begin(Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: WINDOW,
            outgoing_window: WINDOW,
            handle_max: Handle(0),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }))?;
        let (source, target) = match role {
            Role::Sender => (Source::default(), Target::from(address)),
            Role::Receiver => (Source::from(address), Target::default()),
        };
        link.send(FrameBody::Attach(Attach {
            name: "bench-raw".into(),
            handle: Handle(0),
            role: role.clone(),
            snd_settle_mode: settle,
            rcv_settle_mode: ReceiverSettleMode::First,
            source: Some(Box::new(source)),
            target: Some(Box::new(target.into())),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: (role == Role::Sender).then_some(0),
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }))?;
        link.flush().await?;
        loop {
            match link.next().await? {
                FrameBody::Begin(begin) => {
                    link.next_incoming = begin.next_outgoing_id;
                    link.session_limit = begin.incoming_window;
                }
                FrameBody::Attach(attach) => {
                    if role == Role::Sender && attach.target.is_none()
                        || role == Role::Receiver && attach.source.is_none()
                    {
                        bail!("the emulator refused the link to {address}");
                    }
                    return Ok(link);
                }
                FrameBody::Open(_) | FrameBody::Flow(_) | FrameBody::Empty => {}
                other => bail!("unexpected frame while attaching: {other:?}"),
            }
        }
    }

    async fn sasl(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(b"AMQP\x03\x01\x00\x00").await?;
        let mut header = [0u8; 8];
        self.stream.read_exact(&mut header).await?;
        let _mechanisms = self.sasl_frame().await?;
        let response = format!("\0{KEY_NAME}\0{KEY}");
        let mut frame = BytesMut::new();
        sasl::FrameCodec {}.encode(
            sasl::Frame::Init(SaslInit {
                mechanism: Symbol::from("PLAIN"),
                initial_response: Some(Binary::from(response.into_bytes())),
                hostname: None,
            }),
            &mut frame,
        )?;
        self.stream
            .write_all(&(frame.len() as u32 + 4).to_be_bytes())
            .await?;
        self.stream.write_all(&frame).await?;
        match self.sasl_frame().await? {
            sasl::Frame::Outcome(o) if o.code == SaslCode::Ok => {}
            other => bail!("SASL PLAIN refused: {other:?}"),
        }
        self.stream.write_all(b"AMQP\x00\x01\x00\x00").await?;
        self.stream.read_exact(&mut header).await?;
        Ok(())
    }

    async fn sasl_frame(&mut self) -> anyhow::Result<sasl::Frame> {
        let size = self.stream.read_u32().await? as usize;
        let mut body = BytesMut::zeroed(size.saturating_sub(4));
        self.stream.read_exact(&mut body).await?;
        sasl::FrameCodec {}
            .decode(&mut body)?
            .context("an incomplete SASL frame")
    }

    /// A flow for a receiving link: `credit` past `delivery_count` deliveries received.
    fn flow(&self, delivery_count: u32, credit: u32) -> Flow {
        Flow {
            next_incoming_id: Some(self.next_incoming),
            incoming_window: WINDOW,
            next_outgoing_id: 0,
            outgoing_window: WINDOW,
            handle: Some(Handle(0)),
            delivery_count: Some(delivery_count),
            link_credit: Some(credit),
            available: None,
            drain: false,
            echo: false,
            properties: None,
        }
    }

    /// Queues an unsettled transfer of `message` (an encoded message) as delivery `id`, the
    /// id doubling as the transfer id and the tag: one frame per message.
    fn transfer(&mut self, id: u32, message: Vec<u8>) -> anyhow::Result<()> {
        self.send(FrameBody::Transfer {
            performative: Transfer {
                handle: Handle(0),
                delivery_id: Some(id),
                delivery_tag: Some(id.to_be_bytes().to_vec().into()),
                message_format: Some(0),
                settled: Some(false),
                more: false,
                rcv_settle_mode: None,
                state: None,
                resume: false,
                aborted: false,
                batchable: false,
            },
            payload: message.into(),
        })
    }

    /// How many sends a disposition settles, once it is checked to accept them all.
    fn accepted(d: &Disposition) -> anyhow::Result<u32> {
        if !matches!(d.state, Some(DeliveryState::Accepted(_))) {
            bail!("a send was not accepted: {:?}", d.state);
        }
        Ok(d.last
            .unwrap_or(d.first)
            .wrapping_sub(d.first)
            .wrapping_add(1))
    }

    /// Queues a frame on channel 0 (written by [`Link::flush`]).
    fn send(&mut self, body: FrameBody) -> anyhow::Result<()> {
        let frame =
            emulator::amqp::encode_frame(Frame::new(0u16, body)).map_err(anyhow::Error::msg)?;
        self.output.extend_from_slice(&frame);
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
        }
        Ok(())
    }

    /// The next frame, reading more only when no whole frame is buffered.
    async fn next(&mut self) -> anyhow::Result<FrameBody> {
        loop {
            if let Some(frame) = self.buffered()? {
                return Ok(frame);
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                bail!("the emulator closed the connection");
            }
        }
    }

    /// A whole frame already read, if there is one; keeps track of the emulator's flow.
    fn buffered(&mut self) -> anyhow::Result<Option<FrameBody>> {
        let Some(size) = self.input.get(..4) else {
            return Ok(None);
        };
        let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
        if self.input.len() < size {
            return Ok(None);
        }
        self.input.advance(4);
        let mut frame = self.input.split_to(size - 4);
        let body = FrameDecoder {}
            .decode(&mut frame)?
            .context("an incomplete frame")?
            .into_body();
        match &body {
            FrameBody::Flow(flow) => {
                if let (Some(count), Some(credit)) = (flow.delivery_count, flow.link_credit) {
                    self.link_limit = count.wrapping_add(credit);
                }
                let next = flow.next_incoming_id.unwrap_or(0);
                self.session_limit = next.wrapping_add(flow.incoming_window);
            }
            FrameBody::Transfer { .. } => self.next_incoming = self.next_incoming.wrapping_add(1),
            FrameBody::Detach(_) | FrameBody::End(_) | FrameBody::Close(_) => {
                bail!("the emulator ended the link: {body:?}")
            }
            _ => {}
        }
        Ok(Some(body))
    }
}

/// Whether serial number `n` is before `limit` (RFC 1982 arithmetic, as AMQP's).
fn below(n: u32, limit: u32) -> bool {
    (limit.wrapping_sub(n) as i32) > 0
}

/// Sends 1 KB messages for `phase` with `in_flight` unsettled deliveries at most; the
/// accepted msg/s.
pub(crate) async fn send_rate(
    amqp: SocketAddr,
    queue: &str,
    in_flight: u32,
    phase: Duration,
) -> anyhow::Result<f64> {
    let mut link = Link::attach(amqp, Role::Sender, queue, SenderSettleMode::Unsettled).await?;
    let message = serde_amqp::to_vec(&Data(Binary::from(payload())))?;
    let (mut sent, mut settled) = (0u32, 0u32);
    let start = Instant::now();
    while start.elapsed() < phase {
        while sent.wrapping_sub(settled) < in_flight
            && below(sent, link.link_limit)
            && below(sent, link.session_limit)
        {
            link.transfer(sent, message.clone())?;
            sent = sent.wrapping_add(1);
        }
        link.flush().await?;
        let mut frame = Some(link.next().await?);
        while let Some(body) = frame {
            if let FrameBody::Disposition(d) = body {
                settled = settled.wrapping_add(Link::accepted(&d)?);
            }
            frame = link.buffered()?;
        }
    }
    Ok(f64::from(settled) / start.elapsed().as_secs_f64())
}

/// Receives in peek-lock mode with `credit` for `phase`, accepting what each read brought
/// with one disposition and topping the credit up; msg/s.
pub(crate) async fn peek_lock_rate(
    amqp: SocketAddr,
    queue: &str,
    credit: u32,
    phase: Duration,
) -> anyhow::Result<f64> {
    let mut link = Link::attach(amqp, Role::Receiver, queue, SenderSettleMode::Unsettled).await?;
    let mut received = 0u32;
    link.send(FrameBody::Flow(link.flow(received, credit)))?;
    link.flush().await?;
    let start = Instant::now();
    while start.elapsed() < phase {
        let mut ids = Vec::new();
        let mut frame = Some(link.next().await?);
        while let Some(body) = frame {
            if let FrameBody::Transfer { performative, .. } = body {
                ids.extend(performative.delivery_id);
            }
            frame = link.buffered()?;
        }
        let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
            continue;
        };
        if last.wrapping_sub(first) as usize + 1 != ids.len() {
            bail!("delivery ids out of order: {ids:?}");
        }
        received = received.wrapping_add(ids.len() as u32);
        link.send(FrameBody::Disposition(Disposition {
            role: Role::Receiver,
            first,
            last: Some(last),
            settled: true,
            state: Some(DeliveryState::Accepted(Accepted {})),
            batchable: false,
        }))?;
        link.send(FrameBody::Flow(link.flow(received, credit)))?;
        link.flush().await?;
    }
    Ok(f64::from(received) / start.elapsed().as_secs_f64())
}

/// End-to-end latency at 1,000 msg/s to the 3 subscriptions (`s0`..`s2`) of `topic`: one
/// sender and three receive-and-delete receivers, each on a connection and a task of its
/// own, as the fe2o3-amqp measurement has them. Returns every copy's latency (µs, sorted)
/// and how many copies were due; gives up on missing copies 30 s after the last send.
pub(crate) async fn end_to_end(
    amqp: SocketAddr,
    topic: &str,
    seconds: f64,
) -> anyhow::Result<(Vec<u64>, u64)> {
    let total = (1000.0 * seconds) as u32;
    let origin = Instant::now();
    let give_up = tokio::time::Instant::now() + Duration::from_secs_f64(seconds + 30.0);
    let mut receivers = Vec::new();
    for s in 0..3 {
        let address = format!("{topic}/Subscriptions/s{s}");
        let link = Link::attach(amqp, Role::Receiver, &address, SenderSettleMode::Settled).await?;
        receivers.push(tokio::spawn(tokio::time::timeout_at(
            give_up,
            stamps(link, total, origin),
        )));
    }
    let mut link = Link::attach(amqp, Role::Sender, topic, SenderSettleMode::Unsettled).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let (mut sent, mut settled) = (0u32, 0u32);
    let sending = tokio::time::timeout_at(give_up, async {
        while settled < total {
            let may_send =
                sent < total && below(sent, link.link_limit) && below(sent, link.session_limit);
            tokio::select! {
                _ = tick.tick(), if may_send => {
                    let stamp = origin.elapsed().as_micros().to_string().into_bytes();
                    link.transfer(sent, serde_amqp::to_vec(&Data(Binary::from(stamp)))?)?;
                    link.flush().await?;
                    sent += 1;
                }
                body = link.next() => {
                    if let FrameBody::Disposition(d) = body? {
                        settled += Link::accepted(&d)?;
                    }
                }
            }
        }
        anyhow::Ok(())
    });
    sending
        .await
        .context("the sends were not all accepted in time")??;
    let mut latencies = Vec::new();
    for r in receivers {
        // A receiver that timed out lost its copies only: the count shows it.
        if let Ok(got) = r.await? {
            latencies.extend(got?);
        }
    }
    latencies.sort_unstable();
    Ok((latencies, u64::from(total) * 3))
}

/// Receives `want` stamped messages on a settled receiving link, granting credit 64 and
/// topping it up by half; each one's latency, µs from its stamp to its arrival.
async fn stamps(mut link: Link, want: u32, origin: Instant) -> anyhow::Result<Vec<u64>> {
    const CREDIT: u32 = 64;
    let (mut received, mut granted_at) = (0u32, 0u32);
    link.send(FrameBody::Flow(link.flow(received, CREDIT)))?;
    link.flush().await?;
    let mut latencies = Vec::with_capacity(want as usize);
    while received < want {
        let body = link.next().await?;
        let now = origin.elapsed().as_micros();
        let FrameBody::Transfer { payload, .. } = body else {
            continue;
        };
        let message = serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(&payload)?.0;
        let Body::Data(data) = message.body else {
            bail!("a message without a data body");
        };
        let sent: u128 = data
            .first()
            .and_then(|d| std::str::from_utf8(&d.0).ok())
            .and_then(|t| t.parse().ok())
            .context("a message without a stamp")?;
        latencies.push(now.saturating_sub(sent) as u64);
        received += 1;
        if received - granted_at >= CREDIT / 2 {
            granted_at = received;
            link.send(FrameBody::Flow(link.flow(received, CREDIT)))?;
            link.flush().await?;
        }
    }
    Ok(latencies)
}
