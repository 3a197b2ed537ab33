//! keepalived `SMTP_CHECK`: connect, read the greeting (220), say `HELO` (250), say `QUIT`
//! and read its reply (keepalived/check/check_smtp.c; replies as RFC 5321 §4.2).
//!
//! The reply reader is sans-IO ([`ReplyReader`]); [`SmtpProbe`] drives it over a tokio TCP
//! stream.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{elapsed, io_reason, target, tcp_connect, Probe, ProxyHeader};
use crate::tracker::ProbeOutcome;

/// keepalived's default `helo_name` (check_smtp.h `SMTP_DEFAULT_HELO`).
pub const DEFAULT_HELO_NAME: &str = "smtpchecker.keepalived.org";

/// The longest reply [`ReplyReader`] accepts, all its lines together, octets. RFC 5321
/// §4.5.3.1.5 limits a reply line to 512 octets; a greeting of several lines stays well
/// under this.
pub const MAX_REPLY: usize = 8 * 1024;

/// A complete SMTP reply: its code and its last line's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (220, 250, 221, 421, 554…).
    pub code: u16,
    /// The text of the reply's last line, without the code and the line ending.
    pub text: String,
}

/// Why the bytes read are not an SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// A line that does not start with three digits followed by a space, a hyphen or the
    /// line's end; it holds the line (lossily decoded, at most 80 characters).
    Malformed(String),
    /// A line of a multiline reply with another code than the first.
    CodeChanged {
        /// The first line's code.
        first: u16,
        /// This line's code.
        then: u16,
    },
    /// A reply over [`MAX_REPLY`] octets (refused as soon as more than that are buffered).
    TooLong,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(line) => write!(f, "malformed reply line {line:?}"),
            Self::CodeChanged { first, then } => {
                write!(f, "multiline reply changed its code from {first} to {then}")
            }
            Self::TooLong => write!(f, "reply longer than {MAX_REPLY} octets"),
        }
    }
}

/// Reads one SMTP reply at a time from the bytes a server sends (RFC 5321 §4.2): lines
/// `NNN-text` continue it, the line `NNN text` (or a bare `NNN`) ends it, each ending with
/// LF (CR LF is the standard; a lone LF is accepted, as keepalived accepts it).
///
/// keepalived's `smtp_get_status` refuses a continued line (`220-…`), failing a server
/// whose greeting has several lines; this reader takes the whole reply.
///
/// # Examples
///
/// ```
/// use lb_health::probe::ReplyReader;
///
/// let mut r = ReplyReader::default();
/// r.push(b"220-mail.example.com ESMTP\r\n220 ready");
/// assert_eq!(r.next_reply(), Ok(None), "the last line has no line ending yet");
/// r.push(b"\r\n250 ok\r\n");
/// let greeting = r.next_reply().unwrap().unwrap();
/// assert_eq!((greeting.code, greeting.text.as_str()), (220, "ready"));
/// assert_eq!(r.next_reply().unwrap().unwrap().code, 250);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
}

impl ReplyReader {
    /// Appends bytes read from the server.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Octets buffered and not consumed yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The first complete line buffered (up to and including its LF), if any, not
    /// consumed; at most [`MAX_REPLY`] octets are looked at.
    pub fn first_line(&self) -> Option<&[u8]> {
        let look = &self.buf[..self.buf.len().min(MAX_REPLY)];
        look.iter().position(|b| *b == b'\n').map(|nl| &look[..=nl])
    }

