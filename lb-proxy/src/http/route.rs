//! Request routing and hash-key extraction: pure functions of the request head, no IO.
//!
//! # Examples
//!
//! ```
//! use lb_proxy::http::{Route, Router};
//!
//! let routes = vec![
//!     Route::new("api").host("*.example.com".parse()?).path_prefix("/api"),
//!     Route::new("static").path_prefix("/static/"),
//! ];
//! let names = ["www", "api", "static"];
//! let router = Router::new(&routes, Some("www"), &names)?;
//! assert_eq!(router.route(Some("eu.example.com"), "/api/v1"), Some(1));
//! assert_eq!(router.route(Some("example.com"), "/static/a.css"), Some(2));
//! assert_eq!(router.route(None, "/"), Some(0));
//! # Ok::<(), lb_proxy::http::Error>(())
//! ```

use std::borrow::Cow;

use http::header::{COOKIE, HOST};
use http::request::Parts;

use super::config::{HashKeySource, HostMatch, Route};
use super::error::{Error, Result};

#[derive(Debug, Clone)]
struct CompiledRoute {
    host: Option<HostMatch>,
    path_prefix: Option<String>,
    pool: usize,
}

/// Routing rules compiled against a list of pool names: [`Router::route`] returns an index
/// into that list.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<CompiledRoute>,
    default: Option<usize>,
}

impl Router {
    /// Compiles `routes` and `default_pool` against `pools` (names, in the order their
    /// indices should come back).
    ///
    /// # Errors
    /// [`Error::UnknownPool`] when a rule or the default names a pool not in `pools`.
    pub fn new<S: AsRef<str>>(
        routes: &[Route],
        default_pool: Option<&str>,
        pools: &[S],
    ) -> Result<Self> {
        let find = |name: &str| {
            pools
                .iter()
                .position(|p| p.as_ref() == name)
                .ok_or_else(|| Error::UnknownPool(name.to_owned()))
        };
        let routes = routes
            .iter()
            .map(|r| {
                Ok(CompiledRoute {
                    host: r.host.clone(),
                    path_prefix: r.path_prefix.clone(),
                    pool: find(&r.pool)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let default = default_pool.map(find).transpose()?;
        Ok(Self { routes, default })
    }

    /// The pool for a request with this host (already lowercase, without port; `None` when
    /// the request has none) and path: the first matching rule's, else the default, else
    /// `None`.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .find(|r| {
                r.host
                    .as_ref()
                    .is_none_or(|m| host.is_some_and(|h| m.matches(h)))
                    && r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
            })
            .map(|r| r.pool)
            .or(self.default)
    }
}

/// Whether a `Host` value is `uri-host [":" port]` as a proxy may route on and forward it
/// (RFC 9112 §3.2: an invalid one gets 400), with nginx's checks
/// (`ngx_http_validate_host`): an IPv6 literal in brackets, else a name of visible ASCII
/// without `/`, `\`, `[`, `]`, `@` or `..`; a port of digits only, at most 65535 (or
/// empty, as RFC 3986 allows). Empty is valid (an HTTP/1.0 request's absent host).
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let (inside, after) = (&rest[..end], &rest[end + 1..]);
        if inside.is_empty()
            || !inside
                .iter()
                .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.')
        {
            return false;
        }
        match after {
            [] => (&b""[..], None),
            [b':', port @ ..] => (&b""[..], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        }
    };
    let name_ok = host
        .iter()
        .all(|&b| b.is_ascii_graphic() && !matches!(b, b'/' | b'\\' | b'[' | b']' | b'@' | b':'))
        && !host.windows(2).any(|w| w == b"..");
    let port_ok = port.is_none_or(|p| {
        p.iter().all(u8::is_ascii_digit)
            && p.len() <= 5
            && p.iter()
                .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
                .le(&65_535)
    });
    name_ok && port_ok
}

/// The request's host, lowercase and without port: the URI's authority (absolute-form
/// requests) or else the `Host` header. IPv6 literals keep their brackets (`[::1]`).
/// Returns `None` when neither is present or the header is not valid text. Borrows unless
/// the name needs lowercasing.
pub fn request_host(parts: &Parts) -> Option<Cow<'_, str>> {
    let raw = match parts.uri.host() {
        Some(h) => h,
        None => parts.headers.get(HOST)?.to_str().ok()?,
    };
    let host = if raw.starts_with('[') {
        // [v6]:port → [v6]
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        None
    } else if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

