//! The body of a response sent to a client: a backend's, streamed, or the proxy's own.
//! Streaming a backend body to its end hands the backend connection back to the pool.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use lb_core::RequestGuard;
use tokio::sync::Notify;

use super::access_log::Termination;
use super::client::{ConnPool, IdleList};

/// No request head has started arriving ([`Activity::head_started`]).
const NO_HEAD: u64 = u64::MAX;

/// A timer made on its first arming and re-armed after: one allocation per connection or
/// body, not per wait, and re-arming only moves it in tokio's timer wheel. The client
/// body's and client writes' gap timers (HAProxy `timeout client`), the backend's response
/// and body-gap timers (`timeout server`) are each one.
#[derive(Debug, Default)]
pub(crate) struct Timer(Option<Pin<Box<tokio::time::Sleep>>>);

impl Timer {
    /// Runs until `deadline` from now on.
    pub(crate) fn arm(&mut self, deadline: tokio::time::Instant) {
        match &mut self.0 {
            Some(s) => s.as_mut().reset(deadline),
            None => self.0 = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    /// Whether it was ever armed.
    pub(crate) fn is_armed(&self) -> bool {
        self.0.is_some()
    }

    /// Ready once the deadline last armed has passed; pending while never armed.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}
/// [`Activity`]'s `upload` flag: the current request's body is still being uploaded.
const UPLOAD_OPEN: u64 = 1;
/// [`Activity`]'s `upload` flag: that upload waits for the client to send more.
const UPLOAD_WAITING: u64 = 2;

/// Request activity on one client connection, for its timers (the request-head timeout,
/// HAProxy's `timeout http-request`; the keep-alive timeout, `timeout http-keep-alive`)
/// and for a graceful stop that still serves a connection's first request.
#[derive(Debug)]
pub(crate) struct Activity {
    base: tokio::time::Instant,
    in_flight: AtomicU32,
    /// Milliseconds since `base` when the last request finished (or the connection opened).
    idle_since_ms: AtomicU64,
    /// Milliseconds since `base` when the first bytes of the next request head arrived, or
    /// [`NO_HEAD`].
    head_started_ms: AtomicU64,
    /// Whether a request has started on this connection.
    served: AtomicBool,
    /// Notified (a stored permit) when the first request starts.
    first_request: Notify,
    /// Milliseconds since `base` of the last progress of the current request's body upload
    /// (its start, then each frame), or [`NO_HEAD`] for a request without a body.
    upload_ms: AtomicU64,
    /// The current request's upload, in one word so that it changes atomically: its
    /// generation (`>> 2`, one per upload started on the connection), [`UPLOAD_OPEN`]
    /// while its body is still being uploaded and [`UPLOAD_WAITING`] while that upload
    /// waits for the client to send more (its body was asked for a frame and had none: the
    /// client timeout runs then, not the backend's). A body updates it only while its own
    /// generation is current: one whose last frame is polled late (the backend answered
    /// early, the request ended and the next began) cannot touch the next request's.
    upload: AtomicU64,
    /// Set when a write to the client stalled past the client timeout.
    write_stalled: AtomicBool,
    /// Set when the request-head timeout ran out on a partly received head: the next read
    /// answers 408 and ends the connection ([`Prefixed`](super::io::Prefixed)).
    head_timed_out: AtomicBool,
    /// Milliseconds since `base` of the last write to the client, noted for an HTTP/2
    /// connection only ([`Activity::wrote`]).
    last_write_ms: AtomicU64,
    /// A write to the client waits (its socket is full), noted for an HTTP/2 connection
    /// only: the connection's own write timer runs.
    write_waiting: AtomicBool,
}

/// Which of a client connection's timers runs, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientTimer {
    /// A request is in flight: no client timer runs (the backend's does).
    Busy,
    /// Waiting for a request head to be complete: the connection's first request from
    /// the moment it opened, a later one from its first byte.
    Head(tokio::time::Instant),
    /// Waiting with nothing received since the last response.
    Idle(tokio::time::Instant),
    /// The request's response has ended but its body is still coming (an early answer: a
    /// 413, a 401, a 202): since its last progress, or the response's end. The client
    /// timeout bounds it (HAProxy's `timeout client` goes on for the transfer), not the
    /// request-head timer — and a backend that stopped reading it cannot hold the
    /// connection for good.
    Upload(tokio::time::Instant),
}

impl Activity {
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::opened_at(tokio::time::Instant::now())
    }

    /// A connection whose first request head is timed from `opened` (an HTTPS connection's
    /// from the start of its TLS handshake: the two share one `header_read`).
    pub(crate) fn opened_at(opened: tokio::time::Instant) -> Self {
        Self {
            base: opened,
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(NO_HEAD),
            served: AtomicBool::new(false),
            first_request: Notify::new(),
            upload_ms: AtomicU64::new(NO_HEAD),
            upload: AtomicU64::new(0),
            write_stalled: AtomicBool::new(false),
            head_timed_out: AtomicBool::new(false),
            last_write_ms: AtomicU64::new(0),
            write_waiting: AtomicBool::new(false),
        }
    }

    /// How long the request head now complete took from its first byte. When no byte was
    /// noted (it came with the previous request's, pipelined), from the previous
    /// response's end; for a connection's first request, from its opening.
    pub(crate) fn head_elapsed(&self) -> std::time::Duration {
        let first = self.head_started_ms.load(Ordering::Acquire);
        let from = if first != NO_HEAD {
            self.at(first)
        } else if self.served() {
            self.at(self.idle_since_ms.load(Ordering::Acquire))
        } else {
            self.base
        };
        from.elapsed()
    }

    /// Whether bytes of a request head not yet complete have arrived.
    pub(crate) fn head_received(&self) -> bool {
        self.head_started_ms.load(Ordering::Acquire) != NO_HEAD
    }

    /// The request-head timeout ran out on a partly received head: the connection's next
    /// read sends 408 and fails.
    pub(crate) fn time_out_head(&self) {
        self.head_timed_out.store(true, Ordering::Release);
    }

    /// Whether [`time_out_head`](Self::time_out_head) was called.
    pub(crate) fn head_timed_out(&self) -> bool {
        self.head_timed_out.load(Ordering::Acquire)
    }

    /// The current request has a body: its upload starts now. Returns the upload's
    /// generation, which its body passes to every later update.
    pub(crate) fn upload_started(&self) -> u64 {
        self.upload_ms.store(self.now_ms(), Ordering::Release);
        let previous = self
            .upload
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some((((u >> 2) + 1) << 2) | UPLOAD_OPEN)
            })
            .unwrap_or_else(|u| u);
        (previous >> 2) + 1
    }

    /// Changes the flags of upload `generation` with `f`, if it is still the current one
    /// (else does nothing).
    fn update_upload(&self, generation: u64, f: impl Fn(u64) -> u64) {
        let _ = self
            .upload
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u >> 2 == generation).then(|| f(u))
            });
    }

    /// A frame of upload `generation`'s body arrived (`end`: the last one). A stale
    /// generation's progress (its request has ended) is ignored; a frame racing its
    /// request's end may still move `upload_ms` by a few microseconds.
    fn upload_progressed(&self, generation: u64, end: bool) {
        if self.upload.load(Ordering::Acquire) >> 2 != generation {
            return;
        }
        self.upload_ms.store(self.now_ms(), Ordering::Release);
        if end {
            self.update_upload(generation, |u| u & !(UPLOAD_OPEN | UPLOAD_WAITING));
        }
    }

    /// Upload `generation` starts (`true`) or stops (`false`) waiting for the client.
    fn upload_wait(&self, generation: u64, waiting: bool) {
        self.update_upload(generation, |u| {
            if waiting && u & UPLOAD_OPEN != 0 {
                u | UPLOAD_WAITING
            } else {
                u & !UPLOAD_WAITING
            }
        });
    }

    /// Whether the current request's body is still being uploaded (its backend connection
    /// is then still busy sending it).
    pub(crate) fn upload_open(&self) -> bool {
        self.upload.load(Ordering::Acquire) & UPLOAD_OPEN != 0
    }

    /// Whether the current request's body is waiting for the client to send more. While
    /// it is, the backend has all there was to send and is not held to its response
    /// timeout: the client timeout decides (HAProxy `cD`, not `sD`).
    pub(crate) fn upload_waiting(&self) -> bool {
        self.upload.load(Ordering::Acquire) & UPLOAD_WAITING != 0
    }

    /// When the current request's body last made progress, if it has one: the backend's
    /// response timer runs from then (HAProxy's `timeout server` is an inactivity timeout,
    /// and a backend receiving an upload is not idle).
    pub(crate) fn upload_progress(&self) -> Option<tokio::time::Instant> {
        match self.upload_ms.load(Ordering::Acquire) {
            NO_HEAD => None,
            ms => Some(self.at(ms)),
        }
    }

    /// Notes a write of response DATA to the client (an HTTP/2 connection's: its streams'
    /// progress).
    pub(crate) fn wrote(&self) {
        self.last_write_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// When DATA was last written to the client (or the connection opened), as far as
    /// [`Activity::wrote`] noted.
    pub(crate) fn last_write(&self) -> tokio::time::Instant {
        self.at(self.last_write_ms.load(Ordering::Relaxed))
    }

    /// Notes that a write to the client waits (`true`) or no longer does.
    pub(crate) fn set_write_waiting(&self, waiting: bool) {
        self.write_waiting.store(waiting, Ordering::Relaxed);
    }

    /// Whether a write to the client waits ([`Activity::set_write_waiting`]).
    pub(crate) fn write_waiting(&self) -> bool {
        self.write_waiting.load(Ordering::Relaxed)
    }

    /// Notes that a write to the client stalled past the client timeout.
    pub(crate) fn set_write_stalled(&self) {
        self.write_stalled.store(true, Ordering::Release);
    }

    /// Whether a write to the client stalled past the client timeout.
    pub(crate) fn write_stalled(&self) -> bool {
        self.write_stalled.load(Ordering::Acquire)
    }

    /// No upload (a plain load when there was none): a new generation with no flags, so
    /// that whatever an earlier body still does is stale.
    fn reset_upload(&self) {
        if self.upload_ms.load(Ordering::Relaxed) != NO_HEAD
            || self.upload.load(Ordering::Relaxed) & (UPLOAD_OPEN | UPLOAD_WAITING) != 0
        {
            self.upload_ms.store(NO_HEAD, Ordering::Release);
            let _ = self
                .upload
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    Some(((u >> 2) + 1) << 2)
                });
        }
    }

    fn at(&self, ms: u64) -> tokio::time::Instant {
        self.base + std::time::Duration::from_millis(ms)
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// When the connection fell idle (its last request ended, or it opened), or `None`
    /// while a request is in flight: the keep-alive timer of an HTTP/2 connection, whose
    /// frames between requests (PING, SETTINGS, WINDOW_UPDATE) are no request head.
    pub(crate) fn idle_since(&self) -> Option<tokio::time::Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| self.at(self.idle_since_ms.load(Ordering::Acquire)))
    }

    /// Whether a request has started on this connection.
    pub(crate) fn served(&self) -> bool {
        self.served.load(Ordering::Acquire)
    }

    /// Resolves once the first request has started (at once if it already has).
    pub(crate) async fn first_request(&self) {
        if !self.served() {
            self.first_request.notified().await;
        }
    }

    /// Notes bytes read from the client: the first ones between requests start the head
    /// timer. One relaxed load per read otherwise.
    pub(crate) fn bytes_read(&self) {
        if self.head_started_ms.load(Ordering::Relaxed) == NO_HEAD
            && self.in_flight.load(Ordering::Acquire) == 0
            && !self.upload_open()
        {
            self.head_started_ms.store(self.now_ms(), Ordering::Release);
        }
    }

    /// The timer that runs now: the request-head deadline (`header_read` after the
    /// connection opened, for its first request, or after the first byte of a later one),
    /// else the keep-alive deadline (`idle` after the last response).
    pub(crate) fn timer(
        &self,
        header_read: std::time::Duration,
        idle: std::time::Duration,
    ) -> ClientTimer {
        if self.in_flight.load(Ordering::Acquire) != 0 {
            return ClientTimer::Busy;
        }
        if self.upload_open() {
            let ended = self.at(self.idle_since_ms.load(Ordering::Acquire));
            return ClientTimer::Upload(self.upload_progress().map_or(ended, |p| p.max(ended)));
        }
        if !self.served() {
            return ClientTimer::Head(self.base + header_read);
        }
        let head = self.head_started_ms.load(Ordering::Acquire);
        if head != NO_HEAD {
            return ClientTimer::Head(self.at(head) + header_read);
        }
        ClientTimer::Idle(self.at(self.idle_since_ms.load(Ordering::Acquire)) + idle)
    }
}

