//! One client connection from accept to close: its I/O counted, its HTTP served by hyper
//! (HTTP/1.1 with upgrades, or HTTP/2), and a watchdog that closes it when it stalls.
//!
//! hyper's own header timeout does not cover the bytes its protocol detection reads, nor
//! HTTP/2, so one watchdog covers both: a connection with no request in flight is closed
//! [`Limits::header_timeout_secs`] after something arrived without making a request, or
//! [`Limits::idle_timeout_secs`] after it went quiet. Bodies have their own timeout where
//! they are read ([`super::body`]); a WebSocket leaves the watchdog when it is upgraded.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tower::ServiceExt;

use super::Edge;
use crate::delivery::conn::{Conn, ConnIo};
use crate::metrics::refusals::Refusal;

/// The connection a request came on, for the gateway to hand to its session.
#[derive(Clone)]
pub struct ClientConn(pub Arc<Conn>);

/// How long a connection told to close may take to finish what it is writing.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// A connection served from the reserve may idle only this long: it exists for one look.
const RESERVE_IDLE: Duration = Duration::from_secs(2);

/// Marks a request that came on a connection past the cap (see [`Limits::reserved_connections`]).
#[derive(Debug, Clone, Copy)]
pub struct ReserveConnection;

/// Keeps one place in the connection count until the socket is closed, wherever it ends up
/// (hyper's connection, or a WebSocket session after an upgrade).
pub struct Place(Arc<Edge>);

impl Place {
    pub fn take(edge: &Arc<Edge>) -> (Place, usize) {
        let open = edge.open().fetch_add(1, Ordering::AcqRel) + 1;
        (Place(Arc::clone(edge)), open)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.0.open().fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

/// What the watchdog needs to know of a connection.
struct Activity {
    started: Instant,
    requests_in_flight: AtomicU32,
    /// Milliseconds since `started` when the connection last had nothing in flight.
    quiet_since_ms: AtomicU64,
    /// Reads that returned bytes, ever, and as counted when it last went quiet.
    reads: AtomicU64,
    reads_when_quiet: AtomicU64,
    upgraded: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            requests_in_flight: AtomicU32::new(0),
            quiet_since_ms: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            reads_when_quiet: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn request_ended(&self) {
        if self.requests_in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.reads_when_quiet
                .store(self.reads.load(Ordering::Acquire), Ordering::Release);
            self.quiet_since_ms
                .store(self.elapsed_ms(), Ordering::Release);
        }
    }

    /// Why the connection should be closed now, if it should.
    fn overdue(&self, header_timeout: Duration, idle_timeout: Duration) -> Option<Refusal> {
        if self.requests_in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let quiet_for = Duration::from_millis(
            self.elapsed_ms()
                .saturating_sub(self.quiet_since_ms.load(Ordering::Acquire)),
        );
        let began_a_request =
            self.reads.load(Ordering::Acquire) > self.reads_when_quiet.load(Ordering::Acquire);
        if began_a_request {
            (quiet_for > header_timeout).then_some(Refusal::HeaderTimeout)
        } else {
            (quiet_for > idle_timeout).then_some(Refusal::Idle)
        }
    }
}

/// Counts a request in flight for as long as it lives, however it ends.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> InFlight {
        activity.requests_in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// The socket as hyper sees it: every read is noted for the watchdog, and the connection's
/// place in the count is released when the socket is dropped.
struct CountedIo {
    io: ConnIo,
    activity: Arc<Activity>,
    _place: Place,
}

impl AsyncRead for CountedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.reads.fetch_add(1, Ordering::Release);
        }
        polled
    }
}

impl AsyncWrite for CountedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// hyper's settings for every connection: HTTP/1.1 and HTTP/2 with bounded buffers.
pub fn protocol(edge: &Edge) -> auto::Builder<hyper_util::rt::TokioExecutor> {
    let mut builder = auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        // Headers of a real call are well under a kilobyte; hyper's default lets one
        // connection's head grow to 400 KiB.
        .max_buf_size(HEAD_BUFFER_BYTES);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(edge.limits.http2_max_streams)
        .max_header_list_size(HEAD_BUFFER_BYTES as u32)
        // What a client may send ahead of the server reading it, per stream and in all:
        // the unread data of HTTP/2 flows stays below these whatever the streams do.
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_send_buf_size(H2_STREAM_WINDOW as usize);
    builder
}

const HEAD_BUFFER_BYTES: usize = 16 * 1024;
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 256 * 1024;

/// Serves one accepted connection until it closes, is overdue, or the server stops.
pub async fn serve(
    io: ConnIo,
    place: Place,
    reserve: bool,
    router: Router,
    edge: Arc<Edge>,
    mut stopping: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let client = ClientConn(Arc::clone(&io.0));
    let service_activity = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let in_flight = InFlight::begin(&service_activity);
        let extensions = request.extensions_mut();
        extensions.insert(ConnectInfo(client.clone()));
        if reserve {
            extensions.insert(ReserveConnection);
        }
        let router = router.clone();
        let activity = Arc::clone(&service_activity);
        async move {
            let response = router.oneshot(request.map(Body::new)).await;
            if response
                .as_ref()
                .is_ok_and(|r| r.status() == hyper::StatusCode::SWITCHING_PROTOCOLS)
            {
                // From here a WebSocket session owns the socket, with its own login timeout.
                activity.upgraded.store(true, Ordering::Release);
            }
            drop(in_flight);
            response
        }
    });
    let counted = CountedIo {
        io,
        activity: Arc::clone(&activity),
        _place: place,
    };
    let builder = protocol(&edge);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(counted), service);
    tokio::pin!(connection);

    let header_timeout = Duration::from_secs(edge.limits.header_timeout_secs);
    let mut idle_timeout = Duration::from_secs(edge.limits.idle_timeout_secs);
    if reserve {
        idle_timeout = idle_timeout.min(RESERVE_IDLE);
    }
    let check_every = (header_timeout.min(idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut check = tokio::time::interval(check_every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            changed = stopping.changed(), if closing_since.is_none() => {
                if changed.is_err() || *stopping.borrow() {
                    connection.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
            }
            _ = check.tick() => {
                if let Some(since) = closing_since {
                    // Told to close and still open: only a request in flight may keep it
                    // (the server's shutdown deadline bounds that); a stall may not.
                    let stalled = activity.requests_in_flight.load(Ordering::Acquire) == 0;
                    if stalled && since.elapsed() > CLOSE_GRACE {
                        return;
                    }
                    continue;
                }
                if activity.upgraded.load(Ordering::Acquire) {
                    continue;
                }
                if let Some(refusal) = activity.overdue(header_timeout, idle_timeout) {
                    edge.refuse(refusal);
                    connection.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_connection_is_idle_and_a_started_request_has_the_header_timeout() {
        let activity = Activity::new();
        let (header, idle) = (Duration::ZERO, Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(activity.overdue(header, idle), None, "quiet, within idle");
        activity.reads.fetch_add(1, Ordering::Release);
        assert_eq!(activity.overdue(header, idle), Some(Refusal::HeaderTimeout));
        let in_flight = InFlight::begin(&Arc::new(Activity::new()));
        assert_eq!(in_flight.0.overdue(Duration::ZERO, Duration::ZERO), None);
        let activity = Arc::clone(&in_flight.0);
        drop(in_flight);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(
            activity.overdue(Duration::ZERO, Duration::ZERO),
            Some(Refusal::Idle),
            "the end of a request starts a new quiet period with nothing begun"
        );
    }
}
