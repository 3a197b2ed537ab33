//! What the configuration targets check of a [`LoadResult`]: every problem reported says
//! something (its message is not empty) and names a position inside the text read
//! (`file:line:column`, line and column from 1, in characters), on a character that is not
//! one of the language's blanks (the token it is about) or where only blanks follow to the
//! end of its line, so that `lb-node --check` points at it; and a refused configuration
//! has at least one error, not only warnings.

use std::path::Path;

use lb_bins::config::{LoadResult, Location};

/// Paths the configuration readers would open on the machine running the fuzzer: text that
/// names one (or, for keepalived.conf, an include) is not tried.
pub const SKIPPED: &[&str] = &["/dev/", "/proc/", "/sys/"];

/// Panics when `result`, read from `text` named `file`, breaks what the module says;
/// `blank` tells the language's blanks (a stray character that is blank elsewhere, a lone
/// carriage return in TOML, may be the problem itself).
pub fn check(text: &str, file: &Path, result: &LoadResult, blank: fn(char) -> bool) {
    let lines: Vec<&str> = text.split('\n').collect();
    let located = |at: &Option<Location>, what: &str| {
        assert!(!what.trim().is_empty(), "no message at {at:?}");
        let Some(l) = at else {
            return;
        };
        assert_eq!(l.file, file, "{what}: {l}");
        assert!(l.line >= 1 && l.line <= lines.len(), "{what}: {l}");
        let line: Vec<char> = lines[l.line - 1].chars().collect();
        assert!(l.column >= 1 && l.column <= line.len() + 1, "{what}: {l}");
        // On a token, or where only blanks (and a line ending's carriage return) follow.
        let rest = &line[l.column - 1..];
        assert!(
            rest.first().is_some_and(|&c| !blank(c)) || rest.iter().all(|&c| blank(c) || c == '\r'),
            "{what}: {l} is on {:?}",
            rest.first()
        );
    };
    match result {
        Ok((_, warnings)) => {
            for w in warnings {
                located(&w.location, &w.message);
            }
        }
        Err(errors) => {
            assert!(
                errors.iter().any(|e| !e.warning),
                "refused without an error: {errors:?}"
            );
            for e in errors {
                located(&e.location, &e.message);
            }
        }
    }
}
