//! The `bashu` CLI under another name, so the end-to-end tests of this crate
//! can run gateways as separate processes (and kill them with SIGKILL).

fn main() -> std::process::ExitCode {
    bashu_gateway::cli::main()
}
