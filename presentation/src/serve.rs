//! [`serve`]: the HTTP/1.1 server loop, with hyper's parser limits set above the limits of
//! [`crate::limits`] (so that over-long request targets and header sections reach the router
//! and are answered as problem documents with a request id), the peer address in every
//! request's extensions (`ConnectInfo<SocketAddr>`, for the per-client rate limit of callers
//! without credentials), and a graceful shutdown: when `shutdown` completes, no new
//! connection is accepted, idle ones are closed, and requests in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

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
            let connection = builder.serve_connection(TokioIo::new(stream), service);
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
