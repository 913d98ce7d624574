//! Node lifecycle: notices nodes that stopped heartbeating and moves their pods away.
//!
//! A node heartbeats by renewing its Lease in `kube-node-lease` (or by updating its
//! Ready condition's lastHeartbeatTime). The controller records, on its own monotonic
//! clock, when it last saw either change — as Kubernetes' probe timestamps do, so clocks
//! of other machines never matter and a new leader gives every node a full grace period.
//! A node silent for `grace_period` gets Ready=Unknown ("Kubelet stopped posting node
//! status."), its pods get Ready=False, and it is tainted
//! `node.kubernetes.io/unreachable` (NoSchedule and NoExecute); a node whose Ready is
//! False is tainted `node.kubernetes.io/not-ready`. When Ready is True again the taints
//! go. Pods on a node with a NoExecute taint they do not tolerate are evicted (deleted,
//! so their ReplicaSet recreates them elsewhere); a toleration with `tolerationSeconds`
//! delays that until the taint is that old.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use api::{
    Client, DeleteParams, Informer, InformerConfig, Lease, ListParams, Node, NodeCondition, Patch,
    Pod, PostParams, Store, Taint, Time, Timestamp, object_reference,
};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::meta::pod_is_active;
use crate::scheduler::filter::tolerates;

pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Timings of the node lifecycle controller.
#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// How long a node may be silent before it is Unknown (Kubernetes: 40 s).
    pub grace_period: Duration,
    /// How often nodes and evictions are checked (Kubernetes: 5 s).
    pub monitor_period: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            grace_period: Duration::from_secs(40),
            monitor_period: Duration::from_secs(5),
        }
    }
}

/// The last heartbeat seen of one node, and when (local clock).
#[derive(Debug, Clone, PartialEq)]
struct Probe {
    lease_renew: Option<String>,
    status_heartbeat: Option<String>,
    seen_at: Instant,
}

/// The node's Ready condition status ("True", "False", "Unknown"), if any.
pub fn ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str())
}

/// The NoSchedule/NoExecute taints a node should carry for its Ready state, keeping
/// the `timeAdded` of the ones it already has (tolerationSeconds count from there).
pub fn desired_taints(node: &Node, now: Timestamp) -> Vec<Taint> {
    let key = match ready_status(node) {
        Some("True") => None,
        Some("False") => Some(TAINT_NOT_READY),
        // No Ready condition yet: a node still registering, not a lost one.
        None => None,
        Some(_) => Some(TAINT_UNREACHABLE),
    };
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| t.key != TAINT_UNREACHABLE && t.key != TAINT_NOT_READY)
        .cloned()
        .collect();
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            let kept = current.iter().find(|t| t.key == key && t.effect == effect);
            out.push(kept.cloned().unwrap_or_else(|| Taint {
                key: key.into(),
                effect: effect.into(),
                value: None,
                time_added: Some(Time(now)),
            }));
        }
    }
    out
}

/// When a pod must leave a node with these taints: `Some(Duration::ZERO)` now,
/// `Some(d)` after `d`, `None` never (every NoExecute taint tolerated for good).
pub fn eviction_delay(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<Duration> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let mut delay: Option<Duration> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(Duration::ZERO);
        }
        // The shortest tolerationSeconds of the matching tolerations; none = forever.
        let Some(secs) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue;
        };
        let added = taint
            .time_added
            .as_ref()
            .map_or(now.as_second(), |t| t.0.as_second());
        let left = (added + secs.max(0) - now.as_second()).max(0) as u64;
        let d = Duration::from_secs(left);
        delay = Some(delay.map_or(d, |x| x.min(d)));
    }
    delay
}

