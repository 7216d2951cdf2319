//! What one HTTP connection may hold, enforced: the limits of [`ConnectionLimits`] that hyper
//! has no setting for.
//!
//! hyper's own header timeout runs from the moment it waits for a request head, so it counts
//! keep-alive idle time and header time as one. weir keeps them apart (a load balancer wants
//! a long idle timeout, slowloris wants a short header one), so its reader, [`Guarded`],
//! times the wait itself: a new connection must send its first head within `headerTimeout`;
//! after a response, the connection may sit idle for `keepAliveTimeout`, and once a request's
//! first byte arrives its head must be complete within `headerTimeout`. It learns where a
//! request starts and ends from the service ([`Activity`]): the request's handler runs from
//! the head to the end of the response body ([`Tracked`] marks that end when hyper drops the
//! body it has written), and no timer runs meanwhile (the body timeout is the handler's,
//! answered 408; a long response, an SSE stream, is not idle). The timers are one
//! `tokio::time::Sleep` per connection, reset lazily: one reset per request on the hot path.
//!
//! [`Gate`] caps a listener's open connections with a semaphore: beyond `maxConnections` a
//! new connection gets a fixed 503 and is closed (gracefully, so that a client still sending
//! its request reads the answer, not a reset), so a flood of connections never runs the
//! process out of file descriptors ([`fit_to_file_limit`] lowers the caps to what the limit
//! allows, after raising the soft limit to the hard one as servers do).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::sources::http::ConnectionLimits;

/// Whether a request is being answered on a connection, told by its service to its reader.
#[derive(Debug, Default)]
pub struct Activity {
    busy: AtomicBool,
    /// Responses finished; the reader starts the idle timer when it sees this change.
    answered: AtomicU64,
    /// The reader, while it waits on a busy connection. hyper reads during a request (to see
    /// a client hang up) and, once the response is out, does not read again by itself until
    /// the socket says so: the end of a response wakes the reader so that it starts the idle
    /// timer.
    reader: futures_util::task::AtomicWaker,
}

impl Activity {
    /// A request's head is in: its handler runs until [`Tracked`] is dropped.
    pub fn start(self: &Arc<Self>) -> Answering {
        self.busy.store(true, Ordering::Relaxed);
        Answering(self.clone())
    }
}

/// Ends a request's activity when dropped.
#[derive(Debug)]
pub struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::Relaxed);
        self.0.busy.store(false, Ordering::Relaxed);
        self.0.reader.wake();
    }
}

/// A response body that ends its request's activity once hyper has written it (and drops it).
pub struct Tracked<B> {
    pub body: B,
    pub answering: Answering,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A listener's connection metrics, labelled by its address.
#[derive(Clone)]
pub struct Meter {
    open: metrics::Gauge,
    header_timeouts: metrics::Counter,
    idle_timeouts: metrics::Counter,
    refused: metrics::Counter,
}

impl Meter {
    /// A connection sent no complete head within `headerTimeout`.
    pub fn header_timed_out(&self) {
        self.header_timeouts.increment(1);
    }

    pub fn new(listener: &str) -> Meter {
        let closed = |reason: &'static str| metrics::counter!("weir_http_connections_closed_total", "listener" => listener.to_owned(), "reason" => reason);
        Meter {
            open: metrics::gauge!("weir_http_connections", "listener" => listener.to_owned()),
            header_timeouts: closed("header_timeout"),
            idle_timeouts: closed("idle_timeout"),
            refused: closed("refused"),
        }
    }
}

/// What the reader is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// The rest of a request head (or a new connection's first one).
    Head,
    /// The next request.
    Idle,
}

/// A connection's byte stream, closed with a `TimedOut` error when a head takes longer than
/// `headerTimeout` or the connection idles longer than `keepAliveTimeout` (module docs).
pub struct Guarded<I> {
    io: I,
    activity: Arc<Activity>,
    header_timeout: Duration,
    keep_alive_timeout: Duration,
    answered_seen: u64,
    waiting: Waiting,
    deadline: Instant,
    /// The deadline `sleep` is set to.
    armed: Instant,
    sleep: Pin<Box<Sleep>>,
    meter: Meter,
}

impl<I> Guarded<I> {
    /// A new connection's stream, whose first head is `due` then.
    pub fn new(io: I, due: Instant, limits: &ConnectionLimits, meter: Meter) -> Guarded<I> {
        let deadline = due;
        Guarded {
            io,
            activity: Arc::new(Activity::default()),
            header_timeout: limits.header_timeout,
            keep_alive_timeout: limits.keep_alive_timeout,
            answered_seen: 0,
            waiting: Waiting::Head,
            deadline,
            armed: deadline,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            meter,
        }
    }

