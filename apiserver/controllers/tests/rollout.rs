//! Rolling update and rollback against a real apiserver with the real kubectl: while
//! the template changes, a watch on the pods never sees fewer Ready pods than
//! replicas − maxUnavailable (once the first rollout finished) nor more pods than
//! replicas + maxSurge; `kubectl rollout status` returns and `kubectl rollout undo`
//! restores the previous template.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use api::{Deployment, ListParams, Pod, WatchParams};
use common::*;
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_respects_surge_and_unavailability_and_undo_restores() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client()?;
    let _kubelet = Kubelet::start(
        &client,
        vec![node("node-a", "16", "32Gi"), node("node-b", "16", "32Gi")],
    )
    .await?;
    let _stop = start_controllers(client.clone(), controllers::RunConfig::new("test"));
    let strategy = "{type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}";
    let path = cluster.dir.path().join("web.yaml");
    std::fs::write(
        &path,
        deployment_yaml("web", 6, "100m", "busybox:1", strategy),
    )?;
    let path = path.display().to_string();
    cluster.kubectl(&["apply", "-f", &path])?;
    cluster.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])?;

    // Watch every pod from now on and check both bounds after each event.
    let (pods0, rv) = client
        .list_all::<Pod>(Some("default"), &ListParams::default())
        .await?;
    // The apiserver's watch cache may trail the list by a moment (it answers 504
    // "Too large resource version" meanwhile, as kube does): retry briefly.
    let mut stream = eventually("a watch from the list's resourceVersion", || {
        let client = client.clone();
        let rv = rv.clone();
        async move {
            Ok(client
                .watch::<Pod>(Some("default"), &WatchParams::default(), &rv)
                .await
                .ok())
        }
    })
    .await?;
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let v = violations.clone();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen_w = seen.clone();
    let watcher = tokio::spawn(async move {
        let mut pods: HashMap<String, bool> = pods0
            .iter()
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), ready(p)))
            .collect();
        while let Some(Ok(ev)) = stream.next().await {
            match &ev {
                api::WatchEvent::Added(p) | api::WatchEvent::Modified(p) => {
                    pods.insert(p.metadata.name.clone().unwrap_or_default(), ready(p));
                }
                api::WatchEvent::Deleted(p) => {
                    pods.remove(&p.metadata.name.clone().unwrap_or_default());
                }
                _ => continue,
            }
            seen_w.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let total = pods.len();
            let ready_n = pods.values().filter(|r| **r).count();
            if total > 7 || ready_n < 5 {
                v.lock()
                    .unwrap()
                    .push(format!("{total} pods, {ready_n} ready"));
            }
        }
    });

    std::fs::write(
        &path,
        deployment_yaml("web", 6, "100m", "busybox:2", strategy),
    )?;
    cluster.kubectl(&["apply", "-f", &path])?;
    cluster.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])?;
    let d: Deployment = client.get(Some("default"), "web").await?;
    assert_eq!(image(&d), "busybox:2");

    let out = cluster.kubectl(&["rollout", "undo", "deployment/web"])?;
    assert!(out.contains("rolled back"), "{out}");
    cluster.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])?;
    let d: Deployment = client.get(Some("default"), "web").await?;
    assert_eq!(
        image(&d),
        "busybox:1",
        "undo restores the previous template"
    );
    let status = d.status.clone().unwrap_or_default();
    assert_eq!(
        (
            status.updated_replicas,
            status.available_replicas,
            status.replicas
        ),
        (Some(6), Some(6), Some(6))
    );
    // The undone revision became the newest: revision 3.
    let rev = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision").cloned());
    assert_eq!(rev.as_deref(), Some("3"));
    let pods = client
        .list_all::<Pod>(Some("default"), &ListParams::default().labels("app=web"))
        .await?
        .0;
    assert_eq!(pods.len(), 6);
    assert!(
        pods.iter()
            .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("busybox:1"))
    );
    watcher.abort();
    // Two rollouts of 6 pods: at least 12 creations and 12 deletions were watched.
    let seen = seen.load(std::sync::atomic::Ordering::Relaxed);
    assert!(seen >= 24, "the watch saw only {seen} pod events");
    let v = violations.lock().unwrap().clone();
    assert!(v.is_empty(), "bounds violated: {v:?}");
    Ok(())
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}
