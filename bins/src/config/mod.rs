//! `lb-node`'s configuration: one [`model`], two languages.
//!
//! - [`toml`]: the native format (see `bins/conf/lb-node.example.toml`);
//! - [`keepalived`]: the `keepalived.conf` grammar keepalived users already have.
//!
//! [`load`] picks the language by extension (`.toml`, anything else is keepalived.conf),
//! parses, validates, and returns the model with every warning, or every error found, each
//! naming `file:line:column`.
//!
//! # Examples
//!
//! ```
//! use lb_bins::config::{self, Format};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("keepalived.conf");
//! std::fs::write(&path, "virtual_server 198.18.0.250 80 {\n  lb_algo wrong\n}\n")?;
//! let errors = config::load(&path).unwrap_err();
//! // One error; the file's warnings come after it (`warning: true`).
//! assert_eq!(config::ConfigError::count_errors(&errors), 1);
//! assert!(errors[0].to_string().contains("keepalived.conf:2:11: unknown lb_algo \"wrong\""));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod diff;
pub mod keepalived;
pub mod model;
pub mod toml;
pub mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use model::Config;

/// A position in a configuration file (1-based line and column, in characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The file, as it was named (included files by their resolved path).
    pub file: PathBuf,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` of `text`, read from `file`.
    pub fn from_offset(file: &Path, text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = &text[..floor_char_boundary(text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self {
            file: file.to_path_buf(),
            line,
            column,
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// A reason the configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where, when known (a file that cannot be read has no position).
    pub location: Option<Location>,
    /// What, including the offending value.
    pub message: String,
    /// Not an error: a [`Warning`] of the same file, listed after its errors so that one
    /// pass shows every problem (as `keepalived -t` does; a misspelt check keyword is only
    /// a warning, and would otherwise show only once the errors are fixed). Shown as
    /// `file:line:column: warning: …`; [`ConfigError::count_errors`] leaves these out.
    pub warning: bool,
}

/// Something suspicious or ignored in a usable configuration (unknown keyword, option
/// without effect). The daemon logs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where, when known.
    pub location: Option<Location>,
    /// What.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn at(location: Option<Location>, message: impl Into<String>) -> Self {
        Self {
            location,
            message: message.into(),
            warning: false,
        }
    }

    /// How many of `list` are errors, not [`ConfigError::warning`]s.
    pub fn count_errors(list: &[Self]) -> usize {
        list.iter().filter(|e| !e.warning).count()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.warning { "warning: " } else { "" };
        match &self.location {
            Some(l) => write!(f, "{l}: {kind}{}", self.message),
            None => write!(f, "{kind}{}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{l}: warning: {}", self.message),
            None => write!(f, "warning: {}", self.message),
        }
    }
}

/// The configuration languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The native TOML format.
    Toml,
    /// keepalived.conf.
    Keepalived,
}

impl Format {
    /// `.toml` files are TOML, anything else keepalived.conf.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("toml") => Self::Toml,
            _ => Self::Keepalived,
        }
    }
}

/// What [`load`] returns: the validated model and its warnings, or every error.
pub type LoadResult = Result<(Config, Vec<Warning>), Vec<ConfigError>>;

/// Reads, parses and validates a configuration, choosing the language by extension.
///
/// # Errors
/// Every error found, each with its `file:line:column` where it has one. TOML syntax and type
/// errors stop the TOML parser at the first one; keepalived.conf errors and all semantic
/// errors are collected.
pub fn load(path: &Path) -> LoadResult {
    load_with_format(path, Format::from_path(path))
}

/// [`load`] with the language given.
///
/// # Errors
/// As [`load`].
pub fn load_with_format(path: &Path, format: Format) -> LoadResult {
    match format {
        Format::Toml => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                vec![ConfigError::at(
                    None,
                    format!("cannot read {}: {e}", path.display()),
                )]
            })?;
            toml::parse_str(&text, path)
        }
        Format::Keepalived => keepalived::load(path),
    }
}

/// Where each model path (`vrrp_instance[0].priority`) was written. Lookups fall back to the
/// nearest enclosing path that was written, so a missing field points at its block.
///
/// Ordered by path, so that the records at or below one path are one range: forgetting,
/// copying or checking a block costs its own records, not a pass over the whole file's
/// (which made a file with thousands of dropped real servers take quadratic time).
#[derive(Debug, Clone, Default)]
pub struct Origins {
    map: BTreeMap<String, Location>,
    /// Paths whose findings were reported (a set).
    poisoned: BTreeMap<String, ()>,
}

impl Origins {
    /// Records where `path` was written (the last record wins, as the last value does).
    pub fn insert(&mut self, path: impl Into<String>, location: Location) {
        self.map.insert(path.into(), location);
    }

    /// Whether `path` itself was written (no fallback to an enclosing path).
    pub fn written(&self, path: &str) -> bool {
        self.map.contains_key(path)
    }

    /// Marks `path` as already reported: validation findings at it or below it are dropped,
    /// so one mistake gives one error.
    pub fn poison(&mut self, path: impl Into<String>) {
        self.poisoned.insert(path.into(), ());
    }

    fn is_poisoned(&self, path: &str) -> bool {
        enclosing(path).any(|p| self.poisoned.contains_key(p))
    }

    /// Forgets every record and mark at `path` or below it: the block written there was
    /// dropped (its errors already reported), and the next block of its kind takes its
    /// index in the model.
    pub fn forget(&mut self, path: &str) {
        let records: Vec<String> = below(&self.map, path).map(|(k, _)| k.clone()).collect();
        for k in records {
            self.map.remove(&k);
        }
        let marks: Vec<String> = below(&self.poisoned, path)
            .map(|(k, ())| k.clone())
            .collect();
        for k in marks {
            self.poisoned.remove(&k);
        }
    }

    /// Element `i` of the `len` elements of the list at `list` (`list[0]`…) was removed:
    /// the records of the later ones move down one place, as the model's elements do.
    pub fn remove_index(&mut self, list: &str, i: usize, len: usize) {
        for k in i + 1..len {
            let (from, to) = (format!("{list}[{k}]"), format!("{list}[{}]", k - 1));
            self.forget(&to);
            self.copy(&from, &to);
        }
        self.forget(&format!("{list}[{}]", len.saturating_sub(1)));
    }

    /// Copies every record and mark at `from` or below it to the same path under `to`
    /// (`from.x` → `to.x`): a block the model holds twice (a `virtual_server group`'s
    /// members) reports its errors where it was written, for each copy.
    pub fn copy(&mut self, from: &str, to: &str) {
        let moved: Vec<(String, Location)> = below(&self.map, from)
            .map(|(k, l)| (format!("{to}{}", &k[from.len()..]), l.clone()))
            .collect();
        self.map.extend(moved);
        let poisoned: Vec<(String, ())> = below(&self.poisoned, from)
            .map(|(k, ())| (format!("{to}{}", &k[from.len()..]), ()))
            .collect();
        self.poisoned.extend(poisoned);
    }

    /// Where `path`, or its nearest written parent, was written.
    pub fn locate(&self, path: &str) -> Option<Location> {
        enclosing(path).find_map(|p| self.map.get(p).cloned())
    }
}

/// The entries of `paths` at `parent` or below it: all begin with `parent`, so they are
/// one range in path order (which may also hold `parent_x`, skipped).
fn below<'a, V>(
    paths: &'a BTreeMap<String, V>,
    parent: &'a str,
) -> impl Iterator<Item = (&'a String, &'a V)> {
    paths
        .range::<str, _>((
            std::ops::Bound::Included(parent),
            std::ops::Bound::Unbounded,
        ))
        .take_while(move |(k, _)| k.starts_with(parent))
        .filter(move |(k, _)| is_within(k, parent))
}

/// `path` and the paths enclosing it, nearest first (`a[0].b`, `a[0]`, `a`): exactly the
/// paths `p` for which [`is_within`]`(path, p)` holds.
fn enclosing(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| p.rfind(['.', '[']).map(|cut| &p[..cut]))
}

/// Whether model path `path` is `parent` or below it (`parent.x`, `parent[0]`).
fn is_within(path: &str, parent: &str) -> bool {
    path.strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Fills defaults, validates, and turns findings into located errors and warnings.
pub(crate) fn finish(
    config: Config,
    origins: &Origins,
    mut warnings: Vec<Warning>,
    mut errors: Vec<ConfigError>,
) -> LoadResult {
    let config = config.with_defaults();
    let v = config.validate();
    errors.extend(
        v.errors
            .into_iter()
            .filter(|f| !origins.is_poisoned(&f.path))
            .map(|f| ConfigError::at(origins.locate(&f.path), f.message)),
    );
    warnings.extend(v.warnings.into_iter().map(|f| Warning {
        location: origins.locate(&f.path),
        message: f.message,
    }));
    // In file order, as errors are: the parser's and the validation's interleaved.
    warnings.sort_by(|a, b| a.location.cmp(&b.location));
    // One per line and message (a sync group's track copied into each member warns once).
    warnings.dedup();
    if errors.is_empty() {
        Ok((config, warnings))
    } else {
        errors.sort_by(|a, b| a.location.cmp(&b.location));
        errors.dedup();
        // Then the warnings, so that one pass shows every problem (keepalived -t).
        errors.extend(warnings.into_iter().map(|w| ConfigError {
            location: w.location,
            message: w.message,
            warning: true,
        }));
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let f = Path::new("x.conf");
        let t = "ab\ncdé f\n";
        assert_eq!(Location::from_offset(f, t, 0).to_string(), "x.conf:1:1");
        assert_eq!(Location::from_offset(f, t, 4).to_string(), "x.conf:2:2");
        // After the two-byte 'é' the column counts characters.
        assert_eq!(Location::from_offset(f, t, 8).to_string(), "x.conf:2:5");
    }

    #[test]
    fn origins_fall_back_to_parents() {
        let mut o = Origins::default();
        let l = Location {
            file: "a".into(),
            line: 3,
            column: 1,
        };
        o.insert("virtual_server[0]", l.clone());
        assert_eq!(o.locate("virtual_server[0].backend[2].address"), Some(l));
        assert_eq!(o.locate("vrrp_instance[0]"), None);
    }

    /// `Origins` keeps its records ordered so that a block's records are one range; these
    /// random sequences check it answers as the plain scan over every record it replaced
    /// (`is_within` on each), for `locate`, `written` and poisoning.
    mod ranges {
        use super::*;
        use proptest::prelude::*;

        /// The scan `Origins` used to do: every record looked at for every operation.
        #[derive(Default)]
        struct Scan {
            map: Vec<(String, Location)>,
            poisoned: Vec<String>,
        }

        impl Scan {
            fn insert(&mut self, path: &str, l: Location) {
                self.map.retain(|(k, _)| k != path);
                self.map.push((path.into(), l));
            }
            fn forget(&mut self, path: &str) {
                self.map.retain(|(k, _)| !is_within(k, path));
                self.poisoned.retain(|k| !is_within(k, path));
            }
            fn copy(&mut self, from: &str, to: &str) {
                let moved: Vec<_> = self
                    .map
                    .iter()
                    .filter(|(k, _)| is_within(k, from))
                    .map(|(k, l)| (format!("{to}{}", &k[from.len()..]), l.clone()))
                    .collect();
                for (k, l) in moved {
                    self.insert(&k, l);
                }
                let marks: Vec<_> = self
                    .poisoned
                    .iter()
                    .filter(|k| is_within(k, from))
                    .map(|k| format!("{to}{}", &k[from.len()..]))
                    .collect();
                self.poisoned.extend(marks);
            }
            fn remove_index(&mut self, list: &str, i: usize, len: usize) {
                for k in i + 1..len {
                    let (from, to) = (format!("{list}[{k}]"), format!("{list}[{}]", k - 1));
                    self.forget(&to);
                    self.copy(&from, &to);
                }
                self.forget(&format!("{list}[{}]", len.saturating_sub(1)));
            }
            fn locate(&self, path: &str) -> Option<Location> {
                let mut p = path;
                loop {
                    if let Some((_, l)) = self.map.iter().find(|(k, _)| k == p) {
                        return Some(l.clone());
                    }
                    p = &p[..p.rfind(['.', '['])?];
                }
            }
            fn is_poisoned(&self, path: &str) -> bool {
                self.poisoned.iter().any(|p| is_within(path, p))
            }
        }

        #[derive(Debug, Clone)]
        enum Op {
            Insert(String, usize),
            Poison(String),
            Forget(String),
            Copy(String, String),
            RemoveIndex(String, usize, usize),
        }

        /// Paths of one to three parts, some indexed, some sharing a prefix without
        /// enclosing one another (`vs`, `vs_group`; `vs[1]`, `vs[10]`).
        fn path() -> impl Strategy<Value = String> {
            let part = (
                prop::sample::select(vec!["vs", "vs_group", "backend", "weight"]),
                prop::option::of(prop::sample::select(vec![0usize, 1, 2, 10])),
            )
                .prop_map(|(name, i)| match i {
                    Some(i) => format!("{name}[{i}]"),
                    None => name.to_string(),
                });
            prop::collection::vec(part, 1..=3).prop_map(|parts| parts.join("."))
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (path(), 1usize..50).prop_map(|(p, line)| Op::Insert(p, line)),
                1 => path().prop_map(Op::Poison),
                1 => path().prop_map(Op::Forget),
                1 => (path(), path()).prop_map(|(a, b)| Op::Copy(a, b)),
                1 => (path(), 0usize..4, 0usize..5).prop_map(|(p, i, n)| Op::RemoveIndex(p, i, n)),
            ]
        }

        proptest! {
            #[test]
            fn answers_as_a_scan_of_every_record(
                ops in prop::collection::vec(op(), 0..60),
                probes in prop::collection::vec(path(), 1..30),
            ) {
                let (mut o, mut scan) = (Origins::default(), Scan::default());
                let at = |line| Location { file: "f".into(), line, column: 1 };
                for op in ops {
                    match op {
                        Op::Insert(p, line) => {
                            o.insert(p.clone(), at(line));
                            scan.insert(&p, at(line));
                        }
                        Op::Poison(p) => {
                            o.poison(p.clone());
                            scan.poisoned.push(p);
                        }
                        Op::Forget(p) => {
                            o.forget(&p);
                            scan.forget(&p);
                        }
                        Op::Copy(a, b) => {
                            o.copy(&a, &b);
                            scan.copy(&a, &b);
                        }
                        Op::RemoveIndex(p, i, n) => {
                            o.remove_index(&p, i, n);
                            scan.remove_index(&p, i, n);
                        }
                    }
                    let recorded: Vec<&String> = scan.map.iter().map(|(k, _)| k).collect();
                    for p in probes.iter().chain(recorded) {
                        prop_assert_eq!(o.locate(p), scan.locate(p), "locate {}", p);
                        prop_assert_eq!(o.written(p), scan.map.iter().any(|(k, _)| k == p));
                        prop_assert_eq!(o.is_poisoned(p), scan.is_poisoned(p), "poisoned {}", p);
                    }
                }
            }
        }
    }
}
