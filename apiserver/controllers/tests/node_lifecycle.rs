//! A node that stops heartbeating becomes Unknown, is tainted unreachable, and its pods
//! are recreated on the other node; when it heartbeats again the taints go.

mod common;

use std::time::Duration;

use anyhow::Result;
use api::{ListParams, Node, Pod};
use common::*;

fn running_on(pods: &[Pod], node: &str) -> usize {
    pods.iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_node_goes_unknown_and_its_pods_move() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client()?;
    let kubelet = Kubelet::start(
        &client,
        vec![node("node-a", "8", "16Gi"), node("node-b", "8", "16Gi")],
    )
    .await?;
    let mut config = controllers::RunConfig::new("test");
    config.node_lifecycle.grace_period = Duration::from_secs(3);
    config.node_lifecycle.monitor_period = Duration::from_millis(500);
    let _stop = start_controllers(client.clone(), config);
    let path = cluster.dir.path().join("web.yaml");
    std::fs::write(
        &path,
        deployment_yaml("web", 4, "100m", "busybox", "{type: RollingUpdate}"),
    )?;
    cluster.kubectl(&["apply", "-f", &path.display().to_string()])?;
    let params = ListParams::default().labels("app=web");
    eventually("4 running pods spread over both nodes", || {
        let (client, params) = (client.clone(), params.clone());
        async move {
            let pods = client.list_all::<Pod>(Some("default"), &params).await?.0;
            Ok(
                (running_on(&pods, "node-a") == 2 && running_on(&pods, "node-b") == 2)
                    .then_some(()),
            )
        }
    })
    .await?;

    kubelet.set_live("node-a", false);
    let n: Node = eventually("node-a Unknown and tainted", || {
        let client = client.clone();
        async move {
            let n: Node = client.get(None, "node-a").await?;
            let unknown = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Ready" && c.status == "Unknown")
                });
            let tainted = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|ts| {
                    ts.iter().any(|t| {
                        t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute"
                    })
                });
            Ok((unknown && tainted).then_some(n))
        }
    })
    .await?;
    let ready = n
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
    eventually("all 4 pods running on node-b", || {
        let (client, params) = (client.clone(), params.clone());
        async move {
            let pods = client.list_all::<Pod>(Some("default"), &params).await?.0;
            Ok((pods.len() == 4 && running_on(&pods, "node-b") == 4).then_some(()))
        }
    })
    .await?;

    // The node comes back: Ready again, and the taints are removed.
    kubelet.set_live("node-a", true);
    eventually("node-a Ready and untainted", || {
        let client = client.clone();
        async move {
            let n: Node = client.get(None, "node-a").await?;
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let tainted = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|ts| !ts.is_empty());
            Ok((ready && !tainted).then_some(()))
        }
    })
    .await?;
    let pods = client.list_all::<Pod>(Some("default"), &params).await?.0;
    assert_eq!(pods.len(), 4, "no pod was lost or duplicated");
    Ok(())
}
