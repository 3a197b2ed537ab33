//! The native TOML format: serde over the [`model`](super::model), with every key and
//! value located through `toml_edit`'s spans so that validation errors name
//! `file:line:column`.
//!
//! The commented reference of every option is `bins/conf/lb-node.example.toml`.
//!
//! # Examples
//!
//! ```
//! use std::path::Path;
//! use lb_bins::config::toml::parse_str;
//!
//! let text = "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = 0\nvirtual_ipaddress = [\"198.18.0.250\"]\n";
//! let errors = parse_str(text, Path::new("lb.toml")).unwrap_err();
//! assert_eq!(errors[0].to_string(), "lb.toml:5:12: priority 0 is reserved for a master that resigns (1..=255)");
//! ```

use std::path::Path;

use toml_edit::{ImDocument, Item, Table, Value};

use super::{finish, Config, ConfigError, LoadResult, Location, Origins};

/// Parses and validates TOML text read from `file` (the name is used in messages only).
///
/// # Errors
/// The first syntax or type error (the TOML deserializer stops there), or every semantic
/// error, each with `file:line:column`.
pub fn parse_str(text: &str, file: &Path) -> LoadResult {
    let mut config: Config = match ::toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            let (offset, message) = syntax_error(&e, text);
            let location = offset.map(|at| Location::from_offset(file, text, at));
            // The key at the error, for the settings whose range is not their type's.
            let mut key = None;
            if let (Some(span), Ok(doc)) = (e.span(), ImDocument::parse(text)) {
                walk_table(doc.as_table(), "", &mut |path, at| {
                    if at == span.start {
                        key = path.rsplit('.').next().map(str::to_owned);
                    }
                });
            }
            return Err(vec![ConfigError::at(
                location,
                out_of_range(&message, key.as_deref()),
            )]);
        }
    };
    let mut origins = Origins::default();
    if let Ok(doc) = ImDocument::parse(text) {
        walk_table(doc.as_table(), "", &mut |path, span| {
            origins.insert(path, Location::from_offset(file, text, span));
        });
    }
    inherit_check_timeouts(&mut config, &origins);
    tls_paths_from(&mut config, file);
    finish(config, &origins, Vec::new(), Vec::new())
}

/// Where and what the deserializer's error `e` is: its span and message, or, where it has no
/// message (a carriage return not followed by a line feed, which TOML allows nowhere), the
/// first such carriage return, else what is at its span.
fn syntax_error(e: &::toml::de::Error, text: &str) -> (Option<usize>, String) {
    let at = e.span().map(|s| s.start);
    let message = e.message().trim_end();
    if !message.is_empty() {
        return (at, message.to_owned());
    }
    let lone_cr = text
        .match_indices('\r')
        .map(|(i, _)| i)
        .find(|&i| text.as_bytes().get(i + 1) != Some(&b'\n'));
    if let Some(i) = lone_cr {
        return (
            Some(i),
            "a carriage return must be followed by a line feed".to_owned(),
        );
    }
    let message = match at
        .and_then(|i| text.get(i..))
        .and_then(|r| r.chars().next())
    {
        Some(c) => format!("unexpected character {c:?}"),
        None => "unexpected end of the file".to_owned(),
    };
    (at, message)
}

