//! The harness's emulator is reachable through its own connection string, as an
//! application would reach it.

use integration::{InProcessEmulator, KEY, KEY_NAME};
use servicebus_wire::{ConnectionString, Credential, sas};

#[tokio::test]
async fn connection_string_reaches_the_emulator() {
    let emulator = InProcessEmulator::start().await.unwrap();
    let cs = ConnectionString::parse(&emulator.connection_string()).unwrap();
    assert_eq!(cs.base_url(), format!("http://{}", emulator.addr()));
    assert_eq!(
        cs.credential,
        Credential::Key {
            name: KEY_NAME.into(),
            key: KEY.into()
        }
    );

    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/health", cs.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let token = sas::sign(&format!("{}/", cs.base_url()), KEY_NAME, KEY, 4_102_444_800);
    let queues = http
        .get(format!("{}/$Resources/Queues", cs.base_url()))
        .header("authorization", token)
        .send()
        .await
        .unwrap();
    assert_eq!(queues.status(), 200);
    assert!(
        queues
            .text()
            .await
            .unwrap()
            .contains("<title type=\"text\">Queues</title>")
    );
    emulator.stop().await.unwrap();
}
