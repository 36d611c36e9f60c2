//! The current Service Bus SDKs, npm `@azure/service-bus` 7.9.5 and PyPI `azure-servicebus`
//! 7.15.0 (real, third-party, unchanged), drive the binary's AMQP listener: send, receive,
//! settle, dead-letter, topics, lock expiry on the manual clock, REST/AMQP interop and the
//! errors an application checks. The scenarios live in `integration/compat`
//! (`amqp.test.js`, `amqp_test.py`); entities come from `amqp-entities.json`.

mod common;

use common::process::Process;
use testkit::process::ChildEmulator;

async fn start(work: &std::path::Path) -> ChildEmulator {
    let config = testkit::compat_dir().join("amqp-entities.json");
    let config = config.to_str().expect("a UTF-8 path");
    let emulator = Process::start(
        work,
        &["--in-memory", "--clock", "manual", "--config", config],
    )
    .await;
    assert!(
        emulator.amqp_addr.is_some(),
        "the banner names the AMQP address"
    );
    emulator
}

/// Runs a client program to completion with the emulator's addresses; fails the test with
/// its output unless it exits 0.
async fn run(program: &std::path::Path, args: &[&str], emulator: &ChildEmulator) -> String {
    let amqp = emulator.amqp_addr.expect("AMQP address").to_string();
    let env = [
        ("EMULATOR_AMQP", amqp),
        ("EMULATOR_URL", format!("http://{}", emulator.addr)),
    ];
    common::process::client(program, args, &env).await
}

#[tokio::test]
async fn the_npm_sdk_sends_receives_and_settles_over_amqp() {
    testkit::ensure_compat_packages();
    let work = tempfile::tempdir().unwrap();
    let emulator = start(work.path()).await;
    let out = run(
        std::path::Path::new("node"),
        &[
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            "amqp.test.js",
        ],
        &emulator,
    )
    .await;
    assert!(
        out.contains("pass 13") && out.contains("fail 0"),
        "expected 13 passing node tests:\n{out}"
    );
    assert_eq!(emulator.terminate().await, Ok(Some(0)));
}

#[tokio::test]
async fn the_pypi_sdk_sends_receives_and_settles_over_amqp() {
    let python = testkit::compat_python();
    let work = tempfile::tempdir().unwrap();
    let emulator = start(work.path()).await;
    let out = run(&python, &["-m", "unittest", "-v", "amqp_test"], &emulator).await;
    assert!(
        out.contains("Ran 12 tests") && out.contains("\nOK"),
        "expected 12 passing Python tests:\n{out}"
    );
    assert_eq!(emulator.terminate().await, Ok(Some(0)));
}
