//! HTTP plumbing shared by the host, the control plane and the router, so each serves with the
//! same accept loop, reads app names from host names the same way, exports its Prometheus
//! metrics ([`metrics`]) the same way and fail over between control planes the same way
//! ([`control_urls`]); [`limit`] holds the per-key rate limits routers and the
//! control plane apply, and [`trace`] the trace context routers pass hosts.

#![deny(missing_docs)]

pub mod control_urls;
pub mod drain;
pub mod limit;
pub mod metrics;
pub mod trace;

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Bind `addr`, with a clear error naming the address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| std::io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}")))
}

/// Hand every connection accepted on `listener` (with `TCP_NODELAY` set) to `on_connection`
/// until `shutdown` resolves. A failed accept (out of file descriptors and similar) is logged
/// and retried after a pause instead of spinning.
pub async fn accept_each(
    listener: &TcpListener,
    shutdown: impl Future<Output = ()>,
    mut on_connection: impl FnMut(TcpStream, SocketAddr),
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(addr = ?listener.local_addr().ok(), "accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        on_connection(stream, peer);
    }
}

/// Serve HTTP/1.1 on `listener` with `handler` until `shutdown` resolves; then stop accepting and
/// let open connections finish their current request.
pub async fn serve_http1<H, F, B>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = http::Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_http1_from(listener, move |request, _| handler(request), shutdown).await;
}

/// Like [`serve_http1`], telling `handler` the address each request's connection came from.
pub async fn serve_http1_from<H, F, B>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(http::Request<Incoming>, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = http::Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    accept_each(&listener, shutdown, |stream, peer| {
        let handler = handler.clone();
        let connection = http1::Builder::new().serve_connection(
            TokioIo::new(stream),
            service_fn(move |request| {
                let response = handler(request, peer);
                async move { Ok::<_, std::convert::Infallible>(response.await) }
            }),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, "connection ended: {err}");
            }
        });
    })
    .await;
    graceful.shutdown().await;
}

/// The app a request names by its host, `<app>.localhost[:port]`, if any.
pub fn app_from_host<B>(request: &http::Request<B>) -> Option<&str> {
    let host = request.uri().host().or_else(|| {
        request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })?;
    let host = host.rsplit_once(':').map_or(host, |(name, _)| name);
    host.strip_suffix(".localhost")
        .filter(|app| !app.is_empty() && !app.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: &str) -> http::Request<()> {
        http::Request::builder()
            .uri("/x")
            .header("host", host)
            .body(())
            .unwrap()
    }

    #[test]
    fn apps_are_named_by_localhost_subdomains() {
        assert_eq!(
            app_from_host(&request("hello.localhost:7080")),
            Some("hello")
        );
        assert_eq!(app_from_host(&request("hello.localhost")), Some("hello"));
        assert_eq!(app_from_host(&request("a.b.localhost")), None);
        assert_eq!(app_from_host(&request(".localhost")), None);
        assert_eq!(app_from_host(&request("127.0.0.1:7080")), None);
    }
}
