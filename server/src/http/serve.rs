//! The HTTPS listener: TLS over TCP, then HTTP/1.1 with upgrades (for WSS).
//!
//! Each connection gets its own task, so a slow TLS handshake never holds up
//! the accept loop, and its handshake and request headers are bounded in time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// Serves `router` over TLS on `listener` for as long as the process runs.
/// `handshake_timeout` bounds each TLS handshake and each request's headers.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, router: Router, handshake_timeout: Duration) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            tcp,
            remote,
            acceptor.clone(),
            router.clone(),
            handshake_timeout,
        ));
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    handshake_timeout: Duration,
) {
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => return tracing::debug!("TLS handshake timed out"),
    };
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        router.clone().oneshot(request)
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades()
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}
