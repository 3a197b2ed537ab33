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

/// Writes of at most this many bytes in all (bytes) go out as one `send(2)` from a copy
/// on the stack rather than a `writev(2)` of their pieces.
const COALESCE_MAX: usize = 4096;

/// A vectored write to `w` at the lower cost of `send(2)` where that is cheaper (for a
/// plain TCP stream, [`super::batch::Batched`]'s writes that go out at once; over TLS the
/// copy would be one more and gain nothing, as rustls buffers the pieces anyway): one
/// non-empty piece is written as such; several of at most
/// [`COALESCE_MAX`] bytes in all (a response head and a 1 KiB body, hyper's two iovecs)
/// are copied together and written at once; larger ones go as they are. `writev(2)`
/// costs about 0.2 µs more in the kernel than `send(2)` (its VFS path and iovec import,
/// `perf` against HAProxy, which sends), 1.5 % of a proxied keep-alive request; copying
/// 4 KiB costs less than that. Returns what the write returns: the bytes written, from the
/// front of the pieces taken in order.
pub(crate) fn poll_write_coalesced<W: AsyncWrite + Unpin + ?Sized>(
    w: Pin<&mut W>,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let mut pieces = bufs.iter().filter(|b| !b.is_empty());
    let (Some(first), second) = (pieces.next(), pieces.next()) else {
        return w.poll_write(cx, &[]);
    };
    let Some(second) = second else {
        return w.poll_write(cx, first);
    };
    let total = bufs.iter().map(|b| b.len()).sum::<usize>();
    if total > COALESCE_MAX {
        return w.poll_write_vectored(cx, bufs);
    }
    let mut copy = [0u8; COALESCE_MAX];
    let mut len = 0;
    for piece in [first, second].into_iter().chain(pieces) {
        copy[len..len + piece.len()].copy_from_slice(piece);
        len += piece.len();
    }
    w.poll_write(cx, &copy[..len])
}

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
    /// An HTTP/2 connection's frames as they are written, when their DATA is noted in
    /// `activity` ([`Prefixed::noting_writes`]).
    frames: Option<DataMeter>,
}

/// Follows the HTTP/2 frames of a byte stream (RFC 9113 §4.1: a 9-byte header, its first
/// 3 bytes the payload length, the 4th the type) fed in pieces of any size, and tells how
/// many of each piece's bytes are DATA payload (type 0). The server's side of a connection
/// is frames from its first byte (its preface is a SETTINGS frame).
#[derive(Debug, Default)]
pub(crate) struct DataMeter {
    /// The header being read, and how much of it is.
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to come, and whether it is DATA.
    remaining: usize,
    data: bool,
}

impl DataMeter {
    /// Feeds the next bytes written; returns how many of them are DATA payload.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> usize {
        let mut data = 0;
        while !bytes.is_empty() {
            if self.remaining == 0 {
                let take = (9 - self.have).min(bytes.len());
                self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have == 9 {
                    let h = &self.header;
                    self.remaining =
                        (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    self.data = h[3] == 0;
                    self.have = 0;
                }
                continue;
            }
            let take = self.remaining.min(bytes.len());
            if self.data {
                data += take;
            }
            self.remaining -= take;
            bytes = &bytes[take..];
        }
        data
    }
}

/// What a client whose request head was not complete in time gets before the connection
/// closes (HAProxy's `timeout http-request` answers 408 too).
pub(crate) const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
content-type: text/plain\r\ncontent-length: 20\r\nconnection: close\r\n\r\n\
408 Request Timeout\n";

