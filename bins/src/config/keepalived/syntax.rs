//! The keepalived.conf syntax, independent of what the keywords mean: a `logos` lexer and a
//! recursive-descent parser into [`Stmt`] trees, with `include` expanded in place.
//!
//! Written from the keepalived.conf(5) manual: a statement is a keyword and its arguments
//! up to the end of the line, optionally followed by a `{ … }` block of statements; `#` and
//! `!` start comments; `"…"` quotes an argument with spaces; `include PATTERN` (a glob
//! with csh-style `{a,b}` braces, relative to the including file) is replaced by the statements of the files it matches,
//! at any depth; so are keepalived's `includer`, `includem`, `includew`, `includeb` and
//! `includea`, each with its `include_check` checks. A file is not included while it is
//! being read (an include cycle), and at most [`MAX_INCLUDED_FILES`] inclusions are made.
//!
//! # Examples
//!
//! ```
//! use std::path::Path;
//! use lb_bins::config::keepalived::syntax::{parse_text, Diagnostics};
//!
//! let mut diag = Diagnostics::default();
//! let stmts = parse_text("vrrp_sync_group VG_1 {\n  group { VI_1 VI_2 }\n}\n", Path::new("k.conf"), 0, &mut diag);
//! assert!(diag.errors.is_empty());
//! let group = &stmts[0].block.as_ref().unwrap()[0];
//! assert_eq!(group.keyword.text, "group");
//! assert_eq!(group.keyword.location.to_string(), "k.conf:2:3");
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};

use logos::Logos;

use crate::config::{ConfigError, Location, Warning};

/// Files nested deeper than this are refused.
const MAX_INCLUDE_DEPTH: usize = 16;

/// At most this many files are included in all (each inclusion of a file counts): the
/// work of reading a configuration is bounded, whatever its includes.
pub const MAX_INCLUDED_FILES: usize = 1000;

/// Blocks nested deeper than this are refused (the parser recurses once per level).
pub const MAX_BLOCK_DEPTH: usize = 64;

/// Blanks are keepalived's (`WHITE_SPACE_STR` in lib/parser.c): space, tab, CR, form feed
/// and vertical tab.
#[derive(Logos, Debug, Clone, Copy, PartialEq, Eq)]
#[logos(skip r"[ \t\r\f\x0B]+")]
#[logos(skip r"[#!][^\n]*")]
enum Tok {
    #[token("{")]
    Open,
    #[token("}")]
    Close,
    #[token("\n")]
    Newline,
    #[regex(r#""([^"\\\n]|\\[^\n])*""#, priority = 3)]
    Quoted,
    #[regex(r#""([^"\\\n]|\\[^\n])*"#, priority = 2)]
    Unterminated,
    // A `${…}` written in a word stays in it (it is refused whole, not split at its braces);
    // `\#` and `\!` are the characters, not a comment (keepalived's `decomment`).
    #[regex(r##"([^ \t\r\f\x0B\n{}"#!$]|\\[#!]|\$\{[^}\n]*\}|\$)+"##)]
    Word,
}

/// A word of the configuration with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The text, unquoted.
    pub text: String,
    /// The text as written, quotes and backslashes included (for the keywords keepalived
    /// reads with its own quoting and escapes, such as `regex`).
    pub raw: String,
    /// What the line holds between the previous token and this one, as written (blanks):
    /// with [`Token::raw`], a statement's arguments give back its line exactly.
    pub lead: String,
    /// Where it starts.
    pub location: Location,
}

/// One statement: `keyword arg… [{ stmt… }]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    /// The first word.
    pub keyword: Token,
    /// The other words of the line.
    pub args: Vec<Token>,
    /// The block, if the statement has one.
    pub block: Option<Vec<Self>>,
}

/// Diagnostics collected while reading.
#[derive(Debug, Default)]
pub struct Diagnostics {
    /// Errors.
    pub errors: Vec<ConfigError>,
    /// Warnings.
    pub warnings: Vec<Warning>,
    /// The files being read, outermost first (canonical paths where they exist).
    reading: Vec<PathBuf>,
    /// Files included so far (the first file not counted).
    included: usize,
}

impl Diagnostics {
    pub(crate) fn error(&mut self, location: &Location, message: impl Into<String>) {
        self.errors
            .push(ConfigError::at(Some(location.clone()), message));
    }
    pub(crate) fn warn(&mut self, location: &Location, message: impl Into<String>) {
        self.warnings.push(Warning {
            location: Some(location.clone()),
            message: message.into(),
        });
    }
}