/// An HTTP/2 stream's response as its connection watches it, for the client timeout.
/// hyper's h2 server polls a stream's body only while the client's flow-control window has
/// room: a client that stops opening it (reads nothing, though its socket does) leaves the
/// body unpolled, so none of the body's own timers runs, and no socket write waits either.
/// The body notes when it handed a frame over and when it was asked for the next; the
/// connection looks at each stream's [`SendWatch::stalled_since`] on its timer and cancels
/// a stream stalled past the client timeout while no DATA was written to the connection
/// either ([`SendWatch::cancel`]: the stream's task ends, and h2 resets the stream). A
/// backend chunk of hundreds of KiB that a slow client drains bit by bit is not taken for
/// a stall: its DATA is written meanwhile.
#[derive(Debug)]
pub(crate) struct SendWatch {
    base: tokio::time::Instant,
    /// Milliseconds since `base` when a frame was handed to hyper that has not asked for
    /// the next one yet, or [`NO_HEAD`] while it has (or nothing was handed).
    handed_ms: AtomicU64,
    /// Set by the connection: the stream is to end.
    cancelled: AtomicBool,
    /// Set as the stream's task ends for it (not after it finished on its own).
    reset: AtomicBool,
    /// The stream's task, woken to see `cancelled`.
    waker: futures::task::AtomicWaker,
}

