//! `lb-node`: the load-balancer daemon. For now only `lb-node --check CONFIG`; the runtime
//! is wired in later. Exit codes: see [`lb_bins::check`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lb_bins::check::{check, EXIT_USAGE};
use lb_bins::config::Format;

/// lb-node: VRRP + health-checked L4/L7 load balancer, configured in TOML or keepalived.conf.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Exit codes: 0 valid configuration; 1 invalid configuration (every error printed as FILE:LINE:COLUMN: MESSAGE); 2 usage error."
)]
struct Cli {
    /// Validate the configuration, print every error, and exit (keepalived -t, haproxy -c).
    #[arg(short = 't', long)]
    check: bool,
    /// Configuration language; default by extension: `.toml` is TOML, anything else
    /// keepalived.conf.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The configuration file.
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.check {
        eprintln!("lb-node: only --check is implemented yet");
        return ExitCode::from(EXIT_USAGE);
    }
    match check(
        &cli.config,
        cli.format,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    ) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lb-node: {e}");
            ExitCode::FAILURE
        }
    }
}
