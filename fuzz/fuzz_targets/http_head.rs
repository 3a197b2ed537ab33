//! The HTTP mode's request-head rewriting (`lb_proxy::http::forwarded`, `route`) on any
//! header fields a client sends:
//! - no panic in `strip_hop_by_hop`, `add_forwarded`, `is_upgrade_request`,
//!   `request_host` and `hash_key`;
//! - `strip_hop_by_hop` treats several `Connection` lines as the one comma-joined line they
//!   equal (RFC 9110 §5.3): the same fields are left either way;
//! - what it leaves has no `Connection` (unless `keep_upgrade` put back `upgrade`),
//!   `Keep-Alive`, `Proxy-Connection` or `TE`, no `Upgrade` unless kept, and no
//!   `Content-Length` beside a `Transfer-Encoding` the message came with;
//! - `add_forwarded` makes the client's address the last element of `X-Forwarded-For`.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use arbitrary::Arbitrary;
use http::header::{CONNECTION, CONTENT_LENGTH, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use lb_proxy::http::config::HashKeySource;
use lb_proxy::http::{
    add_forwarded, hash_key, is_upgrade_request, request_host, strip_hop_by_hop, ForwardedHeaders,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Header fields, in order (a name of [`KNOWN`] or any text); names and values that
    /// are not valid are left out.
    fields: Vec<(Token, Vec<u8>)>,
    /// `Connection` lines, each a list of tokens.
    connection: Vec<Vec<Token>>,
    keep_upgrade: bool,
    client: (IpAddr, u16),
    port: u16,
    uri: String,
    which: (bool, bool, bool, bool),
    hash_header: String,
    cookie: String,
}

/// A `Connection` token or a field name: one of the fields' names (for a token), a name
/// with a meaning of its own here, or any text.
#[derive(Debug, Arbitrary)]
enum Token {
    Field(u8),
    Known(u8),
    Other(String),
}

const KNOWN: [&str; 8] = [
    "close",
    "keep-alive",
    "host",
    "upgrade",
    "te",
    "transfer-encoding",
    "content-length",
    "x-forwarded-for",
];

impl Token {
    fn text(&self, fields: &[(String, Vec<u8>)]) -> String {
        match self {
            Token::Field(i) if !fields.is_empty() => {
                fields[usize::from(*i) % fields.len()].0.clone()
            }
            Token::Field(_) => String::new(),
            Token::Known(i) => KNOWN[usize::from(*i) % KNOWN.len()].to_owned(),
            Token::Other(s) => s.clone(),
        }
    }
}

fn head(fields: &[(String, Vec<u8>)], connection: &[String]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in fields {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            h.append(n, v);
        }
    }
    for line in connection {
        if let Ok(v) = HeaderValue::from_str(line) {
            h.append(CONNECTION, v);
        }
    }
    h
}

/// The fields as a sorted list (the order of different names does not matter).
fn fields_of(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = h
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    v.sort();
    v
}

fuzz_target!(|input: Input| {
    let fields: Vec<(String, Vec<u8>)> = input
        .fields
        .iter()
        .map(|(n, v)| (n.text(&[]), v.clone()))
        .collect();
    // Tokens that keep each line a valid value and a list of its own items.
    let lines: Vec<String> = input
        .connection
        .iter()
        .map(|l| {
            l.iter()
                .map(|t| t.text(&fields))
                .filter(|t| !t.contains(',') && HeaderValue::from_str(t).is_ok())
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|l| !l.is_empty())
        .collect();
    let joined = if lines.is_empty() {
        vec![]
    } else {
        vec![lines.join(", ")]
    };
    let mut split = head(&fields, &lines);
    let mut one = head(&fields, &joined);
    let came_with_te = split.contains_key(TRANSFER_ENCODING);
    let _ = is_upgrade_request(&split);
    strip_hop_by_hop(&mut split, input.keep_upgrade);
    strip_hop_by_hop(&mut one, input.keep_upgrade);
    // Compared only when the fields bring no `Connection` line of their own: those come
    // before the split or joined lines, and joining ours would change their list too.
    if !fields
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("connection"))
    {
        assert_eq!(fields_of(&split), fields_of(&one), "lines {lines:?}");
    }
    for name in ["keep-alive", "proxy-connection"] {
        assert!(!split.contains_key(name), "{name} left");
    }
    assert!(!split.contains_key(TE), "te left");
    if input.keep_upgrade {
        let c: Vec<_> = split.get_all(CONNECTION).iter().collect();
        assert_eq!(c, [HeaderValue::from_static("upgrade")]);
    } else {
        assert!(!split.contains_key(CONNECTION), "connection left");
        assert!(!split.contains_key(UPGRADE), "upgrade left");
    }
    if came_with_te {
        assert!(
            !split.contains_key(CONTENT_LENGTH),
            "content-length beside TE"
        );
    }

    let client = SocketAddr::new(input.client.0, input.client.1);
    let (xff, proto, port, forwarded) = input.which;
    let which = ForwardedHeaders {
        x_forwarded_for: xff,
        x_forwarded_proto: proto,
        x_forwarded_port: port,
        forwarded,
    };
    add_forwarded(&mut split, which, client, input.port);
    if xff {
        // The last element of the last line is the client (a v4-mapped address as IPv4).
        let last = split.get_all("x-forwarded-for").iter().last().unwrap();
        let element = last.as_bytes().rsplit(|&b| b == b',').next().unwrap();
        let ip = client.ip().to_canonical().to_string();
        assert_eq!(
            element.trim_ascii(),
            ip.as_bytes(),
            "x-forwarded-for {last:?} for {client}"
        );
    }

    let mut req = Request::new(());
    if let Ok(uri) = input.uri.parse() {
        *req.uri_mut() = uri;
    }
    *req.headers_mut() = split;
    let (parts, ()) = req.into_parts();
    let _ = request_host(&parts);
    let mut sources = vec![HashKeySource::Uri, HashKeySource::UriWhole];
    sources.push(HashKeySource::Cookie(input.cookie));
    if let Ok(n) = HeaderName::from_bytes(input.hash_header.as_bytes()) {
        sources.push(HashKeySource::Header(n));
    }
    for s in &sources {
        let _ = hash_key(s, &parts);
    }
});
