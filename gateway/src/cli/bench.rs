//! `bashu bench` (issue 6): end-to-end benchmark on a loopback federation.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    super::fail("`bashu bench` is not implemented yet")
}
