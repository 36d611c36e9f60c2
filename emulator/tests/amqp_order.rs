//! An AMQP receiver link gets a queue's messages in sequence order, also when they are sent
//! in bursts faster than the link can park its next take: two takes of a link wait at once,
//! parked receivers are handed messages in the order they started, and takes that finish
//! together are reported in sequence order.

mod common;

use std::time::Duration;

use common::{Client, queue};
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::types::definitions::SenderSettleMode;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Connection, Receiver, Sender, Session};

const DEADLINE: Duration = Duration::from_secs(60);
/// Messages sent, in bursts of `BURST` with no pause inside a burst.
const MESSAGES: u64 = 400;
const BURST: u64 = 8;

async fn connect(
    addr: std::net::SocketAddr,
    name: &str,
) -> fe2o3_amqp::connection::ConnectionHandle<()> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    Connection::builder()
        .container_id(name)
        .hostname("127.0.0.1")
        .sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Plain {
            username: testkit::KEY_NAME.into(),
            password: testkit::KEY.into(),
        })
        .open_with_stream(stream)
        .await
        .unwrap()
}

#[tokio::test]
async fn bursts_reach_a_receiver_link_in_sequence_order() {
    let emulator = testkit::InProcessEmulator::start().await.unwrap();
    let rest = Client::new(emulator.addr(), testkit::KEY_NAME, testkit::KEY);
    for (name, mode) in [
        ("receive-and-delete", SenderSettleMode::Settled),
        ("peek-lock", SenderSettleMode::Unsettled),
    ] {
        assert_eq!(rest.put(&format!("/{name}"), queue("")).await.status, 201);
        let name = name.to_string();
        let mut receiving = connect(emulator.amqp_addr(), "receiver").await;
        let mut session = Session::begin(&mut receiving).await.unwrap();
        let mut receiver = Receiver::builder()
            .name("in-order")
            .source(name.as_str())
            .sender_settle_mode(mode.clone())
            .credit_mode(CreditMode::Auto(64))
            .attach(&mut session)
            .await
            .unwrap();
        let mut sending = connect(emulator.amqp_addr(), "sender").await;
        let mut sender_session = Session::begin(&mut sending).await.unwrap();
        let mut sender = Sender::attach(&mut sender_session, "bursts", name.as_str())
            .await
            .unwrap();
        let sends = tokio::spawn(async move {
            for burst in 0..MESSAGES / BURST {
                let mut outcomes = Vec::new();
                for i in 0..BURST {
                    let body = (burst * BURST + i).to_string();
                    let message = Message::builder().value(Value::String(body)).build();
                    outcomes.push(sender.send_batchable(message).await.unwrap());
                }
                for outcome in outcomes {
                    outcome.await.unwrap().accepted_or("accepted").unwrap();
                }
            }
            sender.close().await.unwrap();
            sender_session.end().await.unwrap();
            sending.close().await.unwrap();
        });
        let mut got = Vec::new();
        let (mut last_seq, mut out_of_order) = (None, Vec::new());
        while (got.len() as u64) < MESSAGES {
            let delivery = tokio::time::timeout(DEADLINE, receiver.recv::<Body<Value>>())
                .await
                .expect("every message arrives in time")
                .unwrap();
            receiver.accept(&delivery).await.unwrap();
            let seq = delivery
                .message()
                .message_annotations
                .as_ref()
                .and_then(|a| a.0.get(&OwnedKey::Symbol("x-opt-sequence-number".into())))
                .cloned();
            let Some(Value::Long(seq)) = seq else {
                panic!("no sequence number: {seq:?}");
            };
            if last_seq.is_some_and(|last| seq <= last) {
                out_of_order.push((last_seq, seq));
            }
            last_seq = Some(seq);
            let Body::Value(v) = delivery.body() else {
                panic!("a value body");
            };
            let Value::String(n) = &v.0 else {
                panic!("a string value");
            };
            got.push(n.parse::<u64>().unwrap());
        }
        sends.await.unwrap();
        assert_eq!(out_of_order, [], "sequence numbers out of order ({mode:?})");
        let expected: Vec<u64> = (0..MESSAGES).collect();
        assert_eq!(got, expected, "messages out of order ({mode:?})");
        receiver.close().await.unwrap();
        session.end().await.unwrap();
        receiving.close().await.unwrap();
    }
    emulator.stop().await.unwrap();
}
