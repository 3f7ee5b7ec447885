//! The gRPC port's connections before HTTP/2 serves them, for plaintext and TLS alike: one accept
//! loop that survives running out of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`,
//! `ENOMEM`) or any other lasting accept error by backing off instead of spinning, and says so
//! once; a limit on open connections
//! (a new one over it is closed at once, before any work is queued for it); and a deadline for the
//! handshake (TLS, then the HTTP/2 client preface), after which a silent connection is closed.
//! [`http2_limits`] holds the per-connection HTTP/2 limits that bound what one connection can make
//! the server hold. Calls are not judged here: admission (`admission.rs`) sheds those.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{debug, info, warn};

use super::tls::TlsReloader;

/// Streams one connection may have open at once; more are refused (`REFUSED_STREAM`) before any
/// task is made for them. tonic leaves this unlimited: 200 connections that each opened 1,000
/// streams made 200,000 tasks at once (476 MiB). 100 is what gRPC servers commonly advertise;
/// clients queue their calls beyond it.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// Request bytes a client may send on one stream, and on one connection, before the server has
/// read them (HTTP/2 flow control). Bigger messages still pass, a window at a time.
pub const STREAM_WINDOW: u32 = 256 * 1024;
pub const CONNECTION_WINDOW: u32 = 512 * 1024;
/// Streams the server may reset on a connection for the client's errors, refusals over
/// [`MAX_CONCURRENT_STREAMS`] included, before it closes the connection (`ENHANCE_YOUR_CALM`).
/// Clients that respect the stream limit are never refused; one that ignores it made the server
/// hold its refused streams (hyper allows 1,024 per connection: 150–170 MiB for 200 connections).
pub const MAX_LOCAL_ERROR_RESETS: usize = 256;
/// The first wait after an accept failed (for want of descriptors or memory, mostly), and the
/// longest one.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// The bytes a client sends first on an HTTP/2 connection (RFC 9113 §3.4).
const CLIENT_PREFACE_LEN: usize = 24;

/// Applies the per-connection HTTP/2 limits.
pub fn http2_limits<L>(builder: tonic::transport::Server<L>) -> tonic::transport::Server<L> {
    builder
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
}

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once (handshaking or served).
    pub max_connections: usize,
    /// Longest time from accept to a complete handshake (TLS, then the HTTP/2 preface).
    pub handshake_timeout: Duration,
}

