//! Microsoft Entra ID bearer tokens end to end: the emulator started with a JWT secret
//! (`--jwt-secret`), tokens minted locally with it, and the REST client sending them, from
//! the official SDK's Azure CLI credential (`azure_identity`, running a stand-in `az`
//! through the real shell) and from a plain provider. Roles give rights; a wrong audience,
//! an expired token, an unsigned one or one from another key are refused (401).
#![cfg(feature = "entra-id")]

use std::ffi::OsStr;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use backplane::servicebus::entra::EntraCredential;
use backplane::servicebus::token::{AccessToken, TokenProvider, TokenResult};
use backplane::servicebus::{Client, Message, RetryPolicy};
use emulator::auth::jwt::{AUDIENCE, OWNER, RECEIVER, SENDER, mint};
use serde_json::json;
use testkit::InProcessEmulator;

const SECRET: &str = "a-local-secret";

async fn emulator(jwt: bool) -> InProcessEmulator {
    let mut settings = emulator::Settings::in_memory();
    settings.jwt_secret = jwt.then(|| SECRET.to_string());
    InProcessEmulator::start_with(settings)
        .await
        .expect("emulator starts")
}

fn token(claims: serde_json::Value, secret: &str) -> String {
    mint(&claims, secret).expect("minted")
}

fn in_an_hour() -> i64 {
    chrono::Utc::now().timestamp() + 3600
}

/// A provider handing out one fixed token.
#[derive(Debug)]
struct Fixed(String);

impl TokenProvider for Fixed {
    fn token(&self) -> Pin<Box<dyn Future<Output = TokenResult> + Send + '_>> {
        Box::pin(async move {
            Ok(AccessToken {
                token: self.0.clone(),
                expires_at: chrono::Utc::now() + chrono::TimeDelta::hours(1),
            })
        })
    }
}

fn client(emulator: &InProcessEmulator, provider: Arc<dyn TokenProvider>) -> Client {
    let retry = RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    };
    Client::with_token_provider(&format!("http://{}", emulator.addr()), provider, retry)
        .expect("a namespace URL")
}

/// Runs commands as the SDK asks (`/bin/sh -c "cd /bin && az account get-access-token
/// ..."`), with a folder holding a stand-in `az` first on the PATH.
#[derive(Debug)]
struct StandInAz {
    path: String,
}

#[async_trait::async_trait]
impl azure_identity::Executor for StandInAz {
    async fn run(&self, program: &OsStr, args: &[&OsStr]) -> std::io::Result<std::process::Output> {
        tokio::process::Command::new(program)
            .args(args)
            .env("PATH", &self.path)
            .output()
            .await
    }
}

