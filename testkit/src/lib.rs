//! Test kit: the emulator in-process or as a child process on an ephemeral loopback port,
//! the cluster harness of backplane nodes (feature `cluster`), the npm client packages of
//! `integration/compat`, and the two ways tests wait, never with a fixed sleep:
//! [`wait_until`] polls a condition until a deadline, and [`collect_until`] gathers what
//! a channel yields until there is enough or the deadline passes.
//!
//! It depends on the emulator library only (and on the backplane with `cluster`), so the
//! emulator's own tests need neither the backplane nor socketioxide.

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod process;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use emulator::{Emulator, Settings};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Locks a std mutex, taking the data even if a holder panicked (a test that panicked
/// has failed already; its report should still print).
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Polls `condition` until it holds or `deadline` has passed: `Ok` with the time it took,
/// or `Err` with what the condition last said (for the failure message). Between polls it
/// yields for `every` (a poll interval, not a wait for the result).
///
/// # Errors
///
/// `Err(last)` when the deadline passed first.
pub async fn wait_until<F, Fut, T>(
    deadline: Duration,
    every: Duration,
    mut condition: F,
) -> Result<Duration, T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), T>>,
{
    let started = tokio::time::Instant::now();
    let until = started + deadline;
    loop {
        match condition().await {
            Ok(()) => return Ok(started.elapsed()),
            Err(last) if tokio::time::Instant::now() >= until => return Err(last),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// Receives from `events` until `enough` holds for what was received or `deadline` has
/// passed, and returns what was received (the caller asserts on it; a short list means the
/// deadline passed or the channel closed first).
pub async fn collect_until<T>(
    deadline: Duration,
    events: &mut tokio::sync::mpsc::Receiver<T>,
    mut enough: impl FnMut(&[T]) -> bool,
) -> Vec<T> {
    let until = tokio::time::Instant::now() + deadline;
    let mut got = Vec::new();
    while !enough(&got) {
        match tokio::time::timeout_at(until, events.recv()).await {
            Ok(Some(e)) => got.push(e),
            Ok(None) | Err(_) => break,
        }
    }
    got
}

/// The well-known development key name.
pub const KEY_NAME: &str = emulator::config::DEFAULT_KEY_NAME;
/// The well-known development key.
pub const KEY: &str = emulator::config::DEFAULT_KEY;

/// An emulator serving on `127.0.0.1:0` inside this process; stops when dropped.
#[derive(Debug)]
pub struct InProcessEmulator {
    addr: SocketAddr,
    amqp_addr: SocketAddr,
    broker: emulator::Broker,
    faults: std::sync::Arc<emulator::faults::Faults>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), emulator::Error>>>,
}

impl InProcessEmulator {
    /// Starts an in-memory emulator with the well-known key.
    ///
    /// # Errors
    ///
    /// When the store cannot be opened or the port bound.
    pub async fn start() -> Result<Self, emulator::Error> {
        Self::start_with(Settings::in_memory()).await
    }

    /// Starts an emulator with the given settings.
    ///
    /// # Errors
    ///
    /// When the store cannot be opened or the port bound.
    pub async fn start_with(settings: Settings) -> Result<Self, emulator::Error> {
        Self::start_on(settings, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts an emulator on a given loopback address (to restart one where clients expect it).
    ///
    /// # Errors
    ///
    /// When the store cannot be opened or the address bound.
    pub async fn start_on(settings: Settings, addr: SocketAddr) -> Result<Self, emulator::Error> {
        let emulator = Emulator::open(settings).await?;
        let broker = emulator.broker().clone();
        let faults = emulator.faults();
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let amqp = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let amqp_addr = amqp.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(emulator.serve_all(listener, Some(amqp), async {
            let _ = stopped.await;
        }));
        Ok(InProcessEmulator {
            addr,
            amqp_addr,
            broker,
            faults,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Faults it injected since it started.
    pub fn faults_injected(&self) -> u64 {
        self.faults.injected()
    }

    /// The address it serves REST on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address it serves AMQP on.
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp_addr
    }

    /// The connection string the Service Bus SDKs use to reach its AMQP listener.
    pub fn amqp_connection_string(&self) -> String {
        emulator::connection_string(self.amqp_addr, KEY_NAME, KEY)
    }

    /// Moves a manual clock (`Settings::clock = Manual`) forward and applies the new time
    /// (lock expiry, TTL, idle deletion) before returning.
    ///
    /// # Errors
    ///
    /// With the system clock, or when the store fails.
    pub async fn advance_clock(
        &self,
        by: std::time::Duration,
    ) -> Result<(), emulator::broker::Error> {
        let by = chrono::Duration::from_std(by).map_err(|_| {
            emulator::broker::Error::ClockOutOfRange {
                latest: emulator::Clock::LATEST,
                now: self.broker.clock().now(),
            }
        })?;
        self.broker.advance_clock(by).await.map(|_| ())
    }

    /// The development connection string for it.
    pub fn connection_string(&self) -> String {
        emulator::connection_string(self.addr, KEY_NAME, KEY)
    }

    /// Stops serving, waits for in-flight requests and the final flush.
    ///
    /// # Errors
    ///
    /// What serving or flushing reported.
    pub async fn stop(mut self) -> Result<(), emulator::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|e| Err(emulator::Error::Io(std::io::Error::other(e)))),
            None => Ok(()),
        }
    }
}

impl Drop for InProcessEmulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The folder of the third-party client scripts (`integration/compat`).
pub fn compat_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../integration/compat")
}

/// Debian's Chromium (or `CHROMIUM`) for a browser test named `test`. Without one, under
/// `CI=true` (which `.ci/run` sets, after installing it) the test fails; elsewhere it is
/// skipped, visibly: the skip is written to the process's stderr directly, which the test
/// runner does not capture (it captures only `print!` and `eprint!`).
///
/// # Panics
///
/// Under `CI=true` when no Chromium is found.
pub fn chromium(test: &str) -> Option<std::path::PathBuf> {
    use std::io::Write as _;
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(std::path::PathBuf::from(path));
    }
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        let why = "no Chromium (install Debian's `chromium` or set CHROMIUM)";
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
            "CI=true and {why}"
        );
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    }
    found
}

