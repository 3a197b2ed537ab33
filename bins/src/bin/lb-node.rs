//! `lb-node`: the load-balancer daemon. `lb-node CONFIG` runs it in the foreground;
//! `lb-node --check CONFIG` validates and exits. Exit codes: see [`lb_bins::check`] and
//! [`lb_bins::node`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lb_bins::check::{check, EXIT_INVALID};
use lb_bins::config::Format;
use lb_bins::node::{NodeError, EXIT_START};

/// lb-node: VRRP + health-checked L4/L7 load balancer, configured in TOML or keepalived.conf.
#[derive(Debug, Parser)]
#[command(
    name = "lb-node",
    version,
    after_help = "Signals: SIGTERM/SIGINT stop (priority 0, VIPs removed, connections drained); SIGHUP reloads; SIGUSR1 writes the state to --data-file, SIGUSR2 every counter (JSON) to --stats-file, as keepalived.\nExit codes: 0 clean stop or valid configuration; 1 invalid configuration (errors printed as FILE:LINE:COLUMN: MESSAGE; for TOML the first syntax or type error, else every one); 2 usage error; 3 start-up failure (also: the pid file held by another lb-node)."
)]
struct Cli {
    /// Validate the configuration, print its errors, and exit (keepalived -t, haproxy -c).
    #[arg(short = 't', long)]
    check: bool,
    /// Configuration language; default by extension: `.toml` is TOML, anything else
    /// keepalived.conf.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// The pid file (keepalived's and HAProxy's -p): locked while lb-node runs, so a second
    /// lb-node on the same file stops before it changes anything; removed at exit.
    #[arg(short = 'p', long, visible_alias = "pid", value_name = "FILE", default_value = lb_bins::node::DEFAULT_PID_FILE)]
    pid_file: PathBuf,
    /// Where SIGUSR1 writes the state (`lbctl status`'s text), as keepalived writes
    /// /tmp/keepalived.data.
    #[arg(long, value_name = "FILE", default_value = lb_bins::node::DEFAULT_DATA_FILE)]
    data_file: PathBuf,
    /// Where SIGUSR2 writes every counter (`lbctl status --json`'s JSON), as keepalived
    /// writes /tmp/keepalived.stats.
    #[arg(long, value_name = "FILE", default_value = lb_bins::node::DEFAULT_STATS_FILE)]
    stats_file: PathBuf,
    /// The configuration file.
    #[arg(required_unless_present = "use_file", conflicts_with = "use_file")]
    config: Option<PathBuf>,
    /// The configuration file, given as keepalived takes it (`keepalived -f FILE`), instead
    /// of the CONFIG argument.
    #[arg(short = 'f', long = "use-file", value_name = "FILE")]
    use_file: Option<PathBuf>,
}

impl Cli {
    /// The configuration file: CONFIG or `-f` (clap requires exactly one).
    fn config_path(&mut self) -> PathBuf {
        self.config
            .take()
            .or_else(|| self.use_file.take())
            .unwrap_or_default()
    }
}

fn main() -> ExitCode {
    // A SIGHUP before the daemon's own handler is installed (it loads the configuration
    // first, twice) would end the process with the default action (exit 129): dropped
    // from here on — the configuration being loaded is the current one anyway.
    ignore_early_signals();
    let mut cli = Cli::parse();
    let config = cli.config_path();
    if !cli.check {
        return run(cli, config);
    }
    match check(
        &config,
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

fn run(cli: Cli, config: PathBuf) -> ExitCode {
    // The log level comes from the file; read it before logging starts (errors are
    // reported by `node::run` once logging is up).
    let format = cli.format.unwrap_or_else(|| Format::from_path(&config));
    let global = lb_bins::config::load_with_format(&config, format)
        .map(|(c, _)| c.global)
        .unwrap_or_default();
    if let Err(e) = lb_bins::logging::init(global.log_level, cli.log_json) {
        eprintln!("lb-node: {e}");
    }
    // `nbthread` (HAProxy's): 1 = one event loop on this thread, n > 1 = n workers,
    // 0 = one worker per CPU.
    let mut builder = match global.nbthread {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(usize::from(n));
            }
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lb-node: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    match runtime.block_on(lb_bins::node::run(
        config,
        cli.format,
        Some(cli.pid_file),
        lb_bins::node::DumpFiles {
            data: cli.data_file,
            stats: cli.stats_file,
        },
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(NodeError::Config(errors)) => {
            eprintln!("{errors}");
            ExitCode::from(EXIT_INVALID)
        }
        Err(e) => {
            eprintln!("lb-node: {e}");
            ExitCode::from(EXIT_START)
        }
    }
}

/// Takes the default action (terminate) of SIGHUP, SIGUSR1 and SIGUSR2 away for the rest
/// of the process: tokio installs its handler at a signal's first `signal(…)` and never
/// restores the default (tokio::signal::unix docs), so such a signal nobody listens for
/// yet is dropped. Done on a
/// throwaway runtime, before the configuration (and so the real runtime's thread count)
/// is read. A failure is harmless (the default action stays) and not reported.
fn ignore_early_signals() {
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let _ = signal(SignalKind::hangup());
            // A dump asked for before the daemon runs is dropped too, not a crash.
            let _ = signal(SignalKind::user_defined1());
            let _ = signal(SignalKind::user_defined2());
        });
    }
}
