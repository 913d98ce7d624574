//! The namespace controller, as Kubernetes' does it: a namespace being deleted
//! (deletionTimestamp set, `status.phase: Terminating`, `kubernetes` in
//! `spec.finalizers`) has every namespaced object in it deleted — every resource the
//! server advertises with `list` and `delete`, found through discovery — and once none
//! is left, the `kubernetes` finalizer is removed through `namespaces/{name}/finalize`,
//! which lets the apiserver remove the namespace. Objects that are themselves held by
//! finalizers (foreground deletion, say) are waited for, polling every second.

use std::time::Duration;

use api::{
    Client, Informer, InformerConfig, InformerEvent, ListParams, Namespace, Store, WorkQueue,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::controller::{Requeue, enqueue, queue_config, run_workers};
use crate::discovery::{self, Resources};

const WORKERS: usize = 2;
/// The finalizer this controller owns in `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";
/// How soon a namespace whose contents are still going away is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct NamespaceController {
    client: Client,
    namespaces: Store<Namespace>,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let (inf, namespaces, mut events) = Informer::<Namespace, _>::for_client(
        client.clone(),
        None,
        ListParams::default(),
        InformerConfig::default(),
    );
    tokio::spawn(inf.run(shutdown.clone()));
    let queue: WorkQueue<String> = WorkQueue::new(queue_config());
    let q = queue.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(ev) = events.recv() => {
                    let ns = match &ev {
                        InformerEvent::Added(n) | InformerEvent::Resync(n) => n,
                        InformerEvent::Updated { new, .. } => new,
                        InformerEvent::Deleted(_) => continue,
                    };
                    if ns.metadata.deletion_timestamp.is_some() {
                        enqueue(&q, ev.key());
                    }
                }
            }
        }
    });
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = namespaces.wait_synced() => {}
    }
    let c = NamespaceController { client, namespaces };
    run_workers("namespace", queue, WORKERS, shutdown, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
}

impl NamespaceController {
    async fn sync(&self, name: &str) -> Result<Requeue, Error> {
        let Some(cached) = self.namespaces.get(name) else {
            return Ok(None);
        };
        if cached.metadata.deletion_timestamp.is_none() {
            return Ok(None);
        }
        let path = format!("/api/v1/namespaces/{name}");
        // The live object: its spec.finalizers and resourceVersion decide.
        let Some(ns) = discovery::get(&self.client, &path).await? else {
            return Ok(None);
        };
        if ns.pointer("/metadata/deletionTimestamp").is_none() || !has_finalizer(&ns) {
            return Ok(None);
        }
        let remaining = delete_contents(&self.client, name).await?;
        if remaining > 0 {
            tracing::debug!(namespace = name, remaining, "waiting for contents to go");
            return Ok(Some(RECHECK));
        }
        let mut finalized = ns.clone();
        let fins: Vec<Value> = ns
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|f| f.as_str() != Some(FINALIZER))
            .cloned()
            .collect();
        finalized["spec"]["finalizers"] = json!(fins);
        discovery::put(&self.client, &format!("{path}/finalize"), &finalized).await?;
        tracing::info!(namespace = name, "namespace finalized");
        Ok(None)
    }
}

fn has_finalizer(ns: &Value) -> bool {
    ns.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|f| f.as_str() == Some(FINALIZER)))
}

/// Deletes every namespaced object in `namespace` (each once: objects already marked
/// are left to their finalizers); returns how many objects are still there.
pub async fn delete_contents(client: &Client, namespace: &str) -> Result<usize, Error> {
    let resources = Resources::discover(client).await?;
    let mut remaining = 0;
    for r in resources
        .all
        .iter()
        .filter(|r| r.namespaced && r.has_verb("list") && r.has_verb("delete"))
    {
        let path = r.collection_path(Some(namespace));
        let Some(list) = discovery::get(client, &path).await? else {
            continue;
        };
        for item in list["items"].as_array().into_iter().flatten() {
            remaining += 1;
            if item.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            let (Some(name), Some(uid)) = (
                item.pointer("/metadata/name").and_then(Value::as_str),
                item.pointer("/metadata/uid").and_then(Value::as_str),
            ) else {
                continue;
            };
            discovery::delete(
                client,
                &r.object_path(Some(namespace), name),
                uid,
                Some("Background"),
            )
            .await?;
        }
    }
    Ok(remaining)
}
