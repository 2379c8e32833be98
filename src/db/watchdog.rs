//! The client's own bound on a silent server. PostgreSQL's `statement_timeout` ends a slow
//! statement on the server, and TCP keepalives end a connection whose peer vanished; neither ends
//! a wait on a server (or a proxy in between) that keeps the connection open and answers nothing,
//! since a hung proxy answers keepalives itself. So every connection's socket is wrapped here: once
//! something is sent, the server must say something within the bound, or the connection is broken
//! and every statement waiting on it fails. A connection that sent nothing (an idle pooled one, a
//! LISTEN session between notifications) is never cut.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a server may stay silent after a request, and whom the error names.
#[derive(Debug, Clone)]
pub(super) struct Silence {
    /// The longest silence after a request.
    pub(super) bound: Duration,
    /// The server, as `host:port`.
    pub(super) server: String,
    /// The settings that make up the bound, named in the error so the operator knows what raises
    /// it.
    pub(super) settings: String,
}

impl Silence {
    fn error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "PostgreSQL at {} answered nothing for {} after a request (the server or a proxy \
                 in between is hung); the bound is {}: raise them if the server is only slow",
                self.server,
                humantime::format_duration(self.bound),
                self.settings
            ),
        )
    }
}

/// A socket that fails once the server stays silent past [`Silence::bound`] after a request.
pub(super) struct Watchdog<S> {
    inner: S,
    silence: Silence,
    /// When the silence since the first unanswered write passes the bound.
    deadline: Pin<Box<Sleep>>,
    /// Whether something was sent since the server last said anything.
    waiting: bool,
}

impl<S> Watchdog<S> {
    pub(super) fn new(inner: S, silence: Silence) -> Self {
        let deadline = Box::pin(tokio::time::sleep(silence.bound));
        Watchdog {
            inner,
            silence,
            deadline,
            waiting: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watchdog<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.waiting = false;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.waiting && self.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(self.silence.error()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watchdog<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) && !self.waiting {
            self.waiting = true;
            let bound = self.silence.bound;
            self.deadline.as_mut().reset(Instant::now() + bound);
            // Registers the task's waker with the timer: a silent server wakes nothing else.
            let _ = self.deadline.as_mut().poll(cx);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn silence(bound_ms: u64) -> Silence {
        Silence {
            bound: Duration::from_millis(bound_ms),
            server: "db.example:5432".into(),
            settings: "database.statement_timeout".into(),
        }
    }

    #[tokio::test]
    async fn a_request_unanswered_past_the_bound_breaks_the_connection() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut socket = Watchdog::new(ours, silence(200));
        socket.write_all(b"Q").await.unwrap();
        let mut byte = [0u8; 1];
        let err = socket.read(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("db.example:5432"), "{err}");
        assert!(err.to_string().contains("200ms"), "{err}");
    }

    #[tokio::test]
    async fn an_idle_connection_is_never_cut() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut socket = Watchdog::new(ours, silence(200));
        socket.write_all(b"Q").await.unwrap();
        theirs.write_all(b"Z").await.unwrap();
        let mut byte = [0u8; 1];
        socket.read_exact(&mut byte).await.unwrap();
        // Nothing sent since the answer: a notification may come long after the bound.
        let later = async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            theirs.write_all(b"A").await.unwrap();
            theirs
        };
        let (read, _theirs) = tokio::join!(socket.read_exact(&mut byte), later);
        read.unwrap();
        assert_eq!(&byte, b"A");
    }
}
