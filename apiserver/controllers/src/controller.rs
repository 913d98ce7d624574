//! The shape every controller shares: a work queue of `namespace/name` keys, a few
//! workers that take a key, sync it against the informers' caches and write through the
//! API, and a retry with per-key backoff when the sync fails (level-based: a sync reads
//! the current state, so processing a key twice is harmless).

use std::future::Future;
use std::time::Duration;

use api::{QueueConfig, WorkQueue};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// The queue settings of the controllers (client-go's defaults, smaller cap).
pub fn queue_config() -> QueueConfig {
    QueueConfig {
        capacity: 200_000,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_secs(60),
        qps: 50.0,
        burst: 500,
    }
}

/// What a sync asks for besides success: look again after a delay (progress deadline,
/// toleration expiry, a min-ready wait).
pub type Requeue = Option<Duration>;

/// Runs `workers` workers over `queue` until `shutdown`, calling `sync` for each key.
pub async fn run_workers<F, Fut>(
    name: &'static str,
    queue: WorkQueue<String>,
    workers: usize,
    shutdown: CancellationToken,
    sync: F,
) where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Requeue, Error>> + Send,
{
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let sync = sync.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let key = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    k = queue.get() => match k { Some(k) => k, None => return },
                };
                let result = sync(key.clone()).await;
                match result {
                    Ok(requeue) => {
                        queue.forget(&key);
                        if let Some(after) = requeue {
                            let _ = queue.add_after(key.clone(), after);
                        }
                    }
                    Err(e) => {
                        // Conflicts are the normal race with another writer: quieter.
                        if matches!(&e, Error::Api(a) if a.is_conflict() || a.is_not_found()) {
                            tracing::debug!(controller = name, %key, error = %e, "sync retry");
                        } else {
                            tracing::warn!(controller = name, %key, error = %e, "sync failed; retrying");
                        }
                        let _ = queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        }));
    }
    shutdown.cancelled().await;
    queue.shut_down();
    for t in tasks {
        let _ = t.await;
    }
}

/// Queues a key, logging (not failing) when the queue is full: the key's next event or
/// the informer's resync brings it back.
pub fn enqueue(queue: &WorkQueue<String>, key: String) {
    if let Err(e) = queue.add(key) {
        tracing::warn!(error = %e, "work queue full; key dropped until its next event");
    }
}
