//! The `agent` binary, in one of three modes:
//! - with `--kubeconfig`: one node against the apiserver (registration, lease, pods bound
//!   to it, status, logs on `node-ip:kubelet-port`, service proxy on the node IP);
//! - with `--kubeconfig --simulate N`: N simulated nodes on the fake runtime;
//! - with `--pod-manifests DIR`: standalone, the pods come from JSON manifests (the
//!   kubelet's static pods, rescanned every resync period), statuses are printed as JSON
//!   lines on stdout, and the log server listens on `--log-listen`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent::node::NodeInfo;
use agent::node_agent::{NodeAgent, NodeAgentConfig};
use agent::runtime::{ContainerRuntime, DockerRuntime, FakeRuntime};
use agent::simulate::{SimulateConfig, Simulation};
use agent::{Agent, AgentConfig, PodKey, StatusSink};
use anyhow::{Context, bail};
use api::k8s_openapi::api::core::v1::{Pod, PodStatus};
use clap::Parser;

/// Manifests larger than this are refused (a pod spec is a few KiB).
const MANIFEST_MAX_BYTES: u64 = 1 << 20;
/// At most this many manifests are read from the directory.
const MANIFESTS_MAX: usize = 1000;

#[derive(Parser, Debug)]
#[command(
    name = "agent",
    about = "The node agent: registers its node with the apiserver and runs the pods bound to it in Docker",
    after_help = "Modes:\n  agent --kubeconfig FILE --node-name NAME --node-ip IP [...]   one node against the apiserver\n  agent --kubeconfig FILE --simulate N --node-name-prefix P     N simulated nodes (fake runtime)\n  agent --node-name NAME --pod-manifests DIR                     standalone (static pods, no apiserver)"
)]
struct Args {
    /// This node's name (containers are labelled with it).
    #[arg(long, env = "AGENT_NODE_NAME")]
    node_name: Option<String>,
    /// Kubeconfig for the apiserver (its server, CA and token).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Apiserver URLs: the first replaces the kubeconfig's server, the others are
    /// failover servers.
    #[arg(long, value_delimiter = ',')]
    apiserver: Vec<String>,
    /// This node's InternalIP: the log server and the service proxy listen on it.
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// Node labels, `k=v,k2=v2` (kubernetes.io/hostname is always set).
    #[arg(long, default_value = "")]
    labels: String,
    /// CPU capacity (a quantity); default: the host's CPU count (simulated: 4).
    #[arg(long)]
    cpu: Option<String>,
    /// Memory capacity (a quantity); default: the host's memory (simulated: 8Gi).
    #[arg(long)]
    memory: Option<String>,
    /// Most pods the node runs.
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// The log server's port (status.daemonEndpoints.kubeletEndpoint.Port); 0 = any.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// The node Lease's duration in seconds; it is renewed every quarter of it.
    #[arg(long, default_value_t = agent::node::LEASE_DURATION_S)]
    node_lease_duration_s: i32,
    /// Do not run the service proxy.
    #[arg(long)]
    no_proxy: bool,
    /// Run N simulated nodes (fake runtime) instead of one real one.
    #[arg(long)]
    simulate: Option<usize>,
    /// Simulated nodes are named PREFIX-0 .. PREFIX-(N-1).
    #[arg(long, default_value = "sim")]
    node_name_prefix: String,
    /// Directory of pod manifests (JSON) for standalone mode, each a Pod to run here.
    #[arg(long)]
    pod_manifests: Option<PathBuf>,
    /// Where the log server listens in standalone mode.
    #[arg(long, default_value = "127.0.0.1:10250")]
    log_listen: SocketAddr,
    /// The address reported as the pods' hostIP in standalone mode.
    #[arg(long)]
    host_ip: Option<IpAddr>,
    /// Relist period in seconds.
    #[arg(long, default_value_t = 10)]
    resync_s: u64,
    /// `docker`, or `fake` for a node without containers.
    #[arg(long, default_value = "docker")]
    runtime: String,
}