impl SendWatch {
    pub(crate) fn new() -> Self {
        Self {
            base: tokio::time::Instant::now(),
            handed_ms: AtomicU64::new(NO_HEAD),
            cancelled: AtomicBool::new(false),
            reset: AtomicBool::new(false),
            waker: futures::task::AtomicWaker::new(),
        }
    }

    /// Ends the stream: its task, woken, sees it ([`SendWatch::poll_cancelled`]).
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether [`SendWatch::cancel`] was called.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// The stream's task is ending for the cancel (its response is cut short).
    pub(crate) fn mark_reset(&self) {
        self.reset.store(true, Ordering::Release);
    }

    /// Whether the stream was cut short by a cancel ([`SendWatch::mark_reset`]).
    pub(crate) fn was_reset(&self) -> bool {
        self.reset.load(Ordering::Acquire)
    }

    /// Ready once [`SendWatch::cancel`] was called; registers the task's waker otherwise.
    pub(crate) fn poll_cancelled(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.cancelled.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.cancelled.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// hyper asks for a frame.
    fn polled(&self) {
        if self.handed_ms.load(Ordering::Relaxed) != NO_HEAD {
            self.handed_ms.store(NO_HEAD, Ordering::Relaxed);
        }
    }

    /// A frame was handed over (the last one too: hyper holds it until the window has
    /// room).
    fn handed(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.handed_ms.store(ms, Ordering::Relaxed);
    }

    /// Since when hyper has not asked for the next frame (the client's window is shut),
    /// if it has not.
    pub(crate) fn stalled_since(&self) -> Option<tokio::time::Instant> {
        match self.handed_ms.load(Ordering::Relaxed) {
            NO_HEAD => None,
            ms => Some(self.base + std::time::Duration::from_millis(ms)),
        }
    }
}

/// Counts a request in flight on its client connection until dropped.
#[derive(Debug)]
pub(crate) struct ActiveRequest(Arc<Activity>);

impl ActiveRequest {
    pub(crate) fn new(a: &Arc<Activity>) -> Self {
        // The next request starts without an upload: whatever the previous one's body
        // still does is stale from now on.
        a.reset_upload();
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        // The head is complete: its timer stops.
        if a.head_started_ms.load(Ordering::Relaxed) != NO_HEAD {
            a.head_started_ms.store(NO_HEAD, Ordering::Release);
        }
        // A plain load first: only a connection's first request pays for the swap.
        if !a.served.load(Ordering::Acquire) && !a.served.swap(true, Ordering::AcqRel) {
            // `notify_one` keeps a permit when nobody waits yet: the wait cannot miss it.
            a.first_request.notify_one();
        }
        Self(Arc::clone(a))
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(self.0.now_ms(), Ordering::Release);
        // A body still coming after its response (an early answer) stays this upload
        // until the next request starts (`ActiveRequest::new`): its progress and its end
        // go on being noted, and the client timeout bounds it (`ClientTimer::Upload`). Its
        // backend no longer waits for it: no `UPLOAD_WAITING`.
        let still_coming = self.0.upload.load(Ordering::Acquire) & UPLOAD_OPEN != 0;
        if still_coming {
            let _ = self
                .0
                .upload
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    Some(u & !UPLOAD_WAITING)
                });
        } else {
            self.0.reset_upload();
        }
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What goes back to the pool when a backend body is complete.
#[derive(Debug)]
pub(crate) struct Release {
    pub(crate) pool: Arc<ConnPool>,
    pub(crate) list: Arc<IdleList>,
    pub(crate) tx: super::client::Sender,
    pub(crate) request: RequestGuard,
    /// The client connection's activity, for a request with a body: a backend that
    /// answered before it had the whole body is still busy receiving it, and its
    /// connection is not handed to the next request.
    pub(crate) upload: Option<Arc<Activity>>,
}

/// The body of a request sent to a backend: the client's, with the client timeout on its
/// gaps (HAProxy `timeout client`) and its progress noted in the connection's
/// [`Activity`] (which moves the backend's response deadline).
#[derive(Debug)]
pub(crate) struct ClientBody {
    inner: Incoming,
    /// Boxed: bodiless requests (most) carry one null pointer, and the request, moved
    /// several times on its way to the backend connection, stays small (callgrind: 40
    /// more bytes cost about 2 % more instructions per keep-alive request in `memcpy`).
    upload: Option<Box<Upload>>,
}

#[derive(Debug)]
struct Upload {
    /// Frames taken from `inner` before the body was sent ([`prefetch`]), given first.
    prefix: std::collections::VecDeque<Result<Frame<Bytes>, hyper::Error>>,
    /// How the body failed, if it did, for the request's error to be told apart from the
    /// backend's: over HTTP/2 the backend connection reports a body's failure as its own
    /// stream's reset.
    failed: Arc<UploadFailure>,
    activity: Arc<Activity>,
    /// This upload's generation in `activity` ([`Activity::upload_started`]).
    generation: u64,
    after: std::time::Duration,
    sleep: Timer,
    /// Whether `sleep` runs for the gap now under way: the body was asked for a frame and
    /// the client had none. A gap starts when the waiting does, not at the last frame
    /// (the body may not be asked for a while, when the backend reads slowly).
    waiting: bool,
}

/// Why a client's request body failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    /// The client connection failed or broke the body's framing.
    #[error(transparent)]
    Client(#[from] hyper::Error),
    /// The client sent nothing more of its body for this long.
    #[error("client request body stalled for {0:?}")]
    Stalled(std::time::Duration),
}

/// How a client's request body failed ([`ClientBody::failure`]): 0 not, 1 broken (the
/// client went away or broke its framing), 2 stalled.
#[derive(Debug, Default)]
pub(crate) struct UploadFailure(std::sync::atomic::AtomicU8);

impl UploadFailure {
    const BROKEN: u8 = 1;
    const STALLED: u8 = 2;

