//! `lbctl`, the operator's tool: its command line and what each command does. The binary
//! only parses arguments and calls [`run`].
//!
//! ```text
//! lbctl [--socket PATH] status [--json]
//! lbctl [--socket PATH] backend drain|ready|maint VIRTUAL_SERVER BACKEND
//! lbctl [--socket PATH] weight VIRTUAL_SERVER BACKEND WEIGHT
//! ```
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | [`EXIT_OK`] (0) | done |
//! | [`EXIT_REFUSED`] (1) | the daemon refused the command (unknown virtual server or backend) |
//! | [`EXIT_USAGE`] (2) | bad command line (clap's code) |
//! | [`EXIT_UNREACHABLE`] (3) | no daemon answers on the socket, or its answer was not understood |
//! | [`EXIT_OUTPUT`] (4) | the answer could not be written out (a full disk); a reader that went away (`\| head`) is not an error |
//!
//! # Examples
//!
//! ```
//! use clap::Parser;
//! use lb_bins::lbctl::{Cli, Command};
//!
//! let cli = Cli::try_parse_from(["lbctl", "--socket", "/tmp/a.sock", "status", "--json"])?;
//! assert!(matches!(cli.command, Command::Status { json: true }));
//! # Ok::<(), clap::Error>(())
//! ```

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::admin::client::{Client, ClientError};
use crate::admin::{render, AdminState};
use crate::config::model::DEFAULT_ADMIN_SOCKET;

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: the daemon refused the command.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: bad command line.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the daemon could not be reached or answered something unexpected.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: the answer could not be written to standard output (a full disk, an I/O
/// error); a command that changed something did change it.
pub const EXIT_OUTPUT: u8 = 4;

/// lbctl: inspect and steer a running lb-node through its admin socket.
#[derive(Debug, Parser)]
#[command(
    name = "lbctl",
    version,
    after_help = "Exit codes: 0 done; 1 refused by the daemon (unknown virtual server or backend); 2 usage error; 3 daemon unreachable; 4 the answer could not be written out."
)]
pub struct Cli {
    /// The daemon's admin socket (`admin_socket` in its configuration).
    #[arg(long, short, env = "LB_ADMIN_SOCKET", default_value = DEFAULT_ADMIN_SOCKET)]
    pub socket: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `lbctl` commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every VRRP instance and every virtual server with its backends.
    Status {
        /// Print the raw JSON status instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Change a backend's admin state.
    Backend {
        /// drain: no new connections, existing ones continue; maint: out of service;
        /// ready: back in service.
        #[arg(value_enum)]
        action: BackendAction,
        /// The virtual server: its name (as `lbctl status` shows it, by default IP:PORT) or
        /// its listen address IP:PORT (IP:PORT/udp or /tcp where both protocols share it).
        virtual_server: String,
        /// The backend's IP:PORT (`[IPv6]:PORT`); anything else is a usage error (exit 2).
        backend: std::net::SocketAddr,
    },
    /// Change a backend's weight (HAProxy `set weight`, `ipvsadm -e -w`): through reloads,
    /// until the configuration file changes that backend's weight.
    Weight {
        /// The virtual server: its name (as `lbctl status` shows it, by default IP:PORT) or
        /// its listen address IP:PORT (IP:PORT/udp or /tcp where both protocols share it).
        virtual_server: String,
        /// The backend's IP:PORT (`[IPv6]:PORT`); anything else is a usage error (exit 2).
        backend: std::net::SocketAddr,
        /// The new weight, 0..=65535 (0: no new connection, the backend stays up).
        weight: u16,
    },
}

/// What `lbctl backend` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendAction {
    /// No new client; existing connections continue, and persistent clients keep
    /// reaching it (HAProxy's drain).
    Drain,
    /// Back in service.
    Ready,
    /// Out of service: no new connection, persistent clients included.
    Maint,
}

impl From<BackendAction> for AdminState {
    fn from(a: BackendAction) -> Self {
        match a {
            BackendAction::Drain => Self::Drain,
            BackendAction::Ready => Self::Ready,
            BackendAction::Maint => Self::Maint,
        }
    }
}

/// Runs `cli`, printing results to `out` and problems to `err`; returns the exit code.
pub fn run(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let mut text = String::new();
    let code = run_into(cli, &mut text, err);
    // A monitoring job's `lbctl status --json > file` on a full disk must not pass for a
    // success with an empty file; a reader that stopped reading (`| head`) is no error.
    let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            let _ = writeln!(err, "lbctl: cannot write the output: {e}");
            if code == EXIT_OK {
                EXIT_OUTPUT
            } else {
                code
            }
        }
        _ => code,
    }
}

/// [`run`], its output gathered in `out`.
fn run_into(cli: &Cli, out: &mut String, err: &mut dyn Write) -> u8 {
    use std::fmt::Write as _;
    let result = Client::connect(&cli.socket).and_then(|mut c| match &cli.command {
        Command::Status { json } => {
            let status = c.status()?;
            let text = if *json {
                serde_json::to_string_pretty(&status)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?
            } else {
                render::status_table(&status)
            };
            let _ = writeln!(out, "{}", text.trim_end());
            Ok(())
        }
        Command::Backend {
            action,
            virtual_server,
            backend,
        } => {
            let state = AdminState::from(*action);
            c.set_backend_admin(virtual_server, &backend.to_string(), state)?;
            let _ = writeln!(out, "{virtual_server} {backend}: {state}");
            Ok(())
        }
        Command::Weight {
            virtual_server,
            backend,
            weight,
        } => {
            c.set_backend_weight(virtual_server, &backend.to_string(), u32::from(*weight))?;
            let _ = writeln!(out, "{virtual_server} {backend}: weight {weight}");
            Ok(())
        }
    });
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "lbctl: {e}");
            if e.is_refused() {
                EXIT_REFUSED
            } else {
                EXIT_UNREACHABLE
            }
        }
    }
}
