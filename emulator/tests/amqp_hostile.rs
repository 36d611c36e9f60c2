//! Bad input on the AMQP listener (issue 17, item 7): a wrong protocol header, TLS bytes,
//! frames under 8 bytes or over max-frame-size, a performative that does not decode, an
//! unknown performative, values nested 100,000 deep, and an attach to a bad address. Each
//! ends that connection (or link) with the AMQP error, and the emulator goes on serving.

use std::time::Duration;

use emulator::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const AMQP: &[u8; 8] = b"AMQP\x00\x01\x00\x00";
const DEADLINE: Duration = Duration::from_secs(30);

/// A frame on channel 0 holding `body` (a performative's bytes, then any payload).
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = ((8 + body.len()) as u32).to_be_bytes().to_vec();
    out.extend([2, 0, 0, 0]);
    out.extend(body);
    out
}

/// An `open` performative: a described list with only a container id.
fn open() -> Vec<u8> {
    let mut body = vec![0x00, 0x53, 0x10, 0xc0, 0x04, 0x01, 0xa1, 0x01, b'x'];
    body[4] = (body.len() - 5) as u8;
    body
}

/// Everything the server sends until it closes the socket (or the deadline).
async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut all)).await;
    all
}

/// Connects without SASL, sends `bytes` after the AMQP header and `open`, and returns what
/// the server said before closing.
async fn after_open(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(AMQP).await.unwrap();
    stream.write_all(&frame(&open())).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_to_end(&mut stream).await
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A fresh connection still gets the AMQP header and an `open` back.
async fn still_serves(addr: std::net::SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(AMQP).await.unwrap();
    stream.write_all(&frame(&open())).await.unwrap();
    let mut header = [0u8; 8];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut header))
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(&header, AMQP);
    let size = stream.read_u32().await.unwrap();
    let mut rest = vec![0u8; size as usize - 4];
    stream.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest[4..7], &[0x00, 0x53, 0x10], "an open performative");
}

#[tokio::test]
async fn hostile_bytes_end_their_connection_and_nothing_else() {
    let emulator = testkit::InProcessEmulator::start_with(Settings::in_memory())
        .await
        .unwrap();
    let addr = emulator.amqp_addr();

    // Not AMQP: the server's header, then the socket closes.
    for header in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01],
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(header).await.unwrap();
        let answer = read_to_end(&mut stream).await;
        assert_eq!(answer, AMQP, "only our header, then close: {answer:?}");
    }

    let framing = "amqp:connection:framing-error";
    // A frame smaller than its own header.
    let answer = after_open(addr, &[0, 0, 0, 4]).await;
    assert!(contains(&answer, framing), "{answer:?}");
    // A frame over the max-frame-size: refused from its size field, nothing allocated.
    let answer = after_open(addr, &[0x7f, 0xff, 0xff, 0xff, 2, 0, 0, 0]).await;
    assert!(contains(&answer, framing), "{answer:?}");
    // A data offset the server does not use.
    let answer = after_open(addr, &[0, 0, 0, 8, 5, 0, 0, 0]).await;
    assert!(contains(&answer, framing), "{answer:?}");

    let decode = "amqp:decode-error";
    // Garbage where a performative should be, and an unknown performative (0x99).
    for body in [&[0xff, 0x13, 0x37][..], &[0x00, 0x53, 0x99, 0x45]] {
        let answer = after_open(addr, &frame(body)).await;
        assert!(contains(&answer, decode), "{body:?}: {answer:?}");
    }
    // 80,000 nested lists: refused without recursing (a stack overflow would abort).
    let mut deep = vec![0x00, 0x53, 0x13];
    deep.extend(std::iter::repeat_n([0xc0u8, 0xff, 0x01], 80_000).flatten());
    let answer = after_open(addr, &frame(&deep)).await;
    assert!(contains(&answer, decode), "deep nesting");

    still_serves(addr).await;
    let health = reqwest::get(format!("http://{}/health", emulator.addr()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    emulator.stop().await.unwrap();
}

#[tokio::test]
async fn a_stop_closes_amqp_connections_with_connection_forced() {
    let emulator = testkit::InProcessEmulator::start_with(Settings::in_memory())
        .await
        .unwrap();
    let mut stream = TcpStream::connect(emulator.amqp_addr()).await.unwrap();
    stream.write_all(AMQP).await.unwrap();
    stream.write_all(&frame(&open())).await.unwrap();
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await.unwrap();
    let reader = tokio::spawn(async move { read_to_end(&mut stream).await });
    emulator.stop().await.unwrap();
    let answer = reader.await.unwrap();
    assert!(
        contains(&answer, "amqp:connection:forced"),
        "a close with connection:forced: {answer:?}"
    );
}
