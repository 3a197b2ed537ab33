//! Request and response head rewriting: hop-by-hop headers out ([RFC 9110 §7.6.1]),
//! client identity in (`X-Forwarded-*`, [RFC 7239] `Forwarded`). Pure functions, no IO.
//!
//! [RFC 9110 §7.6.1]: https://www.rfc-editor.org/rfc/rfc9110#section-7.6.1
//! [RFC 7239]: https://www.rfc-editor.org/rfc/rfc7239
//!
//! # Examples
//!
//! ```
//! use http::{HeaderMap, HeaderValue};
//! use lb_proxy::http::{add_forwarded, ForwardedHeaders};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
//! let all = ForwardedHeaders { forwarded: true, ..ForwardedHeaders::default() };
//! add_forwarded(&mut headers, all, "[2001:db8::1]:4711".parse().unwrap(), 80);
//! assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 2001:db8::1");
//! assert_eq!(headers["forwarded"], "for=\"[2001:db8::1]:4711\";proto=http");
//! assert_eq!(headers["x-forwarded-port"], "80");
//! ```

use std::fmt::Write as _;
use std::net::SocketAddr;

use http::header::{CONNECTION, CONTENT_LENGTH, FORWARDED, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::config::ForwardedHeaders;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether a request asks for a protocol switch: `Connection` lists `upgrade` and an
/// `Upgrade` header is present (RFC 9110 §7.8; WebSocket's handshake). A switch to HTTP/2
/// (`h2c`, `h2`) is not one: its tunnel would carry the client's next requests to the
/// backend without routing or forwarded headers ("h2c smuggling"); as HAProxy's
/// `h1_htx.c`, the proxy drops such an `Upgrade` and forwards the request as a plain one.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_has(headers, "upgrade") && !asks_for_http2(headers)
}

