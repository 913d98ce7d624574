//! The node's side of the control plane: registering the Node object (capacity,
//! allocatable, addresses, labels, the kubelet endpoint, nodeInfo), keeping its
//! conditions through `nodes/status`, and renewing its Lease in `kube-node-lease` (the
//! heartbeat the node lifecycle controller reads).
//!
//! [`NodeHeartbeat`] holds one node's state between beats: the last Lease the server
//! returned (renewed with it as the precondition, so one beat is one PUT), and when the
//! status was last written. The real agent runs one; `--simulate` runs one per node.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use api::k8s_openapi::api::core::v1::{DaemonEndpoint, NodeDaemonEndpoints};
use api::{
    Client, Lease, LeaseSpec, MicroTime, Node, NodeAddress, NodeCondition, NodeStatus,
    NodeSystemInfo, ObjectMeta, PostParams, Quantity, Time,
};

/// Where node Leases live.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Lease duration written in the Lease by default (the kubelet's 40 s); the Lease is
/// renewed every quarter of it (10 s), as the kubelet does.
pub const LEASE_DURATION_S: i32 = 40;
/// The node status (conditions with lastHeartbeatTime) is rewritten at least this often
/// even when nothing changed, and at once when the server's Ready is not True.
pub const STATUS_REPORT_PERIOD: Duration = Duration::from_secs(60);

/// What a node reports about itself.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    /// InternalIP address (also where the log server and the service proxy listen).
    pub ip: IpAddr,
    /// Labels besides `kubernetes.io/hostname` (always set to the node name).
    pub labels: BTreeMap<String, String>,
    /// CPU capacity, a quantity ("4", "2500m").
    pub cpu: String,
    /// Memory capacity, a quantity ("8Gi").
    pub memory: String,
    /// Most pods the node takes.
    pub pods: u32,
    /// The port of the log server (status.daemonEndpoints.kubeletEndpoint.Port).
    pub kubelet_port: u16,
    /// nodeInfo.containerRuntimeVersion ("docker://27.3.1", "fake://0").
    pub runtime_version: String,
    /// The Lease's leaseDurationSeconds; renewed every quarter of it.
    pub lease_duration_s: i32,
}

impl NodeInfo {
    /// How often the Lease is renewed: a quarter of its duration, at least 1 s.
    pub fn lease_renew_period(&self) -> Duration {
        let ms = u64::try_from(self.lease_duration_s.max(4)).unwrap_or(40) * 250;
        Duration::from_millis(ms)
    }
}

/// Validates a CPU or memory flag with the shared quantity parser.
pub fn check_quantity(what: &str, value: &str) -> anyhow::Result<String> {
    let q = api::quantity::parse_quantity(value)
        .map_err(|e| anyhow::anyhow!("--{what} {value:?} is not a quantity: {e}"))?;
    if q.is_negative() || q.millis() == 0 {
        anyhow::bail!("--{what} {value:?} must be positive");
    }
    Ok(value.to_string())
}

/// Parses `k=v,k2=v2` (empty string: no labels).
pub fn parse_labels(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            anyhow::bail!("--labels: {part:?} is not key=value");
        };
        if k.is_empty() || k.len() > 317 || v.len() > 63 {
            anyhow::bail!("--labels: {part:?} has an empty or too long key or value");
        }
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

/// The host's CPU count and memory, as quantities.
pub fn host_capacity() -> (String, String) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(1024 * 1024);
    (cpus.to_string(), format!("{mem_kib}Ki"))
}

fn resources(info: &NodeInfo) -> BTreeMap<String, Quantity> {
    [
        ("cpu".to_string(), Quantity(info.cpu.clone())),
        ("memory".to_string(), Quantity(info.memory.clone())),
        ("pods".to_string(), Quantity(info.pods.to_string())),
    ]
    .into()
}

fn condition(kind: &str, status: &str, reason: &str, message: &str, now: Time) -> NodeCondition {
    NodeCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// The conditions the agent reports; transition times are kept from `previous` when the
/// status did not change.
pub fn conditions(
    previous: Option<&[NodeCondition]>,
    now: Time,
    runtime_error: Option<&str>,
) -> Vec<NodeCondition> {
    let ready = match runtime_error {
        None => condition(
            "Ready",
            "True",
            "KubeletReady",
            "agent is posting ready status",
            now.clone(),
        ),
        Some(e) => condition(
            "Ready",
            "False",
            "KubeletNotReady",
            &format!("container runtime is down: {e}"),
            now.clone(),
        ),
    };
    let fresh = [
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "agent has sufficient memory available",
            now.clone(),
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "agent has no disk pressure",
            now.clone(),
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "agent has sufficient PID available",
            now,
        ),
        ready,
    ];
    fresh
        .into_iter()
        .map(|mut c| {
            if let Some(old) = previous
                .and_then(|p| p.iter().find(|o| o.type_ == c.type_))
                .filter(|o| o.status == c.status)
            {
                c.last_transition_time = old.last_transition_time.clone();
            }
            c
        })
        .collect()
}

