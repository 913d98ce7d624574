//! The scheduler's writes, run on bounded background tasks: the binding (POST
//! `pods/{name}/binding` carrying the pod's uid and resourceVersion as the precondition,
//! so a pod that changed since the scheduler looked at it is not bound on stale facts),
//! the Scheduled event, and for a pod that fits nowhere the PodScheduled=False condition
//! and the FailedScheduling event.

use std::sync::Arc;

use api::{Client, Patch, Pod, PostParams, object_key, object_reference};
use serde_json::json;
use tokio::sync::Semaphore;

/// The component name on events and conditions.
pub const COMPONENT: &str = "default-scheduler";

/// One write to do.
pub enum Work {
    Bind { pod: Arc<Pod>, node: String },
    Unschedulable { pod: Arc<Pod>, message: String },
}

/// What a binding ended with (unschedulable writes report nothing: the pod is already
/// waiting in the unschedulable set).
pub struct Outcome {
    pub key: String,
    pub bound_to: Option<String>,
    pub result: Result<(), api::Error>,
}

/// A JSON body for `Client::raw`.
fn json_bytes(v: &serde_json::Value) -> (bytes::Bytes, &'static str) {
    (bytes::Bytes::from(v.to_string()), "application/json")
}

/// Does the write; for a binding returns its outcome. The Scheduled event of a
/// binding is written on its own task, bounded by `events`: the binding's slot is free
/// as soon as the binding is done, and when every event slot is busy the event is
/// dropped (as Kubernetes' event recorder drops events under load) rather than slowing
/// scheduling.
pub async fn perform(client: &Client, work: Work, events: &Arc<Semaphore>) -> Option<Outcome> {
    match work {
        Work::Bind { pod, node } => {
            let key = object_key(pod.as_ref());
            let result = bind(client, &pod, &node).await;
            if result.is_ok() {
                match events.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let client = client.clone();
                        let key = key.clone();
                        let node = node.clone();
                        tokio::spawn(async move {
                            let message = format!("Successfully assigned {key} to {node}");
                            if let Err(e) = client
                                .create_event(
                                    &object_reference(pod.as_ref()),
                                    "Normal",
                                    "Scheduled",
                                    &message,
                                    COMPONENT,
                                )
                                .await
                            {
                                tracing::debug!(pod = %key, error = %e, "Scheduled event not recorded");
                            }
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tracing::debug!(pod = %key, "Scheduled event dropped: event writers busy");
                    }
                }
            }
            Some(Outcome {
                key,
                bound_to: Some(node),
                result,
            })
        }
        Work::Unschedulable { pod, message } => {
            let key = object_key(pod.as_ref());
            if let Err(e) = record_unschedulable(client, &pod, &message).await {
                tracing::debug!(pod = %key, error = %e, "unschedulable status not recorded");
            }
            None
        }
    }
}

async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), api::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let body = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": pod.metadata.uid,
            "resourceVersion": pod.metadata.resource_version,
        },
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let path = format!("/api/v1/namespaces/{ns}/pods/{name}/binding");
    let (code, answer) = client
        .raw(reqwest::Method::POST, &path, Some(json_bytes(&body)))
        .await?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(api::Error::Api(api::ApiError::from_body(code, &answer)))
    }
}

/// Whether the pod already says PodScheduled=False with this message (then nothing is
/// written again: a pod retried on every node heartbeat must not write every time).
pub fn has_unschedulable_condition(pod: &Pod, message: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(message))
}

async fn record_unschedulable(client: &Client, pod: &Pod, message: &str) -> Result<(), api::Error> {
    let ns = pod.metadata.namespace.as_deref();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    // Strategic merge patch: conditions merge by type, so other conditions stay.
    let patch = Patch::Strategic(json!({
        "status": {
            "phase": "Pending",
            "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastTransitionTime": api::Time(api::now()),
            }]
        }
    }));
    client
        .patch_status::<Pod>(ns, name, &patch, &PostParams::default())
        .await?;
    client
        .create_event(
            &object_reference(pod),
            "Warning",
            "FailedScheduling",
            message,
            COMPONENT,
        )
        .await?;
    Ok(())
}
