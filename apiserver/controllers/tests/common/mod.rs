//! The controllers' end-to-end harness: real processes only. [`Cluster::start`] runs a
//! real etcd and one real `apiserver` binary (built beforehand with
//! `cargo build -p apiserver`; its absence is a loud failure, never a skip) on free
//! loopback ports, and gives an `api::Client` from the admin kubeconfig and kubectl.
//! The scheduler and controllers run in the test process through `controllers::run`,
//! talking to the apiserver over HTTPS like any outside program. [`Kubelet`] stands in
//! for node agents: it registers Nodes, renews their Leases, and marks pods bound to
//! its live nodes Running and Ready through the status subresource.
//!
//! Small start logic is copied from `apiserver/tests/common/mod.rs` (which names the
//! binary through `CARGO_BIN_EXE_apiserver`, only available inside that crate).

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use api::{
    Client, Lease, LeaseSpec, MicroTime, Node, NodeCondition, NodeStatus, ObjectMeta, Patch, Pod,
    PostParams, Quantity, WatchParams,
};
use futures::StreamExt;
use serde_json::json;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// How long any wait in these tests may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(90);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn apiserver_bin() -> Result<PathBuf> {
    // target/debug/deps/<test> → target/debug/apiserver
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("test binary has no target dir")?;
    let bin = dir.join("apiserver");
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build -p apiserver` before these tests",
            bin.display()
        );
    }
    Ok(bin)
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Cluster {
    _etcd: Proc,
    apiservers: Vec<Option<Proc>>,
    pub dir: TempDir,
    pub urls: Vec<String>,
}

impl Cluster {
    pub async fn start() -> Result<Self> {
        Self::start_n(1).await
    }

    /// A real etcd and `n` apiservers over it (one data dir: one CA, one token file).
    pub async fn start_n(n: usize) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("controllers-test-")
            .tempdir()?;
        let client_port = free_port();
        let peer_port = free_port();
        let etcd_log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let etcd = Command::new("etcd")
            .args([
                "--data-dir",
                &dir.path().join("etcd").display().to_string(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(etcd_log)
            .spawn()
            .context("spawn etcd (run scripts/setup.sh if it is missing)")?;
        let mut c = Cluster {
            _etcd: Proc(etcd),
            apiservers: Vec::new(),
            dir,
            urls: Vec::new(),
        };
        let endpoint = format!("http://127.0.0.1:{client_port}");
        for i in 0..n {
            let (p, url) = c.spawn_apiserver(i, &endpoint).await?;
            c.apiservers.push(Some(p));
            c.urls.push(url);
        }
        Ok(c)
    }

    async fn spawn_apiserver(&self, i: usize, etcd: &str) -> Result<(Proc, String)> {
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join(format!("apiserver-{i}.log")))?;
        let mut child = Command::new(apiserver_bin()?)
            .args([
                "--etcd-servers",
                etcd,
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &free_port().to_string(),
                "--data-dir",
                &data.display().to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("spawn apiserver")?;
        let stdout = child.stdout.take().context("apiserver stdout")?;
        let proc = Proc(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(u) = line.strip_prefix("apiserver: serving on ") {
                    let _ = tx.send(u.trim().to_string());
                }
            }
        });
        let url = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await?
            .context("apiserver did not print its serving line")?;
        Ok((proc, url))
    }

    /// Kills apiserver `i` (SIGKILL by pid).
    pub fn kill_apiserver(&mut self, i: usize) {
        self.apiservers[i] = None;
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("data").join("admin.kubeconfig")
    }

    /// An admin client for apiserver `i` only.
    pub fn client_of(&self, i: usize) -> Result<Client> {
        let mut cfg = api::Config::from_kubeconfig(&self.kubeconfig(), None)?;
        cfg.servers = vec![self.urls[i].parse()?];
        Ok(Client::new(cfg)?)
    }

    /// An admin client (first apiserver).
    pub fn client(&self) -> Result<Client> {
        self.client_of(0)
    }

    /// Runs the real kubectl; returns stdout or fails with both streams.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--request-timeout=30s")
            .args(args)
            .env("HOME", self.dir.path())
            .env("KUBECACHEDIR", self.dir.path().join("kubecache"))
            .output()?;
        if !out.status.success() {
            bail!(
                "kubectl {args:?} failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("apiserver-{i}.log")))
            .unwrap_or_default()
    }
}

/// Polls `f` every 100 ms until it returns Some, failing after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last_err = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what} (last error: {last_err:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Ready node with `cpu` and `memory` allocatable.
pub fn node(name: &str, cpu: &str, memory: &str) -> Node {
    let alloc: std::collections::BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity(cpu.into())),
        ("memory".to_string(), Quantity(memory.into())),
        ("pods".to_string(), Quantity("110".into())),
    ]
    .into();
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("kubernetes.io/hostname".to_string(), name.to_string())].into()),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            allocatable: Some(alloc.clone()),
            capacity: Some(alloc),
            conditions: Some(vec![ready_condition("True")]),
            ..Default::default()
        }),
    }
}

pub fn ready_condition(status: &str) -> NodeCondition {
    NodeCondition {
        type_: "Ready".into(),
        status: status.into(),
        reason: Some("KubeletReady".into()),
        message: Some("test kubelet".into()),
        last_heartbeat_time: Some(api::Time(api::now())),
        last_transition_time: Some(api::Time(api::now())),
    }
}

/// Stands in for the node agents of a set of nodes.
pub struct Kubelet {
    pub live: Arc<Mutex<HashSet<String>>>,
    stop: CancellationToken,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Kubelet {
    /// Registers the nodes (with status: the apiserver keeps status on create), and
    /// from then on heartbeats the live ones every 500 ms and runs their pods.
    pub async fn start(client: &Client, nodes: Vec<Node>) -> Result<Self> {
        let mut names = HashSet::new();
        for n in nodes {
            names.insert(n.metadata.name.clone().unwrap_or_default());
            let created = client.create(&n, &PostParams::default()).await?;
            if created
                .status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .is_none()
            {
                let mut with_status = created.clone();
                with_status.status = n.status.clone();
                client
                    .update_status(&with_status, &PostParams::default())
                    .await?;
            }
        }
        let live = Arc::new(Mutex::new(names));
        let stop = CancellationToken::new();
        tokio::spawn(heartbeat(client.clone(), live.clone(), stop.clone()));
        tokio::spawn(run_pods(client.clone(), live.clone(), stop.clone()));
        Ok(Kubelet { live, stop })
    }

    pub fn set_live(&self, node: &str, live: bool) {
        let mut l = self.live.lock().unwrap();
        if live {
            l.insert(node.into());
        } else {
            l.remove(node);
        }
    }
}

fn live_nodes(live: &Mutex<HashSet<String>>) -> Vec<String> {
    live.lock().unwrap().iter().cloned().collect()
}

async fn heartbeat(client: Client, live: Arc<Mutex<HashSet<String>>>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        for name in live_nodes(&live) {
            if let Err(e) = beat(&client, &name).await {
                eprintln!("[kubelet] heartbeat of {name}: {e}");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Renews the node's Lease and, if its Ready condition is not True, sets it True.
async fn beat(client: &Client, name: &str) -> Result<()> {
    let now = MicroTime(api::now());
    match client
        .get_opt::<Lease>(Some("kube-node-lease"), name)
        .await?
    {
        Some(mut l) => {
            l.spec.get_or_insert_with(Default::default).renew_time = Some(now);
            client.update(&l, &PostParams::default()).await?;
        }
        None => {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some("kube-node-lease".into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.into()),
                    lease_duration_seconds: Some(40),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            client.create(&l, &PostParams::default()).await?;
        }
    }
    let node: Node = client.get(None, name).await?;
    if crate_ready(&node) != Some("True") {
        let mut n = node.clone();
        let status = n.status.get_or_insert_with(Default::default);
        let conds = status.conditions.get_or_insert_with(Vec::new);
        conds.retain(|c| c.type_ != "Ready");
        conds.push(ready_condition("True"));
        client.update_status(&n, &PostParams::default()).await?;
    }
    Ok(())
}

fn crate_ready(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// Watches pods; marks each pod bound to a live node Running and Ready with an IP.
async fn run_pods(client: Client, live: Arc<Mutex<HashSet<String>>>, stop: CancellationToken) {
    let mut ip_seq: u32 = 1;
    let mut started: HashSet<String> = HashSet::new();
    while !stop.is_cancelled() {
        let mut stream = match client.watch::<Pod>(None, &WatchParams::default(), "").await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = stream.next() => ev,
            };
            let Some(Ok(ev)) = ev else { break };
            let Some(pod) = ev.object() else { continue };
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if running || started.contains(&uid) || !live.lock().unwrap().contains(&node) {
                continue;
            }
            if matches!(ev, api::WatchEvent::Deleted(_)) {
                continue;
            }
            started.insert(uid);
            ip_seq += 1;
            let now = api::Time(api::now());
            let patch = Patch::Merge(json!({"status": {
                "phase": "Running",
                "podIP": format!("10.244.{}.{}", ip_seq / 250, ip_seq % 250 + 1),
                "hostIP": "127.0.0.1",
                "startTime": now,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                ],
            }}));
            let ns = pod.metadata.namespace.clone();
            let name = pod.metadata.name.clone().unwrap_or_default();
            if let Err(e) = client
                .patch_status::<Pod>(ns.as_deref(), &name, &patch, &PostParams::default())
                .await
                && !e.is_not_found()
            {
                eprintln!("[kubelet] starting {name}: {e}");
            }
        }
    }
}

/// Starts the controllers in this process over `client` until the token is cancelled.
pub fn start_controllers(client: Client, config: controllers::RunConfig) -> CancellationToken {
    let token = CancellationToken::new();
    tokio::spawn(controllers::run(client, config, token.clone()));
    token
}

/// A Deployment manifest (YAML for kubectl) of `replicas` pods requesting `cpu`.
pub fn deployment_yaml(
    name: &str,
    replicas: i32,
    cpu: &str,
    image: &str,
    strategy: &str,
) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: default
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  strategy: {strategy}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: main
        image: {image}
        resources:
          requests: {{cpu: "{cpu}", memory: 64Mi}}
"#
    )
}
