//! The emulator binary as a child process, killed on drop.

use std::path::Path;

use testkit::process::ChildEmulator;

/// The emulator binary as a child process ([`ChildEmulator`], from the integration harness).
pub struct Process;

impl Process {
    /// Starts the binary in `cwd` with `args` (plus `--bind 127.0.0.1:0`) and waits for the
    /// address line on stdout.
    pub async fn start(cwd: &Path, args: &[&str]) -> ChildEmulator {
        Self::start_on(cwd, "127.0.0.1:0", args).await
    }

    /// As [`Process::start`] on a given address (to restart where clients expect it).
    pub async fn start_on(cwd: &Path, bind: &str, args: &[&str]) -> ChildEmulator {
        ChildEmulator::start_on(Path::new(env!("CARGO_BIN_EXE_emulator")), cwd, bind, args)
            .await
            .expect("emulator binary starts")
    }
}

/// Runs the binary to completion with `args`; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_emulator"))
        .args(args)
        .env("EMULATOR_AMQP_BIND", "127.0.0.1:0")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Waits (with a deadline, never a fixed sleep) until `progress()` reaches `at_least`, then
/// kills the emulator with SIGKILL and reaps it.
pub async fn kill_once(emulator: ChildEmulator, at_least: usize, progress: impl Fn() -> usize) {
    let enough = || async {
        match progress() {
            n if n >= at_least => Ok(()),
            n => Err(n),
        }
    };
    testkit::wait_until(
        std::time::Duration::from_secs(120),
        std::time::Duration::from_millis(5),
        enough,
    )
    .await
    .expect("the load reached the count before the kill in time");
    let mut child = emulator.child;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

/// Runs a client program (node, the venv's python) in the compat folder with `env`, and
/// none of the CA variables of the outer environment; fails the test with its output
/// unless it exits 0 within 5 minutes, else returns its stdout and stderr.
pub async fn client(program: &Path, args: &[&str], env: &[(&str, String)]) -> String {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(testkit::compat_dir())
        .env_remove("NODE_EXTRA_CA_CERTS")
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("SSL_CERT_FILE")
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(300), command.output())
        .await
        .expect("the client program finishes within 5 minutes")
        .unwrap_or_else(|e| panic!("{} cannot run: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "{} failed:\n{stdout}\n{stderr}",
        program.display()
    );
    stdout + &stderr
}