    fn set(&self, stalled: bool) {
        self.0.store(
            if stalled { Self::STALLED } else { Self::BROKEN },
            Ordering::Relaxed,
        );
    }

    /// `Some(stalled)` once the body failed.
    pub(crate) fn get(&self) -> Option<bool> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v == Self::STALLED),
        }
    }
}

/// The most bytes of a request body [`prefetch`] holds for a retry.
pub(crate) const PREFETCH_LIMIT: usize = 64 * 1024;

/// What [`prefetch`] took of a request body.
#[derive(Debug)]
pub(crate) enum Prefetched {
    /// The whole body: it can be sent again.
    Complete(Bytes),
    /// Its start (possibly nothing), the rest still to come from the client.
    Partial(std::collections::VecDeque<Result<Frame<Bytes>, hyper::Error>>),
}

/// Takes the frames of `body` the client has already sent, without waiting, up to
/// [`PREFETCH_LIMIT`] bytes of data: for a backend whose refusal of a stream proves it did
/// not process it (HTTP/2's REFUSED_STREAM, GOAWAY), a body taken whole (a gRPC call's
/// message, most uploads of a few KiB) lets the request go out again.
pub(crate) fn prefetch(body: &mut Incoming) -> Prefetched {
    use futures::FutureExt as _;
    use http_body_util::BodyExt as _;
    let mut frames = std::collections::VecDeque::new();
    let mut bytes = 0usize;
    let mut data_only = true;
    loop {
        if body.is_end_stream() && data_only {
            break;
        }
        match body.frame().now_or_never() {
            // The end: the body is whole.
            Some(None) if data_only => break,
            Some(Some(Ok(f))) => {
                match f.data_ref() {
                    Some(d) => bytes += d.len(),
                    None => data_only = false,
                }
                frames.push_back(Ok(f));
                if bytes > PREFETCH_LIMIT || !data_only {
                    return Prefetched::Partial(frames);
                }
            }
            Some(Some(Err(e))) => {
                frames.push_back(Err(e));
                return Prefetched::Partial(frames);
            }
            Some(None) | None => return Prefetched::Partial(frames),
        }
    }
    let mut whole = bytes::BytesMut::with_capacity(bytes);
    for f in frames.into_iter().flatten() {
        if let Ok(d) = f.into_data() {
            whole.extend_from_slice(&d);
        }
    }
    Prefetched::Complete(whole.freeze())
}

