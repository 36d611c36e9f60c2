//! One node of the multi-node chat demo: an axum + socketioxide server scaled out over
//! Service Bus (or the emulator) by the backplane's adapter. `scripts/demo.sh` starts the
//! emulator and two of these.

use std::net::SocketAddr;
use std::path::PathBuf;

use backplane::socketio::AdapterOptions;
use clap::Parser;
use demo::chat::{ChatNode, ChatOptions};

/// The emulator on its default address, with the well-known development key.
const EMULATOR: &str = "Endpoint=sb://127.0.0.1:5300;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";

/// A chat node: serves the chat page and Socket.IO, shares its events with the other
/// nodes through one Service Bus topic.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The node's name, shown to clients
    #[arg(long, env = "CHAT_NAME", default_value = "A")]
    name: String,
    /// Address to listen on
    #[arg(long, env = "CHAT_BIND", default_value = "127.0.0.1:3000")]
    bind: SocketAddr,
    /// Service Bus or emulator connection string
    #[arg(long, env = "SERVICEBUS_CONNECTION_STRING", default_value = EMULATOR, hide_default_value = true)]
    connection_string: String,
    /// The topic the chat nodes share
    #[arg(long, env = "CHAT_TOPIC", default_value = "chat")]
    topic: String,
    /// Folder of the chat page
    #[arg(long, env = "CHAT_ASSETS", default_value = "demo/public")]
    assets: PathBuf,
    /// The official Socket.IO browser bundle (socket.io.min.js from npm socket.io-client)
    #[arg(
        long,
        env = "CHAT_CLIENT_JS",
        default_value = "demo/node_modules/socket.io-client/dist/socket.io.min.js"
    )]
    client_js: PathBuf,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if !args.client_js.exists() {
        return Err(format!(
            "{} is missing: run `npm ci` in demo/ (scripts/demo.sh does)",
            args.client_js.display()
        )
        .into());
    }
    let node = ChatNode::start(ChatOptions {
        name: args.name.clone(),
        connection_string: args.connection_string,
        topic: args.topic,
        bind: args.bind,
        assets: Some(args.assets),
        client_js: Some(args.client_js),
        adapter: AdapterOptions::default(),
        namespaces: vec!["/".into()],
    })
    .await?;
    println!("chat node {} on {}", args.name, node.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    node.shutdown().await?;
    Ok(())
}
