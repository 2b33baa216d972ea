//! A client TCP connection that two parties write to: the connection's own task (HTTP
//! responses, then the WebSocket session's replies, through hyper and tungstenite) and the
//! fan-out, which writes each push's pre-encoded WebSocket frame straight to the socket.
//!
//! Writing from the fan-out thread skips, for every recipient, a task wake-up, a queue and
//! the framing of one frame per session; on loopback that is a quarter of the server's time
//! per push. The cost is this type: both writers go through one lock, and neither may leave
//! part of a frame for the other to interleave with. So the owner's writes are always taken
//! whole (what the socket does not take waits in `pending`, in order), and the fan-out writes
//! a whole frame only when nothing is waiting, or appends it to what is.
//!
//! What waits is a queue of reference-counted frames, not a copy of their bytes: a push that
//! waits in many sessions, or a kept push in the catch-up of every session of its account, is
//! one allocation however many sessions have it queued.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;

/// Bytes of pushes a session may have waiting for its socket before it counts as too slow
/// (on top of whatever its login catch-up still has to write).
pub const PUSH_BACKLOG_BYTES: usize = 512 * 1024;
/// The owner's own writes wait (rather than pile up) beyond this much unwritten data.
const OWNER_HIGH_WATER: usize = 64 * 1024;
/// A drained queue with room for more frames than this is freed rather than kept for an idle
/// session (a catch-up of hundreds of kept pushes leaves a queue that long behind).
const KEEP_QUEUED_FRAMES: usize = 64;
/// Frames handed to the socket in one vectored write; Linux takes up to 1024.
const FRAMES_PER_WRITE: usize = 64;

/// A server-to-client WebSocket text frame (unmasked, final) holding `json`.
pub fn text_frame(json: &str) -> Bytes {
    let frame = Frame::message(json.as_bytes().to_vec(), OpCode::Data(Data::Text), true);
    let mut wire = Vec::with_capacity(frame.len());
    frame
        .format(&mut wire)
        .expect("writing to a Vec cannot fail");
    Bytes::from(wire)
}

/// What became of a push handed to [`Conn::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// In the socket.
    Written,
    /// Waiting behind earlier data; the connection's task writes it.
    Queued,
    /// Too much was waiting already: the push was dropped and the session must be closed.
    TooSlow,
    /// The session no longer takes pushes.
    Gone,
}

/// Whole frames (or owner writes) waiting for the socket, oldest first. They are shared, not
/// copied: every session catching up on a kept push queues the same frame, so a thousand
/// sessions of one account cost a thousand handles, not a thousand copies of what is kept.
#[derive(Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// How much of the first frame the socket has taken: only the first is ever part-written.
    written_of_first: usize,
    /// Bytes not yet written, over all frames.
    bytes: usize,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn push(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.bytes += frame.len();
            self.frames.push_back(frame);
        }
    }

    /// Queues what the socket did not take of `frame`, which it took `written` bytes of.
    /// Only called on an empty queue: nothing may be written ahead of what waits.
    fn push_rest(&mut self, frame: &Bytes, written: usize) {
        debug_assert!(self.is_empty());
        if written < frame.len() {
            self.push(frame.clone());
            self.written_of_first = written;
            self.bytes -= written;
        }
    }

    /// Writes what the socket takes now, several frames per call; answers whether all went.
    fn write_to(&mut self, tcp: &TcpStream) -> io::Result<bool> {
        while let Some(first) = self.frames.front() {
            let first = &first[self.written_of_first..];
            let written = if self.frames.len() == 1 {
                try_write_now(tcp, first)?
            } else {
                let mut slices = [IoSlice::new(&[]); FRAMES_PER_WRITE];
                slices[0] = IoSlice::new(first);
                let mut count = 1;
                for (slice, frame) in slices[1..].iter_mut().zip(self.frames.iter().skip(1)) {
                    *slice = IoSlice::new(frame);
                    count += 1;
                }
                try_write_vectored_now(tcp, &slices[..count])?
            };
            if written == 0 {
                return Ok(false);
            }
            self.consume(written);
        }
        if self.frames.capacity() > KEEP_QUEUED_FRAMES {
            self.frames = VecDeque::new();
        }
        Ok(true)
    }

    /// Drops `n` written bytes off the front.
    fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let first = self.frames.front().expect("written bytes were queued");
            let left = first.len() - self.written_of_first;
            if n < left {
                self.written_of_first += n;
                return;
            }
            n -= left;
            self.frames.pop_front();
            self.written_of_first = 0;
        }
    }
}

