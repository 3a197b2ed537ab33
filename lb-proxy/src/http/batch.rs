//! Small writes of one event-loop turn sent together, after the turn's tasks have run (the
//! shape of HAProxy's polling loop, which sends what its tasks produced once they have all
//! run).
//!
//! A keep-alive request through the HTTP mode is two small writes: the request to the
//! backend and the response to the client. Written the moment each task produces them, the
//! requests of one batch of readiness events reach a backend spread out over the batch, and
//! the backend (and the client) wake up for more of them: about twice as many wake-ups on
//! their CPU as HAProxy causes, and a wake-up costs the writing side an inter-processor
//! interrupt in `sock_def_readable` (a VM exit on a virtual machine). Queued instead, and
//! sent back to back by one flusher task that runs after the tasks already queued in the
//! same turn, they wake nginx and wrk about 30 % less often per request and cost the proxy
//! 3 % less CPU per request (benches/README.md, 2026-11-25).
//!
//! [`WriteBatch`] is the queue and its flusher task; [`Batched`] is a TCP stream whose
//! writes of at most [`BATCH_MAX`] bytes go into it. Only on tokio's current-thread
//! scheduler (lb-node's `nbthread = 1`), where the flusher is queued behind the tasks
//! already woken in the turn and runs on the same thread; on other runtimes
//! [`WriteBatch::for_current_runtime`] gives `None` and writes go out at once.
//!
//! What stays as a plain stream's writes:
//! - Order: a larger write, a shutdown and a drop send the stream's queued bytes first.
//! - Back-pressure: what a flush could not send (the peer's window is full) is this
//!   stream's *backlog*; its owner is woken, sends it itself before anything else (from any
//!   read, write, flush or shutdown, waiting for the socket to be writable as any write
//!   does), and queues nothing more until it is gone.
//! - Errors: a failed send (a reset) is returned by the stream's next write, flush or
//!   shutdown.
//! - Tunnels: an upgraded connection goes [direct](Batched::go_direct) before its tunnel
//!   copies it. `tokio::io::copy_bidirectional` flushes once after a write and may then
//!   only read that stream (or nothing, once its direction is done), so a backlog left by
//!   a short flush would wait there, unbounded by the client timeout, for another write.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use nix::sys::socket::{send, MsgFlags};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The largest write (bytes, all of a vectored write's pieces) that is queued; larger ones
/// go out at once, after the stream's queued bytes. A request or response head with a
/// 1 KiB body fits.
pub(crate) const BATCH_MAX: usize = 4096;

/// Queued bytes (all streams) past which a write flushes the queue itself instead of
/// waiting for the flusher (bytes): bounds the queue's memory within one turn.
const QUEUE_MAX: usize = 256 * 1024;

/// The queue's buffer capacity kept after a flush (bytes); a larger one is given back.
const KEEP_CAPACITY: usize = 64 * 1024;

/// How many times at most the flusher goes to the back of the run queue again while the
/// tasks ahead of it keep writing. Against 0, 2 woke wrk about 15 % less often per
/// keep-alive request and cost 0.5–1.5 % less CPU per request in two A/Bs (about their
/// spread); 8 woke nginx and wrk no less often than 2.
const REQUEUES: usize = 2;

