//! The npm `azure-sb` client (real, third-party) drives management and messaging against
//! the binary.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::process::Process;

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../integration/compat")
}

/// Installs the locked npm packages if they are not there yet.
fn ensure_packages() {
    let dir = compat_dir();
    if dir.join("node_modules/azure-sb/package.json").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .expect("npm must be installed (Node.js 20+) to run the azure-sb compatibility test");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

#[tokio::test]
async fn azure_sb_manages_entities_and_sends_receives_and_settles() {
    ensure_packages();
    let work = tempfile::tempdir().unwrap();
    let emulator = Process::start(work.path(), &["--in-memory"]).await;
    let dir = compat_dir();
    let output = tokio::process::Command::new("node")
        .args([
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            "management.test.js",
            "messaging.test.js",
        ])
        .current_dir(&dir)
        .env("EMULATOR_URL", format!("http://{}", emulator.addr))
        .output()
        .await
        .expect("node must be installed (Node.js 20+) to run the azure-sb compatibility test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "azure-sb scenario failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("pass 8") && stdout.contains("fail 0"),
        "expected 8 passing node tests:\n{stdout}"
    );
    assert_eq!(emulator.terminate().await, Ok(Some(0)));
}