impl UploadError {
    /// Whether `e`, a request's failure, is a client body that stalled.
    pub(crate) fn is_stall(e: &hyper::Error) -> bool {
        std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<Self>())
            .is_some_and(|u| matches!(u, Self::Stalled(_)))
    }
}

impl ClientBody {
    /// Wraps a request's body; one with content gets the client timeout `after` on its
    /// gaps and starts its upload in `activity`. A bodiless one costs nothing more.
    /// Wraps a request's body, giving `prefix` ([`prefetch`]'s frames) before the rest of
    /// `inner`; one with content gets the client timeout `after` on its gaps and starts its
    /// upload in `activity`. A bodiless one costs nothing more.
    pub(crate) fn with_prefix(
        inner: Incoming,
        prefix: std::collections::VecDeque<Result<Frame<Bytes>, hyper::Error>>,
        activity: &Arc<Activity>,
        after: std::time::Duration,
    ) -> Self {
        let upload = (!inner.is_end_stream() || !prefix.is_empty()).then(|| {
            Box::new(Upload {
                prefix,
                failed: Arc::default(),
                generation: activity.upload_started(),
                activity: Arc::clone(activity),
                after,
                sleep: Timer::default(),
                waiting: false,
            })
        });
        Self { inner, upload }
    }

    /// The client's body, and the frames of the prefix not given yet.
    pub(crate) fn into_parts(
        self,
    ) -> (
        Incoming,
        std::collections::VecDeque<Result<Frame<Bytes>, hyper::Error>>,
    ) {
        let prefix = self.upload.map(|u| u.prefix).unwrap_or_default();
        (self.inner, prefix)
    }

