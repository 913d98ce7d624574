//! Simulated nodes (kwok-style, for scheduling and control-plane load): N nodes in one
//! process, each with its own in-memory `FakeRuntime` and `Agent`, so pods bound to them
//! go Running and Ready at once and deleted pods go away, through the same pod workers,
//! status computation and status writes as a real node.
//!
//! Cheap at 1,000 nodes: one pod informer and one node informer for all of them (no
//! per-node watch; pods are routed to their node's agent by `spec.nodeName`, pods of
//! other nodes ignored), one status writer with bounded concurrency, and heartbeats
//! spread evenly over the 10 s lease period (one PUT per node per period). Probes are
//! dropped from simulated pods: there is nothing to probe.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context;
use api::{
    CancellationToken, Client, Informer, InformerConfig, InformerEvent, ListParams, Node, Pod,
};
use futures::StreamExt;

use crate::agent::{Agent, AgentConfig};
use crate::apisink::ApiStatusWriter;
use crate::node::{NodeHeartbeat, NodeInfo};
use crate::node_agent::{drain, heartbeat};
use crate::runtime::FakeRuntime;

/// Registrations in flight at once.
const REGISTER_CONCURRENCY: usize = 16;
/// Status writes in flight at once, for all simulated nodes.
const STATUS_WRITERS: usize = 32;

/// The simulated nodes' shape.
#[derive(Clone, Debug)]
pub struct SimulateConfig {
    pub count: usize,
    /// Nodes are named `{prefix}-{i}`.
    pub prefix: String,
    /// Every simulated node reports this InternalIP (nothing listens there for them).
    pub ip: IpAddr,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub labels: std::collections::BTreeMap<String, String>,
    pub kubelet_port: u16,
    /// The node Leases' duration in seconds (renewed every quarter of it).
    pub lease_duration_s: i32,
}

impl SimulateConfig {
    pub fn node_name(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }
}

/// Running simulated nodes.
pub struct Simulation {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    pub nodes: Vec<String>,
}

impl Simulation {
    /// Registers every node (fails if any cannot be), then runs them in the background.
    pub async fn start(client: Client, config: SimulateConfig) -> anyhow::Result<Self> {
        if config.count == 0 {
            anyhow::bail!("--simulate needs at least one node");
        }
        let infos: Vec<NodeInfo> = (0..config.count)
            .map(|i| NodeInfo {
                name: config.node_name(i),
                ip: config.ip,
                labels: config.labels.clone(),
                cpu: config.cpu.clone(),
                memory: config.memory.clone(),
                pods: config.pods,
                kubelet_port: config.kubelet_port,
                runtime_version: "fake://0".into(),
                lease_duration_s: config.lease_duration_s,
            })
            .collect();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(infos.clone())
            .map(|info| {
                let client = client.clone();
                async move {
                    crate::node::register_until_reachable(&client, &info)
                        .await
                        .map(|_| ())
                        .with_context(|| format!("registering simulated node {}", info.name))
                }
            })
            .buffer_unordered(REGISTER_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        let stop = CancellationToken::new();
        let nodes = infos.iter().map(|i| i.name.clone()).collect();
        let task = tokio::spawn(run(client, config, infos, stop.clone()));
        Ok(Self { stop, task, nodes })
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// A simulated pod: the same pod without probes (the fake runtime has nothing to probe).
fn simulated(pod: &Pod) -> Pod {
    let mut pod = pod.clone();
    if let Some(spec) = pod.spec.as_mut() {
        for c in &mut spec.containers {
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
        }
    }
    pod
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

async fn run(
    client: Client,
    config: SimulateConfig,
    infos: Vec<NodeInfo>,
    stop: CancellationToken,
) {
    let informer_config = InformerConfig {
        resync: None,
        event_buffer: 8192,
        ..Default::default()
    };
    let (p_inf, pods, mut p_events) = Informer::<Pod, _>::for_client(
        client.clone(),
        None,
        ListParams::default(),
        informer_config.clone(),
    );
    let (n_inf, nodes, n_events) = Informer::<Node, _>::for_client(
        client.clone(),
        None,
        ListParams::default(),
        informer_config,
    );
    tokio::spawn(p_inf.run(stop.clone()));
    tokio::spawn(n_inf.run(stop.clone()));
    drain(n_events, stop.clone());
    let writer = Arc::new(ApiStatusWriter::start(
        client.clone(),
        pods.clone(),
        STATUS_WRITERS,
        stop.clone(),
    ));
    let n = infos.len().max(1) as u32;
    let mut agents: HashMap<String, Agent> = HashMap::new();
    for (i, info) in infos.into_iter().enumerate() {
        let offset = info.lease_renew_period() * (i as u32) / n;
        let mut agent_config = AgentConfig::new(&info.name);
        agent_config.host_ip = Some(config.ip);
        agent_config.max_pods = config.pods as usize;
        let agent = Agent::start(Arc::new(FakeRuntime::new()), agent_config, writer.clone());
        agents.insert(info.name.clone(), agent);
        tokio::spawn(heartbeat(
            client.clone(),
            NodeHeartbeat::new(info),
            nodes.clone(),
            None,
            offset,
            stop.clone(),
        ));
    }
    tokio::select! {
        _ = stop.cancelled() => { shutdown_all(agents).await; return; }
        _ = pods.wait_synced() => {}
    }
    // The first set for every node (empty ones too: that lets their orphan sweep run).
    let mut by_node: HashMap<String, HashMap<String, Pod>> = HashMap::new();
    for p in pods.list() {
        if let Some(node) = node_of(&p).filter(|n| agents.contains_key(*n)) {
            by_node
                .entry(node.to_string())
                .or_default()
                .insert(api::object_key(p.as_ref()), simulated(&p));
        }
    }
    for (name, agent) in &agents {
        let set = by_node
            .get(name)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let _ = agent.set_pods(set).await;
    }
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            e = p_events.recv() => match e { Some(e) => e, None => break },
        };
        let mut dirty = HashSet::new();
        let mut apply = |e: InformerEvent<Pod>| {
            let (old_node, new) = match &e {
                InformerEvent::Added(p) | InformerEvent::Resync(p) => (None, Some(p.clone())),
                InformerEvent::Updated { old, new } => {
                    (node_of(old).map(str::to_string), Some(new.clone()))
                }
                InformerEvent::Deleted(p) => (node_of(p).map(str::to_string), None),
            };
            let key = e.key();
            if let Some(node) = old_node.filter(|n| agents.contains_key(n))
                && let Some(m) = by_node.get_mut(&node)
                && m.remove(&key).is_some()
            {
                dirty.insert(node);
            }
            if let Some(p) = new
                && let Some(node) = node_of(&p).filter(|n| agents.contains_key(*n))
            {
                by_node
                    .entry(node.to_string())
                    .or_default()
                    .insert(key, simulated(&p));
                dirty.insert(node.to_string());
            }
        };
        apply(first);
        while let Ok(e) = p_events.try_recv() {
            apply(e);
        }
        for node in dirty {
            if let Some(agent) = agents.get(&node) {
                let set = by_node
                    .get(&node)
                    .map(|m| m.values().cloned().collect())
                    .unwrap_or_default();
                let _ = agent.set_pods(set).await;
            }
        }
    }
    shutdown_all(agents).await;
}

async fn shutdown_all(agents: HashMap<String, Agent>) {
    futures::future::join_all(agents.into_values().map(Agent::shutdown)).await;
}

/// The most simulated nodes one process runs.
pub const MAX_NODES: usize = 5000;