/// Runs the controller until `shutdown`.
pub async fn run(client: Client, config: NodeLifecycleConfig, shutdown: CancellationToken) {
    let cfg = InformerConfig::default();
    let (n_inf, nodes, _n_events) =
        Informer::<Node, _>::for_client(client.clone(), None, ListParams::default(), cfg.clone());
    let (l_inf, leases, _l_events) = Informer::<Lease, _>::for_client(
        client.clone(),
        Some(NODE_LEASE_NAMESPACE),
        ListParams::default(),
        cfg.clone(),
    );
    let (p_inf, pods, _p_events) =
        Informer::<Pod, _>::for_client(client.clone(), None, ListParams::default(), cfg);
    // This controller polls the caches every monitor period, so the event channels
    // are drained and dropped.
    spawn_drained(n_inf, _n_events, &shutdown);
    spawn_drained(l_inf, _l_events, &shutdown);
    spawn_drained(p_inf, _p_events, &shutdown);
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = async { nodes.wait_synced().await; leases.wait_synced().await; pods.wait_synced().await } => {}
    }
    let mut c = Lifecycle {
        client,
        config: config.clone(),
        nodes,
        leases,
        pods,
        probes: HashMap::new(),
    };
    let mut tick = tokio::time::interval(config.monitor_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => c.pass().await,
        }
    }
}

/// Runs an informer whose events nobody reads (its cache is polled).
fn spawn_drained<T: api::Object, L: api::informer::ListerWatcher<T>>(
    informer: Informer<T, L>,
    mut events: tokio::sync::mpsc::Receiver<api::InformerEvent<T>>,
    shutdown: &CancellationToken,
) {
    tokio::spawn(informer.run(shutdown.clone()));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                e = events.recv() => if e.is_none() { return },
            }
        }
    });
}

struct Lifecycle {
    client: Client,
    config: NodeLifecycleConfig,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    probes: HashMap<String, Probe>,
}

impl Lifecycle {
    async fn pass(&mut self) {
        let now = api::now();
        let nodes = self.nodes.list();
        self.probes.retain(|name, _| {
            nodes
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some(name))
        });
        let mut pods_by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for p in self.pods.list() {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                pods_by_node.entry(n).or_default().push(p);
            }
        }
        for node in nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let pods = pods_by_node.remove(&name).unwrap_or_default();
            if let Err(e) = self.check(&node, &name, &pods, now).await {
                tracing::warn!(node = %name, error = %e, "node lifecycle pass failed");
            }
        }
    }

    /// Whether the node has been silent for the grace period (updates its probe).
    fn silent(&mut self, node: &Node, name: &str) -> bool {
        let lease_renew = self
            .leases
            .get(&api::key_of(Some(NODE_LEASE_NAMESPACE), name))
            .and_then(|l| {
                l.spec
                    .as_ref()
                    .and_then(|s| s.renew_time.as_ref())
                    .map(|t| t.0.to_string())
            });
        let status_heartbeat = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0.to_string());
        let probe = self
            .probes
            .entry(name.to_string())
            .or_insert_with(|| Probe {
                lease_renew: lease_renew.clone(),
                status_heartbeat: status_heartbeat.clone(),
                seen_at: Instant::now(),
            });
        if probe.lease_renew != lease_renew || probe.status_heartbeat != status_heartbeat {
            *probe = Probe {
                lease_renew,
                status_heartbeat,
                seen_at: Instant::now(),
            };
        }
        probe.seen_at.elapsed() > self.config.grace_period
    }

    async fn check(
        &mut self,
        node: &Arc<Node>,
        name: &str,
        pods: &[Arc<Pod>],
        now: Timestamp,
    ) -> Result<(), api::Error> {
        let mut node = (**node).clone();
        if self.silent(&node, name) && ready_status(&node) != Some("Unknown") {
            tracing::info!(node = %name, "node stopped heartbeating; marking Unknown");
            mark_unknown(&mut node, now);
            node = self
                .client
                .update_status(&node, &PostParams::default())
                .await?;
            for p in pods.iter().filter(|p| pod_is_active(p)) {
                let patch = Patch::Strategic(json!({"status": {"conditions": [
                    {"type": "Ready", "status": "False", "reason": "NodeLost",
                     "lastTransitionTime": Time(now)}]}}));
                let ns = p.metadata.namespace.as_deref();
                let pname = p.metadata.name.as_deref().unwrap_or("");
                if let Err(e) = self
                    .client
                    .patch_status::<Pod>(ns, pname, &patch, &PostParams::default())
                    .await
                    && !e.is_not_found()
                {
                    tracing::debug!(pod = %pname, error = %e, "could not mark pod not ready");
                }
            }
        }
        let taints = desired_taints(&node, now);
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if taints != current {
            node.spec.get_or_insert_with(Default::default).taints =
                (!taints.is_empty()).then(|| taints.clone());
            node = self.client.update(&node, &PostParams::default()).await?;
        }
        for p in pods.iter().filter(|p| pod_is_active(p)) {
            if eviction_delay(p, &taints, now) == Some(Duration::ZERO) {
                self.evict(&node, p).await;
            }
        }
        Ok(())
    }

    async fn evict(&self, node: &Node, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref();
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let params = DeleteParams {
            precondition_uid: pod.metadata.uid.clone(),
            ..Default::default()
        };
        match self.client.delete::<Pod>(ns, name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %name, node = ?node.metadata.name, "evicted from a tainted node");
                let _ = self
                    .client
                    .create_event(
                        &object_reference(pod),
                        "Normal",
                        "TaintManagerEviction",
                        &format!("Marking for deletion Pod {}/{name}", ns.unwrap_or("")),
                        "node-controller",
                    )
                    .await;
            }
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => tracing::warn!(pod = %name, error = %e, "eviction failed"),
        }
    }
}