    /// The next complete reply, consumed from the buffer; `Ok(None)` while its last line
    /// has not fully arrived.
    ///
    /// # Errors
    /// [`ReplyError`] for a line that is not a reply line, a code that changes within a
    /// reply, or a reply over [`MAX_REPLY`] octets.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        let mut at = 0;
        let mut first = None;
        while let Some(nl) = self.buf[at..].iter().position(|b| *b == b'\n') {
            let line_end = at + nl;
            // A reply over the limit is refused before its line is read, as it is when the
            // limit is passed with the line unfinished: the same error however the bytes
            // were split into reads.
            if line_end + 1 > MAX_REPLY {
                return Err(ReplyError::TooLong);
            }
            let mut line = &self.buf[at..line_end];
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            let (code, last, text) = parse_line(line)?;
            match first {
                None => first = Some(code),
                Some(f) if f != code => {
                    return Err(ReplyError::CodeChanged {
                        first: f,
                        then: code,
                    })
                }
                Some(_) => {}
            }
            at = line_end + 1;
            if last {
                let reply = Reply {
                    code,
                    text: String::from_utf8_lossy(text).into_owned(),
                };
                self.buf.drain(..at);
                return Ok(Some(reply));
            }
        }
        if self.buf.len() > MAX_REPLY {
            return Err(ReplyError::TooLong);
        }
        Ok(None)
    }
}

/// One reply line without its line ending: the code, whether it is the reply's last line,
/// and its text.
fn parse_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let malformed = || {
        let text: String = String::from_utf8_lossy(line).chars().take(80).collect();
        ReplyError::Malformed(text)
    };
    let digits = line.get(..3).ok_or_else(malformed)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(malformed());
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None => Ok((code, true, &[])),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(malformed()),
    }
}

/// keepalived `SMTP_CHECK`: connects to the backend (or `connect_ip`/`connect_port`),
/// expects the greeting `220`, sends `HELO helo_name`, expects `250`, then sends `QUIT`
/// and waits for its reply (any code), as keepalived's checker does; then it closes.
///
/// The whole conversation must end within the timeout (keepalived applies
/// `connect_timeout` to each read and write). Any other code, a malformed reply, a closed
/// connection or the timeout fails the check with the reason. keepalived's deprecated
/// `host { }` sub-blocks are not supported: give a real server several checks instead, as
/// keepalived advises.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_health::probe::{Probe, SmtpProbe};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let addr = listener.local_addr().unwrap();
/// tokio::spawn(async move {
///     let (mut s, _) = listener.accept().await.unwrap();
///     let mut buf = [0u8; 256];
///     s.write_all(b"220 mx ready\r\n").await.unwrap();
///     let _ = s.read(&mut buf).await; // HELO
///     s.write_all(b"250 mx\r\n").await.unwrap();
///     let _ = s.read(&mut buf).await; // QUIT
///     s.write_all(b"221 bye\r\n").await.unwrap();
/// });
/// let outcome = SmtpProbe::new().probe(addr, Duration::from_secs(1)).await;
/// assert!(outcome.is_up(), "{}", outcome.reason);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SmtpProbe {
    helo_name: String,
    connect_port: Option<u16>,
    connect_ip: Option<IpAddr>,
    bindto: Option<IpAddr>,
    send_proxy: Option<ProxyHeader>,
}

impl Default for SmtpProbe {
    /// keepalived's `SMTP_CHECK {}`: `HELO smtpchecker.keepalived.org`.
    fn default() -> Self {
        Self::new()
    }
}

impl SmtpProbe {
    /// A probe saying `HELO` with keepalived's default name, [`DEFAULT_HELO_NAME`].
    pub fn new() -> Self {
        Self {
            helo_name: DEFAULT_HELO_NAME.to_owned(),
            connect_port: None,
            connect_ip: None,
            bindto: None,
            send_proxy: None,
        }
    }

    /// keepalived `helo_name`: the name sent with `HELO`. Line breaks are removed (they
    /// would end the command early).
    #[must_use]
    pub fn helo_name(mut self, name: &str) -> Self {
        self.helo_name = name.replace(['\r', '\n'], "");
        self
    }

    target_options! {
        connect_port,
        connect_ip,
        bindto,
        send_proxy,
    }

