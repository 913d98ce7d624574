//! `agent --simulate N`: N nodes in one process on the fake runtime register, heartbeat,
//! and run a Deployment's pods (real etcd, real apiserver, the controllers, kubectl).
//!
//! Run: `cargo build -p apiserver -p agent && cargo test -p agent --test simulate`.

mod cluster_common;

use std::time::Duration;

use anyhow::Result;
use api::{Client, Deployment, Lease, ListParams, Node, ObjectMeta, Pod};
use cluster_common::*;

/// The object belongs to this test's simulator (its name starts with the prefix).
fn named_with(meta: &ObjectMeta, prefix: &str) -> bool {
    meta.name.as_deref().is_some_and(|x| x.starts_with(prefix))
}

/// Waits until exactly `n` node Leases carry the simulator's prefix.
async fn wait_for_leases(client: &Client, prefix: &str, n: usize) -> Result<()> {
    eventually(&format!("{n} node leases"), || async {
        let leases = client
            .list_all::<Lease>(Some("kube-node-lease"), &ListParams::default())
            .await?
            .0;
        let count = leases
            .iter()
            .filter(|l| named_with(&l.metadata, prefix))
            .count();
        Ok((count == n).then_some(()))
    })
    .await
}

fn ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_simulated_nodes_run_a_deployment() -> Result<()> {
    let cluster = Cluster::start(Duration::from_secs(40)).await?;
    let client = cluster.client()?;
    let prefix = format!("sim{}", std::process::id());
    let _sim = AgentProc::simulate(&cluster, &prefix, 50).await?;
    let nodes = client
        .list_all::<Node>(None, &ListParams::default())
        .await?
        .0;
    let ours: Vec<&Node> = nodes
        .iter()
        .filter(|n| named_with(&n.metadata, &prefix))
        .collect();
    assert_eq!(ours.len(), 50);
    assert!(ours.iter().all(|n| ready(n)), "all simulated nodes Ready");
    wait_for_leases(&client, &prefix, 50).await?;

    cluster.apply(
        "sim",
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: sim, namespace: default}
spec:
  replicas: 30
  selector: {matchLabels: {app: sim}}
  template:
    metadata: {labels: {app: sim}}
    spec:
      containers:
      - name: c
        image: anything:1
        resources: {requests: {cpu: 500m, memory: 256Mi}}
        readinessProbe: {httpGet: {path: /, port: 80}}
"#,
    )?;
    let params = ListParams::default().labels("app=sim");
    let pods: Vec<Pod> = eventually("30 pods Running and Ready", || async {
        let pods = client.list_all::<Pod>(Some("default"), &params).await?.0;
        let ready = pods
            .iter()
            .filter(|p| {
                let s = p.status.as_ref();
                s.and_then(|s| s.phase.as_deref()) == Some("Running")
                    && s.and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                        cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                    })
            })
            .count();
        Ok((ready == 30 && pods.len() == 30).then_some(pods))
    })
    .await?;
    assert!(pods.iter().all(|p| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| n.starts_with(&prefix))
    }));
    eventually("the Deployment available", || async {
        let d: Deployment = client.get(Some("default"), "sim").await?;
        Ok((d.status.and_then(|s| s.available_replicas) == Some(30)).then_some(()))
    })
    .await?;
    let out = cluster.kubectl(&["rollout", "status", "deployment/sim", "--timeout=60s"])?;
    assert!(out.contains("successfully rolled out"), "{out}");

    // Scaled to zero, the pods go away.
    cluster.kubectl(&["scale", "deployment/sim", "--replicas=0"])?;
    eventually("no sim pods left", || async {
        let pods = client.list_all::<Pod>(Some("default"), &params).await?.0;
        Ok(pods.is_empty().then_some(()))
    })
    .await?;
    Ok(())
}

/// The scale the scheduling bench needs: 1,000 simulated nodes in one process register,
/// keep their leases, and run 200 pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_simulated_nodes_hold() -> Result<()> {
    let cluster = Cluster::start(Duration::from_secs(40)).await?;
    let client = cluster.client()?;
    let prefix = format!("k{}", std::process::id());
    let t0 = std::time::Instant::now();
    let sim = AgentProc::simulate(&cluster, &prefix, 1000).await?;
    eprintln!("1000 nodes registered in {:?}", t0.elapsed());
    let nodes = client
        .list_all::<Node>(None, &ListParams::default())
        .await?
        .0;
    let ready_ours = nodes
        .iter()
        .filter(|n| named_with(&n.metadata, &prefix))
        .filter(|n| ready(n))
        .count();
    assert_eq!(ready_ours, 1000);
    wait_for_leases(&client, &prefix, 1000).await?;
    cluster.apply(
        "big",
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: big, namespace: default}
spec:
  replicas: 200
  selector: {matchLabels: {app: big}}
  template:
    metadata: {labels: {app: big}}
    spec:
      containers:
      - {name: c, image: "anything:1", resources: {requests: {cpu: 100m}}}
"#,
    )?;
    let t1 = std::time::Instant::now();
    eventually("the Deployment's 200 pods available", || async {
        let d: Deployment = client.get(Some("default"), "big").await?;
        Ok((d.status.and_then(|s| s.available_replicas) == Some(200)).then_some(()))
    })
    .await?;
    eprintln!("200 pods available in {:?}", t1.elapsed());
    let rss = std::fs::read_to_string(format!("/proc/{}/status", sim.pid()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("")
        .to_string();
    eprintln!("simulator {rss}");
    Ok(())
}