/// Whether an `Upgrade` header names HTTP/2 (`h2c`, `h2`).
fn asks_for_http2(headers: &HeaderMap) -> bool {
    headers.get_all(UPGRADE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|t| {
                let t = t.trim();
                t.eq_ignore_ascii_case("h2c") || t.eq_ignore_ascii_case("h2")
            })
        })
    })
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The fixed hop-by-hop headers (RFC 9110 §7.6.1, with the obsolete `Keep-Alive` and
/// `Proxy-Connection`), in the order of the bits [`hop_by_hop_bit`] returns. `Trailer` is
/// not one: it declares the trailer fields that follow the body, and hyper forwards only
/// trailer fields it declares.
static HOP_BY_HOP: [&HeaderName; 6] = [
    &CONNECTION,
    &UPGRADE,
    &TE,
    &TRANSFER_ENCODING,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
];

/// The bit of `Transfer-Encoding` in [`HOP_BY_HOP`].
const TRANSFER_ENCODING_BIT: u8 = 1 << 3;

/// The bit of `name` in a set of present hop-by-hop headers (0 when it is none of them).
///
/// Called for every header of every request and response, so it first looks at the
/// name's length: most names (`date`, `content-length`, `server`…) have no hop-by-hop
/// header of their length, and cost one table lookup and a compare.
fn hop_by_hop_bit(name: &HeaderName) -> u8 {
    // The lengths in `HOP_BY_HOP`: 10 (connection, keep-alive), 7 (upgrade), 2 (te),
    // 17 (transfer-encoding), 16 (proxy-connection).
    if !matches!(name.as_str().len(), 2 | 7 | 10 | 16 | 17) {
        return 0;
    }
    HOP_BY_HOP
        .iter()
        .position(|h| *h == name)
        .map_or(0, |i| 1 << i)
}

/// Removes hop-by-hop headers: `Connection` and every header it names (on one line or
/// several; its options `close` and `keep-alive` name none, and `Host` stays), `Keep-Alive`,
/// `Proxy-Connection`, `TE`, `Transfer-Encoding` when it is only `chunked`
/// (hyper re-frames bodies; `gzip, chunked` stays, since the gzip coding is still on the
/// body) and `Upgrade`. With `keep_upgrade`, `Upgrade` stays and `Connection: upgrade` is put back,
/// so a protocol switch reaches the other side. A message that came with `Transfer-Encoding`
/// also loses any `Content-Length`, which the coding overrides (RFC 9112 §6.3: an
/// intermediary removes it before forwarding; hyper refuses to write a head with both).
///
/// Cost: one scan of the header names, then a removal only for what is there (most
/// requests carry none; most responses only `Connection: keep-alive`); no allocation
/// unless several `Connection` lines name other headers.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let present = headers.keys().fold(0u8, |set, n| set | hop_by_hop_bit(n));
    if present & 1 != 0 {
        let mut lines = headers.get_all(CONNECTION).iter();
        match (lines.next().cloned(), lines.next().is_some()) {
            (None, _) => {}
            // The usual case, one `Connection` line: remove what it names by reference.
            (Some(line), false) => {
                // By bytes: a value may carry obs-text (RFC 9110 §5.5), which `to_str`
                // refuses; only the tokens that are not header names are skipped, one by
                // one, not every name on the line.
                let tokens = line
                    .as_bytes()
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|t| !names_no_field(t, keep_upgrade))
                    .filter_map(|t| std::str::from_utf8(t).ok());
                for token in tokens {
                    headers.remove(token);
                }
            }
            // Several lines are the one list they join into (RFC 9110 §5.3).
            (Some(_), true) => {
                let named: Vec<HeaderName> = headers
                    .get_all(CONNECTION)
                    .iter()
                    .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                    .map(<[u8]>::trim_ascii)
                    .filter(|t| !names_no_field(t, keep_upgrade))
                    .filter_map(|t| HeaderName::from_bytes(t).ok())
                    .collect();
                for name in named {
                    headers.remove(&name);
                }
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0
            && !(keep_upgrade && **name == UPGRADE)
            && !(**name == TRANSFER_ENCODING && has_other_coding(headers))
        {
            headers.remove(*name);
        }
    }
    if present & TRANSFER_ENCODING_BIT != 0 {
        headers.remove(CONTENT_LENGTH);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether a `Connection` token (trimmed) names no field to remove: none at all, the
/// connection options `close` and `keep-alive` (a `Keep-Alive` field goes with the fixed
/// list), `host` (the Host routed on stays), or `upgrade` while it is kept.
fn names_no_field(token: &[u8], keep_upgrade: bool) -> bool {
    token.is_empty()
        || token.eq_ignore_ascii_case(b"close")
        || token.eq_ignore_ascii_case(b"keep-alive")
        || token.eq_ignore_ascii_case(b"host")
        || (keep_upgrade && token.eq_ignore_ascii_case(b"upgrade"))
}

/// Whether `Transfer-Encoding` names a coding besides `chunked` (`gzip, chunked`). hyper
/// undoes only `chunked`; the others are still on the body, so the header must stay for
/// the next hop to decode them (RFC 9112 §6.1). hyper re-frames the body with `chunked`,
/// which such a header already ends with.
fn has_other_coding(headers: &HeaderMap) -> bool {
    headers.get_all(TRANSFER_ENCODING).iter().any(|v| {
        v.to_str().map_or(true, |s| {
            s.split(',').any(|t| {
                let t = t.trim();
                !t.is_empty() && !t.eq_ignore_ascii_case("chunked")
            })
        })
    })
}

/// What [`add_forwarded`] writes for one client connection, computed once when the
/// connection is accepted and reused for each of its requests (the client address and
/// port do not change within a connection).
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    which: ForwardedHeaders,
    /// The client IP as `X-Forwarded-For` writes it (v4-mapped addresses as IPv4).
    ip: HeaderValue,
    /// The local port, for `X-Forwarded-Port`.
    port: HeaderValue,
    /// `for="…";proto=http` (or `https`), the start of our `Forwarded` element (empty
    /// when off).
    forwarded_for: String,
    /// `X-Forwarded-Proto`'s value.
    proto: HeaderValue,
}

impl ClientIdentity {
    /// The headers `which` selects for a client at `client` that connected to local port
    /// `port`.
    pub fn new(which: ForwardedHeaders, client: SocketAddr, port: u16) -> Self {
        let ip = client.ip().to_canonical();
        let mut forwarded_for = String::new();
        if which.forwarded {
            // RFC 7239 §6: a node with a port or an IPv6 literal is not a token: quote it.
            if ip.is_ipv6() {
                let _ = write!(forwarded_for, "for=\"[{ip}]:{}\"", client.port());
            } else {
                let _ = write!(forwarded_for, "for=\"{ip}:{}\"", client.port());
            }
            forwarded_for.push_str(";proto=http");
        }
        Self {
            which,
            // An IP address's text is always a valid header value.
            ip: HeaderValue::try_from(ip.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            port: HeaderValue::from(port),
            forwarded_for,
            proto: HeaderValue::from_static("http"),
        }
    }

    /// The same headers for a client that came over TLS (an HTTPS listener):
    /// `X-Forwarded-Proto: https` and `proto=https` in `Forwarded`.
    #[must_use]
    pub fn over_tls(mut self) -> Self {
        self.proto = HeaderValue::from_static("https");
        if let Some(start) = self.forwarded_for.strip_suffix(";proto=http") {
            self.forwarded_for = format!("{start};proto=https");
        }
        self
    }

    /// Adds the headers to one request's `headers`. `X-Forwarded-For` and `Forwarded` are
    /// appended to what earlier proxies wrote (several header lines are folded into one, in
    /// order); `X-Forwarded-Proto` and `-Port` replace client-supplied values.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if self.which.x_forwarded_for {
            if headers.contains_key(&X_FORWARDED_FOR) {
                append_list(headers, &X_FORWARDED_FOR, self.ip.to_str().unwrap_or(""));
            } else {
                headers.insert(X_FORWARDED_FOR.clone(), self.ip.clone());
            }
        }
        if self.which.x_forwarded_proto {
            headers.insert(X_FORWARDED_PROTO.clone(), self.proto.clone());
        }
        if self.which.x_forwarded_port {
            headers.insert(X_FORWARDED_PORT.clone(), self.port.clone());
        }
        if self.which.forwarded {
            let mut element = self.forwarded_for.clone();
            // No `host=` for an empty Host (an HTTP/1.0 request without one): a token is
            // one character at least (RFC 7239 §4).
            if let Some(host) = headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| !h.is_empty())
            {
                if host.bytes().all(is_tchar) {
                    let _ = write!(element, ";host={host}");
                } else if host
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
                {
                    let _ = write!(element, ";host=\"{host}\"");
                }
            }
            append_list(headers, &FORWARDED, &element);
        }
    }
}

