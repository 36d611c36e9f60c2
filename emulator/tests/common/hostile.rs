//! For tests that probe the emulator as a careless or hostile client would: the release of
//! the binary as a child process, raw TCP requests (paths a URL library would normalise,
//! partial headers, bodies never sent), and the process's memory.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use testkit::process::ChildEmulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::process::Process;
use super::{Client, KEY, KEY_NAME};

/// How long any one exchange may take before the test fails (a deadline, not a sleep).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The emulator binary, in memory, with `args`; its temporary folder goes with it.
pub struct Emulator {
    pub child: ChildEmulator,
    pub client: Client,
    dir: tempfile::TempDir,
}

impl Emulator {
    pub async fn start(args: &[&str]) -> Emulator {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, args).await
    }

    /// Started in `dir` (its data folder persists there across restarts). With
    /// `HOSTILE_EMULATOR_BINARY` set, that binary is probed instead of this build's (how the
    /// tests were shown to fail on an older commit).
    pub async fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Emulator {
        let child = match std::env::var_os("HOSTILE_EMULATOR_BINARY") {
            Some(binary) => {
                ChildEmulator::start_on(Path::new(&binary), dir.path(), "127.0.0.1:0", args)
                    .await
                    .expect("the given emulator binary starts")
            }
            None => Process::start(dir.path(), args).await,
        };
        let client = Client::new(child.addr, KEY_NAME, KEY);
        Emulator { child, client, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.child.addr
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Asserts the process still runs and `/health` answers `200`.
    pub async fn assert_serving(&mut self) {
        assert!(
            self.child.child.try_wait().unwrap().is_none(),
            "the emulator process exited"
        );
        let health = self.client.send("GET", "/health", None, &[], None).await;
        assert_eq!(health.status, 200, "{}", health.body);
    }

    /// Peak resident memory of the process so far, in bytes (Linux `VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        let pid = self.child.child.id().unwrap();
        testkit::process::status_kib(pid, "VmHWM")
            .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
            * 1024
    }

    /// Kills the process with SIGKILL and hands back its folder.
    pub async fn kill(mut self) -> tempfile::TempDir {
        self.child.kill().await.unwrap();
        self.dir
    }

    /// Stops the process with SIGTERM and hands back its folder.
    pub async fn stop(self) -> tempfile::TempDir {
        let code = self.child.terminate().await.unwrap();
        assert_eq!(code, Some(0));
        self.dir
    }
}

/// A raw answer: status and the whole text after the status line.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub rest: String,
}

/// Sends `head` (request line and headers, without the blank line) and `body` on a new
/// connection with `Connection: close`, and reads the whole answer.
pub async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    read_answer(&mut stream).await
}

/// Reads an answer until the server closes the connection.
pub async fn read_answer(stream: &mut TcpStream) -> Raw {
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("an answer within the deadline")
        .ok();
    parse(&answer)
}

/// Reads one answer's head (through the blank line) without waiting for the connection to
/// close: for requests whose body the client never sends.
pub async fn read_head(stream: &mut TcpStream) -> Raw {
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(DEADLINE, async {
        while !answer.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => answer.push(byte[0]),
                _ => break,
            }
        }
    })
    .await
    .expect("an answer's head within the deadline");
    parse(&answer)
}

fn parse(answer: &[u8]) -> Raw {
    let text = String::from_utf8_lossy(answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    Raw { status, rest: text }
}

/// Waits until the server closes `stream` (a read returns end of file or an error), or
/// fails the test at the deadline.
pub async fn closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closes the connection within the deadline");
}
