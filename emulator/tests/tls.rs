//! HTTPS beside HTTP on the REST port (`--tls`): a client that trusts the generated CA gets
//! the whole REST surface over TLS, a plain HTTP client is still served on the same port, a
//! client that does not trust the CA is refused by its own verifier, and a connection that
//! stalls in its handshake holds up no one else.

mod common;

use common::{KEY, KEY_NAME, Server, queue};
use emulator::Settings;
use emulator::tls::TlsSource;
use servicebus_wire::sas::sign;

/// An emulator with a certificate generated into `dir`.
async fn start(dir: &std::path::Path) -> Server {
    Server::start(Settings {
        tls: Some(TlsSource::Generated {
            dir: dir.to_path_buf(),
        }),
        ..Settings::in_memory()
    })
    .await
}

/// A client that trusts only `ca` (not the system's roots).
fn trusting(ca: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

fn token(base: &str) -> String {
    sign(
        &format!("{base}/"),
        KEY_NAME,
        KEY,
        chrono::Utc::now().timestamp() + 600,
    )
}

#[tokio::test]
async fn https_and_http_share_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let https = format!("https://localhost:{}", server.addr.port());
    let client = trusting(&dir.path().join("ca.pem"));

    // Management and messaging over TLS, checked by the client against the CA.
    let created = client
        .put(format!("{https}/secure"))
        .header("Authorization", token(&https))
        .header("Content-Type", "application/atom+xml")
        .body(queue(""))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let sent = client
        .post(format!("{https}/secure/messages"))
        .header("Authorization", token(&https))
        .body("over tls")
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 201);
    // The certificate names 127.0.0.1 too.
    let https_ip = format!("https://127.0.0.1:{}", server.addr.port());
    let received = client
        .delete(format!("{https_ip}/secure/messages/head?timeout=5"))
        .header("Authorization", token(&https_ip))
        .send()
        .await
        .unwrap();
    assert_eq!(received.status(), 200);
    assert_eq!(received.text().await.unwrap(), "over tls");

    // Answers over TLS name `https://` URLs.
    let entry = client
        .get(format!("{https}/secure"))
        .header("Authorization", token(&https))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(entry.contains(&format!("<id>{https}/secure")), "{entry}");

    // Plain HTTP on the same port.
    let plain = server.client();
    assert_eq!(plain.get("/secure").await.status, 200);

    // A client that trusts only the public roots refuses the emulator's certificate.
    let untrusting = reqwest::Client::builder().build().unwrap();
    let refused = untrusting
        .get(format!("{https}/health"))
        .send()
        .await
        .unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_handshake_holds_up_no_one() {
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    // One byte of a TLS record, then nothing; and a connection that sends nothing at all.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(&[22]).await.unwrap();
    let _silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();

    let https = format!("https://localhost:{}", server.addr.port());
    let health = trusting(&dir.path().join("ca.pem"))
        .get(format!("{https}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(server.client().get("/health").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn the_users_own_certificate_and_key_are_served() {
    // A certificate made elsewhere (here by a first --tls run), given as files.
    let made = tempfile::tempdir().unwrap();
    emulator::tls::Tls::load(&TlsSource::Generated {
        dir: made.path().to_path_buf(),
    })
    .unwrap();
    let server = Server::start(Settings {
        tls: Some(TlsSource::Files {
            cert: made.path().join("cert.pem"),
            key: made.path().join("key.pem"),
        }),
        ..Settings::in_memory()
    })
    .await;
    let health = trusting(&made.path().join("ca.pem"))
        .get(format!("https://localhost:{}/health", server.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server.stop().await;
}
