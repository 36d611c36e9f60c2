//! The emulator binary: the allocator, then [`emulator::cli::main`].

use std::process::ExitCode;

/// mimalloc: the request path allocates a lot (sled, JSON, XML); with glibc malloc and free
/// were ~12% of the CPU of the benchmark's latency run, and mimalloc raised its throughput
/// figures by a fifth to a half (see the bench).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    emulator::cli::main()
}
