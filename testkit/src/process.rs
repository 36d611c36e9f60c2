//! The emulator binary as a child process (for SIGKILL and restart tests), killed on drop.
//! Tests of the `emulator` package pass `env!("CARGO_BIN_EXE_emulator")` as the binary.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long start-up or exit may take before it is an error (a deadline, not a sleep).
const DEADLINE: Duration = Duration::from_secs(60);

/// A running emulator process.
#[derive(Debug)]
pub struct ChildEmulator {
    /// The process (killed when dropped).
    pub child: Child,
    /// The address it printed.
    pub addr: SocketAddr,
    /// The connection string it printed.
    pub connection_string: String,
    /// The AMQP address it printed (binaries older than the AMQP listener print none).
    pub amqp_addr: Option<SocketAddr>,
    /// The AMQP-over-TLS address it printed (with `--tls` only).
    pub amqps_addr: Option<SocketAddr>,
}

/// The AMQP and AMQPS addresses of the banner's AMQP line
/// (`AMQP 1.0 listening on amqp://A[ and, over TLS, amqps://B]`).
fn amqp_addresses(line: &str) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let Some(rest) = line.strip_prefix("AMQP 1.0 listening on amqp://") else {
        return (None, None);
    };
    let amqp = rest.split_whitespace().next().and_then(|a| a.parse().ok());
    let amqps = rest
        .split_once("amqps://")
        .and_then(|(_, a)| a.trim().parse().ok());
    (amqp, amqps)
}

impl ChildEmulator {
    /// Starts `binary` in `cwd` with `--bind bind` and `args`, and waits for its address
    /// and connection string on stdout.
    ///
    /// # Errors
    ///
    /// When it cannot start, exits first, or prints nothing within the deadline.
    pub async fn start_on(
        binary: &Path,
        cwd: &Path,
        bind: &str,
        args: &[&str],
    ) -> Result<ChildEmulator, String> {
        Self::start_logged(binary, cwd, bind, args, None).await
    }

    /// As [`ChildEmulator::start_on`], with the emulator's log (its standard error) written
    /// to `log` when given (else discarded).
    ///
    /// # Errors
    ///
    /// As [`ChildEmulator::start_on`], and when the log file cannot be created.
    pub async fn start_logged(
        binary: &Path,
        cwd: &Path,
        bind: &str,
        args: &[&str],
        log: Option<&Path>,
    ) -> Result<ChildEmulator, String> {
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            None => Stdio::null(),
        };
        let mut child = Command::new(binary)
            .args(["--bind", bind])
            // Any free port for AMQP, unless `args` name one (a flag beats the variable).
            .env("EMULATOR_AMQP_BIND", "127.0.0.1:0")
            .env("EMULATOR_AMQPS_BIND", "127.0.0.1:0")
            .args(args)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let read = async {
            let mut addr = None;
            while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
                if let Some(rest) = line.strip_prefix("Service Bus emulator listening on http://") {
                    addr = rest
                        .split_whitespace()
                        .next()
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                }
                if let Some(cs) = line.strip_prefix("Connection string: ") {
                    let addr = addr.ok_or("no address line before the connection string")?;
                    // The AMQP line follows at once, in the same write; an older binary
                    // prints none.
                    let next = tokio::time::timeout(BANNER_LINE, lines.next_line()).await;
                    let (amqp_addr, amqps_addr) = match next {
                        Ok(Ok(Some(line))) => amqp_addresses(&line),
                        _ => (None, None),
                    };
                    return Ok((addr, cs.to_string(), amqp_addr, amqps_addr));
                }
            }
            Err("the emulator exited before printing its address".to_string())
        };
        let (addr, connection_string, amqp_addr, amqps_addr) = tokio::time::timeout(DEADLINE, read)
            .await
            .map_err(|_| format!("no address printed within {DEADLINE:?}"))??;
        Ok(ChildEmulator {
            child,
            addr,
            connection_string,
            amqp_addr,
            amqps_addr,
        })
    }

    /// Kills the process with SIGKILL and reaps it.
    ///
    /// # Errors
    ///
    /// When it cannot be killed.
    pub async fn kill(&mut self) -> Result<(), String> {
        self.child.kill().await.map_err(|e| e.to_string())
    }

    /// Sends SIGTERM and returns the exit code once it exits.
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent or the process does not exit in time.
    pub async fn terminate(mut self) -> Result<Option<i32>, String> {
        let pid = self.child.id().ok_or("already exited")?.to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| e.to_string())?;
        if !sent.success() {
            return Err("kill -TERM failed".into());
        }
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .map_err(|_| "no exit after SIGTERM".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(status.code())
    }
}

/// How long the banner's AMQP line may lag its connection-string line (they are written
/// together; only a binary without AMQP leaves it out).
const BANNER_LINE: std::time::Duration = std::time::Duration::from_secs(2);

/// A memory figure of process `pid` in KiB, from Linux's `/proc/<pid>/status` (`VmRSS`
/// now, `VmHWM` the peak so far); `None` when the process or the field is not there.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
