//! `--apiserver URL1,URL2`: when the first apiserver dies, the agent carries on through
//! the second — its Lease keeps being renewed and new pods bound to it still run (real
//! etcd, two real apiservers, the real agent binary on the fake runtime). A deleted Node
//! object comes back: the agent registers it again.

mod cluster_common;

use anyhow::Result;
use api::{Lease, Pod, PostParams};
use cluster_common::*;

fn bound_pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "anything:1"}]}
    }))
    .unwrap()
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_fails_over_to_the_second_apiserver() -> Result<()> {
    let mut cluster = Cluster::start_bare_n(2).await?;
    let mut config = api::Config::from_kubeconfig(&cluster.admin_kubeconfig(), None)?;
    config.servers = vec![cluster.urls[1].parse()?];
    let second = api::Client::new(config)?;
    let node = format!("failover-{}", std::process::id());
    let servers = cluster.urls.join(",");
    let _agent = AgentProc::start(
        &cluster,
        &node,
        &loopback_ip(),
        &[
            "--apiserver",
            &servers,
            "--runtime",
            "fake",
            "--node-lease-duration-s",
            "4",
        ],
    )
    .await?;
    second
        .create(&bound_pod("before", &node), &PostParams::default())
        .await?;
    eventually("before Running", || async {
        let p: Pod = second.get(Some("default"), "before").await?;
        Ok(running(&p).then_some(()))
    })
    .await?;

    cluster.kill_apiserver(0);
    let renew = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone());
    let first: Lease = second.get(Some("kube-node-lease"), &node).await?;
    eventually("the lease renewed through the second apiserver", || async {
        let l: Lease = second.get(Some("kube-node-lease"), &node).await?;
        Ok((renew(&l) != renew(&first)).then_some(()))
    })
    .await?;
    second
        .create(&bound_pod("after", &node), &PostParams::default())
        .await?;
    eventually("after Running", || async {
        let p: Pod = second.get(Some("default"), "after").await?;
        Ok(running(&p).then_some(()))
    })
    .await?;

    // A deleted Node object is registered again by its live agent.
    let before: api::Node = second.get(None, &node).await?;
    second
        .delete::<api::Node>(None, &node, &api::DeleteParams::default())
        .await?;
    let again: api::Node = eventually("the node registered again", || async {
        let n = second.get_opt::<api::Node>(None, &node).await?;
        Ok(n.filter(|n| n.metadata.uid != before.metadata.uid))
    })
    .await?;
    assert!(again.status.and_then(|s| s.allocatable).is_some());
    Ok(())
}