/// Reads `path` and every file it includes into one statement list.
pub fn read_file(path: &Path, diag: &mut Diagnostics) -> Vec<Stmt> {
    match std::fs::read(path) {
        Ok(bytes) => match decode(&bytes, path, diag) {
            Some(text) => parse_text(&text, path, 0, diag),
            None => Vec::new(),
        },
        Err(e) => {
            diag.errors.push(ConfigError::at(
                None,
                format!("cannot read {}: {e}", path.display()),
            ));
            Vec::new()
        }
    }
}

/// The text of a file read from `file`. keepalived reads bytes; lb-node reads UTF-8 text. A
/// line that is not UTF-8 only in a comment (a Latin-1 `!` remark, say) loses that
/// comment; anything else not UTF-8 is an error at its line and column, and `None`.
fn decode(bytes: &[u8], file: &Path, diag: &mut Diagnostics) -> Option<String> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Some(text.to_owned());
    }
    let mut out = String::with_capacity(bytes.len());
    let mut ok = true;
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let bad = match std::str::from_utf8(line) {
            Ok(l) => {
                out.push_str(l);
                continue;
            }
            Err(e) => e.valid_up_to(),
        };
        // The comment's start, if one starts before the bad byte (outside quotes).
        let mut quoted = false;
        let mut escaped = false;
        let mut comment = None;
        for (i, &b) in line[..bad].iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = !quoted,
                b'#' | b'!' if !quoted => {
                    comment = Some(i);
                    break;
                }
                _ => {}
            }
        }
        match comment {
            // Valid up to `bad`, so up to the comment too.
            Some(i) => out.push_str(std::str::from_utf8(&line[..i]).unwrap_or_default()),
            None => {
                let column = std::str::from_utf8(&line[..bad]).map_or(1, |l| l.chars().count() + 1);
                diag.error(
                    &Location {
                        file: file.to_path_buf(),
                        line: n + 1,
                        column,
                    },
                    "not UTF-8 text (keepalived.conf is read as UTF-8; only comments may hold other bytes)",
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// Parses `text`, read from `file`, expanding includes relative to it.
pub fn parse_text(text: &str, file: &Path, depth: usize, diag: &mut Diagnostics) -> Vec<Stmt> {
    parse_nested(text, file, depth, 0, diag)
}

/// [`parse_text`] for a file whose statements land `nesting` blocks deep.
fn parse_nested(
    text: &str,
    file: &Path,
    depth: usize,
    nesting: usize,
    diag: &mut Diagnostics,
) -> Vec<Stmt> {
    let tokens = lex(text, file, diag);
    let mut p = Parser {
        tokens,
        pos: 0,
        file,
        depth,
        nesting,
    };
    diag.reading.push(canonical(file));
    let stmts = p.block_body(None, diag);
    diag.reading.pop();
    stmts
}

/// `path` made absolute with symbolic links resolved, or as it is when it cannot be (a
/// name given to [`parse_text`] with no file behind it).
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[derive(Debug)]
struct Lexed {
    tok: Tok,
    text: String,
    raw: String,
    lead: String,
    location: Location,
    /// Byte offsets in the file (tokens written without space between them touch).
    span: Range<usize>,
}

fn lex(text: &str, file: &Path, diag: &mut Diagnostics) -> Vec<Lexed> {
    let mut out = Vec::new();
    let mut lexer = Tok::lexer(text);
    // Line starts, to turn byte offsets into positions in O(log n).
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let locate = |span: &Range<usize>| {
        let line = line_starts.partition_point(|&s| s <= span.start);
        let start = line_starts[line - 1];
        Location {
            file: file.to_path_buf(),
            line,
            column: text[start..span.start].chars().count() + 1,
        }
    };
    // Where the previous token ended: what lies between it and the next is that one's lead.
    let mut prev_end = 0;
    // A comment started inside a word (`a\\#b`): the rest of the line is skipped.
    let mut in_comment = false;
    while let Some(r) = lexer.next() {
        let span = lexer.span();
        if in_comment {
            if r != Ok(Tok::Newline) {
                continue;
            }
            in_comment = false;
        }
        let location = locate(&span);
        let mut slice = lexer.slice();
        let mut span = span;
        if r == Ok(Tok::Word) {
            // keepalived's `decomment` reads backslash pairs left to right: in `a\\#b` the
            // pair is `\\`, and the `#` starts a comment (the lexer's `\#` took it).
            if let Some(at) = comment_start(slice) {
                in_comment = true;
                slice = &slice[..at];
                span = span.start..span.start + at;
                if slice.is_empty() {
                    continue;
                }
            }
        }
        let lead = text
            .get(prev_end..span.start)
            .unwrap_or_default()
            .to_owned();
        prev_end = span.end;
        match r {
            Ok(Tok::Unterminated) => {
                diag.error(&location, "unterminated quoted string");
            }
            Ok(tok @ Tok::Quoted) => {
                for (at, finding) in parameters(slice, true, false) {
                    let l = locate(&(span.start + at..span.end));
                    match finding {
                        Parameter::Expanded(m) => diag.error(&l, m),
                        Parameter::Literal(m) => diag.warn(&l, m),
                    }
                }
                // As keepalived's `alloc_strvec_r`: the text between the quotes as written,
                // no escape processing (the script keywords re-read the raw line with
                // their own quoting and escapes).
                out.push(Lexed {
                    tok,
                    text: slice[1..slice.len() - 1].to_owned(),
                    raw: slice.to_owned(),
                    lead,
                    location,
                    span,
                });
            }
            Ok(tok) => {
                if tok == Tok::Word {
                    // `${` with no `}` on the line: the word ends at the `{`.
                    let open = slice.ends_with('$') && text[span.end..].starts_with('{');
                    let mut word = slice.to_owned();
                    if open {
                        word.push('{');
                    }
                    let blank_after = text[span.end..]
                        .chars()
                        .next()
                        .is_none_or(char::is_whitespace);
                    for (at, finding) in parameters(&word, false, blank_after) {
                        let (Parameter::Expanded(m) | Parameter::Literal(m)) = finding;
                        diag.error(&locate(&(span.start + at..span.end)), m);
                    }
                }
                out.push(Lexed {
                    tok,
                    text: if tok == Tok::Word {
                        uncomment_escapes(slice)
                    } else {
                        slice.to_owned()
                    },
                    raw: slice.to_owned(),
                    lead,
                    location,
                    span,
                });
            }
            Err(()) => diag.error(&location, format!("unexpected character {slice:?}")),
        }
    }
    out
}

/// keepalived's parameter references in a word or a quoted string (`quoted`), by byte
/// offset (`blank_after`: the text goes on with a blank or ends after `s`). keepalived
/// (keepalived.conf(5), "Parameter substitution") replaces `${NAME}`, and `$NAME` followed
/// by a blank or the end of the line, by the definition of NAME, and always defines `_PWD`,
/// `_INSTANCE`, `_RANDOM`, `_HASH` and `_BANG`; it leaves other names as written when they
/// have no definition. lb-node reads no definition (`$NAME=` is refused), so:
/// - a predefined name is [`Parameter::Expanded`] (keepalived would replace it);
/// - any other `${` in a word is too: keepalived splits the word at its braces;
/// - any other `${NAME}` in a quoted string is [`Parameter::Literal`]: kept as written, as
///   keepalived does (a shell running the command may expand it).
fn parameters(s: &str, quoted: bool, blank_after: bool) -> Vec<(usize, Parameter)> {
    const PREDEFINED: &[&str] = &["_PWD", "_INSTANCE", "_RANDOM", "_HASH", "_BANG"];
    let unsupported = "keepalived parameter expansion is not supported (lb-node reads no parameter definitions): write the value out";
    let mut out = Vec::new();
    for (at, _) in s.match_indices('$') {
        let rest = &s[at + 1..];
        let (braced, name_part) = match rest.strip_prefix('{') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let name_len = name_part
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(name_part.len());
        let name = &name_part[..name_len];
        let after = name_part[name_len..].chars().next();
        let predefined = PREDEFINED.contains(&name)
            && if braced {
                // `${_RANDOM 1 10}` takes arguments.
                matches!(after, Some('}' | ' ' | '\t'))
            } else {
                after.map_or(blank_after, char::is_whitespace)
            };
        let written = if braced {
            let end = rest.find('}').map_or(rest.len(), |e| e + 1);
            format!("${}", &rest[..end])
        } else {
            format!("${name}")
        };
        if predefined {
            out.push((
                at,
                Parameter::Expanded(format!(
                    "`{written}`: keepalived replaces it by its value, lb-node does not: {unsupported}"
                )),
            ));
        } else if braced && !quoted {
            out.push((
                at,
                Parameter::Expanded(format!("`{written}`: {unsupported}")),
            ));
        } else if braced {
            out.push((
                at,
                Parameter::Literal(format!(
                    "`{written}` is kept as written, as keepalived does without a definition of {name} (lb-node reads no parameter definitions)"
                )),
            ));
        }
    }
    out
}

/// A parameter reference found by [`parameters`], with its message.
enum Parameter {
    /// keepalived would replace it: an error.
    Expanded(String),
    /// Kept as written, as keepalived does: a warning.
    Literal(String),
}

/// Where a comment starts in a word, reading backslash pairs as keepalived's `decomment`
/// does (`\#` is a `#`, `\\` a pair, so in `a\\#b` the `#` starts a comment).
fn comment_start(word: &str) -> Option<usize> {
    let mut chars = word.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '#' | '!' => return Some(i),
            _ => {}
        }
    }
    None
}

/// A word with keepalived's `decomment` applied: `\#` and `\!` are `#` and `!`; any
/// other backslash pair stays as written (`\\#` is a backslash pair then `#`).
fn uncomment_escapes(word: &str) -> String {
    if !word.contains('\\') {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len());
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('#' | '!')) => out.push(e),
                Some(e) => {
                    out.push(c);
                    out.push(e);
                }
                None => out.push(c),
            }
        } else {
            out.push(c);
        }
    }
    out
}

