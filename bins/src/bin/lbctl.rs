//! `lbctl`: the operator's tool for a running `lb-node`. See [`lb_bins::lbctl`] for the
//! commands and exit codes.

use std::process::ExitCode;

use clap::Parser;
use lb_bins::lbctl::{run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(run(&cli, &mut std::io::stdout(), &mut std::io::stderr()))
}
