//! The `emulator` binary: flags, environment, config file, start-up output, signals, disk.

mod common;

use common::process::{Process, run};
use common::*;

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for (flag, env) in [
        ("--bind", "EMULATOR_BIND"),
        ("--amqp-bind", "EMULATOR_AMQP_BIND"),
        ("--data-dir", "EMULATOR_DATA_DIR"),
        ("--in-memory", "EMULATOR_IN_MEMORY"),
        ("--key-name", "EMULATOR_KEY_NAME"),
        ("--key ", "EMULATOR_KEY"),
        ("--extra-key", "EMULATOR_EXTRA_KEYS"),
        ("--config", "EMULATOR_CONFIG"),
        ("--namespace", "EMULATOR_NAMESPACE"),
        ("--cache-mb", "EMULATOR_CACHE_MB"),
        ("--durability", "EMULATOR_DURABILITY"),
        ("--missing-entity-get", "EMULATOR_MISSING_ENTITY_GET"),
    ] {
        assert!(out.contains(flag), "{flag} missing from --help:\n{out}");
        assert!(
            out.contains(&format!("env: {env}")),
            "{env} missing from --help:\n{out}"
        );
    }
    assert!(
        out.contains("127.0.0.1:5300")
            && out.contains("RootManageSharedAccessKey")
            && out.contains("SAS_KEY_VALUE")
    );
}

