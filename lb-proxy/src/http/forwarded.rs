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

use http::header::{CONNECTION, FORWARDED, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::config::ForwardedHeaders;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether a request asks for a protocol switch: `Connection` lists `upgrade` and an
/// `Upgrade` header is present (RFC 9110 §7.8; WebSocket's handshake).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding` (hyper re-frames bodies) and
/// `Upgrade`. With `keep_upgrade`, `Upgrade` stays and `Connection: upgrade` is put back,
/// so a protocol switch reaches the other side.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.contains_key(CONNECTION) {
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
        headers.remove(CONNECTION);
    }
    for name in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TE,
        &TRAILER,
        &TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// Adds the client-identity headers `which` selects for a client at `client` that connected
/// to local port `port`. `X-Forwarded-For` and `Forwarded` are appended to what earlier
/// proxies wrote (several header lines are folded into one, in order); `X-Forwarded-Proto`
/// and `-Port` replace client-supplied values.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    which: ForwardedHeaders,
    client: SocketAddr,
    port: u16,
) {
    if which.x_forwarded_for {
        let ip = client.ip().to_canonical().to_string();
        append_list(headers, &X_FORWARDED_FOR, &ip);
    }
    if which.x_forwarded_proto {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if which.x_forwarded_port {
        headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(port));
    }
    if which.forwarded {
        let mut element = String::with_capacity(64);
        let ip = client.ip().to_canonical();
        // RFC 7239 §6: a node with a port or an IPv6 literal is not a token: quote it.
        if ip.is_ipv6() {
            let _ = write!(element, "for=\"[{ip}]:{}\"", client.port());
        } else {
            let _ = write!(element, "for=\"{ip}:{}\"", client.port());
        }
        element.push_str(";proto=http");
        if let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) {
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

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Folds every `name` line into one comma-separated value and appends `item`.
fn append_list(headers: &mut HeaderMap, name: &HeaderName, item: &str) {
    let mut joined = String::new();
    for v in headers.get_all(name) {
        if let Ok(s) = v.to_str() {
            let s = s.trim();
            if !s.is_empty() {
                joined.push_str(s);
                joined.push_str(", ");
            }
        }
    }
    joined.push_str(item);
    match HeaderValue::try_from(joined) {
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
    }
}
