//! The explorer page (`/$explorer`) in a real browser: Debian's headless Chromium, driven
//! by npm `playwright-core` (`integration/compat/explorer.test.js`), creates a queue, sends,
//! peeks, resubmits a dead-lettered message, moves the manual clock and deletes, through the
//! page only. Screenshots go to `target/test-artifacts/`.

mod common;

use std::path::PathBuf;

use common::process::Process;
use common::{Client, KEY, KEY_NAME, queue};

#[tokio::test]
async fn the_explorer_drives_the_emulator_in_a_browser() {
    let Some(chromium) = testkit::chromium("the_explorer_drives_the_emulator_in_a_browser") else {
        return;
    };
    testkit::ensure_compat_packages();
    let work = tempfile::tempdir().unwrap();
    let emulator = Process::start(work.path(), &["--in-memory", "--clock", "manual"]).await;
    let c = Client::new(emulator.addr, KEY_NAME, KEY);

    // A message in `orders`' dead-letter subqueue: delivered once, abandoned, out of tries.
    let created = c
        .put("/orders", queue("<MaxDeliveryCount>1</MaxDeliveryCount>"))
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(
        c.post_message("/orders/messages", "to dead-letter", &[])
            .await
            .status,
        201
    );
    let locked = c
        .send(
            "POST",
            "/orders/messages/head?timeout=5",
            None,
            &[],
            Some(c.token()),
        )
        .await;
    assert_eq!(locked.status, 201);
    let abandoned = c
        .send("PUT", &locked.location_path(), None, &[], Some(c.token()))
        .await;
    assert_eq!(abandoned.status, 200);

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let output = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "explorer.test.js"])
        .current_dir(testkit::compat_dir())
        .env(
            "EXPLORER_URL",
            format!("http://{}/$explorer", emulator.addr),
        )
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS", &artifacts)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(300), output)
        .await
        .expect("the browser test finishes within 5 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "explorer test failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("pass 1") && stdout.contains("fail 0"),
        "{stdout}"
    );

    // What the page did, seen over REST: the message is back in `orders`, and the queue it
    // made is gone.
    let back = c.drain("orders").await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body, "to dead-letter");
    assert!(!c.get("/made-in-explorer").await.body.contains("<entry"));
    assert_eq!(c.get("/news/Subscriptions/all").await.status, 200);
    for shot in [
        "explorer-1-send-and-peek.png",
        "explorer-2-dead-letter.png",
        "explorer-3-resubmitted.png",
        "explorer-4-subscription.png",
    ] {
        assert!(artifacts.join(shot).is_file(), "{shot}");
    }
    assert_eq!(emulator.terminate().await, Ok(Some(0)));
}
