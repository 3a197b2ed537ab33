//! A client stream with bytes already read from it (past a PROXY header) put back in front,
//! which tells the connection's [`Activity`] when request bytes arrive and bounds how long
//! a write may wait for the client to read (the client timeout, HAProxy `timeout client`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::body::{Activity, Timer};

/// Yields `prefix` first, then reads from `inner`; writes go straight to `inner`. Every
/// read that yields bytes is reported to `activity` (for the request-head timer). A write
/// that cannot make progress for `write_timeout` (the client reads nothing) fails with
/// [`io::ErrorKind::TimedOut`], which closes the connection, and is noted in `activity`.
#[derive(Debug)]
pub(crate) struct Prefixed<T> {
    /// The stream with the prefix in front.
    inner: Rewind<T>,
    activity: Arc<Activity>,
    write_timeout: Duration,
    /// The stalled write's timer: made on the first write that has to wait, re-armed when
    /// a later one has to.
    stall: Timer,
    /// Whether `stall` runs for the write now waiting.
    stalled: bool,
    /// Whether [`REQUEST_TIMEOUT`] was written (tried once), once the head timed out.
    timeout_answered: bool,
    /// Note every write in `activity` ([`Prefixed::noting_writes`]).
    note_writes: bool,
}

/// The smallest write to an HTTP/2 client that counts as its responses' progress
/// ([`Prefixed::noting_writes`]).
const PROGRESS_BYTES: usize = 64;

/// What a client whose request head was not complete in time gets before the connection
/// closes (HAProxy's `timeout http-request` answers 408 too).
pub(crate) const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
content-type: text/plain\r\ncontent-length: 20\r\nconnection: close\r\n\r\n\
408 Request Timeout\n";

impl<T> Prefixed<T> {
    pub(crate) fn new(
        prefix: Vec<u8>,
        inner: T,
        activity: Arc<Activity>,
        write_timeout: Duration,
    ) -> Self {
        Self {
            inner: Rewind::new(prefix, inner),
            activity,
            write_timeout,
            stall: Timer::default(),
            stalled: false,
            timeout_answered: false,
            note_writes: false,
        }
    }

    /// Notes every write that took bytes in the activity ([`Activity::wrote`]): an HTTP/2
    /// connection's progress, which its streams' send watches weigh.
    pub(crate) fn noting_writes(mut self) -> Self {
        self.note_writes = true;
        self
    }

    /// Notes a write of at least [`PROGRESS_BYTES`]: a control frame's answer alone (a
    /// PING's, a SETTINGS acknowledgement, a WINDOW_UPDATE: 9 to 17 bytes, about 40 over
    /// TLS) is no response progress, or a client pinging with its windows shut would keep
    /// its streams (and their backend connections) for good.
    fn noted(&self, r: &Poll<io::Result<usize>>) {
        if self.note_writes && matches!(r, Poll::Ready(Ok(n)) if *n >= PROGRESS_BYTES) {
            self.activity.wrote();
        }
    }

    /// Passes a write's result on; a write that has to wait starts (or keeps) the stall
    /// timer, and fails once it has run out.
    fn bound<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if r.is_ready() {
            if self.stalled && self.note_writes {
                self.activity.set_write_waiting(false);
            }
            self.stalled = false;
            return r;
        }
        if !self.stalled {
            self.stalled = true;
            if self.note_writes {
                self.activity.set_write_waiting(true);
            }
            self.stall
                .arm(tokio::time::Instant::now() + self.write_timeout);
        }
        if self.stall.poll_expired(cx).is_ready() {
            self.activity.set_write_stalled();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client read nothing within the client timeout",
            )));
        }
        Poll::Pending
    }
}

/// Writes too (the 408 of a request head that timed out), hence `AsyncWrite`.
impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.head_timed_out() {
            // Best effort, once, without waiting: a client that reads nothing gets no more.
            if !this.timeout_answered {
                this.timeout_answered = true;
                let mut sent = 0;
                while sent < REQUEST_TIMEOUT.len() {
                    match Pin::new(&mut this.inner).poll_write(cx, &REQUEST_TIMEOUT[sent..]) {
                        Poll::Ready(Ok(n)) if n > 0 => sent += n,
                        _ => break,
                    }
                }
            }
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not complete in time",
            )));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.noted(&r);
        this.bound(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.noted(&r);
        this.bound(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    // Bounded as writes are: over TLS the last of a response (up to rustls's buffer, about
    // 64 KiB) and the close_notify wait here, not in `poll_write`, for a client that reads
    // nothing. A flush shows no partial progress: that tail must go within the client
    // timeout (30 s by default: a reader slower than about 2 KiB/s is cut there).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.bound(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.bound(cx, r)
    }
}

/// Yields `prefix` first, then reads from `inner`; writes go straight to `inner`: a client
/// socket with the bytes read past its PROXY header put back, for the TLS handshake
/// (they are the start of its ClientHello).
#[derive(Debug)]
pub(crate) struct Rewind<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Rewind<T> {
    pub(crate) fn new(prefix: Vec<u8>, inner: T) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn prefix_then_inner() {
        let activity = Arc::new(Activity::new());
        let mut p = Prefixed::new(
            b"GET ".to_vec(),
            io::Cursor::new(b"/ HTTP/1.1".to_vec()),
            Arc::clone(&activity),
            Duration::from_secs(1),
        );
        let mut out = String::new();
        p.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "GET / HTTP/1.1");
        let mut r = Rewind::new(b"\x16\x03".to_vec(), io::Cursor::new(b"\x01rest".to_vec()));
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"\x16\x03\x01rest");
    }

    /// A stream that takes every write into its buffer but never gets it out (a TLS
    /// stream whose client reads nothing: rustls buffers, the flush waits).
    struct Stuck;

    impl AsyncRead for Stuck {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Stuck {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    /// A flush or shutdown that cannot progress fails after the client timeout, as a write
    /// does: over TLS a client reading nothing held its connection for good (the response's
    /// tail and the close_notify wait in them, not in a write).
    #[tokio::test(start_paused = true)]
    async fn a_stuck_flush_or_shutdown_fails_after_the_client_timeout() {
        use tokio::io::AsyncWriteExt;
        for shutdown in [false, true] {
            let mut p = Prefixed::new(
                Vec::new(),
                Stuck,
                Arc::new(Activity::new()),
                Duration::from_millis(500),
            );
            p.write_all(b"the response").await.unwrap();
            let t0 = tokio::time::Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(60), async {
                if shutdown {
                    p.shutdown().await
                } else {
                    p.flush().await
                }
            })
            .await
            .expect("bounded by the client timeout");
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
            assert_eq!(t0.elapsed(), Duration::from_millis(500));
            assert!(p.activity.write_stalled());
        }
    }
}