#[test]
fn bad_input_exits_non_zero_naming_the_problem() {
    let (code, _, err) = run(&["--bnd", "x"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("--bnd"), "{err}");
    let (code, _, err) = run(&["--bind", "not-an-address"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("not-an-address"), "{err}");
    let (code, _, err) = run(&["--extra-key", "broken"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("NAME:RIGHTS:KEY"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let (code, _, err) = run(&["--in-memory", "--config", missing.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("cannot read config file") && err.contains("nope.json"),
        "{err}"
    );

    let invalid = dir.path().join("bad.json");
    std::fs::write(&invalid, r#"{"UserConfig":{"Namespaces":[{"Name":"n","Queues":[{"Name":"q","Properties":{"MaxDeliveryCount":"many"}}]}]}}"#).unwrap();
    let (code, _, err) = run(&["--in-memory", "--config", invalid.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("bad.json") && err.contains("queue 'q'") && err.contains("MaxDeliveryCount"),
        "{err}"
    );

    // A certificate that is not there, or a certificate without its key.
    let cert = dir.path().join("nope-cert.pem");
    let key = dir.path().join("nope-key.pem");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let (code, _, err) = run(&["--in-memory", "--tls-cert", cert, "--tls-key", key]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("TLS: certificate") && err.contains("nope-cert.pem"),
        "{err}"
    );
    let (code, _, err) = run(&["--in-memory", "--tls-cert", cert]);
    assert_ne!(code, Some(0));
    assert!(err.contains("--tls-key"), "{err}");

    // A fault plan that is not one.
    let faults = dir.path().join("faults.json");
    std::fs::write(
        &faults,
        r#"{"rules": [{"operations": ["send"], "everyNth": 0, "effect": {"type": "serverBusy"}}]}"#,
    )
    .unwrap();
    let (code, _, err) = run(&["--in-memory", "--faults", faults.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("faults.json") && err.contains("rules[0]: everyNth must be at least 1"),
        "{err}"
    );

    let not_json = dir.path().join("x.json");
    std::fs::write(&not_json, "{ nope").unwrap();
    let (code, _, err) = run(&["--in-memory", "--config", not_json.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(err.contains("x.json") && err.contains("line 1"), "{err}");
}

#[tokio::test]
async fn serves_persists_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(dir.path(), &[]).await;
    assert_eq!(
        p.connection_string,
        format!(
            "Endpoint=sb://{};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
            p.addr
        )
    );
    let c = Client::new(p.addr, KEY_NAME, KEY);
    let health = c.send("GET", "/health", None, &[], None).await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, r#"{"status":"healthy"}"#)
    );
    assert_eq!(
        c.put("/durable", queue("<MaxDeliveryCount>4</MaxDeliveryCount>"))
            .await
            .status,
        201
    );
    assert_eq!(p.terminate().await, Ok(Some(0)));
    assert!(
        dir.path().join("servicebus-emulator-data").is_dir(),
        "default data folder in the working directory"
    );

    let p = Process::start(dir.path(), &[]).await;
    let c = Client::new(p.addr, KEY_NAME, KEY);
    assert_eq!(
        text(&c.get("/durable").await.description(), "MaxDeliveryCount"),
        "4"
    );
    assert_eq!(p.terminate().await, Ok(Some(0)));
}

#[tokio::test]
async fn in_memory_keeps_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(dir.path(), &["--in-memory"]).await;
    let c = Client::new(p.addr, KEY_NAME, KEY);
    assert_eq!(c.put("/q", queue("")).await.status, 201);
    assert_eq!(p.terminate().await, Ok(Some(0)));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written in the working directory"
    );
    let p = Process::start(dir.path(), &["--in-memory"]).await;
    let c = Client::new(p.addr, KEY_NAME, KEY);
    assert_eq!(
        c.get("/q").await.xml().name,
        "feed",
        "a fresh in-memory store is empty"
    );
    assert_eq!(p.terminate().await, Ok(Some(0)));
}

#[tokio::test]
async fn config_file_keys_and_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/official-emulator-config/Config.json"
    );
    let p = Process::start(
        dir.path(),
        &[
            "--in-memory",
            "--config",
            config,
            "--key-name",
            "admin",
            "--key",
            "s3cret",
            "--namespace",
            "devns",
            "--extra-key",
            "reader:Listen:r3ad",
        ],
    )
    .await;
    assert!(
        p.connection_string
            .contains("SharedAccessKeyName=admin;SharedAccessKey=s3cret;")
    );
    let c = Client::new(p.addr, "admin", "s3cret");
    let q = c.get("/orders").await.description();
    assert_eq!(text(&q, "MaxDeliveryCount"), "3");
    assert_eq!(text(&q, "DeadLetteringOnMessageExpiration"), "true");
    assert_eq!(c.get("/chat/Subscriptions").await.titles(), ["audit"]);
    assert_eq!(
        c.get("/chat/Subscriptions/audit/Rules").await.titles(),
        ["only-room-42", "replies-to-me"]
    );
    assert_eq!(
        text(&c.get("/$namespaceinfo").await.description(), "Name"),
        "devns"
    );
    let reader = Client::new(p.addr, "reader", "r3ad");
    assert_eq!(
        reader.get("/chat/Subscriptions/audit/Rules").await.status,
        200
    );
    assert_eq!(reader.get("/orders").await.status, 403);
    assert_eq!(
        Client::new(p.addr, KEY_NAME, KEY)
            .get("/orders")
            .await
            .status,
        401,
        "the default key is replaced"
    );
    assert_eq!(p.terminate().await, Ok(Some(0)));
}

/// The binary starts again (same pid, same arguments) with mimalloc's purge delay set to
/// 10 ms, so memory freed after a burst goes back to the OS; a value set by the user stays.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn starts_with_a_short_allocator_purge_delay_unless_one_is_set() {
    use tokio::io::AsyncBufReadExt as _;
    const VAR: &str = "MIMALLOC_PURGE_DELAY";
    for (preset, expected) in [(None, "10"), (Some("250"), "250")] {
        let dir = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_emulator"));
        command
            .args(["--bind", "127.0.0.1:0", "--in-memory"])
            .current_dir(dir.path())
            .env("EMULATOR_AMQP_BIND", "127.0.0.1:0")
            .env_remove("RUST_LOG")
            .env_remove(VAR)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(value) = preset {
            command.env(VAR, value);
        }
        let mut child = command.spawn().unwrap();
        let pid = child.id().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let listening = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.starts_with("Service Bus emulator listening on") {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap();
        assert!(listening, "the emulator printed its address");
        // Read from the process the test started: the same pid serves.
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        let wanted = format!("{VAR}={expected}");
        assert!(
            vars.contains(&wanted.as_bytes()),
            "{wanted} in the environment of pid {pid}"
        );
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).skip(1).collect();
        assert_eq!(
            args,
            [&b"--bind"[..], b"127.0.0.1:0", b"--in-memory", b""],
            "the same arguments (the last NUL-terminated)"
        );
        child.kill().await.unwrap();
    }
}

#[tokio::test]
async fn keeps_serving_when_nobody_reads_its_standard_output() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    // Standard output is a pipe whose reading end is already closed: every write to it
    // fails (EPIPE), as when a launcher stops reading once it has the address.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_emulator"))
        .args(["--bind", "127.0.0.1:0", "--in-memory"])
        .current_dir(dir.path())
        .env("EMULATOR_AMQP_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let (warned, addr) = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut warned = false;
        while let Some(line) = lines.next_line().await.unwrap() {
            warned |= line.contains("cannot write the address to standard output");
            if let Some(addr) = line.split(" ready addr=").nth(1) {
                return (warned, Some(addr.trim().to_string()));
            }
        }
        (warned, None)
    })
    .await
    .unwrap();
    let addr = addr.expect("the emulator logged its address and went on");
    assert!(warned, "the failed write is logged");
    let health = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(child.try_wait().unwrap().is_none(), "still running");
    child.kill().await.unwrap();
}