/// Installs the locked npm packages of `integration/compat` if they are not there yet.
///
/// # Panics
///
/// When npm is missing or `npm ci` fails: the tests that need the packages cannot run.
pub fn ensure_compat_packages() {
    let dir = compat_dir();
    let installed = [
        "azure-sb",
        "socket.io-client",
        "playwright-core",
        "@azure/service-bus",
    ]
    .iter()
    .all(|p| {
        dir.join("node_modules")
            .join(p)
            .join("package.json")
            .exists()
    });
    if installed {
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .expect("npm must be installed (Node.js 20+) to run the third-party client tests");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

/// The Python of `integration/compat/.venv`, with the pinned packages of
/// `integration/compat/requirements.txt` (the PyPI Service Bus SDK) installed on first use.
///
/// # Panics
///
/// When Python 3 or its `venv` module is missing, or `pip install` fails: the tests that
/// need the packages cannot run.
pub fn compat_python() -> std::path::PathBuf {
    let dir = compat_dir();
    let python = dir.join(".venv/bin/python");
    let marker = dir.join(".venv/requirements.installed");
    let wanted = std::fs::read(dir.join("requirements.txt")).expect("requirements.txt");
    if std::fs::read(&marker).ok().as_ref() == Some(&wanted) {
        return python;
    }
    let created = std::process::Command::new("python3")
        .args(["-m", "venv", ".venv"])
        .current_dir(&dir)
        .status()
        .expect("python3 must be installed (3.9+) to run the Python client tests");
    assert!(
        created.success(),
        "python3 -m venv failed in {}",
        dir.display()
    );
    let installed = std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["-r", "requirements.txt"])
        .current_dir(&dir)
        .status()
        .expect("the venv's python runs");
    assert!(
        installed.success(),
        "pip install failed in {}",
        dir.display()
    );
    std::fs::write(&marker, wanted).expect("the venv is writable");
    python
}
