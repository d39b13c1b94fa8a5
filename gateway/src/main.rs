use std::process::ExitCode;

/// mimalloc instead of glibc malloc: a gateway allocates and frees many
/// short-lived buffers per exchange on many threads, where glibc's arenas
/// spent 10 % of the CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    bashu_gateway::cli::main()
}