    /// The conversation; `Err` holds the reason it failed.
    async fn converse(&self, to: SocketAddr) -> Result<String, String> {
        let mut s = tcp_connect(to, self.bindto, self.send_proxy)
            .await
            .map_err(|e| io_reason(&format!("connect to {to}"), &e))?;
        let mut reader = ReplyReader::default();
        let greeting = read_reply(&mut s, &mut reader, "greeting").await?;
        if greeting.code != 220 {
            return Err(format!(
                "greeting {} {:?}, expected 220",
                greeting.code, greeting.text
            ));
        }
        s.write_all(format!("HELO {}\r\n", self.helo_name).as_bytes())
            .await
            .map_err(|e| io_reason("send HELO", &e))?;
        let helo = read_reply(&mut s, &mut reader, "HELO").await?;
        if helo.code != 250 {
            return Err(format!(
                "HELO answered {} {:?}, expected 250",
                helo.code, helo.text
            ));
        }
        s.write_all(b"QUIT\r\n")
            .await
            .map_err(|e| io_reason("send QUIT", &e))?;
        // keepalived (`smtp_engine_thread`, SMTP_RECV_QUIT) takes the first complete line
        // as the answer to QUIT, whatever it holds (`bye`, the first line of `221-…`); a
        // connection closed or silent before a whole line does not pass.
        let mut chunk = [0u8; 512];
        loop {
            if let Some(line) = reader.first_line() {
                let line = line.trim_ascii_end();
                return Ok(match line.get(..3) {
                    Some(code) if code.iter().all(u8::is_ascii_digit) => format!(
                        "greeting 220, HELO 250, QUIT {}",
                        String::from_utf8_lossy(code)
                    ),
                    _ => format!(
                        "greeting 220, HELO 250, QUIT answered {:?}",
                        String::from_utf8_lossy(line)
                    ),
                });
            }
            if reader.buffered() > MAX_REPLY {
                return Err(format!("QUIT reply: no line end in {MAX_REPLY} octets"));
            }
            match s.read(&mut chunk).await {
                Ok(0) => return Err("connection closed before the QUIT reply".into()),
                Ok(n) => reader.push(&chunk[..n]),
                Err(e) => return Err(io_reason("read the QUIT reply", &e)),
            }
        }
    }
}

/// Reads until `reader` has a complete reply. Bounded: each read adds octets, and the
/// reader fails past [`MAX_REPLY`]; the caller's deadline bounds the time.
async fn read_reply(
    s: &mut tokio::net::TcpStream,
    reader: &mut ReplyReader,
    what: &str,
) -> Result<Reply, String> {
    let mut chunk = [0u8; 1024];
    loop {
        match reader.next_reply() {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            Err(e) => return Err(format!("{what} reply: {e}")),
        }
        match s.read(&mut chunk).await {
            Ok(0) => return Err(format!("connection closed before the {what} reply")),
            Ok(n) => reader.push(&chunk[..n]),
            Err(e) => return Err(io_reason(&format!("read the {what} reply"), &e)),
        }
    }
}

#[async_trait]
impl Probe for SmtpProbe {
    /// # Cancel safety
    /// Cancel safe: a dropped probe closes its connection.
    async fn probe(&self, addr: SocketAddr, timeout: Duration) -> ProbeOutcome {
        let to = target(addr, self.connect_ip, self.connect_port);
        let start = tokio::time::Instant::now();
        let deadline = super::deadline(start, timeout);
        match tokio::time::timeout_at(deadline, self.converse(to)).await {
            Ok(Ok(reason)) => ProbeOutcome::up(reason, elapsed(start)),
            Ok(Err(reason)) => ProbeOutcome::down(format!("{to}: {reason}"), elapsed(start)),
            Err(_) => ProbeOutcome::down(
                format!("{to}: no SMTP conversation within {timeout:?}"),
                elapsed(start),
            ),
        }
    }

