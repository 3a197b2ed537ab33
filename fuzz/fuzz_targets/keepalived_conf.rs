//! `lb_bins::config::keepalived::parse_str` on any text (what an operator, or a template
//! gone wrong, can write into keepalived.conf): no panic, and every problem it reports is
//! located inside that text ([`config_check::check`]).
//!
//! Text that mentions `include`, `/dev/`, `/proc/` or `/sys/` is skipped: the reader would
//! open files of the machine running the fuzzer.
#![no_main]

mod config_check;

use std::path::Path;

use lb_bins::config::keepalived::parse_str;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("include") || config_check::SKIPPED.iter().any(|s| text.contains(s)) {
        return;
    }
    let file = Path::new("/nonexistent/keepalived.conf");
    // keepalived's blanks (`WHITE_SPACE_STR` in its lib/parser.c).
    let blank = |c| matches!(c, ' ' | '\t' | '\r' | '\x0C' | '\x0B');
    config_check::check(text, file, &parse_str(text, file), blank);
});
