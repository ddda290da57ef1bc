//! [`serve`]: the HTTP/1.1 server loop, with hyper's parser limits set above the limits of
//! [`crate::limits`] (so that over-long request targets and header sections reach the router
//! and are answered as problem documents with a request id), the peer address in every
//! request's extensions (`ConnectInfo<SocketAddr>`, for the per-client rate limit of callers
//! without credentials), and a graceful shutdown: when `shutdown` completes, no new
//! connection is accepted, idle ones are closed, and requests in flight finish.
//!
//! What hyper still answers itself, before any request exists (a request target over its
//! fixed 65,534 bytes: 414; a head over [`MAX_HEAD_BUFFER_BYTES`] or over
//! [`MAX_HEADER_LINES`] lines: 431; a head that does not parse: 400), it writes as a bare
//! response without a body and closes the connection. [`ParserAnswers`], between hyper and
//! the socket, recognizes exactly those writes (an error status, no `content-type`, no body:
//! every answer of the router carries a problem document) and sends a problem document with
//! a fresh `x-request-id` instead, logged with that id.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::REQUEST_ID_HEADER;
use crate::error::ApiError;

/// hyper's buffer for a request head (1 MiB): heads up to this size are parsed and reach the
/// router's own limits; beyond it hyper answers a bare 431 itself.
pub const MAX_HEAD_BUFFER_BYTES: usize = 1024 * 1024;

/// hyper's most header lines (1,024): more and hyper answers a bare 431 itself.
pub const MAX_HEADER_LINES: usize = 1024;

/// Serves `router` on `listener` until `shutdown` completes, then waits for the connections'
/// requests in flight to finish.
///
/// # Errors
/// None today: failed accepts (too many open files, a connection reset before it was
/// accepted) are logged and retried; the signature keeps room for fatal ones.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (signal_tx, signal_rx) = watch::channel(());
    let (close_tx, close_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    // Too many open files and the like: give the process a moment.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            let router = router.clone();
            async move {
                let response = router.oneshot(request.map(Body::new)).await;
                Ok::<_, Infallible>(match response {
                    Ok(response) => response,
                    Err(never) => match never {},
                })
            }
        });
        let mut signal = signal_rx.clone();
        let close = close_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .max_buf_size(MAX_HEAD_BUFFER_BYTES)
                .max_headers(MAX_HEADER_LINES);
            let io = TokioIo::new(ParserAnswers::new(stream));
            // With upgrades: the WebSocket route takes the connection over.
            let connection = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(connection);
            let mut stopping = false;
            loop {
                tokio::select! {
                    served = connection.as_mut() => {
                        if let Err(e) = served {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = signal.changed(), if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(close);
        });
    }
    drop(listener);
    // Every connection sees the signal (its sender is gone), finishes, and drops its receiver.
    drop(signal_tx);
    drop(close_rx);
    close_tx.closed().await;
    Ok(())
}

/// The connection's socket as hyper sees it, turning hyper's own bare error answers into
/// problem documents (see the module docs).
pub struct ParserAnswers<T> {
    inner: T,
    /// Bytes of a replacement still to be written.
    pending: Vec<u8>,
    written: usize,
}

impl<T> ParserAnswers<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

/// The problem document that replaces `head`, if `head` is one of hyper's own answers: a
/// whole response of 400, 414 or 431 without `content-type` and without a body.
pub fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != head.len() {
        return None;
    }
    let text = std::str::from_utf8(&head[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?;
    let code: u16 = rest.get(..3)?.parse().ok()?;
    let mut date = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-type") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") && value.trim() != "0" {
            return None;
        }
        if name.eq_ignore_ascii_case("date") {
            date = Some(value.trim());
        }
    }
    let error = match code {
        400 => ApiError::invalid("request", "the request head is not valid HTTP/1.1"),
        414 => ApiError::uri_too_long(
            "the request target is over 65534 bytes, more than the server can parse",
        ),
        431 => ApiError::header_fields_too_large(format!(
            "the request head is over {MAX_HEAD_BUFFER_BYTES} bytes or {MAX_HEADER_LINES} \
             header lines, more than the server can parse"
        )),
        _ => return None,
    };
    let request_id = uuid::Uuid::new_v4();
    tracing::warn!(status = code, request_id = %request_id, detail = error.detail(), "request head refused before routing");
    let body = error.body_bytes();
    let mut out = format!(
        "{status_line}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\
         {REQUEST_ID_HEADER}: {request_id}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(date) = date {
        out.push_str("date: ");
        out.push_str(date);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl<T: AsyncWrite + Unpin> ParserAnswers<T> {
    /// Writes what is left of a replacement.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ParserAnswers<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ParserAnswers<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        // Only a whole response in one write can be one of hyper's answers (a head without a
        // body, flattened: this writer is not vectored).
        if buf.starts_with(b"HTTP/1.")
            && buf.ends_with(b"\r\n\r\n")
            && let Some(problem) = replacement(buf)
        {
            self.pending = problem;
            self.written = 0;
            // Accepted whole; written by this and the following calls, and by flush.
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_error_answers_are_replaced() {
        let bare = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 12:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replacement(bare).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{out}");
        assert!(
            out.contains("content-type: application/problem+json\r\n"),
            "{out}"
        );
        assert!(out.contains("x-request-id: "), "{out}");
        assert!(
            out.contains("date: Tue, 01 Dec 2026 12:00:00 GMT\r\n"),
            "{out}"
        );
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{out}"
        );
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 414);
        assert_eq!(problem["error"], "uri_too_long");
        for (bare, code) in [
            (
                &b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"[..],
                "header_fields_too_large",
            ),
            (
                &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"[..],
                "validation_failed",
            ),
        ] {
            let out = String::from_utf8(replacement(bare).unwrap()).unwrap();
            assert!(out.contains(code), "{out}");
        }
        // Anything else passes untouched: a problem document, a success, a body, a part.
        for other in [
            &b"HTTP/1.1 414 URI Too Long\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n"[..],
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            &b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"[..],
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}"[..],
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"[..],
        ] {
            assert!(replacement(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
