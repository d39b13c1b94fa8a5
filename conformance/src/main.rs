//! `bashu-conformance`: see the library crate and docs/conformance.md.

fn main() -> std::process::ExitCode {
    bashu_conformance::cli::main()
}
