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

use std::io;
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
/// A drained buffer bigger than this is freed rather than kept for an idle session.
const KEEP_CAPACITY: usize = 4 * 1024;

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

struct Out {
    /// Accepted bytes the socket has not taken yet, oldest first, starting at a frame boundary
    /// or inside the first frame, never inside a later one.
    pending: Vec<u8>,
    /// Until the session has written its login reply and catch-up, pushes wait here.
    held: Option<Vec<u8>>,
    /// `pending` may grow to this with pushes before the session is too slow.
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
                pending: Vec::new(),
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
        out.held = Some(Vec::new());
    }

    /// Queues `first` (the login catch-up) and then the pushes held since
    /// [`Conn::accept_pushes_held`]; from now on pushes go straight to the socket. The caller
    /// writes what is queued with [`Conn::drain`].
    pub fn release(&self, first: Vec<u8>) {
        let mut out = self.out.lock();
        let held = out.held.take().unwrap_or_default();
        if out.pending.is_empty() {
            out.pending = first;
        } else {
            out.pending.extend_from_slice(&first);
        }
        out.pending.extend_from_slice(&held);
        out.limit = out.pending.len() + PUSH_BACKLOG_BYTES;
    }

    /// Stops taking pushes: the session is ending and writes its last frames itself.
    pub fn stop_pushes(&self) {
        self.out.lock().accepting_pushes = false;
    }

    /// Writes a push's whole WebSocket frame, or queues it behind data already waiting.
    /// Never blocks: this runs on the fan-out thread for every recipient of a push.
    pub fn push(&self, frame: &[u8]) -> Pushed {
        let mut out = self.out.lock();
        if !out.accepting_pushes || out.broken {
            return Pushed::Gone;
        }
        if let Some(held) = &mut out.held {
            if held.len() + frame.len() > PUSH_BACKLOG_BYTES {
                return Pushed::TooSlow;
            }
            held.extend_from_slice(frame);
            return Pushed::Queued;
        }
        let written = if out.pending.is_empty() {
            match try_write_now(&self.tcp, frame) {
                Ok(n) if n == frame.len() => return Pushed::Written,
                Ok(n) => n,
                Err(_) => {
                    // The connection's task ends the session when it next drains.
                    out.broken = true;
                    drop(out);
                    self.drain_needed.notify_one();
                    return Pushed::Gone;
                }
            }
        } else if out.pending.len() + frame.len() > out.limit {
            return Pushed::TooSlow;
        } else {
            0
        };
        out.pending.extend_from_slice(&frame[written..]);
        drop(out);
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
    match tcp.try_write(bytes) {
        // A stream socket never takes nothing from a non-empty buffer; read as "would block",
        // it would make the drain loop spin.
        Ok(0) if !bytes.is_empty() => Err(io::ErrorKind::WriteZero.into()),
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
        while !self.pending.is_empty() {
            match try_write_now(tcp, &self.pending) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            }
        }
        if self.pending.capacity() > KEEP_CAPACITY {
            self.pending = Vec::new();
        }
        self.limit = PUSH_BACKLOG_BYTES;
        Ok(true)
    }
}

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
            match tcp.try_read(buf.initialize_unfilled()) {
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
                if out.pending.len() < OWNER_HIGH_WATER {
                    // Taken whole, so a push can never land inside this write.
                    if out.pending.is_empty() {
                        let written = match try_write_now(&conn.tcp, buf) {
                            Ok(n) => n,
                            Err(e) => {
                                out.broken = true;
                                return Poll::Ready(Err(e));
                            }
                        };
                        out.pending.extend_from_slice(&buf[written..]);
                    } else {
                        out.pending.extend_from_slice(buf);
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

    #[tokio::test]
    async fn pushes_wait_while_held_and_follow_the_catch_up_in_order() {
        let (mut io, mut client) = pair().await;
        let conn = Arc::clone(&io.0);
        assert_eq!(conn.push(b"early"), Pushed::Gone);
        io.write_all(b"login;").await.unwrap();
        conn.accept_pushes_held();
        assert_eq!(conn.push(b"p1;"), Pushed::Queued);
        io.write_all(b"reply;").await.unwrap();
        conn.release(b"kept;".to_vec());
        conn.drain().await.unwrap();
        assert_eq!(conn.push(b"p2;"), Pushed::Written);
        conn.stop_pushes();
        assert_eq!(conn.push(b"p3;"), Pushed::Gone);
        io.write_all(b"bye").await.unwrap();
        io.shutdown().await.unwrap();
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "login;reply;kept;p1;p2;bye");
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
            while conn.push(b"frame") != Pushed::Gone {
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
        let frame = vec![b'x'; 10_000];
        let mut taken = 0usize;
        let outcome = loop {
            match conn.push(&frame) {
                Pushed::Written | Pushed::Queued => taken += 1,
                other => break other,
            }
            assert!(taken < 100_000, "never too slow");
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
        assert_eq!(got.len(), taken * frame.len() + 3);
        assert!(got[..taken * frame.len()].iter().all(|&b| b == b'x'));
        assert!(got.ends_with(b"END"));
    }
}
