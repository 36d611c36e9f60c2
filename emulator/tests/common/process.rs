//! The emulator binary as a child process, killed on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long start-up may take before the test fails (a deadline, not a sleep).
const START_DEADLINE: Duration = Duration::from_secs(60);

pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub connection_string: String,
}

impl Process {
    /// Starts the binary in `cwd` with `args` (plus `--bind 127.0.0.1:0`) and waits for the
    /// address line on stdout.
    pub async fn start(cwd: &Path, args: &[&str]) -> Process {
        Self::start_on(cwd, "127.0.0.1:0", args).await
    }

    /// As [`Process::start`] on a given address (to restart where clients expect it).
    pub async fn start_on(cwd: &Path, bind: &str, args: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_emulator"))
            .args(["--bind", bind])
            .args(args)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("emulator binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let read = async {
            let mut addr = None;
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix("Service Bus emulator listening on http://") {
                    addr = Some(
                        rest.split_whitespace()
                            .next()
                            .unwrap()
                            .parse::<SocketAddr>()
                            .unwrap(),
                    );
                }
                if let Some(cs) = line.strip_prefix("Connection string: ") {
                    return (addr.expect("address line comes first"), cs.to_string());
                }
            }
            panic!("emulator exited before printing its address");
        };
        let (addr, connection_string) = tokio::time::timeout(START_DEADLINE, read)
            .await
            .expect("emulator prints its address in time");
        Process {
            child,
            addr,
            connection_string,
        }
    }

    /// Sends SIGTERM and returns the exit code.
    pub async fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let status = tokio::time::timeout(START_DEADLINE, self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap();
        status.code()
    }
}

/// Runs the binary to completion with `args`; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_emulator"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
