use std::process::ExitCode;

use clap::Parser;
use lifeguard_controller::cli::{Cli, run};

fn main() -> ExitCode {
    run(Cli::parse())
}