struct Parser<'a> {
    tokens: Vec<Lexed>,
    pos: usize,
    file: &'a Path,
    depth: usize,
    /// Blocks open around the current statement, counting those of including files.
    nesting: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<Tok> {
        self.tokens.get(self.pos).map(|t| t.tok)
    }

    fn take(&mut self) -> Token {
        let t = &self.tokens[self.pos];
        self.pos += 1;
        Token {
            text: t.text.clone(),
            raw: t.raw.clone(),
            lead: t.lead.clone(),
            location: t.location.clone(),
        }
    }

    /// The block opened by the `{` at `open` (already taken), or an error and nothing when
    /// it is nested too deep; then its tokens are skipped up to the matching `}` without
    /// recursing.
    fn nested_block(&mut self, open: &Location, diag: &mut Diagnostics) -> Vec<Stmt> {
        if self.nesting >= MAX_BLOCK_DEPTH {
            diag.error(
                open,
                format!("blocks nested deeper than {MAX_BLOCK_DEPTH} levels"),
            );
            let mut level = 1usize;
            while let Some(t) = self.peek() {
                self.pos += 1;
                match t {
                    Tok::Open => level += 1,
                    Tok::Close => {
                        level -= 1;
                        if level == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            return Vec::new();
        }
        self.nesting += 1;
        let body = self.block_body(Some(open), diag);
        self.nesting -= 1;
        body
    }

    /// Statements up to the `}` closing the block opened at `open` (or to the end of the
    /// file at the top level).
    fn block_body(&mut self, open: Option<&Location>, diag: &mut Diagnostics) -> Vec<Stmt> {
        let mut stmts: Vec<Stmt> = Vec::new();
        loop {
            match self.peek() {
                None => {
                    if let Some(open) = open {
                        diag.error(open, "missing `}`: this block is never closed");
                    }
                    return stmts;
                }
                Some(Tok::Newline) => self.pos += 1,
                Some(Tok::Close) => {
                    let t = self.take();
                    if open.is_some() {
                        return stmts;
                    }
                    diag.error(&t.location, "unexpected `}` with no open block");
                }
                Some(Tok::Open) => {
                    // A `{` alone on its line opens the block of the statement above.
                    let t = self.take();
                    let body = self.nested_block(&t.location, diag);
                    match stmts.last_mut() {
                        Some(s) if s.block.is_none() => s.block = Some(body),
                        _ => diag.error(&t.location, "unexpected `{` with no keyword before it"),
                    }
                }
                Some(Tok::Word)
                    if ["~SEQ", "~LST"]
                        .iter()
                        .any(|p| self.tokens[self.pos].text.starts_with(p)) =>
                {
                    // Dropped with its block: what it would repeat cannot be read.
                    let stmt = self.statement(diag);
                    let kw = &stmt.keyword.text;
                    diag.error(
                        &stmt.keyword.location,
                        format!(
                            "`{}(…)`: keepalived sequence expansion (~SEQ, ~LST) is not supported: write each line out",
                            &kw[..kw.find('(').unwrap_or(kw.len())]
                        ),
                    );
                }
                Some(Tok::Word) if IncludeChecks::of(&self.tokens[self.pos].text).is_some() => {
                    let stmt = self.include_statement();
                    self.include(&stmt, &mut stmts, diag);
                }
                Some(Tok::Word | Tok::Quoted | Tok::Unterminated) => {
                    let stmt = self.statement(diag);
                    stmts.push(stmt);
                }
            }
        }
    }

    /// `include PATTERN`: the rest of the line, where braces written inside a word (a glob's
    /// `{a,b}`) belong to it, as keepalived reads the raw line. A `}` standing alone, or one
    /// that touches the word but matches no `{` of it (`{ include rs.conf}`), still closes
    /// the enclosing block; a `\}` belongs to the word.
    fn include_statement(&mut self) -> Stmt {
        let keyword = self.take();
        let mut args: Vec<Token> = Vec::new();
        let mut last_end = None;
        // Braces of the current word opened and not yet closed (escaped ones aside).
        let mut open = 0usize;
        while let Some(t) = self.tokens.get(self.pos) {
            if t.tok == Tok::Newline {
                break;
            }
            let touches = last_end == Some(t.span.start);
            let escaped = touches && args.last().is_some_and(|a| ends_with_escape(&a.text));
            if !touches {
                open = 0;
            }
            match t.tok {
                Tok::Close if !escaped && open == 0 => break,
                Tok::Close if !escaped => open -= 1,
                Tok::Open if !escaped => open += 1,
                _ => {}
            }
            let t = &self.tokens[self.pos];
            match args.last_mut() {
                Some(a) if touches => {
                    a.text.push_str(&t.text);
                    a.raw.push_str(&t.raw);
                }
                _ => args.push(Token {
                    text: t.text.clone(),
                    raw: t.raw.clone(),
                    lead: t.lead.clone(),
                    location: t.location.clone(),
                }),
            }
            last_end = Some(t.span.end);
            self.pos += 1;
        }
        Stmt {
            keyword,
            args,
            block: None,
        }
    }

    fn statement(&mut self, diag: &mut Diagnostics) -> Stmt {
        let keyword = self.take();
        let mut args = Vec::new();
        loop {
            match self.peek() {
                Some(Tok::Word | Tok::Quoted | Tok::Unterminated) => args.push(self.take()),
                Some(Tok::Open) => {
                    let open = self.take();
                    let block = self.nested_block(&open.location, diag);
                    return Stmt {
                        keyword,
                        args,
                        block: Some(block),
                    };
                }
                // A `}` ends the statement and, for the caller, the block.
                Some(Tok::Newline | Tok::Close) | None => {
                    return Stmt {
                        keyword,
                        args,
                        block: None,
                    }
                }
            }
        }
    }

    fn include(&self, stmt: &Stmt, out: &mut Vec<Stmt>, diag: &mut Diagnostics) {
        let kw = stmt.keyword.text.as_str();
        let checks = IncludeChecks::of(kw).unwrap_or_default();
        let Some(pattern) = stmt.args.first() else {
            diag.error(
                &stmt.keyword.location,
                format!("{kw} needs a file name or pattern"),
            );
            return;
        };
        // keepalived's `check_include` takes the rest of the line as one pattern: a name
        // with a blank in it, or two names that then match nothing.
        let mut text = pattern.text.clone();
        for t in &stmt.args[1..] {
            text.push_str(&t.lead);
            text.push_str(&t.raw);
        }
        let pattern = &Token {
            text,
            ..pattern.clone()
        };
        if self.depth >= MAX_INCLUDE_DEPTH {
            diag.error(
                &pattern.location,
                format!("include nested deeper than {MAX_INCLUDE_DEPTH} files (a cycle?)"),
            );
            return;
        }
        let base = self.file.parent().unwrap_or(Path::new("."));
        let full: PathBuf = if Path::new(&pattern.text).is_absolute() {
            PathBuf::from(&pattern.text)
        } else {
            base.join(&pattern.text)
        };
        let full_str = full.to_string_lossy().into_owned();
        // Only the written pattern is one: the including file's directory is taken as it
        // is, braces and glob characters included.
        let base_glob = if Path::new(&pattern.text).is_absolute() {
            String::new()
        } else {
            let b = glob::Pattern::escape(&base.to_string_lossy());
            if b.is_empty() || b.ends_with('/') {
                b
            } else {
                format!("{b}/")
            }
        };
        // csh-style braces first, as keepalived's glob(3) with GLOB_BRACE: each
        // alternative's matches in order, sorted within it, each file once.
        let alternatives = expand_braces(&pattern.text);
        let braced = alternatives.as_slice() != [pattern.text.as_str()];
        let mut files: Vec<PathBuf> = Vec::new();
        let mut matched_any = false;
        // Alternatives without a wildcard that name no file (keepalived's brace_match).
        let mut missing: Vec<String> = Vec::new();
        for alternative in &alternatives {
            let glob_text = format!("{base_glob}{}", glob_escapes(alternative));
            let mut matched: Vec<PathBuf> = match glob::glob_with(&glob_text, GLOB_OPTIONS) {
                Ok(paths) => paths.filter_map(Result::ok).collect(),
                Err(e) => {
                    diag.error(
                        &pattern.location,
                        format!("bad include pattern {full_str:?}: {e}"),
                    );
                    return;
                }
            };
            if matched.is_empty() && !has_wildcard(alternative) {
                missing.push(alternative.clone());
            }
            matched_any |= !matched.is_empty();
            matched.sort();
            for f in matched {
                if !files.contains(&f) {
                    files.push(f);
                }
            }
        }
        let wildcard = has_wildcard(&pattern.text);
        if !matched_any {
            // keepalived (parser.c, include_check): `match` refuses a pattern without
            // wildcards that names no file, `wildcard_match` any pattern matching nothing,
            // `brace_match` a brace alternative without wildcards that names no file;
            // plain `include`, as lb-node has always read it, refuses a missing file named
            // without wildcards or braces.
            let refused = if wildcard {
                checks.wildcard_match || (checks.brace_match && !missing.is_empty())
            } else if braced {
                checks.brace_match
            } else {
                checks.plain || checks.matches
            };
            let message = if wildcard || braced {
                format!("{kw} {full_str:?} matches no file")
            } else {
                format!("included file {full_str} does not exist")
            };
            if refused {
                diag.error(&pattern.location, message);
            } else {
                diag.warn(&pattern.location, format!("{message}; nothing included"));
            }
        } else if braced {
            for alternative in &missing {
                let message = format!("{kw} {full_str:?}: {alternative:?} names no file");
                if checks.brace_match {
                    diag.error(&pattern.location, message);
                } else {
                    diag.warn(&pattern.location, message);
                }
            }
        }
        for f in files {
            // keepalived (`check_glob_file`) skips a directory and anything but a regular
            // file without any execute permission (a script next to the configuration
            // files); an error with the `readable` check.
            let skip = match std::fs::metadata(&f) {
                Ok(m) if m.is_dir() => Some("a directory, not a file"),
                Ok(m) if !m.is_file() => Some("not a regular file"),
                Ok(m)
                    if {
                        use std::os::unix::fs::PermissionsExt;
                        m.permissions().mode() & 0o111 != 0
                    } =>
                {
                    Some("executable (keepalived reads no executable file)")
                }
                _ => None,
            };
            if let Some(why) = skip {
                let message = format!("{kw}: {} is {why}", f.display());
                if checks.readable {
                    diag.error(&pattern.location, message);
                } else {
                    diag.warn(&pattern.location, format!("{message}; skipped"));
                }
                continue;
            }
            // A file including itself, directly or not, would be read until the depth
            // limit, its fan-out multiplying the work (keepalived loops forever).
            if diag.reading.contains(&canonical(&f)) {
                let e = ConfigError::at(
                    Some(pattern.location.clone()),
                    format!(
                        "include cycle: {} is already being read, not read again",
                        f.display()
                    ),
                );
                // Reached again along another path: reported once.
                if !diag.errors.contains(&e) {
                    diag.errors.push(e);
                }
                continue;
            }
            diag.included += 1;
            if diag.included > MAX_INCLUDED_FILES {
                if diag.included == MAX_INCLUDED_FILES + 1 {
                    diag.error(
                        &pattern.location,
                        format!(
                            "more than {MAX_INCLUDED_FILES} files included: not reading any more"
                        ),
                    );
                }
                return;
            }
            match std::fs::read(&f) {
                Ok(bytes) => {
                    if let Some(text) = decode(&bytes, &f, diag) {
                        out.extend(parse_nested(&text, &f, self.depth + 1, self.nesting, diag));
                    }
                }
                Err(e) => diag.error(
                    &pattern.location,
                    format!("cannot read included file {}: {e}", f.display()),
                ),
            }
        }
    }
}

/// What an include keyword checks (keepalived.conf(5), `include_check`): `includer` that
/// each file matched is readable, `includem` also that a pattern without wildcards names a
/// file, `includew` that any pattern matches a file, `includeb` that each brace alternative
/// without wildcards names a file, `includea` all of these. Plain `include` checks
/// nothing in keepalived; lb-node refuses an unreadable file and a missing file named
/// without wildcards or braces (`plain`).
#[derive(Debug, Clone, Copy, Default)]
struct IncludeChecks {
    plain: bool,
    readable: bool,
    matches: bool,
    wildcard_match: bool,
    brace_match: bool,
}

impl IncludeChecks {
    /// The checks of include keyword `kw`, or `None` when it is not one.
    fn of(kw: &str) -> Option<Self> {
        let all = Self {
            plain: false,
            readable: true,
            matches: true,
            wildcard_match: true,
            brace_match: true,
        };
        let none = Self::default();
        Some(match kw {
            "include" => Self {
                plain: true,
                ..none
            },
            "includer" => Self {
                readable: true,
                ..none
            },
            "includem" => Self {
                readable: true,
                matches: true,
                ..none
            },
            "includew" => Self {
                readable: true,
                matches: true,
                wildcard_match: true,
                ..none
            },
            "includeb" => Self {
                readable: true,
                brace_match: true,
                ..none
            },
            "includea" => all,
            _ => return None,
        })
    }
}

/// Whether an (expanded) include pattern has a glob wildcard (`*`, `?`, `[`) not escaped
/// by a backslash.
fn has_wildcard(pattern: &str) -> bool {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// Whether `s` ends with a backslash that escapes what follows (an odd run of them).
fn ends_with_escape(s: &str) -> bool {
    s.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Expands csh-style braces, as glob(3)'s `GLOB_BRACE`: `a{b,c{d,e}}f` gives `abf`, `acdf`,
/// `acef`, in that order; `{x}` gives `x`; `{}` and unbalanced braces stay as written. A
/// backslash escapes the next character (`\{`, `\,` are literal) and is kept for
/// [`glob_escapes`].
fn expand_braces(pattern: &str) -> Vec<String> {
    // Byte offsets of the unescaped characters that matter here.
    let mut specials = Vec::new();
    let mut chars = pattern.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '{' | '}' | ',' => specials.push((i, c)),
            _ => {}
        }
    }
    let mut k = 0;
    while let Some(start) = specials[k..].iter().position(|&(_, c)| c == '{') {
        let first = k + start;
        let open = specials[first].0;
        let mut depth = 0usize;
        let mut close = None;
        let mut commas = Vec::new();
        for (n, &(j, c)) in specials[first..].iter().enumerate() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some((first + n, j));
                        break;
                    }
                }
                _ if depth == 1 => commas.push(j),
                _ => {}
            }
        }
        let Some((close_k, close)) = close else {
            break; // unbalanced: literal
        };
        if close == open + 1 {
            k = close_k + 1; // `{}`: literal
            continue;
        }
        let (prefix, suffix) = (&pattern[..open], &pattern[close + 1..]);
        let mut parts = Vec::new();
        let mut start = open + 1;
        for c in commas {
            parts.push(&pattern[start..c]);
            start = c + 1;
        }
        parts.push(&pattern[start..close]);
        return parts
            .into_iter()
            .flat_map(|part| expand_braces(&format!("{prefix}{part}{suffix}")))
            .collect();
    }
    vec![pattern.to_owned()]
}

