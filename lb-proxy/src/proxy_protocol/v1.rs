//! PROXY protocol v1: one CRLF-terminated ASCII line of at most 107 bytes.
//!
//! ```text
//! PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n
//! PROXY TCP6 2001:db8::1 2001:db8::11 56324 443\r\n
//! PROXY UNKNOWN\r\n
//! ```
//!
//! # Examples
//!
//! ```
//! use lb_proxy::proxy_protocol::{v1, ProxyHeader};
//!
//! let (h, n) = v1::parse(b"PROXY UNKNOWN\r\nGET /").unwrap().unwrap();
//! assert_eq!((h, n), (ProxyHeader::Local, 15));
//! assert_eq!(v1::emit(&h), "PROXY UNKNOWN\r\n");
//! ```

use std::net::{IpAddr, SocketAddr};

use super::{ParseError, ProxyHeader, Transport};

/// The first six bytes of every v1 header.
pub const PREFIX: &[u8; 6] = b"PROXY ";

/// The longest v1 header, CRLF included (spec §2.1).
pub const MAX_LEN: usize = 107;

/// Parses a v1 header at the start of `buf`: `Ok(None)` while no CRLF was seen in the first
/// 107 bytes, else the header and its length including CRLF.
///
/// # Errors
/// [`ParseError::V1TooLong`], [`ParseError::V1Field`], [`ParseError::NoSignature`].
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ParseError> {
    let window = &buf[..buf.len().min(MAX_LEN)];
    // A bare LF, or a CR followed by anything but LF, can end no valid line: refused now,
    // not after the header timeout (a lone CR at the end may still get its LF).
    for (i, &b) in window.iter().enumerate() {
        let bad = match b {
            b'\n' => i == 0 || window[i - 1] != b'\r',
            b'\r' => window.get(i + 1).is_some_and(|&n| n != b'\n'),
            _ => false,
        };
        if bad {
            return Err(ParseError::V1LineEnd);
        }
        if b == b'\n' {
            break;
        }
    }
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= MAX_LEN {
            Err(ParseError::V1TooLong)
        } else {
            Ok(None)
        };
    };
    let line = &buf[..cr];
    let Some(rest) = line.strip_prefix(PREFIX.as_slice()) else {
        return Err(ParseError::NoSignature(buf.first().copied().unwrap_or(0)));
    };
    // "UNKNOWN" may be followed by anything, bytes that are not UTF-8 included; the
    // receiver ignores it (spec §2.1).
    if rest == b"UNKNOWN" || rest.starts_with(b"UNKNOWN ") {
        return Ok(Some((ProxyHeader::Local, cr + 2)));
    }
    let text = std::str::from_utf8(rest).map_err(|_| ParseError::V1Field(0))?;
    let mut fields = text.split(' ');
    let proto = fields.next().unwrap_or("");
    let v6 = match proto {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(ParseError::V1Field(0)),
    };
    let ip = |s: Option<&str>, i: u8| -> Result<IpAddr, ParseError> {
        let ip: IpAddr = s
            .and_then(|s| s.parse().ok())
            .ok_or(ParseError::V1Field(i))?;
        if ip.is_ipv6() != v6 {
            return Err(ParseError::V1Field(i));
        }
        Ok(ip)
    };
    let port = |s: Option<&str>, i: u8| -> Result<u16, ParseError> {
        let s = s.ok_or(ParseError::V1Field(i))?;
        // No sign, no leading zeros (spec: "0" is allowed, "080" is not).
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(ParseError::V1Field(i));
        }
        s.parse().map_err(|_| ParseError::V1Field(i))
    };
    let src = ip(fields.next(), 1)?;
    let dst = ip(fields.next(), 2)?;
    let sport = port(fields.next(), 3)?;
    let dport = port(fields.next(), 4)?;
    if fields.next().is_some() {
        return Err(ParseError::V1Field(5));
    }
    Ok(Some((
        ProxyHeader::Proxy {
            transport: Transport::Stream,
            source: SocketAddr::new(src, sport),
            destination: SocketAddr::new(dst, dport),
        },
        cr + 2,
    )))
}

/// Formats `header` as a v1 line. v1 has no UDP: a datagram header is written as `UNKNOWN`.
pub fn emit(header: &ProxyHeader) -> String {
    match header {
        ProxyHeader::Proxy {
            transport: Transport::Stream,
            source,
            destination,
        } => {
            // Mixed families as HAProxy writes them: TCP6, the IPv4 one v4-mapped.
            let (source, destination) = super::same_family(*source, *destination);
            format!(
                "PROXY {} {} {} {} {}\r\n",
                if source.is_ipv4() { "TCP4" } else { "TCP6" },
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
        }
        _ => "PROXY UNKNOWN\r\n".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of the spec, §2.1.
    static TCP4: &[u8] = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    static TCP6_MAX: &[u8] = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    static UNKNOWN_MAX: &[u8] = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";

    #[test]
    fn golden() {
        let (h, n) = parse(TCP4).unwrap().unwrap();
        assert_eq!(n, TCP4.len());
        assert_eq!(
            h,
            ProxyHeader::Proxy {
                transport: Transport::Stream,
                source: "192.168.0.1:56324".parse().unwrap(),
                destination: "192.168.0.11:443".parse().unwrap(),
            }
        );
        assert_eq!(emit(&h).as_bytes(), TCP4);

        assert_eq!(TCP6_MAX.len(), 104);
        let (h, n) = parse(TCP6_MAX).unwrap().unwrap();
        assert_eq!(n, 104);
        assert_eq!(emit(&h).as_bytes(), TCP6_MAX);

        assert_eq!(UNKNOWN_MAX.len(), 107);
        assert_eq!(
            parse(UNKNOWN_MAX).unwrap(),
            Some((ProxyHeader::Local, MAX_LEN))
        );
        // Whatever follows UNKNOWN is ignored, bytes that are not UTF-8 too.
        assert_eq!(
            parse(b"PROXY UNKNOWN \xff\r\n").unwrap(),
            Some((ProxyHeader::Local, 17))
        );
        assert_eq!(parse(b"PROXY UNKNOWNX\r\n"), Err(ParseError::V1Field(0)));
    }

    #[test]
    fn malformed() {
        // A line end other than CRLF is refused at once, however short the line (HAProxy
        // resets such a connection; the line was waited for until the header timeout).
        for line in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            b"PROXY TCP4 1.2\n",
            b"PROXY UNKNOWN\n",
        ] {
            assert_eq!(parse(line), Err(ParseError::V1LineEnd), "{line:?}");
        }
        // A CR alone at the end may still get its LF.
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"), Ok(None));
        let bad: &[(&[u8], ParseError)] = &[
            (
                b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
                ParseError::V1Field(0),
            ),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", ParseError::V1Field(1)),
            (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", ParseError::V1Field(2)),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
                ParseError::V1Field(3),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n",
                ParseError::V1Field(4),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 02\r\n",
                ParseError::V1Field(4),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
                ParseError::V1Field(5),
            ),
            (
                b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
                ParseError::V1Field(1),
            ),
        ];
        for (input, err) in bad {
            assert_eq!(
                parse(input),
                Err(*err),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(parse(&[b'P'; 200]), Err(ParseError::V1TooLong));
    }
}