/// Relative `tls_certificate`, `tls_key`, `backend_ca_file`, `backend_certificate`,
/// `backend_key` and `access_log` (HTTP and TCP) paths are taken from the directory of the
/// file that names them (nginx reads them from its configuration's directory too), not
/// from lb-node's working directory.
fn tls_paths_from(config: &mut Config, file: &Path) {
    let Some(dir) = file.parent() else { return };
    for t in config
        .virtual_servers
        .iter_mut()
        .filter_map(|v| v.tcp.as_mut())
    {
        if let Some(p) = t.access_log.as_mut().filter(|p| p.is_relative()) {
            *p = dir.join(&*p);
        }
    }
    for h in config
        .virtual_servers
        .iter_mut()
        .filter_map(|v| v.http.as_mut())
    {
        let sni = h
            .tls_sni
            .iter_mut()
            .flat_map(|s| [Some(&mut s.certificate), s.key.as_mut()]);
        let paths = [
            h.tls_certificate.as_mut(),
            h.tls_key.as_mut(),
            h.backend_ca_file.as_mut(),
            h.backend_certificate.as_mut(),
            h.backend_key.as_mut(),
            h.access_log.as_mut(),
        ]
        .into_iter()
        .chain(sni)
        .flatten();
        for p in paths {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }
}

/// serde's message for a number its field's type cannot hold (`invalid value: integer
/// `300`, expected u8`) said as the keepalived.conf reader says it (`300 is out of range
/// 0..=255`, or the setting's own range where it is narrower than its type's: `priority`
/// and `virtual_router_id` 1..=255); other messages unchanged.
fn out_of_range(message: &str, key: Option<&str>) -> String {
    let parsed = message
        .strip_prefix("invalid value: integer `")
        .and_then(|rest| rest.split_once("`, expected "));
    let Some((n, ty)) = parsed else {
        return message.to_owned();
    };
    let max = match ty {
        "u8" => u64::from(u8::MAX),
        "u16" => u64::from(u16::MAX),
        "u32" => u64::from(u32::MAX),
        _ => return message.to_owned(),
    };
    let min = match key {
        Some("priority" | "virtual_router_id") => 1,
        _ => 0,
    };
    format!("{n} is out of range {min}..={max}")
}

/// As keepalived.conf's (keepalived `validate_check_config`), a check without its own
/// `connect_timeout` takes its virtual server's (default 5 s either way): a
/// keepalived.conf translated key for key into TOML keeps its check timeouts.
fn inherit_check_timeouts(config: &mut Config, origins: &Origins) {
    for (i, vs) in config.virtual_servers.iter_mut().enumerate() {
        let t = vs.connect_timeout;
        for (j, b) in vs.backends.iter_mut().enumerate() {
            for (k, c) in b.checks.iter_mut().enumerate() {
                // No connection to time for a program, a file or a BFD session (the
                // keepalived.conf reader leaves theirs at 5 s too).
                let connects = !matches!(
                    c.kind,
                    super::model::CheckKind::Misc(_)
                        | super::model::CheckKind::File(_)
                        | super::model::CheckKind::Bfd(_)
                );
                if connects
                    && !origins.written(&format!(
                        "virtual_server[{i}].backend[{j}].check[{k}].connect_timeout"
                    ))
                {
                    c.connect_timeout = t;
                }
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk_table(t: &Table, prefix: &str, rec: &mut dyn FnMut(String, usize)) {
    for (k, item) in t.iter() {
        let path = join(prefix, k);
        let key_span = t.key(k).and_then(toml_edit::Key::span);
        if let Some(s) = item.span().or(key_span) {
            rec(path.clone(), s.start);
        }
        walk_item(item, &path, rec);
    }
}

fn walk_item(item: &Item, path: &str, rec: &mut dyn FnMut(String, usize)) {
    match item {
        Item::Table(t) => walk_table(t, path, rec),
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                if let Some(s) = t.span() {
                    rec(p.clone(), s.start);
                }
                walk_table(t, &p, rec);
            }
        }
        Item::Value(v) => walk_value(v, path, rec),
        Item::None => {}
    }
}

fn walk_value(v: &Value, path: &str, rec: &mut dyn FnMut(String, usize)) {
    match v {
        Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                if let Some(s) = e.span() {
                    rec(p.clone(), s.start);
                }
                walk_value(e, &p, rec);
            }
        }
        Value::InlineTable(t) => {
            for (k, e) in t.iter() {
                let p = join(path, k);
                if let Some(s) = e.span() {
                    rec(p.clone(), s.start);
                }
                walk_value(e, &p, rec);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        parse_str(text, Path::new("t.toml"))
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn type_errors_are_located() {
        let e = errs("[[virtual_server]]\nlisten = \"198.18.0.300:80\"\n");
        assert!(e[0].starts_with("t.toml:2:10: "), "{e:?}");
        let e = errs("[[virtual_server]]\nlisten = \"198.18.0.250:80\"\nlb_algo = \"fastest\"\n");
        assert!(e[0].starts_with("t.toml:3:11: unknown lb_algo"), "{e:?}");
        let e = errs("[[vrrp_instance]]\nname = \"a\"\ninterface = \"e\"\nvirtual_router_id = 1\npriority = 256\n");
        assert!(e[0].starts_with("t.toml:5:12: "), "{e:?}");
        let e = errs("[global]\nrouter = \"x\"\n");
        assert!(
            e[0].starts_with("t.toml:2:1: unknown field `router`"),
            "{e:?}"
        );
    }

    #[test]
    fn a_syntax_error_without_a_message_says_what_is_there() {
        // The TOML parser has no message for a carriage return without its line feed.
        assert_eq!(
            errs("a = 1\r\n\r"),
            ["t.toml:2:1: a carriage return must be followed by a line feed"]
        );
        assert_eq!(
            errs("\r\u{0}"),
            ["t.toml:1:1: a carriage return must be followed by a line feed"]
        );
        // The parser's position is the end of the file here; the carriage return is named.
        assert_eq!(
            errs("d = [\r\n\r"),
            ["t.toml:2:1: a carriage return must be followed by a line feed"]
        );
    }

    #[test]
    fn semantic_errors_are_all_listed() {
        let text = r#"
[[vrrp_instance]]
name = "A"
interface = "eth0"
virtual_router_id = 51
virtual_ipaddress = ["198.18.0.250"]

[[vrrp_instance]]
name = "B"
interface = "eth0"
virtual_router_id = 51
virtual_ipaddress = ["198.18.0.251"]

[[vrrp_sync_group]]
name = "G"
group = ["A", "C"]
"#;
        assert_eq!(
            errs(text),
            [
                "t.toml:11:21: virtual_router_id 51 is already used on eth0 by vrrp_instance A",
                "t.toml:16:15: vrrp_sync_group G names unknown vrrp_instance \"C\"",
            ]
        );
    }
}
