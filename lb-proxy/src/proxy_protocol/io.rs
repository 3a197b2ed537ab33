//! Tokio drivers for the PROXY protocol codecs.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{parse, ProxyHeader, Version};
use crate::error::{Error, Result};

/// The largest header accepted, in bytes: the v2 fixed part plus a maximal `len`.
const MAX_HEADER: usize = super::v2::HEADER_LEN + u16::MAX as usize;

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
                buf.reserve(buf.len().min(MAX_HEADER - buf.len()).max(256));
            }
            let n = stream.read_buf(&mut buf).await.map_err(Error::ClientIo)?;
            if n == 0 {
                return Err(Error::ClientIo(std::io::ErrorKind::UnexpectedEof.into()));
            }
            if let Some((header, used)) = parse(&buf)? {
                return Ok((header, buf.split_off(used)));
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| Error::ProxyHeaderTimeout(timeout))?
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
