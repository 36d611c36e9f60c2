//! The chat demo in a real browser: Debian's headless Chromium, driven by npm
//! `playwright-core`, opens the page of node A and of node B behind one emulator; a message
//! typed on A appears on B. The screenshot is kept in `target/test-artifacts/`.

use std::path::PathBuf;
use std::time::Duration;

use backplane::node::NodeConfig;
use backplane::socketio::AdapterOptions;
use demo::chat::{ChatNode, ChatOptions};
use testkit::InProcessEmulator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_typed_on_a_appears_on_b() {
    let Some(chromium) = testkit::chromium("a_message_typed_on_a_appears_on_b") else {
        return;
    };
    testkit::ensure_compat_packages();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let workspace = root.parent().expect("the workspace").to_path_buf();
    let client_js =
        testkit::compat_dir().join("node_modules/socket.io-client/dist/socket.io.min.js");

    let emulator = InProcessEmulator::start().await.expect("emulator starts");
    let mut nodes = Vec::new();
    for name in ["A", "B"] {
        let node = ChatNode::start(ChatOptions {
            name: name.into(),
            connection_string: emulator.connection_string(),
            topic: "chat".into(),
            bind: "127.0.0.1:0".parse().expect("an address"),
            assets: Some(workspace.join("demo/public")),
            client_js: Some(client_js.clone()),
            adapter: AdapterOptions {
                node: NodeConfig {
                    receive_timeout: Duration::from_secs(2),
                    ..NodeConfig::default()
                },
                ..AdapterOptions::default()
            },
            namespaces: vec!["/".into()],
        })
        .await
        .expect("chat node starts");
        nodes.push(node);
    }

    let artifacts = workspace.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact folder");
    let screenshot = artifacts.join("chat-browser.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut run = tokio::process::Command::new("node");
    run.args(["--test", "browser.test.js"])
        .current_dir(testkit::compat_dir())
        .env("CHAT_A", nodes[0].url())
        .env("CHAT_B", nodes[1].url())
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT", &screenshot)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), run.output())
        .await
        .expect("the browser test finishes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    println!("screenshot: {}", screenshot.display());

    for node in nodes {
        node.shutdown().await.expect("clean shutdown");
    }
    emulator.stop().await.expect("emulator stops");
}
