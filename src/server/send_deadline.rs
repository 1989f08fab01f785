//! A connection whose writes may stall for at most `send_timeout_s`.
//!
//! actix-http times the arrival of a request (`client_request_timeout`) and idle keep-alive,
//! but nothing covers sending an answer: a client that never reads kept its connection, and
//! the answer buffered for it, for ever (200 such clients of a 3 MB answer pinned 1.1 GB).
//! [`SendDeadline`] wraps the connection's stream: when a write cannot proceed (the socket's
//! send buffer is full because the peer does not read), a timer starts; a write that makes
//! progress stops it; if it fires first, the write fails with `TimedOut`, actix-http drops the
//! connection, and with it everything buffered for it. This is nginx's `send_timeout`: the
//! time allowed between two successive writes, not for the whole answer, so a slow but
//! reading client is served.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_rt::time::{sleep, Sleep};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream whose writes fail once they have waited `timeout` without progress.
pub struct SendDeadline<S> {
    inner: S,
    /// The longest a write may wait for the peer to read.
    timeout: Duration,
    /// Armed while a write waits; `None` while writes proceed.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Connections closed by the deadline, for `/metrics`.
    timeouts: Arc<AtomicU64>,
    /// Counts the connection open while it lives (every connection passes through here).
    _open: super::OpenConnection,
}

impl<S> SendDeadline<S> {
    pub fn new(inner: S, timeout: Duration, timeouts: Arc<AtomicU64>, open: super::OpenConnection) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
            timeouts,
            _open: open,
        }
    }

    /// Called when the inner write is not ready: starts the timer, or fails if it has fired.
    fn wait_or_fail<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(sleep(timeout)));
        if timer.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            self.timeouts.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {} s (send_timeout_s)", timeout.as_secs()),
            )));
        }
        Poll::Pending
    }

    /// Called with the inner write's outcome.
    fn settle<T>(&mut self, cx: &mut Context<'_>, outcome: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match outcome {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.wait_or_fail(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.settle(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.settle(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TLS stream flushes its records to the socket here, so this can stall too.
        let outcome = Pin::new(&mut self.inner).poll_flush(cx);
        self.settle(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // actix-http bounds the shutdown itself (client_disconnect_timeout).
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A pair of connected Unix streams; the reader side is returned unread.
    fn pair() -> (tokio::net::UnixStream, tokio::net::UnixStream) {
        tokio::net::UnixStream::pair().unwrap()
    }

    #[actix_rt::test]
    async fn a_peer_that_never_reads_makes_the_write_fail_after_the_timeout() {
        // Arrange: a peer that never reads; a write far larger than the socket buffers.
        let (ours, _peer) = pair();
        let timeouts = Arc::new(AtomicU64::new(0));
        let mut stream = SendDeadline::new(
            ours,
            Duration::from_millis(200),
            Arc::clone(&timeouts),
            super::super::OpenConnection::new(&Arc::default()),
        );
        let answer = vec![b'x'; 64 << 20];

        // Act
        let result = stream.write_all(&answer).await;

        // Assert
        let error = result.expect_err("the write must not wait for ever");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(timeouts.load(Ordering::Relaxed), 1);
    }

    #[actix_rt::test]
    async fn a_peer_that_reads_slowly_is_served_whole() {
        use tokio::io::AsyncReadExt;
        // Arrange: the peer reads 64 KiB every 50 ms, so each wait is far below the timeout
        // while the whole answer takes longer than it.
        let (ours, mut peer) = pair();
        let timeouts = Arc::new(AtomicU64::new(0));
        let mut stream = SendDeadline::new(
            ours,
            Duration::from_millis(300),
            Arc::clone(&timeouts),
            super::super::OpenConnection::new(&Arc::default()),
        );
        let answer = vec![b'y'; 4 << 20];
        let reader = actix_rt::spawn(async move {
            let mut got = 0usize;
            let mut buf = vec![0; 64 << 10];
            loop {
                match peer.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got += n,
                }
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
        });

        // Act
        stream.write_all(&answer).await.expect("a reading peer is served");
        stream.shutdown().await.unwrap();
        drop(stream);

        // Assert
        assert_eq!(reader.await.unwrap(), answer.len());
        assert_eq!(timeouts.load(Ordering::Relaxed), 0);
    }
}