/// The node's status as the agent reports it.
pub fn node_status(
    info: &NodeInfo,
    previous: Option<&NodeStatus>,
    runtime_error: Option<&str>,
) -> NodeStatus {
    let now = Time(api::now());
    NodeStatus {
        capacity: Some(resources(info)),
        allocatable: Some(resources(info)),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: info.ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: info.name.clone(),
            },
        ]),
        conditions: Some(conditions(
            previous.and_then(|s| s.conditions.as_deref()),
            now,
            runtime_error,
        )),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(info.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.into(),
            operating_system: std::env::consts::OS.into(),
            kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            os_image: "kvstore agent".into(),
            container_runtime_version: info.runtime_version.clone(),
            kubelet_version: format!("v1.33.0-agent.{}", env!("CARGO_PKG_VERSION")),
            kube_proxy_version: String::new(),
            machine_id: info.name.clone(),
            system_uuid: info.name.clone(),
            boot_id: String::new(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The node's Ready condition status, if any.
pub fn ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// Creates the Node, or takes over an existing one (labels and addresses brought up to
/// date), then writes its status through `nodes/status`. Returns the node as stored.
pub async fn register(client: &Client, info: &NodeInfo) -> Result<Node, api::Error> {
    let mut labels = info.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), info.name.clone());
    labels.insert("kubernetes.io/os".into(), std::env::consts::OS.into());
    let wanted = Node {
        metadata: ObjectMeta {
            name: Some(info.name.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: None,
        status: Some(node_status(info, None, None)),
    };
    let mut node = match client.create(&wanted, &PostParams::default()).await {
        Ok(n) => n,
        Err(e) if e.is_already_exists() => {
            let mut current: Node = client.get(None, &info.name).await?;
            let have = current.metadata.labels.get_or_insert_with(Default::default);
            if labels.iter().any(|(k, v)| have.get(k) != Some(v)) {
                have.extend(labels);
                current = client.update(&current, &PostParams::default()).await?;
            }
            current
        }
        Err(e) => return Err(e),
    };
    node.status = Some(node_status(info, node.status.as_ref(), None));
    client.update_status(&node, &PostParams::default()).await
}

/// [`register`], retried while no apiserver answers (connection errors, 5xx after the
/// client's own attempts): the agent may start before the apiserver. Refusals (403,
/// invalid) fail at once.
pub async fn register_until_reachable(
    client: &Client,
    info: &NodeInfo,
) -> Result<Node, api::Error> {
    let mut pause = Duration::from_millis(500);
    loop {
        match register(client, info).await {
            Err(e @ (api::Error::Unavailable { .. } | api::Error::Http(_))) => {
                tracing::warn!(node = %info.name, error = %e, "apiserver unreachable; retrying the registration");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// One node's heartbeat state.
pub struct NodeHeartbeat {
    pub info: NodeInfo,
    /// Why the container runtime is unusable, as last checked (None: healthy); the
    /// node reports Ready=False while it is set.
    pub runtime_error: Option<String>,
    lease: Option<Lease>,
    status_written: Option<tokio::time::Instant>,
}

impl NodeHeartbeat {
    pub fn new(info: NodeInfo) -> Self {
        Self {
            info,
            runtime_error: None,
            lease: None,
            status_written: None,
        }
    }

    /// Renews (or creates) the node's Lease: one PUT when the kept Lease is current.
    pub async fn renew_lease(&mut self, client: &Client) -> Result<(), api::Error> {
        let now = MicroTime(api::now());
        let mut lease = match self.lease.take() {
            Some(l) => l,
            None => match client
                .get_opt::<Lease>(Some(NODE_LEASE_NAMESPACE), &self.info.name)
                .await?
            {
                Some(l) => l,
                None => {
                    let fresh = Lease {
                        metadata: ObjectMeta {
                            name: Some(self.info.name.clone()),
                            namespace: Some(NODE_LEASE_NAMESPACE.into()),
                            ..Default::default()
                        },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(self.info.name.clone()),
                            lease_duration_seconds: Some(self.info.lease_duration_s),
                            renew_time: Some(now.clone()),
                            ..Default::default()
                        }),
                    };
                    match client.create(&fresh, &PostParams::default()).await {
                        Ok(l) => {
                            self.lease = Some(l);
                            return Ok(());
                        }
                        Err(e) if e.is_already_exists() => {
                            client
                                .get::<Lease>(Some(NODE_LEASE_NAMESPACE), &self.info.name)
                                .await?
                        }
                        Err(e) => return Err(e),
                    }
                }
            },
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some(self.info.name.clone());
        spec.lease_duration_seconds = Some(self.info.lease_duration_s);
        spec.renew_time = Some(now);
        // On failure the next beat reads the Lease again (a conflict means someone else
        // wrote it; the read brings the current resourceVersion).
        self.lease = Some(client.update(&lease, &PostParams::default()).await?);
        Ok(())
    }

    /// Writes the node status when it is due or the server's Ready is not True
    /// (`current` is the node as last seen, from a cache or a GET).
    pub async fn report_status(
        &mut self,
        client: &Client,
        current: Option<&Node>,
    ) -> Result<(), api::Error> {
        let due = self
            .status_written
            .is_none_or(|t| t.elapsed() >= STATUS_REPORT_PERIOD);
        let want = if self.runtime_error.is_some() {
            "False"
        } else {
            "True"
        };
        let differs = current.is_none_or(|n| ready_status(n) != Some(want));
        if !due && !differs {
            return Ok(());
        }
        let mut node = match current {
            Some(n) => n.clone(),
            None => match client.get_opt::<Node>(None, &self.info.name).await? {
                Some(n) => n,
                None => {
                    // Someone deleted the Node: register again.
                    register(client, &self.info).await?;
                    self.status_written = Some(tokio::time::Instant::now());
                    return Ok(());
                }
            },
        };
        let error = self.runtime_error.as_deref();
        node.status = Some(node_status(&self.info, node.status.as_ref(), error));
        match client.update_status(&node, &PostParams::default()).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() => {
                // The cache was behind: read and write once more.
                let mut fresh: Node = client.get(None, &self.info.name).await?;
                fresh.status = Some(node_status(&self.info, fresh.status.as_ref(), error));
                client.update_status(&fresh, &PostParams::default()).await?;
            }
            Err(e) if e.is_not_found() => {
                // Someone deleted the Node: register again.
                register(client, &self.info).await?;
            }
            Err(e) => return Err(e),
        }
        self.status_written = Some(tokio::time::Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            ip: "127.0.0.7".parse().unwrap(),
            labels: BTreeMap::new(),
            cpu: "4".into(),
            memory: "8Gi".into(),
            pods: 110,
            kubelet_port: 10250,
            runtime_version: "fake://0".into(),
            lease_duration_s: LEASE_DURATION_S,
        }
    }

    #[test]
    fn status_carries_capacity_addresses_endpoint_and_ready() {
        let s = node_status(&info(), None, None);
        assert_eq!(s.allocatable.as_ref().unwrap()["memory"].0, "8Gi");
        assert_eq!(s.capacity.as_ref().unwrap()["pods"].0, "110");
        let addrs = s.addresses.unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.7")
        );
        assert_eq!(
            s.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
            10250
        );
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    }

    #[test]
    fn transition_times_survive_unchanged_conditions() {
        let old_time = Time(api::Timestamp::UNIX_EPOCH);
        let old = vec![condition("Ready", "True", "r", "m", old_time.clone())];
        let new = conditions(Some(&old), Time(api::now()), None);
        let ready = new.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.last_transition_time, Some(old_time.clone()));
        assert_ne!(ready.last_heartbeat_time, Some(old_time.clone()));
        let was_unknown = vec![condition("Ready", "Unknown", "r", "m", old_time.clone())];
        let new = conditions(Some(&was_unknown), Time(api::now()), None);
        let ready = new.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_ne!(ready.last_transition_time, Some(old_time));
    }

    #[test]
    fn a_broken_runtime_makes_the_node_not_ready() {
        let s = node_status(&info(), None, Some("docker: connection refused"));
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("KubeletNotReady"));
        assert!(ready.message.unwrap().contains("connection refused"));
    }

    #[test]
    fn lease_is_renewed_every_quarter_of_its_duration() {
        let mut i = info();
        assert_eq!(i.lease_renew_period(), Duration::from_secs(10));
        i.lease_duration_s = 4;
        assert_eq!(i.lease_renew_period(), Duration::from_secs(1));
        i.lease_duration_s = 0;
        assert_eq!(i.lease_renew_period(), Duration::from_secs(1));
    }

    #[test]
    fn flags_are_checked() {
        assert!(check_quantity("cpu", "2500m").is_ok());
        assert!(check_quantity("memory", "lots").is_err());
        assert!(check_quantity("cpu", "0").is_err());
        assert_eq!(parse_labels("a=1, b=2").unwrap().len(), 2);
        assert!(parse_labels("nokey").is_err());
        assert!(parse_labels("").unwrap().is_empty());
    }
}
