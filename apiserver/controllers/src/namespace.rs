//! Namespace deletion — NOT BUILT YET in this crate. Today the apiserver itself removes
//! a deleted namespace's objects (`delete_namespace_contents` in its crud module), so
//! nothing is left behind; a finalizer-driven controller would live here.

use tokio_util::sync::CancellationToken;

/// Waits until `shutdown` (placeholder for the namespace controller).
pub async fn run(_client: api::Client, shutdown: CancellationToken) {
    shutdown.cancelled().await;
}