struct Out {
    /// Accepted data the socket has not taken yet, starting at a frame boundary or inside the
    /// first frame, never inside a later one.
    pending: Queue,
    /// Until the session has written its login reply and catch-up, pushes wait here.
    held: Option<Queue>,
    /// `pending` may grow to this many bytes with pushes before the session is too slow.
    limit: usize,
    accepting_pushes: bool,
    broken: bool,
}

pub struct Conn {
    tcp: TcpStream,
    out: Mutex<Out>,
    /// Wakes the connection's task when bytes wait in `pending` that only it will write.
    drain_needed: Notify,
}

impl Conn {
    fn new(tcp: TcpStream) -> Conn {
        Conn {
            tcp,
            out: Mutex::new(Out {
                pending: Queue::default(),
                held: None,
                limit: PUSH_BACKLOG_BYTES,
                accepting_pushes: false,
                broken: false,
            }),
            drain_needed: Notify::new(),
        }
    }

    /// From now on pushes are taken, but held until [`Conn::release`].
    pub fn accept_pushes_held(&self) {
        let mut out = self.out.lock();
        out.accepting_pushes = true;
        out.held = Some(Queue::default());
    }

    /// Queues `catch_up` (the login's kept frames, shared with whoever else writes them) and
    /// then the pushes held since [`Conn::accept_pushes_held`]; from now on pushes go straight
    /// to the socket. The caller writes what is queued with [`Conn::drain`].
    pub fn release(&self, mut catch_up: Vec<Bytes>) {
        let out = &mut *self.out.lock();
        let held = out.held.take().unwrap_or_default();
        if out.pending.is_empty() {
            // The catch-up's own list becomes the queue (in place, no second list of handles).
            catch_up.retain(|frame| !frame.is_empty());
            out.pending = Queue {
                bytes: catch_up.iter().map(Bytes::len).sum(),
                frames: VecDeque::from(catch_up),
                written_of_first: 0,
            };
        } else {
            catch_up
                .into_iter()
                .for_each(|frame| out.pending.push(frame));
        }
        held.frames
            .into_iter()
            .for_each(|frame| out.pending.push(frame));
        out.limit = out.pending.bytes + PUSH_BACKLOG_BYTES;
    }

    /// Stops taking pushes: the session is ending and writes its last frames itself.
    pub fn stop_pushes(&self) {
        self.out.lock().accepting_pushes = false;
    }

    /// Writes a push's whole WebSocket frame, or queues it (shared, not copied) behind data
    /// already waiting. Never blocks: this runs on the fan-out thread for every recipient of a
    /// push, so when the socket takes the frame at once it costs one write and no allocation.
    pub fn push(&self, frame: &Bytes) -> Pushed {
        let mut guard = self.out.lock();
        let out = &mut *guard;
        if !out.accepting_pushes || out.broken {
            return Pushed::Gone;
        }
        if let Some(held) = &mut out.held {
            if held.bytes + frame.len() > PUSH_BACKLOG_BYTES {
                return Pushed::TooSlow;
            }
            held.push(frame.clone());
            return Pushed::Queued;
        }
        if out.pending.is_empty() {
            match try_write_now(&self.tcp, frame) {
                Ok(n) if n == frame.len() => return Pushed::Written,
                Ok(n) => out.pending.push_rest(frame, n),
                Err(_) => {
                    // The connection's task ends the session when it next drains.
                    out.broken = true;
                    drop(guard);
                    self.drain_needed.notify_one();
                    return Pushed::Gone;
                }
            }
        } else if out.pending.bytes + frame.len() > out.limit {
            return Pushed::TooSlow;
        } else {
            out.pending.push(frame.clone());
        }
        drop(guard);
        self.drain_needed.notify_one();
        Pushed::Queued
    }

    /// Resolves when bytes wait that the connection's task has to write.
    pub async fn drain_needed(&self) {
        self.drain_needed.notified().await;
    }

    /// Writes everything waiting, as the socket takes it.
    pub async fn drain(&self) -> io::Result<()> {
        loop {
            if self.write_pending()? {
                return Ok(());
            }
            self.tcp.writable().await?;
        }
    }

