//! Graceful shutdown is one watch channel: `false` while running, `true` once
//! the server is shutting down. Every accept loop and every session waits on it.

use tokio::sync::watch;

/// Resolves once shutdown has begun (at once if it already has).
pub async fn signalled(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens as the process ends.
    let _ = rx.wait_for(|down| *down).await;
}
