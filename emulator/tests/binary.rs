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
