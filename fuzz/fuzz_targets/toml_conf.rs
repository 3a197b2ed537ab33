//! `lb_bins::config::toml::parse_str` on any text (lb-node's native configuration): no
//! panic, and every problem it reports is located inside that text, on a token unless the
//! TOML parser itself refused the text ([`config_check::check`]).
//!
//! Text that mentions `/dev/`, `/proc/` or `/sys/` is skipped: validation reads the TLS
//! files a configuration names.
#![no_main]

mod config_check;

use std::path::Path;

use lb_bins::config::toml::parse_str;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if config_check::SKIPPED.iter().any(|s| text.contains(s)) {
        return;
    }
    let file = Path::new("/nonexistent/lb-node.toml");
    // The TOML parser's own syntax errors may point at the blank where a token broke off
    // (`n = - x`: "invalid integer" at the blank after `-`); every position lb-node
    // chooses (type and semantic errors) is on a token. TOML's blanks are space and tab (a
    // carriage return belongs to a line ending, or is itself the error).
    let blank = if toml::from_str::<toml::Table>(text).is_ok() {
        |c| matches!(c, ' ' | '\t')
    } else {
        |_| false
    };
    config_check::check(text, file, &parse_str(text, file), blank);
});