/// Sets every node condition to Unknown (the agent is not there to say otherwise).
fn mark_unknown(node: &mut Node, now: Timestamp) {
    let status = node.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if !conditions.iter().any(|c| c.type_ == "Ready") {
        conditions.push(NodeCondition {
            type_: "Ready".into(),
            ..Default::default()
        });
    }
    for c in conditions.iter_mut() {
        if c.status != "Unknown" {
            c.last_transition_time = Some(Time(now));
        }
        c.status = "Unknown".into();
        c.reason = Some("NodeStatusUnknown".into());
        c.message = Some("Kubelet stopped posting node status.".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{NodeStatus, PodSpec, Toleration};

    fn node(ready: Option<&str>) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: ready.map(|r| {
                    vec![NodeCondition {
                        type_: "Ready".into(),
                        status: r.into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        let now = Timestamp::from_second(100).unwrap();
        assert!(desired_taints(&node(Some("True")), now).is_empty());
        assert!(desired_taints(&node(None), now).is_empty());
        let t = desired_taints(&node(Some("Unknown")), now);
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|t| t.key == TAINT_UNREACHABLE));
        let mut n = node(Some("False"));
        n.spec = Some(api::NodeSpec {
            taints: Some(t),
            ..Default::default()
        });
        let t = desired_taints(&n, now);
        assert!(t.iter().all(|t| t.key == TAINT_NOT_READY), "{t:?}");
        // Back to Ready: the taints go, other taints stay.
        let mut n = node(Some("True"));
        n.spec = Some(api::NodeSpec {
            taints: Some(vec![
                Taint {
                    key: "dedicated".into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                },
                Taint {
                    key: TAINT_UNREACHABLE.into(),
                    effect: "NoExecute".into(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        });
        let t = desired_taints(&n, now);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].key, "dedicated");
    }

    #[test]
    fn eviction_waits_for_toleration_seconds() {
        let now = Timestamp::from_second(1000).unwrap();
        let taint = Taint {
            key: TAINT_UNREACHABLE.into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: Some(Time(Timestamp::from_second(990).unwrap())),
        };
        let mut pod = Pod::default();
        assert_eq!(
            eviction_delay(&pod, std::slice::from_ref(&taint), now),
            Some(Duration::ZERO)
        );
        pod.spec = Some(PodSpec {
            tolerations: Some(vec![Toleration {
                key: Some(TAINT_UNREACHABLE.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(30),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(
            eviction_delay(&pod, std::slice::from_ref(&taint), now),
            Some(Duration::from_secs(20))
        );
        pod.spec.as_mut().unwrap().tolerations.as_mut().unwrap()[0].toleration_seconds = None;
        assert_eq!(
            eviction_delay(&pod, &[taint], now),
            None,
            "tolerated for good"
        );
        assert_eq!(eviction_delay(&pod, &[], now), None);
    }
}
