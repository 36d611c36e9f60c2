//! The emulator binary, built again in this package so that its tests can run it as a
//! child process (`CARGO_BIN_EXE_emulator-child`): the SIGKILL test under backplane traffic.

use std::process::ExitCode;

/// As the `emulator` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    emulator::cli::main()
}
