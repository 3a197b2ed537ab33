//! Tokio drivers for the PROXY protocol codecs.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{parse, v2, ParseError, ProxyHeader, Version};
use crate::error::{Error, Result};

/// The largest header accepted, in bytes (HAProxy's limit too: a header must fit its 16 KiB
/// buffer). Real v2 headers, TLVs included, take a few hundred; the format allows 64 KiB,
/// which a client could make the proxy hold for each connection until the header timeout.
const MAX_HEADER: usize = 16 * 1024;

/// Reads one PROXY header (v1 or v2) from a freshly accepted `stream` within `timeout`
/// (HAProxy `accept-proxy`).
///
/// Returns the header and the bytes read past it (payload the client sent in the same
/// segment), which the caller must forward before anything else read from `stream`.
///
/// # Errors
/// [`Error::ProxyHeader`] for a malformed header or a client that sends something else,
/// [`Error::ProxyHeaderTimeout`] when the header is not complete in time, [`Error::ClientIo`]
/// when the client closes or fails first. The caller should close the connection.
///
/// # Cancel safety
/// Not cancel safe: bytes read before cancellation are lost.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(ProxyHeader, Vec<u8>)> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        loop {
            if buf.len() == buf.capacity() {
                // Only what the header announces (v2), up to the limit: no doubling past it.
                let wanted = announced(&buf).unwrap_or(buf.len() * 2).min(MAX_HEADER);
                buf.reserve(wanted.saturating_sub(buf.len()).max(256));
            }
            let n = stream.read_buf(&mut buf).await.map_err(Error::ClientIo)?;
            if n == 0 {
                return Err(Error::ClientIo(std::io::ErrorKind::UnexpectedEof.into()));
            }
            if let Some((header, used)) = parse(&buf)? {
                return Ok((header, buf.split_off(used)));
            }
            if let Some(total) = announced(&buf).filter(|&t| t > MAX_HEADER) {
                return Err(ParseError::V2TooLong(total).into());
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| Error::ProxyHeaderTimeout(timeout))?
}

/// The total size a v2 header at the start of `buf` announces, once its fixed part is in.
fn announced(buf: &[u8]) -> Option<usize> {
    if buf.len() < v2::HEADER_LEN || !buf.starts_with(&v2::SIGNATURE) {
        return None;
    }
    v2::Packet::new_unchecked(buf).check_len().err()
}

/// Writes `header` to a freshly connected backend `stream` (HAProxy `send-proxy` /
/// `send-proxy-v2`).
///
/// # Errors
/// [`Error::BackendIo`].
///
/// # Cancel safety
/// Not cancel safe: part of the header may have been written.
pub async fn write_header<S: AsyncWrite + Unpin>(
    stream: &mut S,
    header: &ProxyHeader,
    version: Version,
) -> Result<()> {
    stream
        .write_all(&header.to_bytes(version))
        .await
        .map_err(Error::BackendIo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn reads_split_header_and_keeps_payload() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let w = tokio::spawn(async move {
            a.write_all(b"PROXY TCP4 10.0.0.1 ").await.unwrap();
            tokio::task::yield_now().await;
            a.write_all(b"10.0.0.2 1 80\r\nhello").await.unwrap();
            a
        });
        let (h, rest) = read_header(&mut b, Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            h,
            ProxyHeader::tcp(
                "10.0.0.1:1".parse().unwrap(),
                "10.0.0.2:80".parse().unwrap()
            )
        );
        assert_eq!(rest, b"hello");
        drop(w.await);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn missing_header_times_out() {
        let (_a, mut b) = tokio::io::duplex(1024);
        let e = read_header(&mut b, Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::ProxyHeaderTimeout(d) if d == Duration::from_secs(3)));
    }

    /// A v2 header announcing more than 16 KiB is refused as soon as its fixed part is in,
    /// not buffered up to 64 KiB until the timeout.
    #[tokio::test]
    async fn oversized_v2_header_is_refused_at_once() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let mut fixed = v2::SIGNATURE.to_vec();
        fixed.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        a.write_all(&fixed).await.unwrap();
        let e = read_header(&mut b, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::ProxyHeader(ParseError::V2TooLong(t)) if t == 16 + 0xffff),
            "{e}"
        );
        // Just under the limit is read in full.
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let mut h = v2::SIGNATURE.to_vec();
        let len = MAX_HEADER - v2::HEADER_LEN;
        h.extend_from_slice(&[0x20, 0x00]);
        h.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        h.resize(MAX_HEADER, 0);
        a.write_all(&h).await.unwrap();
        let (header, rest) = read_header(&mut b, Duration::from_secs(60)).await.unwrap();
        assert_eq!(header, ProxyHeader::Local);
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn garbage_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let e = read_header(&mut b, Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::ProxyHeader(_)), "{e}");
    }
}
