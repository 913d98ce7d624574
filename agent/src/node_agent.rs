//! The agent against the apiserver (one real node): register the Node, heartbeat its
//! Lease, watch the pods bound to it (`fieldSelector=spec.nodeName=NAME`) and hand the
//! complete set to the [`Agent`] on every change, write their statuses through
//! `pods/status`, serve container logs on `node-ip:kubelet-port`, and run the service
//! proxy on the node IP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::{CancellationToken, Client, Informer, InformerConfig, ListParams, Node, Pod};
use tokio::sync::mpsc;

use crate::agent::{Agent, AgentConfig};
use crate::apisink::ApiStatusWriter;
use crate::node::{NodeHeartbeat, NodeInfo};
use crate::runtime::{ContainerRuntime, ListFilter};

/// Status writes in flight at once for one node.
const STATUS_WRITERS: usize = 8;

/// Everything a node agent needs besides the client and the runtime.
#[derive(Clone, Debug)]
pub struct NodeAgentConfig {
    pub node: NodeInfo,
    pub agent: AgentConfig,
    /// Run the service proxy on the node IP.
    pub proxy: bool,
}

/// A running node agent; `shutdown` stops it and leaves containers running.
pub struct NodeAgent {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Where the log server listens.
    pub log_addr: SocketAddr,
}

impl NodeAgent {
    /// Registers the node (fails if it cannot) and starts everything in the background.
    pub async fn start(
        client: Client,
        runtime: Arc<dyn ContainerRuntime>,
        config: NodeAgentConfig,
    ) -> anyhow::Result<Self> {
        let log_addr = SocketAddr::new(config.node.ip, config.node.kubelet_port);
        let listener = tokio::net::TcpListener::bind(log_addr)
            .await
            .with_context(|| format!("binding the log server to {log_addr}"))?;
        let log_addr = listener.local_addr()?;
        let mut node = config.node.clone();
        node.kubelet_port = log_addr.port();
        crate::node::register_until_reachable(&client, &node)
            .await
            .with_context(|| format!("registering node {}", node.name))?;
        let stop = CancellationToken::new();
        let s = stop.clone();
        let logs = crate::logs::router(runtime.clone(), &node.name);
        tokio::spawn(crate::logs::serve(listener, logs, async move {
            s.cancelled().await
        }));
        let config = NodeAgentConfig { node, ..config };
        let task = tokio::spawn(run(client, runtime, config, stop.clone()));
        Ok(Self {
            stop,
            task,
            log_addr,
        })
    }

    /// Stops the agent's tasks (containers keep running for the next agent to adopt).
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn run(
    client: Client,
    runtime: Arc<dyn ContainerRuntime>,
    config: NodeAgentConfig,
    stop: CancellationToken,
) {
    let name = config.node.name.clone();
    let informer_config = InformerConfig {
        resync: None,
        ..Default::default()
    };
    let (p_inf, pods, mut p_events) = Informer::<Pod, _>::for_client(
        client.clone(),
        None,
        ListParams::default().fields(&format!("spec.nodeName={name}")),
        informer_config.clone(),
    );
    let (n_inf, nodes, n_events) = Informer::<Node, _>::for_client(
        client.clone(),
        None,
        ListParams::default().fields(&format!("metadata.name={name}")),
        informer_config,
    );
    tokio::spawn(p_inf.run(stop.clone()));
    tokio::spawn(n_inf.run(stop.clone()));
    drain(n_events, stop.clone());
    tokio::spawn(heartbeat(
        client.clone(),
        NodeHeartbeat::new(config.node.clone()),
        nodes,
        Some(runtime.clone()),
        Duration::ZERO,
        stop.clone(),
    ));
    if config.proxy {
        tokio::spawn(crate::proxy::run(
            client.clone(),
            config.node.ip,
            stop.clone(),
        ));
    }
    let writer = ApiStatusWriter::start(client, pods.clone(), STATUS_WRITERS, stop.clone());
    let mut agent_config = config.agent.clone();
    agent_config.host_ip = Some(config.node.ip);
    agent_config.node_name = name.clone();
    let agent = Agent::start(runtime, agent_config, Arc::new(writer));
    tokio::select! {
        _ = stop.cancelled() => { agent.shutdown().await; return; }
        _ = pods.wait_synced() => {}
    }
    loop {
        let list: Vec<Pod> = pods.list().iter().map(|p| (**p).clone()).collect();
        if agent.set_pods(list).await.is_err() {
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            e = p_events.recv() => if e.is_none() { break },
        }
        // Coalesce a burst of events into one set.
        while p_events.try_recv().is_ok() {}
    }
    agent.shutdown().await;
}

/// Empties an informer's event channel nobody reads (its cache is what is used).
pub(crate) fn drain<T: Send + Sync + 'static>(
    mut events: mpsc::Receiver<api::InformerEvent<T>>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                e = events.recv() => if e.is_none() { return },
            }
        }
    });
}

/// Renews the node Lease every quarter of its duration (after `offset`, to spread
/// simulated nodes) and reports the node status when due or when the server's Ready
/// differs from what the agent sees (Ready=False while the container runtime does not
/// answer).
pub(crate) async fn heartbeat(
    client: Client,
    mut beat: NodeHeartbeat,
    nodes: api::Store<Node>,
    runtime: Option<Arc<dyn ContainerRuntime>>,
    offset: Duration,
    stop: CancellationToken,
) {
    let start = tokio::time::Instant::now() + offset;
    let mut tick = tokio::time::interval_at(start, beat.info.lease_renew_period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = beat.renew_lease(&client).await {
            tracing::warn!(node = %beat.info.name, error = %e, "lease renewal failed");
        }
        if let Some(runtime) = &runtime {
            // A cheap call that needs a working runtime: list one (absent) pod's containers.
            let probe = ListFilter {
                node_name: beat.info.name.clone(),
                pod_uid: Some("-runtime-health-check-".into()),
            };
            let error = runtime.list(&probe).await.err().map(|e| e.to_string());
            if error.is_some() != beat.runtime_error.is_some() {
                tracing::warn!(node = %beat.info.name, error = ?error, "container runtime health changed");
            }
            beat.runtime_error = error;
        }
        let current = nodes.get(&beat.info.name);
        if let Err(e) = beat.report_status(&client, current.as_deref()).await {
            tracing::warn!(node = %beat.info.name, error = %e, "node status update failed");
        }
    }
}