/// Prints each status change as one JSON line.
struct PrintSink;

impl StatusSink for PrintSink {
    fn pod_status(&self, key: &PodKey, status: &PodStatus) {
        let line = serde_json::json!({ "pod": key.to_string(), "uid": key.uid, "status": status });
        println!("{line}");
    }

    fn pod_terminated(&self, key: &PodKey) {
        println!(
            "{}",
            serde_json::json!({ "pod": key.to_string(), "uid": key.uid, "terminated": true })
        );
    }
}

fn read_manifests(dir: &Path) -> anyhow::Result<Vec<Pod>> {
    let mut pods = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    entries.sort();
    for path in entries.into_iter().take(MANIFESTS_MAX) {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size > MANIFEST_MAX_BYTES {
            tracing::warn!(path = %path.display(), size, "manifest too large; skipped");
            continue;
        }
        let parsed = std::fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| serde_json::from_slice::<Pod>(&bytes).map_err(anyhow::Error::from));
        match parsed {
            Ok(mut pod) => {
                // Static pods have no apiserver to give them a uid: derive a stable one.
                if pod.metadata.uid.is_none() {
                    let ns = pod
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into());
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    pod.metadata.uid = Some(format!("static-{ns}-{name}"));
                }
                pods.push(pod);
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "bad manifest; skipped"),
        }
    }
    Ok(pods)
}

async fn runtime_of(name: &str) -> anyhow::Result<(Arc<dyn ContainerRuntime>, String)> {
    Ok(match name {
        "docker" => {
            let docker = DockerRuntime::connect(agent::runtime::DEFAULT_CALL_TIMEOUT)
                .await
                .context("connecting to Docker")?;
            let version = docker.server_version().await.unwrap_or_default();
            (Arc::new(docker), format!("docker://{version}"))
        }
        "fake" => (Arc::new(FakeRuntime::new()), "fake://0".to_string()),
        other => bail!("unknown --runtime {other:?} (docker or fake)"),
    })
}

fn client_of(args: &Args) -> anyhow::Result<api::Client> {
    let Some(path) = &args.kubeconfig else {
        bail!("--kubeconfig FILE is required to talk to the apiserver");
    };
    let mut config = api::Config::from_kubeconfig(path, None)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    if let Some((first, rest)) = args.apiserver.split_first() {
        let primary = api::Config::new([first]).context("--apiserver")?;
        config.servers = primary.servers;
        config = config.with_extra_servers(rest).context("--apiserver")?;
    }
    Ok(api::Client::new(config)?)
}

async fn wait_for_stop() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

async fn run_node(args: Args) -> anyhow::Result<()> {
    let client = client_of(&args)?;
    let Some(name) = args.node_name.clone() else {
        bail!("--node-name NAME is required");
    };
    let Some(ip) = args.node_ip else {
        bail!("--node-ip IP is required (the node's InternalIP; logs and services listen there)");
    };
    let (host_cpu, host_memory) = agent::node::host_capacity();
    let cpu = agent::node::check_quantity("cpu", args.cpu.as_deref().unwrap_or(&host_cpu))?;
    let memory =
        agent::node::check_quantity("memory", args.memory.as_deref().unwrap_or(&host_memory))?;
    if args.pods == 0 {
        bail!("--pods must be at least 1");
    }
    if !(4..=3600).contains(&args.node_lease_duration_s) {
        bail!("--node-lease-duration-s must be between 4 and 3600");
    }
    let labels = agent::node::parse_labels(&args.labels)?;
    let (runtime, runtime_version) = runtime_of(&args.runtime).await?;
    let mut agent_config = AgentConfig::new(&name);
    agent_config.resync_period = Duration::from_secs(args.resync_s.max(1));
    agent_config.max_pods = args.pods as usize;
    let config = NodeAgentConfig {
        node: NodeInfo {
            name: name.clone(),
            ip,
            labels,
            cpu,
            memory,
            pods: args.pods,
            kubelet_port: args.kubelet_port,
            runtime_version,
            lease_duration_s: args.node_lease_duration_s,
        },
        agent: agent_config,
        proxy: !args.no_proxy,
    };
    let node = NodeAgent::start(client, runtime, config).await?;
    println!("agent: node {name} registered; logs on {}", node.log_addr);
    wait_for_stop().await;
    // Containers keep running: the next agent adopts them.
    node.shutdown().await;
    Ok(())
}

