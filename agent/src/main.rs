//! The `agent` binary. Until the apiserver client exists it runs in standalone mode: the
//! pods come from JSON manifests in `--pod-manifests` (the kubelet's static pods, rescanned
//! every resync period), their statuses are printed as JSON lines on stdout, and the log
//! server listens on `--log-listen`. `--apiserver` is refused with a clear error for now.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent::runtime::{ContainerRuntime, DockerRuntime, FakeRuntime};
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
    about = "The node agent: runs this node's pods in Docker"
)]
struct Args {
    /// This node's name (containers are labelled with it).
    #[arg(long, env = "AGENT_NODE_NAME")]
    node_name: String,
    /// Directory of pod manifests (JSON), each a Pod to run on this node.
    #[arg(long)]
    pod_manifests: Option<PathBuf>,
    /// The apiserver to register with (not available yet).
    #[arg(long)]
    apiserver: Option<String>,
    /// Kubeconfig for the apiserver (not available yet).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Where the log server listens.
    #[arg(long, default_value = "127.0.0.1:10250")]
    log_listen: SocketAddr,
    /// The address reported as the pods' hostIP.
    #[arg(long)]
    host_ip: Option<IpAddr>,
    /// Relist period in seconds.
    #[arg(long, default_value_t = 10)]
    resync_s: u64,
    /// `docker`, or `fake` for a simulated node.
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.apiserver.is_some() || args.kubeconfig.is_some() {
        bail!(
            "--apiserver/--kubeconfig: the apiserver client is not built yet; use --pod-manifests"
        );
    }
    let Some(manifests) = args.pod_manifests.clone() else {
        bail!("--pod-manifests DIR is required (standalone mode)");
    };
    let runtime: Arc<dyn ContainerRuntime> = match args.runtime.as_str() {
        "docker" => Arc::new(
            DockerRuntime::connect(agent::runtime::DEFAULT_CALL_TIMEOUT)
                .await
                .context("connecting to Docker")?,
        ),
        "fake" => Arc::new(FakeRuntime::new()),
        other => bail!("unknown --runtime {other:?} (docker or fake)"),
    };
    let mut config = AgentConfig::new(&args.node_name);
    config.host_ip = args.host_ip;
    config.resync_period = Duration::from_secs(args.resync_s.max(1));
    let agent = Agent::start(runtime.clone(), config.clone(), Arc::new(PrintSink));

    let listener = tokio::net::TcpListener::bind(args.log_listen)
        .await
        .with_context(|| format!("binding the log server to {}", args.log_listen))?;
    eprintln!(
        "agent: node {} serving logs on {}",
        args.node_name,
        listener.local_addr()?
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(agent::logs::serve(
        listener,
        agent::logs::router(runtime, &args.node_name),
        async move {
            let _ = stop_rx.await;
        },
    ));

    let mut tick = tokio::time::interval(config.resync_period);
    loop {
        tokio::select! {
            _ = tick.tick() => match read_manifests(&manifests) {
                Ok(pods) => agent.set_pods(pods).await?,
                Err(e) => tracing::warn!(error = %e, "cannot read manifests; keeping the pods as they are"),
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Containers keep running: the next agent adopts them.
    agent.shutdown().await;
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}
