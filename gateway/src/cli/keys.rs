//! `bashu keys` (SPEC §8).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    super::fail("`bashu keys` is not implemented yet")
}