/// Puts the current task at the back of the scheduler's run queue, once: a task that wakes
/// itself is queued behind those already queued (on tokio's current-thread scheduler;
/// `tokio::task::yield_now` would wait for the IO driver's next poll too, and was slower).
async fn requeue() {
    let mut queued = false;
    std::future::poll_fn(|cx| {
        if queued {
            return Poll::Ready(());
        }
        queued = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// The small writes of a turn, queued for one flush (see the module docs).
#[derive(Debug)]
pub(crate) struct WriteBatch {
    inner: Mutex<Queue>,
    /// Wakes the flusher task when the queue stops being empty.
    wake: Arc<tokio::sync::Notify>,
    /// Flushes done so far: a stream that queued at flush `n` knows its bytes are sent
    /// once this is past `n`, without locking the queue.
    flushes: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    /// The queued writes' bytes, back to back.
    bytes: Vec<u8>,
    /// The queued writes in order: the stream's key and where its bytes end in `bytes`
    /// (they start where the previous write's end).
    writes: Vec<(usize, usize)>,
    /// The streams, by key (a free slot is `None`).
    streams: Vec<Option<StreamState>>,
    free: Vec<usize>,
}

/// What the queue knows of one stream.
#[derive(Debug)]
struct StreamState {
    fd: RawFd,
    /// Bytes a flush could not send, for the owner to send first.
    backlog: Vec<u8>,
    /// A send that failed, for the owner's next operation.
    error: Option<io::Error>,
    /// The owner's task, woken when a backlog or an error appears.
    waker: Option<Waker>,
    /// Set with `backlog`/`error`: the owner looks at it (without the lock) on every
    /// operation.
    attention: Arc<AtomicBool>,
}

impl WriteBatch {
    /// A batch and its flusher task, on tokio's current-thread scheduler; `None` on any
    /// other (there the writes go out at once).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub(crate) fn for_current_runtime() -> Option<Arc<Self>> {
        let handle = tokio::runtime::Handle::current();
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
            return None;
        }
        let wake = Arc::new(tokio::sync::Notify::new());
        let batch = Arc::new(Self {
            inner: Mutex::new(Queue::default()),
            wake: Arc::clone(&wake),
            flushes: AtomicU64::new(0),
        });
        let weak: Weak<Self> = Arc::downgrade(&batch);
        handle.spawn(async move {
            loop {
                // Woken by a first queued write, or by the batch's drop.
                wake.notified().await;
                // The tasks queued ahead of the flusher have run; those they woke (a
                // client's request handed to its backend connection's task) run behind it
                // and may write too: go behind them while they do.
                for _ in 0..REQUEUES {
                    let Some(queued) = weak.upgrade().map(|b| b.lock().bytes.len()) else {
                        return;
                    };
                    requeue().await;
                    if weak.upgrade().map(|b| b.lock().bytes.len()) == Some(queued) {
                        break;
                    }
                }
                match weak.upgrade() {
                    Some(batch) => batch.flush(),
                    None => return,
                }
            }
        });
        Some(batch)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a stream; returns its key and its attention flag.
    fn register(&self, fd: RawFd) -> (usize, Arc<AtomicBool>) {
        let attention = Arc::new(AtomicBool::new(false));
        let state = StreamState {
            fd,
            backlog: Vec::new(),
            error: None,
            waker: None,
            attention: Arc::clone(&attention),
        };
        let mut q = self.lock();
        let key = match q.free.pop() {
            Some(k) => {
                q.streams[k] = Some(state);
                k
            }
            None => {
                q.streams.push(Some(state));
                q.streams.len() - 1
            }
        };
        (key, attention)
    }

    /// Removes a stream once its queued bytes are sent (its socket closes next).
    fn deregister(&self, key: usize, queued: bool) {
        if queued {
            self.flush();
        }
        let mut q = self.lock();
        if let Some(slot) = q.streams.get_mut(key) {
            *slot = None;
            q.free.push(key);
        }
    }

    /// Queues `bufs` for stream `key`, whose task `waker` is, and returns the flush it
    /// waits for; `None` (nothing queued) while the stream has a backlog or an error.
    fn queue(&self, key: usize, bufs: &[io::IoSlice<'_>], waker: &Waker) -> Option<u64> {
        let mut q = self.lock();
        if q.bytes.len() >= QUEUE_MAX {
            drop(q);
            self.flush();
            q = self.lock();
        }
        let Queue {
            bytes,
            writes,
            streams,
            ..
        } = &mut *q;
        let state = streams.get_mut(key)?.as_mut()?;
        if !state.backlog.is_empty() || state.error.is_some() {
            return None;
        }
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.waker = Some(waker.clone());
        }
        let first = writes.is_empty();
        let start = bytes.len();
        for b in bufs {
            bytes.extend_from_slice(b);
        }
        match writes.last_mut() {
            // The same stream's previous write, right before: one send.
            Some((k, end)) if *k == key && *end == start => *end = bytes.len(),
            _ => writes.push((key, bytes.len())),
        }
        let flush = self.flushes.load(Ordering::Acquire);
        drop(q);
        if first {
            self.wake.notify_one();
        }
        Some(flush)
    }

    /// Sends every queued write, in order, each with one `send(2)`. What a stream's socket
    /// does not take becomes its backlog (and its later queued writes join it); a failed
    /// send becomes its error. Either wakes its owner.
    pub(crate) fn flush(&self) {
        let mut wake = Vec::new();
        {
            let mut q = self.lock();
            let Queue {
                bytes,
                writes,
                streams,
                ..
            } = &mut *q;
            let mut start = 0;
            for &(key, end) in writes.iter() {
                let data = &bytes[start..end];
                start = end;
                let Some(Some(state)) = streams.get_mut(key) else {
                    continue;
                };
                if state.error.is_some() {
                    continue;
                }
                if !state.backlog.is_empty() {
                    state.backlog.extend_from_slice(data);
                    continue;
                }
                let sent = send_all(state.fd, data);
                match sent {
                    Ok(n) if n == data.len() => continue,
                    Ok(n) => state.backlog.extend_from_slice(&data[n..]),
                    Err(e) => state.error = Some(e),
                }
                state.attention.store(true, Ordering::Release);
                wake.extend(state.waker.take());
            }
            writes.clear();
            bytes.clear();
            if bytes.capacity() > KEEP_CAPACITY {
                bytes.shrink_to(KEEP_CAPACITY);
            }
            self.flushes.fetch_add(1, Ordering::AcqRel);
        }
        for w in wake {
            w.wake();
        }
    }

    /// Takes stream `key`'s backlog (appended to `into`) and error, and clears its
    /// attention flag.
    fn take_backlog(&self, key: usize, into: &mut Vec<u8>) -> Option<io::Error> {
        let mut q = self.lock();
        let state = q.streams.get_mut(key)?.as_mut()?;
        state.attention.store(false, Ordering::Release);
        if into.is_empty() {
            std::mem::swap(into, &mut state.backlog);
        } else {
            into.append(&mut state.backlog);
        }
        state.error.take()
    }
}

impl Drop for WriteBatch {
    fn drop(&mut self) {
        // The flusher task ends (it holds only a weak reference).
        self.wake.notify_one();
    }
}

/// Sends `data` on `fd` without waiting: the bytes the socket took, which may be fewer
/// (none: `Ok(0)`, the socket's buffer is full).
fn send_all(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    let mut sent = 0;
    while sent < data.len() {
        match send(fd, &data[sent..], flags) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => {
                if sent > 0 {
                    // What went out went out; the error comes with the next send.
                    break;
                }
                return Err(e.into());
            }
        }
    }
    Ok(sent)
}

/// A TCP stream whose small writes go through a [`WriteBatch`] (see the module docs), or
/// straight out when it has none.
#[derive(Debug)]
pub(crate) struct Batched {
    stream: TcpStream,
    batch: Option<Member>,
    /// Set by [`Batched::go_direct`]: nothing more is queued.
    direct: bool,
}

/// A stream's membership of its batch.
#[derive(Debug)]
struct Member {
    batch: Arc<WriteBatch>,
    key: usize,
    attention: Arc<AtomicBool>,
    /// The flush its last queued write waits for (`None`: nothing queued).
    queued: Option<u64>,
    /// Bytes a flush could not send, being sent by this stream itself.
    backlog: Vec<u8>,
    /// How far `backlog` has been sent.
    sent: usize,
    /// A send of this stream failed: every later write, flush and shutdown fails so.
    failed: Option<io::ErrorKind>,
}

impl Member {
    /// Whether bytes of this stream are still queued.
    fn has_queued(&mut self) -> bool {
        match self.queued {
            Some(n) if self.batch.flushes.load(Ordering::Acquire) <= n => true,
            _ => {
                self.queued = None;
                false
            }
        }
    }
}

impl Batched {
    /// `stream`, its small writes queued in `batch` (none: written at once).
    pub(crate) fn new(stream: TcpStream, batch: Option<&Arc<WriteBatch>>) -> Self {
        let batch = batch.map(|b| {
            let (key, attention) = b.register(stream.as_raw_fd());
            Member {
                batch: Arc::clone(b),
                key,
                attention,
                queued: None,
                backlog: Vec::new(),
                sent: 0,
                failed: None,
            }
        });
        Self {
            stream,
            batch,
            direct: false,
        }
    }

    /// Stops queueing this stream's writes: from now on they go out at once (after what
    /// is queued or held back, which the next write or flush sends first), and a full
    /// socket makes them wait, as a plain stream's. For an upgraded connection's tunnel,
    /// whose copy loop (`tokio::io::copy_bidirectional`) flushes once after a write and
    /// then may only read: the queue's back-pressure, which reaches the owner through its
    /// next write or flush, would not reach it there.
    pub(crate) fn go_direct(&mut self) {
        self.direct = true;
    }

    /// Sends this stream's backlog, if it has one (and returns its error, if a send
    /// failed): ready once nothing is left.
    fn poll_backlog(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(m) = &mut self.batch else {
            return Poll::Ready(Ok(()));
        };
        if let Some(kind) = m.failed {
            return Poll::Ready(Err(kind.into()));
        }
        if m.attention.load(Ordering::Acquire) {
            if let Some(e) = m.batch.take_backlog(m.key, &mut m.backlog) {
                m.failed = Some(e.kind());
                return Poll::Ready(Err(e));
            }
        }
        while m.sent < m.backlog.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &m.backlog[m.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => m.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if !m.backlog.is_empty() {
            m.backlog = Vec::new();
            m.sent = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Sends this stream's queued bytes now (the whole queue's, in order), then its
    /// backlog: ready once nothing of it is left anywhere.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(m) = &mut self.batch {
            if m.has_queued() {
                m.batch.flush();
                m.queued = None;
            }
        }
        self.poll_backlog(cx)
    }
}

impl Drop for Batched {
    fn drop(&mut self) {
        if let Some(m) = &mut self.batch {
            let queued = m.has_queued();
            m.batch.deregister(m.key, queued);
        }
    }
}

impl AsyncRead for Batched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A backlog is sent from whatever its owner does next (a tunnel's copy may be
        // waiting to read when its flush came back short); its error waits for a write.
        if this.batch.as_ref().is_some_and(|m| {
            m.failed.is_none() && (m.attention.load(Ordering::Relaxed) || m.sent < m.backlog.len())
        }) {
            let _ = this.poll_backlog(cx);
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Batched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.batch.is_none() {
            return super::io::poll_write_coalesced(Pin::new(&mut this.stream), cx, bufs);
        }
        let total = bufs.iter().map(|b| b.len()).sum::<usize>();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        if total <= BATCH_MAX && !this.direct {
            std::task::ready!(this.poll_backlog(cx))?;
            if let Some(m) = &mut this.batch {
                if let Some(flush) = m.batch.queue(m.key, bufs, cx.waker()) {
                    m.queued = Some(flush);
                    return Poll::Ready(Ok(total));
                }
            }
            // A flush left a backlog since: sent first.
            std::task::ready!(this.poll_backlog(cx))?;
        } else {
            std::task::ready!(this.poll_drain(cx))?;
        }
        super::io::poll_write_coalesced(Pin::new(&mut this.stream), cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Queued bytes count as flushed (they go out at the end of the turn, as a plain
    /// stream's written bytes go out when the kernel sends them); a backlog is sent. Once
    /// [direct](Batched::go_direct), queued bytes are sent too.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.direct {
            std::task::ready!(this.poll_drain(cx))?;
        } else {
            std::task::ready!(this.poll_backlog(cx))?;
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair on loopback: ours (batched in `batch`) and the peer's end.
    async fn pair(batch: &Arc<WriteBatch>) -> (Batched, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (peer, _) = listener.accept().await.unwrap();
        (Batched::new(ours, Some(batch)), peer)
    }

    /// Reads exactly `n` bytes from `peer`, within 5 s.
    async fn read_n(peer: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        tokio::time::timeout(Duration::from_secs(5), peer.read_exact(&mut got))
            .await
            .expect("the bytes in time")
            .unwrap();
        got
    }

    /// Reads from `peer` until its EOF, within 5 s.
    async fn read_to_eof(peer: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), peer.read_to_end(&mut got))
            .await
            .expect("EOF in time")
            .unwrap();
        got
    }

    /// Whether the peer has nothing to read now (asked of the socket itself: tokio's
    /// `try_read` answers from the readiness it has seen, which may be older).
    fn nothing_yet(peer: &TcpStream) -> bool {
        let mut b = [0u8; 1];
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        matches!(
            nix::sys::socket::recv(peer.as_raw_fd(), &mut b, flags),
            Err(nix::errno::Errno::EAGAIN)
        )
    }

    #[tokio::test]
    async fn small_writes_go_out_together_once_the_turn_has_run() {
        let batch = WriteBatch::for_current_runtime().expect("a current-thread runtime");
        let (mut a, mut pa) = pair(&batch).await;
        let (mut b, mut pb) = pair(&batch).await;
        let before = batch.flushes.load(Ordering::Acquire);
        a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        b.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        a.write_all(b"\r\n").await.unwrap();
        // Queued: nothing sent while this task runs.
        assert!(nothing_yet(&pa) && nothing_yet(&pb));
        tokio::task::yield_now().await;
        assert_eq!(read_n(&mut pa, 18).await, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(read_n(&mut pb, 17).await, b"HTTP/1.1 200 OK\r\n");
        // One flush for the three writes (and the first write woke the flusher once).
        assert_eq!(batch.flushes.load(Ordering::Acquire), before + 1);
    }

    #[tokio::test]
    async fn a_large_write_goes_at_once_after_what_is_queued() {
        let batch = WriteBatch::for_current_runtime().unwrap();
        let (mut a, mut pa) = pair(&batch).await;
        let large: Vec<u8> = (0..BATCH_MAX + 1000).map(|i| (i % 251) as u8).collect();
        a.write_all(b"head").await.unwrap();
        a.write_all(&large).await.unwrap();
        // Both out before any yield: the queued head first.
        let mut want = b"head".to_vec();
        want.extend_from_slice(&large);
        assert_eq!(read_n(&mut pa, want.len()).await, want);
        a.write_all(b"tail").await.unwrap();
        assert!(nothing_yet(&pa));
        tokio::task::yield_now().await;
        assert_eq!(read_n(&mut pa, 4).await, b"tail");
    }

    #[tokio::test]
    async fn shutdown_and_drop_send_what_is_queued_first() {
        let batch = WriteBatch::for_current_runtime().unwrap();
        let (mut a, mut pa) = pair(&batch).await;
        a.write_all(b"last words").await.unwrap();
        a.shutdown().await.unwrap();
        assert_eq!(read_to_eof(&mut pa).await, b"last words");

        let (mut b, mut pb) = pair(&batch).await;
        b.write_all(b"bye").await.unwrap();
        drop(b);
        assert_eq!(read_to_eof(&mut pb).await, b"bye");
        // The dropped stream's slot is free for the next one.
        let (_c, _pc) = pair(&batch).await;
        assert_eq!(batch.lock().streams.iter().flatten().count(), 2);
    }

    /// A peer that reads nothing fills the socket: what a flush cannot send waits with the
    /// stream, which stops taking writes until it is sent; then all of it arrives, in
    /// order.
    #[tokio::test]
    async fn a_full_socket_holds_the_rest_back_in_order() {
        let batch = WriteBatch::for_current_runtime().unwrap();
        let (a, mut pa) = pair(&batch).await;
        socket2::SockRef::from(&a.stream)
            .set_send_buffer_size(4096)
            .unwrap();
        let total = 4_000_000;
        let mut a = a;
        let writer = tokio::spawn(async move {
            let mut i = 0usize;
            let mut stuck = 0;
            while i < total {
                let chunk: Vec<u8> = (i..i + 1000).map(|j| (j % 251) as u8).collect();
                let w = tokio::time::timeout(Duration::from_millis(50), a.write_all(&chunk));
                match w.await {
                    Ok(r) => r.unwrap(),
                    // Held back while the peer reads nothing: waits on.
                    Err(_) => {
                        stuck += 1;
                        a.write_all(&chunk).await.unwrap();
                    }
                }
                i += 1000;
                tokio::task::yield_now().await;
            }
            a.shutdown().await.unwrap();
            stuck
        });
        // Read nothing for a while, then everything.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut got = Vec::with_capacity(total);
        tokio::time::timeout(Duration::from_secs(20), pa.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        let stuck = writer.await.unwrap();
        assert!(
            stuck > 0,
            "the writer was held back while the peer read nothing"
        );
        assert_eq!(got.len(), total);
        assert!(got.iter().enumerate().all(|(j, &b)| b == (j % 251) as u8));
    }

    #[tokio::test]
    async fn a_failed_send_fails_the_next_write() {
        let batch = WriteBatch::for_current_runtime().unwrap();
        let (mut a, pa) = pair(&batch).await;
        // The peer resets the connection.
        socket2::SockRef::from(&pa)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(pa);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut failed = false;
        for _ in 0..10 {
            if a.write_all(b"x").await.is_err() || a.flush().await.is_err() {
                failed = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(failed, "a reset stream's writes fail");
    }

    /// Reads what `peer` has now, without waiting (from the socket itself, as
    /// [`nothing_yet`]).
    fn read_now(peer: &TcpStream) -> Vec<u8> {
        let mut b = [0u8; 256];
        match nix::sys::socket::recv(peer.as_raw_fd(), &mut b, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => b[..n].to_vec(),
            Err(_) => Vec::new(),
        }
    }

    /// An upgraded connection's stream goes direct: its flush sends what was queued, and
    /// its writes go out at once, with no turn in between (loopback delivers a send
    /// before it returns).
    #[tokio::test]
    async fn a_direct_stream_sends_what_was_queued_and_queues_nothing_more() {
        let batch = WriteBatch::for_current_runtime().unwrap();
        let (mut a, pa) = pair(&batch).await;
        a.write_all(b"101 head").await.unwrap();
        assert!(nothing_yet(&pa));
        a.go_direct();
        a.flush().await.unwrap();
        assert_eq!(read_now(&pa), b"101 head");
        a.write_all(b"frame").await.unwrap();
        assert_eq!(read_now(&pa), b"frame");
        a.write_all(b"frame 2").await.unwrap();
        a.flush().await.unwrap();
        assert_eq!(read_now(&pa), b"frame 2");
    }

    #[test]
    fn no_batch_on_a_multi_thread_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(WriteBatch::for_current_runtime().is_none());
        });
    }
}