/// An expanded include pattern in the `glob` crate's syntax, read as glibc's glob(3) reads
/// it: the crate has no backslash escape, so `\*` becomes `[*]` (and `\?`, `\[`, `\]`
/// alike) and any other escaped character stands for itself; `**` is `*` (glob(3) has no
/// recursive wildcard; the crate's would descend into subdirectories); `[^…]` is `[!…]`
/// (glob(3) takes both for a negated class, the crate only the second).
fn glob_escapes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(e)) => {
                chars.next();
                if matches!(e, '*' | '?' | '[' | ']') {
                    out.extend(['[', e, ']']);
                } else {
                    out.push(e);
                }
            }
            ('*', Some('*')) => {}
            ('[', Some('^')) => {
                chars.next();
                out.push_str("[!");
            }
            _ => out.push(c),
        }
    }
    out
}

/// How include patterns match, as glibc's glob(3): `*`, `?` and `[…]` match neither a `/`
/// nor a name's leading `.`.
const GLOB_OPTIONS: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_as_glob_brace() {
        assert_eq!(expand_braces("a{b,c{d,e}}f"), ["abf", "acdf", "acef"]);
        assert_eq!(expand_braces("/etc/{x}.conf"), ["/etc/x.conf"]);
        assert_eq!(expand_braces("{a,b}/{c,d}"), ["a/c", "a/d", "b/c", "b/d"]);
        assert_eq!(expand_braces("x{}y{a,b}"), ["x{}ya", "x{}yb"]);
        assert_eq!(expand_braces("un{balanced"), ["un{balanced"]);
        assert_eq!(expand_braces("plain/*.conf"), ["plain/*.conf"]);
        assert_eq!(expand_braces("{,x}y"), ["y", "xy"]);
        // A backslash escapes a brace or a comma; the escapes are kept for the glob.
        assert_eq!(expand_braces("\\{a,b\\}"), ["\\{a,b\\}"]);
        assert_eq!(expand_braces("{a\\,b,c}"), ["a\\,b", "c"]);
        assert_eq!(expand_braces("{a\\}b,c}"), ["a\\}b", "c"]);
        assert_eq!(glob_escapes("\\{x\\}\\*\\[v\\]\\\\"), "{x}[*][[]v[]]\\");
    }

    fn parse(text: &str) -> (Vec<Stmt>, Diagnostics) {
        let mut d = Diagnostics::default();
        let s = parse_text(text, Path::new("k.conf"), 0, &mut d);
        (s, d)
    }

    #[test]
    fn blocks_comments_and_quotes() {
        let (s, d) = parse(
            "! Configuration File\nglobal_defs { # c\n  router_id \"LVS MASTER\"\n}\nvrrp_sync_group G\n{\n group { A B }\n}\n",
        );
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].keyword.text, "global_defs");
        let rid = &s[0].block.as_ref().unwrap()[0];
        assert_eq!(rid.args[0].text, "LVS MASTER");
        assert_eq!(rid.args[0].location.line, 3);
        assert_eq!(rid.args[0].location.column, 13);
        let g = &s[1].block.as_ref().unwrap()[0];
        assert_eq!(g.keyword.text, "group");
        let members = g.block.as_ref().unwrap();
        assert_eq!(members[0].keyword.text, "A");
        assert_eq!(members[0].args[0].text, "B");
    }

    #[test]
    fn vertical_tab_and_form_feed_are_blanks_as_in_keepalived() {
        // keepalived splits a line at any of " \t\f\n\r\v": `{\vstate` is `{` and `state`.
        let (s, d) = parse("vrrp_instance VI_2 {\x0Bstate\x0CBACKUP\n}\n");
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let state = &s[0].block.as_ref().unwrap()[0];
        assert_eq!(state.keyword.text, "state");
        assert_eq!(state.keyword.location.column, 22);
        assert_eq!(state.args[0].text, "BACKUP");
    }

    #[test]
    fn missing_brace_names_the_open_block() {
        let (_, d) = parse("vrrp_instance VI_1 {\n  state MASTER\n");
        assert_eq!(d.errors.len(), 1);
        assert_eq!(
            d.errors[0].to_string(),
            "k.conf:1:20: missing `}`: this block is never closed"
        );
        let (_, d) = parse("a\n}\n");
        assert_eq!(
            d.errors[0].to_string(),
            "k.conf:2:1: unexpected `}` with no open block"
        );
        let (_, d) = parse("a \"open\n");
        assert_eq!(
            d.errors[0].to_string(),
            "k.conf:1:3: unterminated quoted string"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let text = "a {\n".repeat(100_000);
        let (s, d) = parse(&text);
        assert_eq!(s.len(), 1);
        assert_eq!(
            d.errors[0].to_string(),
            format!(
                "k.conf:{}:3: blocks nested deeper than 64 levels",
                MAX_BLOCK_DEPTH + 1
            )
        );
        // The skipped block is unclosed too; no error per level.
        assert!(d.errors.len() <= MAX_BLOCK_DEPTH + 2, "{}", d.errors.len());
        let mut text = "a {\n".repeat(100_000);
        text.push_str(&"}\n".repeat(100_000));
        let (_, d) = parse(&text);
        assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
        // 64 levels are fine.
        let mut text = "a {\n".repeat(MAX_BLOCK_DEPTH);
        text.push_str(&"}\n".repeat(MAX_BLOCK_DEPTH));
        let (_, d) = parse(&text);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
    }
}