#[tokio::test]
async fn the_azure_cli_credential_of_the_sdk_reaches_an_emulator_that_checks_bearer_tokens() {
    let emulator = emulator(true).await;
    let exp = in_an_hour();
    let jwt = token(
        json!({"aud": AUDIENCE, "exp": exp, "roles": [OWNER]}),
        SECRET,
    );
    // What `az account get-access-token -o json` prints (Azure CLI 2.54 and later).
    let printed = json!({
        "accessToken": jwt,
        "expiresOn": "2030-01-01 00:00:00.000000",
        "expires_on": exp,
        "subscription": "00000000-0000-0000-0000-000000000000",
        "tenant": "00000000-0000-0000-0000-000000000000",
        "tokenType": "Bearer",
    });
    let dir = tempfile::tempdir().expect("a temp dir");
    let az = dir.path().join("az");
    std::fs::write(&az, format!("#!/bin/sh\ncat <<'EOF'\n{printed}\nEOF\n")).expect("written");
    std::fs::set_permissions(&az, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("executable");
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let options = azure_identity::AzureCliCredentialOptions {
        executor: Some(Arc::new(StandInAz { path })),
        ..Default::default()
    };
    let credential = EntraCredential::azure_cli_with(options).expect("a credential");
    let client = client(&emulator, credential);

    // Owner: manage, send, receive.
    client
        .create_queue_if_missing("entra")
        .await
        .expect("created with a bearer token");
    client
        .send("entra", &Message::new("via Entra ID"))
        .await
        .expect("sent");
    let got = client
        .receive_and_delete("entra", Duration::from_secs(5))
        .await
        .expect("received")
        .expect("a message");
    assert_eq!(got.body, b"via Entra ID");
    emulator.stop().await.expect("stops");
}

/// A client whose bearer token, signed with the emulator's secret, carries `role`.
fn with_role(emulator: &InProcessEmulator, role: &str) -> Client {
    let claims = json!({"aud": AUDIENCE, "exp": in_an_hour(), "roles": [role]});
    client(emulator, Arc::new(Fixed(token(claims, SECRET))))
}

#[tokio::test]
async fn roles_grant_rights_and_bad_tokens_are_refused() {
    let emulator = emulator(true).await;
    let owner = with_role(&emulator, OWNER);
    owner
        .create_queue_if_missing("roles")
        .await
        .expect("created");

    // Sender: send, but neither manage nor receive (403).
    let sender = with_role(&emulator, SENDER);
    sender
        .send("roles", &Message::new("x"))
        .await
        .expect("sent");
    let refused = sender.create_queue_if_missing("other").await.unwrap_err();
    assert!(
        matches!(
            refused,
            backplane::servicebus::Error::Unauthorized { status: 403, .. }
        ),
        "{refused:?}"
    );
    let refused = sender
        .receive_and_delete("roles", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            backplane::servicebus::Error::Unauthorized { status: 403, .. }
        ),
        "{refused:?}"
    );

    // Receiver: receive, not send.
    let receiver = with_role(&emulator, RECEIVER);
    let got = receiver
        .receive_and_delete("roles", Duration::from_secs(5))
        .await
        .expect("received");
    assert_eq!(got.expect("a message").body, b"x");
    assert!(
        receiver
            .send("roles", &Message::new("y"))
            .await
            .unwrap_err()
            .is_unauthorized()
    );

    // Refused outright (401): another audience, expired, another key, unsigned, no role.
    let unsigned = {
        use base64::Engine as _;
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let claims = json!({"aud": AUDIENCE, "exp": in_an_hour(), "roles": [OWNER]});
        format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&claims.to_string())
        )
    };
    for (why, sub_code, bad) in [
        (
            "another audience",
            "SubCode=40104",
            token(
                json!({"aud": "https://storage.azure.com", "exp": in_an_hour(), "roles": [OWNER]}),
                SECRET,
            ),
        ),
        (
            "expired",
            "SubCode=40106",
            token(
                json!({"aud": AUDIENCE, "exp": chrono::Utc::now().timestamp() - 10, "roles": [OWNER]}),
                SECRET,
            ),
        ),
        (
            "another key",
            "SubCode=40103",
            token(
                json!({"aud": AUDIENCE, "exp": in_an_hour(), "roles": [OWNER]}),
                "not-the-secret",
            ),
        ),
        ("unsigned", "SubCode=40105", unsigned),
        (
            "no role",
            "SubCode=40100",
            token(
                json!({"aud": AUDIENCE, "exp": in_an_hour(), "roles": ["Reader"]}),
                SECRET,
            ),
        ),
    ] {
        let refused = client(&emulator, Arc::new(Fixed(bad)))
            .send("roles", &Message::new("z"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                backplane::servicebus::Error::Unauthorized { status: 401, ref detail }
                    if detail.contains(sub_code)
            ),
            "{why}: {refused:?}"
        );
    }

    // SAS keeps working beside bearer tokens.
    let sas = Client::from_connection_string(&emulator.connection_string()).expect("a client");
    sas.send("roles", &Message::new("sas"))
        .await
        .expect("sent with SAS");
    emulator.stop().await.expect("stops");
}

#[tokio::test]
async fn an_emulator_without_a_jwt_secret_refuses_bearer_tokens() {
    let emulator = emulator(false).await;
    let jwt = token(
        json!({"aud": AUDIENCE, "exp": in_an_hour(), "roles": [OWNER]}),
        SECRET,
    );
    let refused = client(&emulator, Arc::new(Fixed(jwt)))
        .create_queue_if_missing("q")
        .await
        .unwrap_err();
    assert!(
        matches!(refused, backplane::servicebus::Error::Unauthorized { status: 401, ref detail } if detail.contains("--jwt-secret")),
        "{refused:?}"
    );
    emulator.stop().await.expect("stops");
}