    /// Where the body's failure is noted, if it has one to upload.
    pub(crate) fn failure(&self) -> Option<Arc<UploadFailure>> {
        self.upload.as_ref().map(|u| Arc::clone(&u.failed))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = UploadError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UploadError>>> {
        let this = self.get_mut();
        let Some(up) = &mut this.upload else {
            return Pin::new(&mut this.inner)
                .poll_frame(cx)
                .map_err(UploadError::Client);
        };
        let (r, end) = match up.prefix.pop_front() {
            Some(f) => (
                Poll::Ready(Some(f)),
                up.prefix.is_empty() && this.inner.is_end_stream(),
            ),
            None => {
                let r = Pin::new(&mut this.inner).poll_frame(cx);
                let end = matches!(r, Poll::Ready(None)) || this.inner.is_end_stream();
                (r, end)
            }
        };
        match r {
            Poll::Pending => {
                if !up.waiting {
                    // A gap starts: the client timeout runs from now.
                    up.waiting = true;
                    up.activity.upload_wait(up.generation, true);
                    up.sleep.arm(tokio::time::Instant::now() + up.after);
                }
                if up.sleep.poll_expired(cx).is_ready() {
                    up.failed.set(true);
                    return Poll::Ready(Some(Err(UploadError::Stalled(up.after))));
                }
                Poll::Pending
            }
            Poll::Ready(r) => {
                if matches!(r, Some(Err(_))) {
                    up.failed.set(false);
                }
                // Progress first, then the end of the wait: the backend's response timer
                // never sees a wait ended without the progress that ended it.
                up.activity.upload_progressed(up.generation, end);
                if up.waiting {
                    up.waiting = false;
                    up.activity.upload_wait(up.generation, false);
                }
                Poll::Ready(r.map(|f| f.map_err(UploadError::Client)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.upload.as_ref().is_none_or(|u| u.prefix.is_empty()) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(u) = &self.upload {
            let prefix: u64 = u
                .prefix
                .iter()
                .filter_map(|f| f.as_ref().ok()?.data_ref().map(|d| d.len() as u64))
                .sum();
            // The upper bound first: a lower one above it would panic.
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + prefix);
            }
            hint.set_lower(hint.lower() + prefix);
        }
        hint
    }
}

/// Bounds the gaps in a backend's response body (HAProxy's `timeout server` is an
/// inactivity timeout that covers the body too): once `after` passes with the body
/// pending and no frame, the body fails, `report` runs, and the client connection closes.
pub(crate) struct StallGuard {
    pub(crate) after: std::time::Duration,
    /// Who to tell: the backend's counters and its pool's passive-health observer.
    report: Option<StallReport>,
    sleep: Timer,
}

/// Reports a response's final result to its backend's passive health: a stalled or broken
/// body as a failure, a complete one as a success (no allocation per response: three
/// reference-counted handles). Runs at most once per response.
pub(crate) struct StallReport {
    pub(crate) counters: Arc<super::stats::BackendCounters>,
    pub(crate) observer: Arc<dyn crate::outcome::OutcomeObserver>,
    pub(crate) backend: lb_core::Backend,
    /// The time to the response head, reported as `Outcome::Success` once the body has
    /// arrived whole; `None` when the head already was the final result (a 5xx).
    pub(crate) success: Option<std::time::Duration>,
}

impl StallReport {
    /// The body arrived whole: the response is a success (unless its head was a failure).
    fn complete(self) {
        if let Some(latency) = self.success {
            self.observer
                .observe(&self.backend, &crate::outcome::Outcome::Success { latency });
        }
    }

    /// Counts the failure: a stall (`timed_out`, also in the backend's `timeouts`) or a
    /// connection that broke mid-body.
    fn run(self, timed_out: bool) {
        if timed_out {
            super::stats::inc(&self.counters.timeouts);
        }
        // A 5xx head was the response's final result, already counted as a failure: its
        // broken body is not a second one.
        if self.success.is_none() {
            return;
        }
        self.backend.stats().record_failure();
        self.observer.observe(
            &self.backend,
            &crate::outcome::Outcome::Closed {
                stats: crate::tcp::ForwardStats::default(),
                backend_error: true,
            },
        );
    }
}

impl StallGuard {
    pub(crate) fn new(after: std::time::Duration, report: StallReport) -> Self {
        Self {
            after,
            report: Some(report),
            sleep: Timer::default(),
        }
    }

    /// Called when the body is pending: starts the gap's timer, and says whether it ran
    /// out.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.sleep.is_armed() {
            self.sleep.arm(tokio::time::Instant::now() + self.after);
        }
        self.sleep.poll_expired(cx).is_ready()
    }

    /// A frame came: the next gap starts from now.
    fn progressed(&mut self) {
        if self.sleep.is_armed() {
            self.sleep.arm(tokio::time::Instant::now() + self.after);
        }
    }
}

impl std::fmt::Debug for StallGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StallGuard")
            .field("after", &self.after)
            .finish()
    }
}

/// Why a response body failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResponseBodyError {
    /// The backend connection failed.
    #[error(transparent)]
    Backend(#[from] hyper::Error),
    /// The backend sent nothing more of the body for this long.
    #[error("backend response body stalled for {0:?}")]
    Stalled(std::time::Duration),
}