    /// What its service tells it about requests.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.busy.load(Ordering::Relaxed) {
            this.activity.reader.register(cx.waker());
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let answered = this.activity.answered.load(Ordering::Relaxed);
        if answered != this.answered_seen {
            this.answered_seen = answered;
            this.waiting = Waiting::Idle;
            this.deadline = Instant::now() + this.keep_alive_timeout;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.waiting == Waiting::Idle && buf.filled().len() > before {
                    this.waiting = Waiting::Head;
                    this.deadline = Instant::now() + this.header_timeout;
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => {}
        }
        if this.armed != this.deadline {
            this.sleep.as_mut().reset(this.deadline);
            this.armed = this.deadline;
        }
        if this.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let message = match this.waiting {
            Waiting::Head => {
                this.meter.header_timeouts.increment(1);
                "request headers not received within headerTimeout"
            }
            Waiting::Idle => {
                this.meter.idle_timeouts.increment(1);
                "no request within keepAliveTimeout"
            }
        };
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The admin listener's cap: it serves operators (the status page, scrapes, the tap), not
/// traffic, and must not take the traffic listeners' share of the open-files limit.
pub const ADMIN_MAX_CONNECTIONS: usize = 256;

/// What a connection refused for the cap is told before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 61\r\nretry-after: 1\r\nconnection: close\r\n\r\n{\"success\":false,\"error\":\"too many connections, retry later\"}";

/// A listener's connection cap.
pub struct Gate {
    open: Arc<Semaphore>,
    /// Refused connections being answered and closed gracefully.
    lingering: Arc<Semaphore>,
    meter: Meter,
    cap: usize,
    /// When the last "at its cap" warning was logged (seconds since `started`).
    warned: AtomicU64,
    started: std::time::Instant,
}

/// An admitted connection: counted open until dropped.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    meter: Meter,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.meter.open.decrement(1.0);
    }
}

impl Gate {
    pub fn new(cap: usize, meter: Meter) -> Gate {
        Gate {
            open: Arc::new(Semaphore::new(cap)),
            lingering: Arc::new(Semaphore::new(LINGERING)),
            meter,
            cap,
            warned: AtomicU64::new(u64::MAX),
            started: std::time::Instant::now(),
        }
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// Admits `stream`, or answers it 503 (on plain HTTP; a TLS client just sees the close)
    /// and closes it when the listener is at its cap.
    pub fn admit(
        &self,
        stream: tokio::net::TcpStream,
        tls: bool,
        address: &str,
    ) -> Option<(tokio::net::TcpStream, Admitted)> {
        let Ok(permit) = self.open.clone().try_acquire_owned() else {
            self.refuse(stream, tls, address);
            return None;
        };
        self.meter.open.increment(1.0);
        let admitted = Admitted {
            _permit: permit,
            meter: self.meter.clone(),
        };
        Some((stream, admitted))
    }

    fn refuse(&self, stream: tokio::net::TcpStream, tls: bool, address: &str) {
        self.meter.refused.increment(1);
        let now = self.started.elapsed().as_secs();
        let last = self.warned.swap(now, Ordering::Relaxed);
        if last == u64::MAX || now >= last + 10 {
            tracing::warn!(
                listener = %address,
                max_connections = self.cap,
                "listener at its maxConnections: new connections are answered 503 (weir_http_connections_closed_total{{reason=\"refused\"}})"
            );
        } else {
            self.warned.store(last, Ordering::Relaxed);
        }
        if tls {
            return;
        }
        match self.lingering.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    let _permit = permit;
                    linger_refused(stream).await;
                });
            }
            // Too many refusals in flight: the answer goes out, the close may reset it.
            Err(_) => {
                let _ = stream.try_write(REFUSED);
            }
        }
    }
}

/// Refusals answered at once, each holding its socket for up to twice [`LINGER`].
const LINGERING: usize = 128;

/// How long a refused connection is read from after its answer.
const LINGER: Duration = Duration::from_secs(1);

/// Answers a refused connection 503 and closes it gracefully: its request head is read first
/// (for at most [`LINGER`]: an answer that comes before the request confuses HTTP clients),
/// then the answer goes out, then weir's side is closed, and whatever else the client sends
/// is read and dropped until it closes, for at most [`LINGER`] more. Closing a socket with
/// unread input resets the connection, and a client would see the reset, not the answer.
async fn linger_refused(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buffer = [0u8; 2048];
    let _ = tokio::time::timeout(LINGER, async {
        while memchr::memmem::find(&head, b"\r\n\r\n").is_none() && head.len() < 16 * 1024 {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..read]);
        }
        Ok::<(), io::Error>(())
    })
    .await;
    let _ = tokio::time::timeout(LINGER, async {
        stream.write_all(REFUSED).await?;
        stream.shutdown().await?;
        while stream.read(&mut buffer).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
}

/// File descriptors kept for everything that is not a listener's connection: Redis and
/// Kafka connections, the journal's files, outgoing HTTP, refusals being answered.
const RESERVED_FILES: usize = 512;

/// Raises the soft limit on open files to the hard one, then lowers `caps` (each listener's
/// `maxConnections`) in proportion until they fit in it with [`RESERVED_FILES`] to spare,
/// saying so. Without this a connection flood ends in `EMFILE` on every `accept`, every
/// Redis reconnect and every journal file.
pub fn fit_to_file_limit(caps: &mut [(String, usize)]) {
    let Some(limit) = raise_file_limit() else {
        return;
    };
    let budget = limit.saturating_sub(RESERVED_FILES).max(caps.len());
    let total: usize = caps.iter().map(|(_, cap)| *cap).sum();
    if total <= budget {
        return;
    }
    for (address, cap) in caps.iter_mut() {
        let fitted = ((*cap as u128 * budget as u128) / total as u128).max(1) as usize;
        tracing::warn!(
            listener = %address,
            max_connections = *cap,
            lowered_to = fitted,
            open_files_limit = limit,
            "maxConnections lowered to fit the open-files limit; raise it (ulimit -n, systemd LimitNOFILE=) to allow more"
        );
        *cap = fitted;
    }
}

/// The soft `RLIMIT_NOFILE` after raising it to the hard limit; `None` when it cannot be read
/// or is unlimited.
fn raise_file_limit() -> Option<usize> {
    // libc directly: two system calls, not worth a crate of their own.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    usize::try_from(limit.rlim_cur).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_http_answer() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