/// Adds the client-identity headers `which` selects for a client at `client` that connected
/// to local port `port` (a one-off [`ClientIdentity`]). `X-Forwarded-For` and `Forwarded`
/// are appended to what earlier proxies wrote (several header lines are folded into one, in
/// order); `X-Forwarded-Proto` and `-Port` replace client-supplied values.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    which: ForwardedHeaders,
    client: SocketAddr,
    port: u16,
) {
    ClientIdentity::new(which, client, port).apply(headers);
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Folds every `name` line into one comma-separated value and appends `item`. Earlier
/// values are kept byte for byte, also those that are not ASCII (they were valid header
/// values, and dropping one would drop the addresses in it too).
fn append_list(headers: &mut HeaderMap, name: &HeaderName, item: &str) {
    let mut joined: Vec<u8> = Vec::new();
    for v in headers.get_all(name) {
        let s = v.as_bytes().trim_ascii();
        if !s.is_empty() {
            joined.extend_from_slice(s);
            joined.extend_from_slice(b", ");
        }
    }
    joined.extend_from_slice(item.as_bytes());
    match HeaderValue::from_bytes(&joined) {
        Ok(v) => {
            headers.insert(name.clone(), v);
        }
        Err(_) => {
            // Earlier values were valid header text, so this cannot happen; keep them and
            // add ours as its own line rather than lose either.
            if let Ok(v) = HeaderValue::try_from(item) {
                headers.append(name.clone(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    /// A `Connection` value with obs-text (a non-ASCII byte, legal in a field value) still
    /// removes the headers it names, on one line and across two; it removed none.
    #[test]
    fn connection_with_obs_text_still_removes_what_it_names() {
        let value = HeaderValue::from_bytes(b"x-internal, \xe9t\xe9, upgrade").unwrap();
        let mut one = map(&[("x-internal", "secret"), ("upgrade", "websocket")]);
        one.append(CONNECTION, value.clone());
        assert!(connection_has(&one, "upgrade"));
        strip_hop_by_hop(&mut one, false);
        assert!(one.is_empty(), "{one:?}");
        let mut two = map(&[("x-internal", "secret"), ("x-other", "1")]);
        two.append(CONNECTION, value);
        two.append(CONNECTION, HeaderValue::from_static("x-other"));
        strip_hop_by_hop(&mut two, false);
        assert!(two.is_empty(), "{two:?}");
    }

    /// Several `Connection` lines are the one comma-joined line they equal (RFC 9110
    /// §5.3): the connection options `close` and `keep-alive`, and `host`, name no field to
    /// remove on either.
    #[test]
    fn connection_lines_split_or_joined_remove_the_same() {
        let fields = [
            ("close", "a"),
            ("keep-alive", "timeout=5"),
            ("host", "example.com"),
            ("x-a", "1"),
            ("x-b", "2"),
        ];
        for keep_upgrade in [false, true] {
            let mut one = map(&fields);
            one.append(
                CONNECTION,
                HeaderValue::from_static("close, keep-alive, host, x-a, upgrade"),
            );
            let mut two = map(&fields);
            for line in ["close", "keep-alive, host", "x-a, upgrade"] {
                two.append(CONNECTION, HeaderValue::from_static(line));
            }
            strip_hop_by_hop(&mut one, keep_upgrade);
            strip_hop_by_hop(&mut two, keep_upgrade);
            assert_eq!(one, two, "keep_upgrade {keep_upgrade}");
            assert!(
                one.contains_key("close") && one.contains_key(HOST),
                "{one:?}"
            );
            assert!(
                !one.contains_key("x-a") && one.contains_key("x-b"),
                "{one:?}"
            );
        }
    }

    #[test]
    fn xff_is_appended_across_lines() {
        let mut h = map(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "198.51.100.2, 198.51.100.3"),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarded(
            &mut h,
            ForwardedHeaders::default(),
            "192.0.2.9:5000".parse().unwrap(),
            8080,
        );
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["198.51.100.1, 198.51.100.2, 198.51.100.3, 192.0.2.9"]
        );
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-port"], "8080");
        assert!(!h.contains_key("forwarded"));
    }

    #[test]
    fn forwarded_quotes_and_brackets() {
        let all = ForwardedHeaders {
            forwarded: true,
            ..ForwardedHeaders::NONE
        };
        let mut h = map(&[
            ("forwarded", "for=192.0.2.43"),
            ("host", "example.com:8080"),
        ]);
        add_forwarded(&mut h, all, "[2001:db8:cafe::17]:4711".parse().unwrap(), 80);
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\";proto=http;host=\"example.com:8080\""
        );
        assert!(!h.contains_key("x-forwarded-for"));
        // v4-mapped clients (dual-stack listeners) are written as IPv4.
        let mut h = map(&[("host", "example.com")]);
        add_forwarded(&mut h, all, "[::ffff:192.0.2.5]:1".parse().unwrap(), 80);
        assert_eq!(
            h["forwarded"],
            "for=\"192.0.2.5:1\";proto=http;host=example.com"
        );
    }

    proptest::proptest! {
        /// Whatever earlier proxies wrote, ours is appended last and nothing is lost.
        #[test]
        fn xff_always_ends_with_the_client(
            earlier in proptest::collection::vec("[ -~]{0,40}", 0..4),
            ip in proptest::prelude::any::<std::net::IpAddr>(),
            port in proptest::prelude::any::<u16>(),
        ) {
            let mut h = HeaderMap::new();
            for e in &earlier {
                h.append(&X_FORWARDED_FOR, HeaderValue::from_str(e).unwrap());
            }
            let all = ForwardedHeaders { forwarded: true, ..ForwardedHeaders::default() };
            let client = SocketAddr::new(ip, port);
            add_forwarded(&mut h, all, client, 80);
            let xff: Vec<_> = h.get_all(&X_FORWARDED_FOR).iter().collect();
            let last = xff.last().unwrap().to_str().unwrap();
            let ip_text = ip.to_canonical().to_string();
            proptest::prop_assert!(last.ends_with(&ip_text));
            for e in earlier.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
                proptest::prop_assert!(xff.iter().any(|v| v.to_str().unwrap().contains(e)));
            }
            let fwd = h[&FORWARDED].to_str().unwrap();
            let node = if ip.to_canonical().is_ipv6() {
                format!("for=\"[{ip_text}]:{port}\"")
            } else {
                format!("for=\"{ip_text}:{port}\"")
            };
            proptest::prop_assert!(fwd.starts_with(&node), "{}", fwd);
        }
    }

    #[test]
    fn every_hop_by_hop_name_passes_the_length_filter() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_bit(name), 1 << i, "{name}");
        }
        assert_eq!(hop_by_hop_bit(&TRANSFER_ENCODING), TRANSFER_ENCODING_BIT);
        for other in [
            "date",
            "content-length",
            "server",
            "x-upgrade",
            "connections",
        ] {
            assert_eq!(
                hop_by_hop_bit(&HeaderName::from_static(other)),
                0,
                "{other}"
            );
        }
    }

    #[test]
    fn hop_by_hop_removed_upgrade_kept_on_request() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret, Upgrade"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "websocket"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "yes"),
        ]);
        assert!(is_upgrade_request(&h));
        let mut plain = h.clone();
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(!h.contains_key("x-secret") && !h.contains_key("keep-alive"));
        assert!(!h.contains_key("transfer-encoding"));
        strip_hop_by_hop(&mut plain, false);
        assert!(!plain.contains_key("connection") && !plain.contains_key("upgrade"));
        assert_eq!(plain["x-kept"], "yes");
        assert!(!is_upgrade_request(&map(&[("upgrade", "websocket")])));
        // HTTP/2 is not upgraded to through the proxy.
        assert!(!is_upgrade_request(&map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c")
        ])));
    }

    #[test]
    fn transfer_codings_other_than_chunked_stay() {
        for (te, kept) in [
            ("chunked", false),
            ("Chunked", false),
            ("gzip, chunked", true),
            ("GZIP,chunked", true),
        ] {
            let mut h = map(&[("transfer-encoding", te), ("x-kept", "yes")]);
            strip_hop_by_hop(&mut h, false);
            assert_eq!(h.contains_key("transfer-encoding"), kept, "{te}");
            if kept {
                assert_eq!(h["transfer-encoding"], te);
            }
        }
        // Split over two lines, as RFC 9110 §5.3 allows.
        let mut h = map(&[
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get_all("transfer-encoding").iter().count(), 2);
    }

    /// The reference the fast path must agree with: collect every name `Connection` lists,
    /// then remove each of them and the fixed list (and `Transfer-Encoding` when it holds
    /// nothing but `chunked`); `Content-Length` goes when `Transfer-Encoding` came.
    fn strip_reference(headers: &mut HeaderMap, keep_upgrade: bool) {
        if headers.contains_key(TRANSFER_ENCODING) {
            headers.remove(CONTENT_LENGTH);
        }
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if !(keep_upgrade && name == UPGRADE) {
                headers.remove(&name);
            }
        }
        for name in [&CONNECTION, &KEEP_ALIVE, &PROXY_CONNECTION, &TE] {
            headers.remove(name);
        }
        let codings: Vec<String> = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        if codings.iter().all(|t| t == "chunked") {
            headers.remove(&TRANSFER_ENCODING);
        }
        if keep_upgrade {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        } else {
            headers.remove(UPGRADE);
        }
    }

    proptest::proptest! {
        /// The one-scan fast path removes exactly what the reference removes, whatever the
        /// mix of hop-by-hop headers, `Connection` lines and tokens.
        #[test]
        fn strip_agrees_with_the_reference(
            lines in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade", "x-a", "x-b", "host", "accept",
                        "content-length",
                    ]),
                    proptest::sample::select(vec![
                        "close", "keep-alive", "x-a", "X-B, upgrade", " te , x-a ,",
                        "upgrade", "", "bad name, x-b", "1",
                    ]),
                ),
                0..8,
            ),
            keep_upgrade in proptest::prelude::any::<bool>(),
        ) {
            let pairs: Vec<(&str, &str)> = lines.clone();
            let mut fast = map(&pairs);
            let mut reference = fast.clone();
            strip_hop_by_hop(&mut fast, keep_upgrade);
            strip_reference(&mut reference, keep_upgrade);
            proptest::prop_assert_eq!(fast, reference);
        }
    }

    #[test]
    fn identity_is_reused_across_requests() {
        let all = ForwardedHeaders {
            forwarded: true,
            ..ForwardedHeaders::default()
        };
        let client: SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
        let id = ClientIdentity::new(all, client, 8443);
        for earlier in [None, Some("198.51.100.1")] {
            let mut a = map(&[("host", "example.com")]);
            if let Some(e) = earlier {
                a.insert(&X_FORWARDED_FOR, HeaderValue::from_static(e));
            }
            let mut b = a.clone();
            id.apply(&mut a);
            add_forwarded(&mut b, all, client, 8443);
            assert_eq!(a, b);
        }
        let mut h = HeaderMap::new();
        id.apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "2001:db8::7");
        assert_eq!(h["x-forwarded-port"], "8443");
        assert_eq!(h["x-forwarded-proto"], "http");
        // A client of an HTTPS listener.
        let mut h = map(&[("host", "example.com")]);
        ClientIdentity::new(all, client, 8443)
            .over_tls()
            .apply(&mut h);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::7]:4000\";proto=https;host=example.com"
        );
    }

    /// An empty Host (an HTTP/1.0 request without one) gives no `host=` (a token has one
    /// character at least, RFC 7239 §4); earlier `X-Forwarded-For` lines that are not ASCII
    /// are kept byte for byte, with the valid addresses in them, not dropped.
    #[test]
    fn empty_host_and_non_ascii_earlier_values() {
        let all = ForwardedHeaders {
            forwarded: true,
            ..ForwardedHeaders::default()
        };
        let client: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut h = map(&[("host", "")]);
        h.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"198.51.100.1, caf\xe9").unwrap(),
        );
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.2"));
        add_forwarded(&mut h, all, client, 80);
        assert_eq!(h["forwarded"], "for=\"192.0.2.1:4000\";proto=http");
        assert_eq!(
            h["x-forwarded-for"].as_bytes(),
            b"198.51.100.1, caf\xe9, 198.51.100.2, 192.0.2.1"
        );
    }
}