    /// Writes what the socket takes of `pending` now; answers whether all of it went.
    fn write_pending(&self) -> io::Result<bool> {
        self.out.lock().write_pending(&self.tcp)
    }
}

/// Writes what the socket takes of `bytes` now, without waiting: 0 when it would block.
fn try_write_now(tcp: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    written_now(tcp.try_write(bytes), bytes.is_empty())
}

fn try_write_vectored_now(tcp: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let empty = slices.iter().all(|slice| slice.is_empty());
    written_now(tcp.try_write_vectored(slices), empty)
}

fn written_now(result: io::Result<usize>, empty: bool) -> io::Result<usize> {
    match result {
        // A stream socket never takes nothing from a non-empty buffer; read as "would block",
        // it would make the drain loop spin.
        Ok(0) if !empty => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

impl Out {
    fn write_pending(&mut self, tcp: &TcpStream) -> io::Result<bool> {
        if self.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        match self.pending.write_to(tcp) {
            Ok(true) => {
                self.limit = PUSH_BACKLOG_BYTES;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }
}

/// Bytes one read of a connection takes at most.
const READ_CHUNK: usize = 64 << 10;

/// The I/O object hyper and tungstenite get for a connection (see the module comment).
pub struct ConnIo(pub Arc<Conn>);

impl ConnIo {
    pub fn new(tcp: TcpStream) -> ConnIo {
        ConnIo(Arc::new(Conn::new(tcp)))
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let tcp = &self.0.tcp;
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            // Safe code can read only into zeroed bytes, and hyper hands over its whole spare
            // read buffer each time (hundreds of KiB once bulk bodies have grown it): zeroing
            // all of it cost more than the read. A read takes at most READ_CHUNK, the bytes of
            // a bulk write's body and then some.
            let room = buf.remaining().min(READ_CHUNK);
            match tcp.try_read(buf.initialize_unfilled_to(room)) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let conn = &self.0;
        loop {
            {
                let mut out = conn.out.lock();
                if out.broken {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                }
                out.write_pending(&conn.tcp)?;
                if out.pending.bytes < OWNER_HIGH_WATER {
                    // Taken whole, so a push can never land inside this write.
                    let written = if out.pending.is_empty() {
                        match try_write_now(&conn.tcp, buf) {
                            Ok(n) => n,
                            Err(e) => {
                                out.broken = true;
                                return Poll::Ready(Err(e));
                            }
                        }
                    } else {
                        0
                    };
                    if written < buf.len() {
                        out.pending.push(Bytes::copy_from_slice(&buf[written..]));
                    }
                    if !out.pending.is_empty() {
                        // The owner may not flush (tungstenite's replies to pings do not
                        // wait); its task's drain loop then writes the rest.
                        conn.drain_needed.notify_one();
                    }
                    return Poll::Ready(Ok(buf.len()));
                }
            }
            ready!(conn.tcp.poll_write_ready(cx))?;
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let conn = &self.0;
        loop {
            if conn.write_pending()? {
                return Poll::Ready(Ok(()));
            }
            ready!(conn.tcp.poll_write_ready(cx))?;
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        match socket2::SockRef::from(&self.0.tcp).shutdown(std::net::Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (ConnIo, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (ConnIo::new(accepted.unwrap().0), client.unwrap())
    }

    #[test]
    fn text_frames_carry_the_length_in_the_smallest_form() {
        let short = text_frame("{}");
        assert_eq!(&short[..], b"\x81\x02{}");
        let medium = text_frame(&"x".repeat(300));
        assert_eq!(&medium[..4], &[0x81, 126, 1, 44]);
        assert_eq!(medium.len(), 4 + 300);
        let long = text_frame(&"x".repeat(70_000));
        assert_eq!(&long[..2], &[0x81, 127]);
        assert_eq!(long.len(), 10 + 70_000);
    }

    fn frame(bytes: &'static [u8]) -> Bytes {
        Bytes::from_static(bytes)
    }

    #[tokio::test]
    async fn pushes_wait_while_held_and_follow_the_catch_up_in_order() {
        let (mut io, mut client) = pair().await;
        let conn = Arc::clone(&io.0);
        assert_eq!(conn.push(&frame(b"early")), Pushed::Gone);
        io.write_all(b"login;").await.unwrap();
        conn.accept_pushes_held();
        assert_eq!(conn.push(&frame(b"p1;")), Pushed::Queued);
        io.write_all(b"reply;").await.unwrap();
        conn.release(vec![frame(b"kept1;"), frame(b"kept2;")]);
        conn.drain().await.unwrap();
        assert_eq!(conn.push(&frame(b"p2;")), Pushed::Written);
        conn.stop_pushes();
        assert_eq!(conn.push(&frame(b"p3;")), Pushed::Gone);
        io.write_all(b"bye").await.unwrap();
        io.shutdown().await.unwrap();
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "login;reply;kept1;kept2;p1;p2;bye");
    }

    #[tokio::test]
    async fn a_catch_up_is_shared_by_every_session_and_pushes_beyond_it_are_bounded() {
        // Fifty kept pushes of 20 kB: a megabyte, as a login of a busy account finds it.
        let kept: Vec<Bytes> = (0..50u8).map(|n| Bytes::from(vec![n; 20_000])).collect();
        let mut sessions = Vec::new();
        for _ in 0..2 {
            let (io, client) = pair().await;
            let conn = Arc::clone(&io.0);
            conn.accept_pushes_held();
            conn.release(kept.clone());
            {
                let out = conn.out.lock();
                assert_eq!(out.pending.bytes, 1_000_000);
                let queued: Vec<*const u8> =
                    out.pending.frames.iter().map(|f| f.as_ptr()).collect();
                let originals: Vec<*const u8> = kept.iter().map(|f| f.as_ptr()).collect();
                assert_eq!(queued, originals, "the catch-up is queued, not copied");
            }
            // Nothing is written before the drain, so the backlog fills exactly.
            let push = Bytes::from(vec![b'p'; 10_000]);
            let mut taken = 0;
            while conn.push(&push) == Pushed::Queued {
                taken += 1;
                assert!(taken <= PUSH_BACKLOG_BYTES / push.len(), "never too slow");
            }
            assert_eq!(taken, PUSH_BACKLOG_BYTES / push.len());
            sessions.push((io, client, taken * push.len()));
        }
        for (io, mut client, pushed_bytes) in sessions {
            let conn = Arc::clone(&io.0);
            let reader = tokio::spawn(async move {
                let mut got = vec![0; 1_000_000 + pushed_bytes];
                client.read_exact(&mut got).await.unwrap();
                got
            });
            conn.drain().await.unwrap();
            let got = reader.await.unwrap();
            assert_eq!(&got[..1_000_000], &kept.concat()[..]);
            assert!(got[1_000_000..].iter().all(|&b| b == b'p'));
        }
    }

    #[tokio::test]
    async fn a_push_to_a_reset_connection_ends_the_session_at_its_next_drain() {
        let (io, client) = pair().await;
        let conn = Arc::clone(&io.0);
        conn.accept_pushes_held();
        conn.release(Vec::new());
        conn.drain().await.unwrap();
        client.set_zero_linger().unwrap();
        drop(client);
        let gone = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while conn.push(&frame(b"frame")) != Pushed::Gone {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            gone.is_ok(),
            "pushes to a reset connection kept being taken"
        );
        tokio::time::timeout(std::time::Duration::from_secs(1), conn.drain_needed())
            .await
            .expect("the session is woken");
        assert!(conn.drain().await.is_err());
    }

    #[tokio::test]
    async fn a_reader_that_stops_fills_the_backlog_and_the_rest_is_too_slow() {
        let (mut io, mut client) = pair().await;
        let conn = Arc::clone(&io.0);
        conn.accept_pushes_held();
        conn.release(Vec::new());
        // Frames of a length the socket's buffers do not divide, each with its own content:
        // the socket stops inside one, and what follows must resume exactly there.
        let frames: Vec<Bytes> = (0..1_000u32)
            .map(|n| Bytes::from(vec![(n % 251) as u8; 9_973]))
            .collect();
        let mut taken = 0usize;
        let outcome = loop {
            match conn.push(&frames[taken]) {
                Pushed::Written | Pushed::Queued => taken += 1,
                other => break other,
            }
            assert!(taken < frames.len(), "never too slow");
        };
        assert_eq!(outcome, Pushed::TooSlow);
        // The owner's own last words still go after every push taken, whole.
        conn.stop_pushes();
        let owner = tokio::spawn(async move {
            io.write_all(b"END").await.unwrap();
            io.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        owner.await.unwrap();
        let mut expected = frames[..taken].concat();
        expected.extend_from_slice(b"END");
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "frames arrived whole and in order");
    }
}
