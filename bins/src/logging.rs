//! Structured logs for the binaries: `tracing` to stderr at the configured
//! [`LogLevel`], `RUST_LOG` overriding it, text or JSON lines.
//!
//! # Examples
//!
//! ```
//! use lb_bins::config::model::LogLevel;
//! use lb_bins::logging;
//!
//! let filter = logging::filter(LogLevel::Debug, None);
//! assert_eq!(filter.to_string(), "debug");
//! let filter = logging::filter(LogLevel::Info, Some("lb_vrrp=trace"));
//! assert_eq!(filter.to_string(), "lb_vrrp=trace");
//! ```

use tracing_subscriber::EnvFilter;

use crate::config::model::LogLevel;
use crate::config::Warning;

/// The filter for `level`, unless `rust_log` (the `RUST_LOG` value) is set and valid.
pub fn filter(level: LogLevel, rust_log: Option<&str>) -> EnvFilter {
    rust_log
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(level.as_str()))
}

/// Installs the global subscriber: stderr, text (or one JSON object per line with `json`).
/// Colours only when stderr is a terminal and `NO_COLOR` is unset.
///
/// # Errors
/// When a global subscriber is already installed.
pub fn init(level: LogLevel, json: bool) -> Result<(), String> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level, rust_log.as_deref()))
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let r = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    r.map_err(|e| e.to_string())
}

/// Logs configuration warnings (each with its `file:line:column`) at WARN.
pub fn log_warnings(warnings: &[Warning]) {
    for w in warnings {
        match &w.location {
            Some(l) => tracing::warn!(location = %l, "{}", w.message),
            None => tracing::warn!("{}", w.message),
        }
    }
}
