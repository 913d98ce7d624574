//! Garbage collection of dependents by ownerReferences — NOT BUILT YET. `run` only
//! waits for the end of the term. Pods of a deleted ReplicaSet and ReplicaSets of a
//! deleted Deployment are therefore not removed by this crate (see ARCHITECTURE.md,
//! "controllers", for the plan).

use tokio_util::sync::CancellationToken;

/// Waits until `shutdown` (placeholder for the collector).
pub async fn run(_client: api::Client, shutdown: CancellationToken) {
    shutdown.cancelled().await;
}