/// The bytes hash schedulers key on for this request, or `None` to fall back to the client
/// address (the source is [`HashKeySource::ClientAddr`] or absent from the request).
pub fn hash_key<'a>(source: &HashKeySource, parts: &'a Parts) -> Option<&'a [u8]> {
    match source {
        HashKeySource::ClientAddr => None,
        HashKeySource::Header(name) => parts.headers.get(name).map(|v| v.as_bytes()),
        HashKeySource::Uri => Some(parts.uri.path().as_bytes()),
        HashKeySource::UriWhole => parts.uri.path_and_query().map(|pq| pq.as_str().as_bytes()),
        HashKeySource::Cookie(name) => parts
            .headers
            .get_all(COOKIE)
            .iter()
            .find_map(|v| cookie_value(v.as_bytes(), name.as_bytes())),
    }
}

/// The value of cookie `name` in one `Cookie` header (`a=1; b=2`), per RFC 6265 §5.4.
fn cookie_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name).then(|| {
            let v = pair[eq + 1..].trim_ascii();
            v.strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v)
        })
    })
}

#[cfg(test)]
mod tests {
    /// RFC 9112 §3.2's `uri-host [":" port]`, with nginx's checks.
    #[test]
    fn host_values_are_validated() {
        for ok in [
            "example.com",
            "example.com:8080",
            "x.example.com.",
            "[::1]:80",
            "[2001:db8::1]",
            "x:65535",
            "x:",
            "",
            "a,b.example.com",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok:?}");
        }
        for bad in [
            "admin.internal/x.example.com",
            "x.example.com.....",
            "x.example.com:notaport",
            "admin@x.example.com",
            "a b",
            "[::1",
            "[zz]",
            "[::1]x",
            "a:b:80",
            "x:123456",
            "x:99999",
            "x:65536",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    use super::*;
    use http::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn first_match_then_default() {
        let routes = vec![
            Route::new("a").host("shop.example.com".parse().unwrap()),
            Route::new("b")
                .host("*.example.com".parse().unwrap())
                .path_prefix("/img"),
            Route::new("c").path_prefix("/img"),
        ];
        let r = Router::new(&routes, Some("d"), &["a", "b", "c", "d"]).unwrap();
        assert_eq!(r.route(Some("shop.example.com"), "/img/x"), Some(0));
        assert_eq!(r.route(Some("cdn.example.com"), "/img/x"), Some(1));
        assert_eq!(r.route(Some("cdn.example.com"), "/other"), Some(3));
        assert_eq!(r.route(Some("other.org"), "/img/x"), Some(2));
        assert_eq!(r.route(None, "/img"), Some(2));
        let r = Router::new(&routes[..1], None, &["a"]).unwrap();
        assert_eq!(r.route(Some("x"), "/"), None);
        assert!(matches!(
            Router::new(&routes, Some("zz"), &["a", "b", "c"]),
            Err(Error::UnknownPool(p)) if p == "zz"
        ));
    }

    #[test]
    fn host_is_normalised() {
        assert_eq!(
            request_host(&parts("/", &[("host", "WWW.Example.com:8080")])).as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            request_host(&parts("/", &[("host", "[::1]:80")])).as_deref(),
            Some("[::1]")
        );
        assert_eq!(
            request_host(&parts("http://a.example/x", &[("host", "b.example")])).as_deref(),
            Some("a.example")
        );
        assert_eq!(request_host(&parts("/", &[])), None);
    }

    proptest::proptest! {
        #[test]
        fn cookie_parsing_never_panics(header in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), name in "[a-z]{1,8}") {
            let _ = cookie_value(&header, name.as_bytes());
        }

        #[test]
        fn host_parsing_never_panics(host in "[ -~]{0,60}") {
            if let Ok(v) = http::HeaderValue::from_str(&host) {
                let mut p = parts("/", &[]);
                p.headers.insert(HOST, v);
                if let Some(h) = request_host(&p) {
                    proptest::prop_assert!(!h.bytes().any(|b| b.is_ascii_uppercase()));
                }
            }
        }
    }

    #[test]
    fn hash_keys() {
        let p = parts(
            "/p?q=1",
            &[
                ("x-user", "alice"),
                ("cookie", "a=1; sid=\"abc\""),
                ("cookie", "z=2"),
            ],
        );
        assert_eq!(hash_key(&HashKeySource::ClientAddr, &p), None);
        assert_eq!(
            hash_key(&HashKeySource::Header("x-user".parse().unwrap()), &p),
            Some(&b"alice"[..])
        );
        assert_eq!(hash_key(&HashKeySource::Uri, &p), Some(&b"/p"[..]));
        assert_eq!(hash_key(&HashKeySource::UriWhole, &p), Some(&b"/p?q=1"[..]));
        assert_eq!(
            hash_key(&HashKeySource::Cookie("sid".into()), &p),
            Some(&b"abc"[..])
        );
        assert_eq!(
            hash_key(&HashKeySource::Cookie("z".into()), &p),
            Some(&b"2"[..])
        );
        assert_eq!(hash_key(&HashKeySource::Cookie("nope".into()), &p), None);
    }
}