// hyper's `Incoming` holds an HTTP/2 receive stream too (with the `http2` feature): the
// backend variant is the large one and the one nearly every response has; boxing it would
// cost an allocation per request to save bytes of the rare local answer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Kind {
    Backend {
        inner: Incoming,
        release: Option<Release>,
        done: bool,
        stall: Option<StallGuard>,
    },
    Local(Option<Bytes>),
}

/// A response body for the client.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    kind: Kind,
    active: Option<ActiveRequest>,
    /// An HTTP/2 stream's count on its connection (whose timers and write stalls are the
    /// connection's; `active` is then the stream's own).
    conn: Option<ActiveRequest>,
    /// An HTTP/2 stream's send progress, watched by its connection.
    send: Option<Arc<SendWatch>>,
    /// The request's access entry, written when the body ends or is dropped.
    log: Option<Box<super::proxy::LogOnEnd>>,
}

impl ResponseBody {
    pub(crate) fn backend(
        inner: Incoming,
        release: Option<Release>,
        stall: Option<StallGuard>,
    ) -> Self {
        Self {
            kind: Kind::Backend {
                inner,
                release,
                done: false,
                stall,
            },
            active: None,
            conn: None,
            send: None,
            log: None,
        }
    }

    pub(crate) fn local(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Local((!bytes.is_empty()).then_some(bytes)),
            active: None,
            conn: None,
            send: None,
            log: None,
        }
    }

    pub(crate) fn empty() -> Self {
        Self::local(Bytes::new())
    }

    pub(crate) fn attach(&mut self, active: ActiveRequest) {
        self.active = Some(active);
    }

    /// Counts the request on its HTTP/2 connection too until the body ends (or is dropped),
    /// and notes its send progress in `send`.
    pub(crate) fn attach_conn(&mut self, conn: ActiveRequest, send: Arc<SendWatch>) {
        self.conn = Some(conn);
        self.send = Some(send);
    }

    /// Writes `log` when the body ends (or is dropped), with the bytes it carried.
    pub(crate) fn attach_log(&mut self, log: Box<super::proxy::LogOnEnd>) {
        self.log = Some(log);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let this = self.get_mut();
        let r = match &this.send {
            None => this.poll_frame_inner(cx),
            Some(w) => {
                w.polled();
                let r = this.poll_frame_inner(cx);
                if let (Some(w), Poll::Ready(Some(Ok(_)))) = (&this.send, &r) {
                    // hyper asks for the next frame (or, after the last, sends it) once
                    // the client's window has room: until then the connection's timer
                    // watches this one.
                    w.handed();
                }
                r
            }
        };
        if let Some(log) = &mut this.log {
            match &r {
                Poll::Ready(Some(Ok(f))) => {
                    if let Some(d) = f.data_ref() {
                        log.bytes += d.len() as u64;
                    }
                }
                Poll::Ready(Some(Err(ResponseBodyError::Stalled(_)))) => {
                    log.termination = Termination::new('s', 'D');
                }
                Poll::Ready(Some(Err(ResponseBodyError::Backend(_)))) => {
                    log.termination = Termination::new('S', 'D');
                }
                _ => {}
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Local(b) => b.is_none(),
            Kind::Backend { inner, done, .. } => *done || inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Backend { inner, .. } => inner.size_hint(),
        }
    }
}

impl ResponseBody {
    fn poll_frame_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        match &mut self.kind {
            Kind::Local(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Backend {
                inner, done, stall, ..
            } => {
                let r = Pin::new(&mut *inner).poll_frame(cx);
                match &r {
                    Poll::Ready(None) => {
                        *done = true;
                        complete(stall);
                    }
                    Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => {
                        *done = true;
                        complete(stall);
                    }
                    // The backend broke the body (closed or reset before its end, or sent
                    // bad chunked framing): a failure of the backend, for passive health,
                    // though its head was counted a success. The client's response ends
                    // short and its connection closes.
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(report) = stall.as_mut().and_then(|g| g.report.take()) {
                            report.run(false);
                        }
                    }
                    Poll::Pending => {
                        if let Some(g) = stall {
                            if g.expired(cx) {
                                if let Some(report) = g.report.take() {
                                    report.run(true);
                                }
                                return Poll::Ready(Some(Err(ResponseBodyError::Stalled(g.after))));
                            }
                        }
                        return Poll::Pending;
                    }
                    _ => {}
                }
                if let Some(g) = stall {
                    g.progressed();
                }
                r.map_err(ResponseBodyError::Backend)
            }
        }
    }
}