    fn kind(&self) -> &'static str {
        "smtp"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(bytes: &[u8]) -> Vec<Result<Reply, ReplyError>> {
        let mut r = ReplyReader::default();
        r.push(bytes);
        let mut out = Vec::new();
        for _ in 0..10 {
            match r.next_reply() {
                Ok(Some(x)) => out.push(Ok(x)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    fn reply(code: u16, text: &str) -> Result<Reply, ReplyError> {
        Ok(Reply {
            code,
            text: text.into(),
        })
    }

    #[test]
    fn single_and_multiline_replies() {
        assert_eq!(replies(b"220 mx ESMTP\r\n"), [reply(220, "mx ESMTP")]);
        assert_eq!(replies(b"250\r\n"), [reply(250, "")]);
        assert_eq!(replies(b"221 bye\n"), [reply(221, "bye")], "a lone LF");
        assert_eq!(
            replies(b"220-first\r\n220-second\r\n220 last\r\n250 ok\r\n"),
            [reply(220, "last"), reply(250, "ok")]
        );
        assert_eq!(replies(b"220-first\r\n220 la"), []);
    }

    #[test]
    fn bad_replies_say_why() {
        assert_eq!(
            replies(b"HTTP/1.1 400 Bad Request\r\n"),
            [Err(ReplyError::Malformed(
                "HTTP/1.1 400 Bad Request".into()
            ))]
        );
        assert_eq!(
            replies(b"22\r\n"),
            [Err(ReplyError::Malformed("22".into()))]
        );
        assert_eq!(
            replies(b"220x\r\n"),
            [Err(ReplyError::Malformed("220x".into()))]
        );
        assert_eq!(
            replies(b"220-a\r\n250 b\r\n"),
            [Err(ReplyError::CodeChanged {
                first: 220,
                then: 250
            })]
        );
        let mut long = b"220-".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_REPLY));
        assert_eq!(replies(&long), [Err(ReplyError::TooLong)]);
        let mut many = Vec::new();
        for _ in 0..MAX_REPLY / 8 {
            many.extend_from_slice(b"220-ab\r\n");
        }
        many.extend_from_slice(b"220-ab\r\n");
        assert_eq!(replies(&many), [Err(ReplyError::TooLong)]);
    }

    #[test]
    fn a_reply_over_the_limit_is_refused_however_it_arrives() {
        // Found by fuzz/fuzz_targets/smtp_reply.rs: in one read this reply was taken, in
        // two (the first over the limit) refused; and a malformed line over the limit was
        // `Malformed` in one read, `TooLong` in two.
        let mut long = b"250 ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_REPLY));
        long.extend_from_slice(b"\r\n");
        assert_eq!(replies(&long), [Err(ReplyError::TooLong)]);
        let mut r = ReplyReader::default();
        r.push(&long[..MAX_REPLY + 1]);
        assert_eq!(r.next_reply(), Err(ReplyError::TooLong));
        // At the limit, whole, it is a reply.
        long.truncate(MAX_REPLY - 2);
        long.extend_from_slice(b"\r\n");
        assert_eq!(replies(&long).len(), 1);
        assert!(replies(&long)[0].is_ok());
        let mut bad = b"2x0 ".to_vec();
        bad.extend(std::iter::repeat_n(b'a', MAX_REPLY));
        bad.extend_from_slice(b"\r\n");
        assert_eq!(replies(&bad), [Err(ReplyError::TooLong)]);
    }

    #[test]
    fn helo_names_lose_line_breaks() {
        let p = SmtpProbe::new().helo_name("a\r\nQUIT\r\nb");
        assert_eq!(p.helo_name, "aQUITb");
        assert_eq!(SmtpProbe::default().helo_name, DEFAULT_HELO_NAME);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Arbitrary bytes, pushed in arbitrary pieces, never panic the reader and
            /// never make it hold more than MAX_REPLY octets plus the last piece.
            #[test]
            fn any_bytes_read_or_fail(
                pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..40),
            ) {
                let mut r = ReplyReader::default();
                for p in pieces {
                    r.push(&p);
                    for _ in 0..400 {
                        match r.next_reply() {
                            Ok(Some(reply)) => prop_assert!(reply.code <= 999),
                            Ok(None) | Err(_) => break,
                        }
                    }
                    prop_assert!(r.buf.len() <= MAX_REPLY + 300);
                    if r.next_reply().is_err() {
                        break;
                    }
                }
            }
        }
    }
}
