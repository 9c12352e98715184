use std::process::ExitCode;

use clap::Parser;
use lifeguard_agent::cli::{Cli, main_with};

fn main() -> ExitCode {
    main_with(Cli::parse())
}