impl<T> Prefixed<T> {
    /// The stream inside.
    pub(crate) fn get_mut(&mut self) -> &mut T {
        &mut self.inner.inner
    }

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
            frames: None,
        }
    }

    /// Reads the HTTP/2 frames written (this wraps the plain stream, under any TLS) and
    /// notes each write that carried DATA in the activity ([`Activity::wrote`]): the
    /// connection's response progress, which its streams' send watches weigh. Control
    /// frames (PING answers, SETTINGS acknowledgements, WINDOW_UPDATEs) are no progress,
    /// or a client pinging with its windows shut would keep its streams (and their backend
    /// connections) for good.
    pub(crate) fn noting_writes(mut self) -> Self {
        self.frames = Some(DataMeter::default());
        self
    }

    /// Feeds what a write took (its `n` first bytes of `bufs`) to the frame meter.
    fn noted<'b>(&mut self, bufs: impl IntoIterator<Item = &'b [u8]>, r: &Poll<io::Result<usize>>) {
        let (Some(meter), Poll::Ready(Ok(n))) = (&mut self.frames, r) else {
            return;
        };
        let mut left = *n;
        let mut data = 0;
        for b in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(b.len());
            data += meter.feed(&b[..take]);
            left -= take;
        }
        if data > 0 {
            self.activity.wrote();
        }
    }

    /// Passes a write's result on; a write that has to wait starts (or keeps) the stall
    /// timer, and fails once it has run out.
    fn bound<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if r.is_ready() {
            if self.stalled && self.frames.is_some() {
                self.activity.set_write_waiting(false);
            }
            self.stalled = false;
            return r;
        }
        if !self.stalled {
            self.stalled = true;
            if self.frames.is_some() {
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
        this.noted([buf], &r);
        this.bound(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.noted(bufs.iter().map(|b| &**b), &r);
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

/// An upgraded connection's side as the tunnel copies it.
pub(crate) trait TunnelIo: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> TunnelIo for T {}

/// An upgraded connection as the tunnel copies it. When hyper holds it as `TokioIo<T>` it
/// is unwrapped, `go_direct` turns its writes direct (no longer queued:
/// [`super::batch::Batched::go_direct`]) and the bytes hyper read past the head are put
/// back in front; otherwise (a type the caller does not batch, which is a bug when
/// `expected`) it is used through hyper as it is.
pub(crate) fn tunnel_io<T>(
    up: hyper::upgrade::Upgraded,
    expected: bool,
    go_direct: impl FnOnce(&mut T),
) -> Box<dyn TunnelIo>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match up.downcast::<hyper_util::rt::TokioIo<T>>() {
        Ok(parts) => {
            let mut io = parts.io.into_inner();
            go_direct(&mut io);
            Box::new(Rewind::new(parts.read_buf.to_vec(), io))
        }
        Err(up) => {
            debug_assert!(!expected, "the upgraded connection is not of the type made");
            Box::new(hyper_util::rt::TokioIo::new(up))
        }
    }
}

/// Yields `prefix` first, then reads from `inner`; writes go straight to `inner`: a client
/// socket with the bytes read past its PROXY header put back, for the TLS handshake
/// (they are the start of its ClientHello), or an upgraded connection's stream with the
/// bytes hyper read past the `101` head.
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
    use proptest::prelude::*;
    use tokio::io::AsyncReadExt;

    /// A frame of `len` payload bytes of type `ty`.
    fn frame(ty: u8, len: usize) -> Vec<u8> {
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            ty,
            0,
            0,
            0,
            0,
            1,
        ];
        f.resize(9 + len, 0xAA);
        f
    }

    #[test]
    fn data_is_told_from_control_frames() {
        let mut m = DataMeter::default();
        // SETTINGS, a PING answer, a WINDOW_UPDATE: no DATA, however many.
        let mut control = frame(4, 6);
        for _ in 0..10 {
            control.extend(frame(6, 8));
            control.extend(frame(8, 4));
        }
        assert_eq!(m.feed(&control), 0);
        // HEADERS then DATA of 100 and an empty DATA (its end).
        let mut resp = frame(1, 20);
        resp.extend(frame(0, 100));
        resp.extend(frame(0, 0));
        assert_eq!(m.feed(&resp), 100);
    }

    proptest! {
        /// Whatever the pieces the frames are written in, the DATA counted is theirs.
        #[test]
        fn any_split_counts_the_same(
            frames in proptest::collection::vec((0u8..10, 0usize..300), 0..20),
            cuts in proptest::collection::vec(1usize..64, 0..200),
        ) {
            let bytes: Vec<u8> = frames.iter().flat_map(|&(t, l)| frame(t, l)).collect();
            let expected: usize = frames.iter().filter(|f| f.0 == 0).map(|f| f.1).sum();
            let mut m = DataMeter::default();
            let mut counted = 0;
            let mut rest = &bytes[..];
            for c in cuts.iter().cycle().take(bytes.len() + 1) {
                if rest.is_empty() {
                    break;
                }
                let n = (*c).min(rest.len());
                counted += m.feed(&rest[..n]);
                rest = &rest[n..];
            }
            counted += m.feed(rest);
            prop_assert_eq!(counted, expected);
        }
    }

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

    /// Records each write: `(vectored, pieces)`; accepts at most `limit` bytes a call.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<(bool, Vec<Vec<u8>>)>,
        limit: Option<usize>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = self.limit.map_or(buf.len(), |l| l.min(buf.len()));
            self.calls.push((false, vec![buf.to_vec()]));
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let n = self.limit.map_or(total, |l| l.min(total));
            self.calls
                .push((true, bufs.iter().map(|b| b.to_vec()).collect()));
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn coalesced(w: &mut Recorder, pieces: &[&[u8]]) -> io::Result<usize> {
        let bufs: Vec<io::IoSlice<'_>> = pieces.iter().map(|p| io::IoSlice::new(p)).collect();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match poll_write_coalesced(Pin::new(w), &mut cx, &bufs) {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("the recorder never waits"),
        }
    }

    /// A head and a small body go out as one plain write of both, in order; one piece
    /// (empty ones aside) as itself; more than 4 KiB in all as the vectored write it was.
    /// The count returned is the writer's, partial writes included.
    #[test]
    fn small_vectored_writes_are_coalesced_into_one_plain_write() {
        let mut w = Recorder::default();
        assert_eq!(
            coalesced(&mut w, &[b"HTTP/1.1 200 OK\r\n\r\n", &[b'x'; 1024]]).unwrap(),
            1043
        );
        let mut both = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        both.extend_from_slice(&[b'x'; 1024]);
        assert_eq!(w.calls, [(false, vec![both])]);

        let mut w = Recorder::default();
        assert_eq!(
            coalesced(&mut w, &[b"", b"GET / HTTP/1.1\r\n\r\n", b""]).unwrap(),
            18
        );
        assert_eq!(w.calls, [(false, vec![b"GET / HTTP/1.1\r\n\r\n".to_vec()])]);

        let mut w = Recorder::default();
        assert_eq!(coalesced(&mut w, &[]).unwrap(), 0);
        assert_eq!(w.calls, [(false, vec![Vec::new()])]);

        let (a, b, c) = (vec![1u8; 2000], vec![2u8; 2000], vec![3u8; 96]);
        let mut w = Recorder::default();
        assert_eq!(coalesced(&mut w, &[&a, &b, &c]).unwrap(), 4096);
        assert_eq!(w.calls.len(), 1);
        assert!(!w.calls[0].0);
        assert_eq!(w.calls[0].1[0], [a.clone(), b.clone(), c].concat());

        let big = vec![4u8; 4097 - 17];
        let mut w = Recorder::default();
        assert_eq!(coalesced(&mut w, &[&[5u8; 17], &big]).unwrap(), 4097);
        assert_eq!(w.calls, [(true, vec![vec![5u8; 17], big])]);

        let mut w = Recorder {
            limit: Some(10),
            ..Recorder::default()
        };
        assert_eq!(coalesced(&mut w, &[b"abcdefgh", b"ijklmnop"]).unwrap(), 10);
    }
}