async fn run_simulation(args: Args, count: usize) -> anyhow::Result<()> {
    if count == 0 || count > agent::simulate::MAX_NODES {
        bail!(
            "--simulate {count}: between 1 and {} nodes",
            agent::simulate::MAX_NODES
        );
    }
    if !(4..=3600).contains(&args.node_lease_duration_s) {
        bail!("--node-lease-duration-s must be between 4 and 3600");
    }
    let client = client_of(&args)?;
    let config = SimulateConfig {
        count,
        prefix: args.node_name_prefix.clone(),
        ip: args.node_ip.unwrap_or(IpAddr::from([127, 0, 0, 1])),
        cpu: agent::node::check_quantity("cpu", args.cpu.as_deref().unwrap_or("4"))?,
        memory: agent::node::check_quantity("memory", args.memory.as_deref().unwrap_or("8Gi"))?,
        pods: args.pods.max(1),
        labels: agent::node::parse_labels(&args.labels)?,
        kubelet_port: args.kubelet_port,
        lease_duration_s: args.node_lease_duration_s,
    };
    let sim = Simulation::start(client, config).await?;
    println!(
        "agent: {} simulated nodes registered ({}-0 .. {}-{})",
        sim.nodes.len(),
        args.node_name_prefix,
        args.node_name_prefix,
        count - 1
    );
    wait_for_stop().await;
    sim.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(count) = args.simulate {
        if args.pod_manifests.is_some() {
            bail!("--simulate and --pod-manifests do not go together");
        }
        return run_simulation(args, count).await;
    }
    if args.kubeconfig.is_some() {
        if args.pod_manifests.is_some() {
            bail!("--kubeconfig and --pod-manifests do not go together: pick one mode");
        }
        return run_node(args).await;
    }
    if !args.apiserver.is_empty() {
        bail!("--apiserver needs --kubeconfig (for the CA and the token)");
    }
    let Some(manifests) = args.pod_manifests.clone() else {
        bail!("give --kubeconfig (a node of a cluster) or --pod-manifests DIR (standalone mode)");
    };
    let Some(node_name) = args.node_name.clone() else {
        bail!("--node-name NAME is required");
    };
    let (runtime, _) = runtime_of(&args.runtime).await?;
    let mut config = AgentConfig::new(&node_name);
    config.host_ip = args.host_ip;
    config.resync_period = Duration::from_secs(args.resync_s.max(1));
    let agent = Agent::start(runtime.clone(), config.clone(), Arc::new(PrintSink));

    let listener = tokio::net::TcpListener::bind(args.log_listen)
        .await
        .with_context(|| format!("binding the log server to {}", args.log_listen))?;
    eprintln!(
        "agent: node {} serving logs on {}",
        node_name,
        listener.local_addr()?
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(agent::logs::serve(
        listener,
        agent::logs::router(runtime, &node_name),
        async move {
            let _ = stop_rx.await;
        },
    ));

    let mut tick = tokio::time::interval(config.resync_period);
    let stop = wait_for_stop();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => match read_manifests(&manifests) {
                Ok(pods) => agent.set_pods(pods).await?,
                Err(e) => tracing::warn!(error = %e, "cannot read manifests; keeping the pods as they are"),
            },
            _ = &mut stop => break,
        }
    }
    // Containers keep running: the next agent adopts them.
    agent.shutdown().await;
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}
