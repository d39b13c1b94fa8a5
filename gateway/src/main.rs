use std::process::ExitCode;

fn main() -> ExitCode {
    bashu_gateway::cli::main()
}