/// The connections to serve: accepted, within the limit, handshaken over TLS when `tls` is set.
/// The accept loop runs until the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    tls: Option<TlsReloader>,
) -> ReceiverStream<io::Result<Guarded<Connection>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut acceptor = Acceptor::new(listener, limits);
        loop {
            let accepted = tokio::select! {
                accepted = acceptor.accept() => accepted,
                // Stop accepting (and close the listener) as soon as nobody serves.
                () = tx.closed() => return,
            };
            match &tls {
                None => {
                    let Accepted { tcp, permit, deadline } = accepted;
                    let stream = Guarded::new(Connection::Plain(tcp), permit, deadline);
                    if tx.send(Ok(stream)).await.is_err() {
                        return;
                    }
                }
                // Handshakes run beside the accept loop: a slow client never holds up others.
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let Accepted { tcp, permit, deadline } = accepted;
                        let peer = tcp.peer_addr().ok();
                        match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => {
                                let stream = Guarded::new(Connection::Tls(Box::new(tls)), permit, deadline);
                                let _ = tx.send(Ok(stream)).await;
                            }
                            Ok(Err(e)) => debug!(?peer, error = %e, "tls handshake refused"),
                            Err(_) => debug!(?peer, "tls handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// One accepted connection with its slot under the limit and its handshake deadline.
struct Accepted {
    tcp: TcpStream,
    permit: OwnedSemaphorePermit,
    deadline: Instant,
}

/// The listener with the connection limit and the state of a resource shortage.
struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    limits: ConnectionLimits,
    /// Accepts that failed since the last one that worked (errors of one connection aside).
    failed_accepts: u64,
    backoff: Duration,
    /// Whether new connections are being closed for the limit (logged once per episode).
    at_limit: bool,
}

impl Acceptor {
    fn new(listener: TcpListener, limits: ConnectionLimits) -> Self {
        Acceptor {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            failed_accepts: 0,
            backoff: FIRST_BACKOFF,
            at_limit: false,
        }
    }

    /// The next connection within the limit. Errors are handled here: a connection that failed
    /// before it was accepted is skipped; any other error (mostly a shortage of descriptors or
    /// memory) is logged once and retried with backoff.
    async fn accept(&mut self) -> Accepted {
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                // A connection that failed between the client and accept: nothing to wait for.
                Err(e) if is_one_connections_error(&e) => {
                    debug!(error = %e, "accept failed");
                    continue;
                }
                // Anything else fails again at once if retried at once: the pending connection
                // keeps the listener readable, so retrying without a pause would spin a core.
                Err(e) => {
                    if self.failed_accepts == 0 {
                        if is_resource_shortage(&e) {
                            warn!(
                                error = %e,
                                open_files_limit = open_files_limit(),
                                max_connections = self.limits.max_connections,
                                "cannot accept connections: out of file descriptors or memory; retrying with backoff"
                            );
                        } else {
                            warn!(error = %e, "cannot accept connections; retrying with backoff");
                        }
                    }
                    self.failed_accepts += 1;
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if self.failed_accepts > 0 {
                info!(failed_accepts = self.failed_accepts, "accepting connections again");
                self.failed_accepts = 0;
                self.backoff = FIRST_BACKOFF;
            }
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                if !self.at_limit {
                    self.at_limit = true;
                    warn!(
                        max_connections = self.limits.max_connections,
                        %peer,
                        "connection limit reached; closing new connections until one ends"
                    );
                }
                drop(tcp);
                continue;
            };
            self.at_limit = false;
            let _ = tcp.set_nodelay(true);
            return Accepted {
                tcp,
                permit,
                deadline: Instant::now() + self.limits.handshake_timeout,
            };
        }
    }
}

/// Errors of one incoming connection (it was reset or aborted before it was accepted).
fn is_one_connections_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Errors that last until descriptors or memory are freed (Linux errno values).
fn is_resource_shortage(e: &io::Error) -> bool {
    const ENOMEM: i32 = 12;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const ENOBUFS: i32 = 105;
    e.kind() == io::ErrorKind::OutOfMemory || matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

/// The soft limit on open files, as `/proc/self/limits` shows it (None where there is none).
fn open_files_limit() -> Option<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3).map(str::to_owned)
}

/// A served connection: plaintext or TLS.
pub enum Connection {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection holding its slot under the connection limit until it is dropped, and closed with
/// `TimedOut` if the client has not sent the HTTP/2 preface by the handshake deadline.
pub struct Guarded<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
    /// Running until the preface has been read; None afterwards.
    deadline: Option<Pin<Box<Sleep>>>,
    preface_left: usize,
}

impl<S> Guarded<S> {
    fn new(inner: S, slot: OwnedSemaphorePermit, deadline: Instant) -> Self {
        Guarded {
            inner,
            _slot: slot,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            preface_left: CLIENT_PREFACE_LEN,
        }
    }

    /// An error once the deadline has passed without the preface.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let passed = self
            .deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
        if passed {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface within the handshake timeout",
            ));
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check_deadline(cx)?;
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if self.deadline.is_some() {
            let read = buf.filled().len() - before;
            self.preface_left = self.preface_left.saturating_sub(read);
            if self.preface_left == 0 || read == 0 {
                self.deadline = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check_deadline(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_deadline(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_deadline(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Connection::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Connection::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Connection::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Connection::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Connection::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Connection::Plain(tcp) => tcp.is_write_vectored(),
            Connection::Tls(tls) => tls.is_write_vectored(),
        }
    }
}

/// The peer's address, as tonic's own TCP connections report it (`Request::remote_addr`).
impl Connected for Guarded<Connection> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match &self.inner {
            Connection::Plain(tcp) => tcp.connect_info(),
            Connection::Tls(tls) => tls.get_ref().0.connect_info(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_of_one_connection_are_retried_without_a_pause() {
        for errno in [24, 23, 105, 12] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(is_resource_shortage(&e), "{e}");
            assert!(!is_one_connections_error(&e), "{e}");
        }
        for kind in [io::ErrorKind::ConnectionAborted, io::ErrorKind::ConnectionReset] {
            let e = io::Error::from(kind);
            assert!(is_one_connections_error(&e), "{e}");
            assert!(!is_resource_shortage(&e), "{e}");
        }
        let other = io::Error::from_raw_os_error(22);
        assert!(!is_one_connections_error(&other) && !is_resource_shortage(&other));
    }
}
