//! The `StatusSink` that writes to the apiserver: pod statuses through `pods/status`
//! (a PUT of the whole status with the pod's resourceVersion as precondition, so stale
//! fields never survive as they could in a merge patch), and, once a pod that carries a
//! deletionTimestamp has all its containers stopped and removed, the final delete with
//! `gracePeriodSeconds=0` and a uid precondition (as the kubelet does).
//!
//! Workers must not block, so the sink only records the newest wish per pod and wakes a
//! writer task; the writer sends them with bounded concurrency, retries failures after a
//! pause (a newer wish replaces an older failed one), and drops wishes for pods that are
//! gone or replaced by another pod of the same name (different uid).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::k8s_openapi::api::core::v1::{Pod, PodStatus};
use api::{CancellationToken, Client, DeleteParams, PostParams, Store};
use futures::StreamExt;
use tokio::sync::Notify;

use crate::sink::StatusSink;
use crate::spec::PodKey;

/// Events waiting to be sent; more are dropped (events are best effort, as in the kubelet).
const EVENT_QUEUE: usize = 1024;
/// The Events' source component (what `kubectl describe` shows under "From").
const EVENT_COMPONENT: &str = "kubelet";

/// Pause before retrying writes that failed.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
enum Wish {
    Status(Box<PodStatus>),
    Delete,
}

struct Shared {
    pending: Mutex<HashMap<PodKey, Wish>>,
    wake: Notify,
}

/// One Event to record.
struct PodEvent {
    key: PodKey,
    warning: bool,
    reason: String,
    message: String,
}

/// Records the agent's status changes and writes them to the apiserver in the background.
#[derive(Clone)]
pub struct ApiStatusWriter {
    shared: Arc<Shared>,
    events: tokio::sync::mpsc::Sender<PodEvent>,
}

impl ApiStatusWriter {
    /// Starts the writer task. `pods` is the informer cache of the pods bound to this
    /// node (or to all simulated nodes): the writer reads their resourceVersion there.
    pub fn start(
        client: Client,
        pods: Store<Pod>,
        concurrency: usize,
        shutdown: CancellationToken,
    ) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        });
        let (events, rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        tokio::spawn(send_events(client.clone(), rx, shutdown.clone()));
        tokio::spawn(run(
            client,
            pods,
            shared.clone(),
            concurrency.max(1),
            shutdown,
        ));
        Self { shared, events }
    }

    fn put(&self, key: &PodKey, wish: Wish) {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), wish);
        self.shared.wake.notify_one();
    }

    /// Number of writes not yet done (tests and metrics).
    pub fn backlog(&self) -> usize {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

impl StatusSink for ApiStatusWriter {
    fn pod_status(&self, key: &PodKey, status: &PodStatus) {
        self.put(key, Wish::Status(Box::new(status.clone())));
    }

    fn pod_terminated(&self, key: &PodKey) {
        self.put(key, Wish::Delete);
    }

    fn pod_event(&self, key: &PodKey, warning: bool, reason: &str, message: &str) {
        let _ = self.events.try_send(PodEvent {
            key: key.clone(),
            warning,
            reason: reason.into(),
            message: message.into(),
        });
    }
}

async fn send_events(
    client: Client,
    mut rx: tokio::sync::mpsc::Receiver<PodEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let e = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        let object = api::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(e.key.namespace.clone()),
            name: Some(e.key.name.clone()),
            uid: Some(e.key.uid.clone()),
            ..Default::default()
        };
        let kind = if e.warning { "Warning" } else { "Normal" };
        if let Err(err) = client
            .create_event(&object, kind, &e.reason, &e.message, EVENT_COMPONENT)
            .await
        {
            tracing::debug!(pod = %e.key, error = %err, "event not recorded");
        }
    }
}

async fn run(
    client: Client,
    pods: Store<Pod>,
    shared: Arc<Shared>,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    loop {
        let batch: Vec<(PodKey, Wish)> = {
            let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = shared.wake.notified() => continue,
            }
        }
        let failed: Vec<(PodKey, Wish)> = futures::stream::iter(batch)
            .map(|(key, wish)| {
                let (client, pods) = (&client, &pods);
                async move {
                    match write(client, pods, &key, &wish).await {
                        Ok(()) => None,
                        Err(e) => {
                            tracing::warn!(pod = %key, error = %e, "status write failed; will retry");
                            Some((key, wish))
                        }
                    }
                }
            })
            .buffer_unordered(concurrency)
            .filter_map(|r| async move { r })
            .collect()
            .await;
        if !failed.is_empty() {
            {
                let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
                for (key, wish) in failed {
                    // A newer wish that arrived meanwhile wins.
                    pending.entry(key).or_insert(wish);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        }
    }
}

/// The pod to write to: from the cache when it is this uid, else from the server.
async fn current(
    client: &Client,
    pods: &Store<Pod>,
    key: &PodKey,
    fresh: bool,
) -> Result<Option<Pod>, api::Error> {
    if !fresh
        && let Some(p) = pods.get(&format!("{}/{}", key.namespace, key.name))
        && p.metadata.uid.as_deref() == Some(key.uid.as_str())
    {
        return Ok(Some((*p).clone()));
    }
    let pod = client
        .get_opt::<Pod>(Some(&key.namespace), &key.name)
        .await?;
    Ok(pod.filter(|p| p.metadata.uid.as_deref() == Some(key.uid.as_str())))
}

async fn write(
    client: &Client,
    pods: &Store<Pod>,
    key: &PodKey,
    wish: &Wish,
) -> Result<(), api::Error> {
    match wish {
        Wish::Status(status) => {
            for fresh in [false, true] {
                let Some(mut pod) = current(client, pods, key, fresh).await? else {
                    return Ok(()); // gone: nothing to report to
                };
                if pod.status.as_ref() == Some(status) {
                    return Ok(());
                }
                pod.status = Some((**status).clone());
                match client.update_status(&pod, &PostParams::default()).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.is_not_found() => return Ok(()),
                    // The cache was behind: once more with the server's copy.
                    Err(e) if e.is_conflict() && !fresh => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
        Wish::Delete => {
            // Only a pod still marked for deletion (this uid) is removed; a pod the
            // apiserver already removed needs nothing.
            let Some(pod) = current(client, pods, key, false).await? else {
                return Ok(());
            };
            if pod.metadata.deletion_timestamp.is_none() {
                return Ok(());
            }
            let params = DeleteParams {
                grace_period_s: Some(0),
                precondition_uid: Some(key.uid.clone()),
                ..Default::default()
            };
            match client
                .delete::<Pod>(Some(&key.namespace), &key.name, &params)
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}
