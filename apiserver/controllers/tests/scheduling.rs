//! The scheduler against a real apiserver over real etcd: a 10-replica Deployment with
//! CPU requests over three nodes is spread (LeastAllocated) or packed (MostAllocated)
//! exactly as the strategy says, and a pod that fits nowhere stays Pending with
//! PodScheduled=False, the reason, and a FailedScheduling event.

mod common;

use std::collections::BTreeMap;

use anyhow::Result;
use api::{Event, ListParams, Pod};
use common::*;
use controllers::scheduler::Strategy;

async fn placement(strategy: Strategy) -> Result<(Cluster, BTreeMap<String, usize>)> {
    let cluster = Cluster::start().await?;
    let client = cluster.client()?;
    let _kubelet = Kubelet::start(
        &client,
        vec![
            node("node-a", "4", "8Gi"),
            node("node-b", "4", "8Gi"),
            node("node-c", "4", "8Gi"),
        ],
    )
    .await?;
    let mut config = controllers::RunConfig::new("test");
    config.scheduler.strategy = strategy;
    let _stop = start_controllers(client.clone(), config);
    let manifest = deployment_yaml("web", 10, "1", "busybox", "{type: RollingUpdate}");
    std::fs::write(cluster.dir.path().join("web.yaml"), &manifest)?;
    cluster.kubectl(&[
        "apply",
        "-f",
        &cluster.dir.path().join("web.yaml").display().to_string(),
    ])?;
    let counts = eventually("10 pods bound", || {
        let client = client.clone();
        async move {
            let (pods, _) = client
                .list_all::<Pod>(Some("default"), &ListParams::default().labels("app=web"))
                .await?;
            let bound: Vec<String> = pods
                .iter()
                .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                .collect();
            if pods.len() != 10 || bound.len() != 10 {
                return Ok(None);
            }
            let mut counts = BTreeMap::new();
            for n in bound {
                *counts.entry(n).or_insert(0) += 1;
            }
            Ok(Some(counts))
        }
    })
    .await?;
    Ok((cluster, counts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_allocated_spreads_ten_pods_over_three_nodes() -> Result<()> {
    let (cluster, counts) = placement(Strategy::LeastAllocated).await?;
    let mut sizes: Vec<usize> = counts.values().copied().collect();
    sizes.sort();
    assert_eq!(sizes, vec![3, 3, 4], "spread: {counts:?}");

    // A pod that fits nowhere stays Pending, with the reason on the pod and in an event.
    let client = cluster.client()?;
    let big = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"huge","namespace":"default"},
        "spec":{"containers":[{"name":"c","image":"busybox","resources":{"requests":{"cpu":"64"}}}]}}"#;
    let pod: Pod = serde_json::from_str(big)?;
    client.create(&pod, &Default::default()).await?;
    let message = eventually("PodScheduled=False on the huge pod", || {
        let client = client.clone();
        async move {
            let p: Pod = client.get(Some("default"), "huge").await?;
            let cond = p
                .status
                .and_then(|s| s.conditions)
                .and_then(|cs| cs.into_iter().find(|c| c.type_ == "PodScheduled"));
            Ok(cond
                .filter(|c| c.status == "False")
                .map(|c| (c.reason, c.message)))
        }
    })
    .await?;
    assert_eq!(message.0.as_deref(), Some("Unschedulable"));
    assert_eq!(
        message.1.as_deref(),
        Some("0/3 nodes are available: 3 Insufficient cpu.")
    );
    let p: Pod = client.get(Some("default"), "huge").await?;
    assert!(
        p.spec.and_then(|s| s.node_name).is_none(),
        "the huge pod must stay unbound"
    );
    assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    let events = eventually("a FailedScheduling event", || {
        let client = client.clone();
        async move {
            let (events, _) = client
                .list_all::<Event>(Some("default"), &ListParams::default())
                .await?;
            let found: Vec<Event> = events
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
                .filter(|e| e.involved_object.name.as_deref() == Some("huge"))
                .collect();
            Ok((!found.is_empty()).then_some(found))
        }
    })
    .await?;
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    assert!(
        events[0]
            .message
            .as_deref()
            .unwrap_or("")
            .contains("Insufficient cpu")
    );
    let described = cluster.kubectl(&["get", "pod", "huge", "-o", "jsonpath={.status.phase}"])?;
    assert_eq!(described, "Pending");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn most_allocated_packs_ten_pods_onto_the_fewest_nodes() -> Result<()> {
    let (_cluster, counts) = placement(Strategy::MostAllocated).await?;
    let mut sizes: Vec<usize> = counts.values().copied().collect();
    sizes.sort();
    // 4-CPU nodes, 1-CPU pods: two full nodes and the remainder on the third.
    assert_eq!(sizes, vec![2, 4, 4], "packed: {counts:?}");
    Ok(())
}