/// Reports a complete body (once: the report is taken).
fn complete(stall: &mut Option<StallGuard>) {
    if let Some(report) = stall.as_mut().and_then(|g| g.report.take()) {
        report.complete();
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // The entry is written as it is dropped.
        if let Some(mut log) = self.log.take() {
            // Cut short by nobody else: the client went away, or stopped reading past its
            // timeout.
            // An HTTP/2 stream reset for its client's shut window: its last frame may
            // have been handed over, not sent.
            let cancelled = self.send.as_ref().is_some_and(|w| w.was_reset());
            if cancelled {
                log.termination = Termination::new('c', 'D');
            } else if !self.is_end_stream() && log.termination == Termination::NORMAL {
                let stalled = [&self.active, &self.conn]
                    .into_iter()
                    .flatten()
                    .any(|a| a.0.write_stalled());
                log.termination = Termination::new(if stalled { 'c' } else { 'C' }, 'D');
            }
            drop(log);
        }
        if let Kind::Backend {
            inner,
            release,
            done,
            stall,
        } = &mut self.kind
        {
            // A body that was complete without a frame read (no body: a HEAD, a 204, a
            // zero length) is a success too; one dropped half-way reports nothing.
            if *done || inner.is_end_stream() {
                complete(stall);
            }
            if let Some(r) = release.take() {
                // A body read to its end leaves the connection ready for the next request;
                // one dropped half-way would need draining, so it is closed instead, as is
                // one still receiving the client's upload (the backend answered early).
                if (*done || inner.is_end_stream())
                    && !r.upload.as_ref().is_some_and(|a| a.upload_open())
                {
                    r.pool.checkin(&r.list, r.tx);
                }
                crate::end_request(r.request);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::{advance, Instant};

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    /// A body whose last frame is polled after its request ended (the backend answered
    /// early) must not touch the next request's upload: its end used to clear the next
    /// upload's open flag (its backend connection could then be pooled while still
    /// uploading) and its waiting could hold off the next backend's response timeout.
    #[tokio::test(start_paused = true)]
    async fn a_late_body_cannot_change_the_next_requests_upload() {
        let a = Arc::new(Activity::new());
        let first = ActiveRequest::new(&a);
        let g1 = a.upload_started();
        a.upload_wait(g1, true);
        assert!(a.upload_open() && a.upload_waiting());
        drop(first); // the response went out; the upload had not ended
                     // Still coming (the client timeout bounds it), but no backend waits for it.
        assert!(a.upload_open() && !a.upload_waiting());
        // A bodiless next request: from its start, the first body is stale.
        let bodiless = ActiveRequest::new(&a);
        assert!(!a.upload_open() && !a.upload_waiting());
        assert_eq!(a.upload_progress(), None);
        // A late frame of the first body is not its progress.
        a.upload_progressed(g1, false);
        assert_eq!(a.upload_progress(), None, "a stale frame is ignored");
        drop(bodiless);

        let second = ActiveRequest::new(&a);
        let g2 = a.upload_started();
        assert_ne!(g1, g2);
        advance(Duration::from_secs(2)).await;
        // The first body's stragglers.
        a.upload_wait(g1, true);
        assert!(!a.upload_waiting(), "a stale body's wait is ignored");
        let started = a.upload_progress();
        a.upload_progressed(g1, true);
        assert!(a.upload_open(), "a stale body's end is ignored");
        assert_eq!(a.upload_progress(), started, "and so is its progress");
        // The second body's own updates apply.
        a.upload_wait(g2, true);
        assert!(a.upload_waiting());
        a.upload_progressed(g2, false);
        assert!(a.upload_open() && a.upload_progress() > started);
        a.upload_wait(g2, false);
        a.upload_progressed(g2, true);
        assert!(!a.upload_open() && !a.upload_waiting());
        drop(second);
    }

    #[tokio::test(start_paused = true)]
    async fn client_timers_follow_the_request_cycle() {
        let opened = Instant::now();
        let a = Arc::new(Activity::new());
        // The first request's head is due `HEAD` after accept, whenever its bytes come.
        assert_eq!(a.timer(HEAD, IDLE), ClientTimer::Head(opened + HEAD));
        advance(Duration::from_secs(3)).await;
        a.bytes_read();
        assert_eq!(a.timer(HEAD, IDLE), ClientTimer::Head(opened + HEAD));

        let r = ActiveRequest::new(&a);
        assert_eq!(a.timer(HEAD, IDLE), ClientTimer::Busy);
        // Body bytes read while the request is in flight start no head timer.
        a.bytes_read();
        advance(Duration::from_secs(2)).await;
        drop(r);
        let done = Instant::now();
        assert_eq!(a.timer(HEAD, IDLE), ClientTimer::Idle(done + IDLE));

        // The keep-alive wait ends with the first byte of the next request, whose head is
        // then due `HEAD` later.
        advance(Duration::from_secs(30)).await;
        a.bytes_read();
        let first_byte = Instant::now();
        advance(Duration::from_secs(4)).await;
        a.bytes_read();
        assert_eq!(a.timer(HEAD, IDLE), ClientTimer::Head(first_byte + HEAD));

        // Once the head is complete, the next wait is a keep-alive wait again.
        drop(ActiveRequest::new(&a));
        assert_eq!(
            a.timer(HEAD, IDLE),
            ClientTimer::Idle(Instant::now() + IDLE)
        );
        assert!(a.served());
    }
}
