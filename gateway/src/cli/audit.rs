//! `bashu audit` (SPEC §8).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    super::fail("`bashu audit` is not implemented yet")
}
