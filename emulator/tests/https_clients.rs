//! Real clients over the emulator's HTTPS (`--tls`), unpatched: they trust the generated CA
//! the way the banner tells a user to, and nothing rewrites their URLs.
//! - npm `@azure/service-bus` 7.9.5's and PyPI `azure-servicebus` 7.15.0's administration
//!   clients, which only speak `https://` (`admin-https.test.js`, `admin_https_test.py`);
//! - the same SDKs' AMQP clients over TLS (`--amqps-bind`), given a connection string
//!   without `UseDevelopmentEmulator`, as they would reach Azure on 5671;
//! - the legacy npm `azure-sb` client, its whole management and messaging suite, over
//!   `https://localhost:PORT`.

mod common;

use common::process::{Process, client as run};
use testkit::process::ChildEmulator;

/// The binary with a certificate generated into `work/tls`; returns it and the CA's path.
async fn start(work: &std::path::Path) -> (ChildEmulator, std::path::PathBuf) {
    let tls = work.join("tls");
    let emulator = Process::start(
        work,
        &[
            "--in-memory",
            "--tls-dir",
            tls.to_str().expect("a UTF-8 path"),
        ],
    )
    .await;
    (emulator, tls.join("ca.pem"))
}

/// The connection strings a user copies from the banner: REST (HTTPS on the same port)
/// and AMQP.
fn connection_strings(emulator: &ChildEmulator) -> Vec<(&'static str, String)> {
    let amqp = emulator
        .amqp_addr
        .expect("the banner names the AMQP address");
    vec![
        (
            "EMULATOR_CONNECTION_STRING",
            emulator.connection_string.clone(),
        ),
        (
            "EMULATOR_AMQP_CONNECTION_STRING",
            emulator::connection_string(amqp, common::KEY_NAME, common::KEY),
        ),
        (
            "EMULATOR_AMQPS_CONNECTION_STRING",
            emulator::tls_connection_string(
                emulator
                    .amqps_addr
                    .expect("the banner names the AMQPS address"),
                common::KEY_NAME,
                common::KEY,
            ),
        ),
    ]
}

#[tokio::test]
async fn the_npm_admin_client_manages_entities_over_https_unpatched() {
    testkit::ensure_compat_packages();
    let work = tempfile::tempdir().unwrap();
    let (emulator, ca) = start(work.path()).await;
    let node = std::path::Path::new("node");
    let args = ["--test", "--test-reporter=spec", "admin-https.test.js"];
    let mut env = connection_strings(&emulator);
    env.push(("NODE_EXTRA_CA_CERTS", ca.display().to_string()));
    let out = run(node, &args, &env).await;
    assert!(
        out.contains("pass 4") && out.contains("fail 0"),
        "expected 4 passing node tests:\n{out}"
    );
    // Without the CA the same client refuses the certificate: it really spoke TLS.
    let mut env = connection_strings(&emulator);
    env.push(("EXPECT_UNTRUSTED", "1".into()));
    let out = run(node, &args, &env).await;
    assert!(
        out.contains("pass 1") && out.contains("fail 0"),
        "expected the untrusted check to pass:\n{out}"
    );
    assert_eq!(emulator.terminate().await, Ok(Some(0)));
}

#[tokio::test]
async fn the_pypi_admin_client_manages_entities_over_https_unpatched() {
    let python = testkit::compat_python();
    let work = tempfile::tempdir().unwrap();
    let (emulator, ca) = start(work.path()).await;
    let mut env = connection_strings(&emulator);
    env.push(("REQUESTS_CA_BUNDLE", ca.display().to_string()));
    // The SDK's own option for AMQP over TLS (it reads no variable: certifi by default).
    env.push(("EMULATOR_CA", ca.display().to_string()));
    let out = run(&python, &["-m", "unittest", "-v", "admin_https_test"], &env).await;
    assert!(
        out.contains("Ran 6 tests") && out.contains("\nOK"),
        "expected 6 passing Python tests:\n{out}"
    );
    assert_eq!(emulator.terminate().await, Ok(Some(0)));
}

#[tokio::test]
async fn the_legacy_azure_sb_client_runs_its_suite_over_https() {
    testkit::ensure_compat_packages();
    let work = tempfile::tempdir().unwrap();
    let (emulator, ca) = start(work.path()).await;
    // azure-common's URI check refuses a host without a dot (`localhost`); the
    // certificate names 127.0.0.1 too.
    let url = format!("https://127.0.0.1:{}", emulator.addr.port());
    let out = run(
        std::path::Path::new("node"),
        &[
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            "management.test.js",
            "messaging.test.js",
        ],
        &[
            ("EMULATOR_URL", url),
            ("NODE_EXTRA_CA_CERTS", ca.display().to_string()),
        ],
    )
    .await;
    assert!(
        out.contains("pass 8") && out.contains("fail 0"),
        "expected 8 passing node tests:\n{out}"
    );
    assert_eq!(emulator.terminate().await, Ok(Some(0)));
}
