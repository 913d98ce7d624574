//! `bench control-plane`: the scheduler and controllers at scale, on each store.
//!
//! For each system (real etcd, kvstore): a 3-member store cluster, one `apiserver`
//! with `--controllers` over it, and one `agent --simulate N` (N fake nodes that run
//! bound pods at once and heartbeat). Then, through the apiserver's API only:
//!
//! 1. **Scheduling throughput**: P bare pods are created (C at a time) while a watch
//!    records the moment each pod is first seen bound (`spec.nodeName`); reported as
//!    pods/s from the first create to the last binding, and over the binding window
//!    alone (first to last binding: what Kubernetes' scheduler_perf calls
//!    SchedulingThroughput).
//! 2. **Deployment to Running**: a Deployment of R replicas is created; the time until
//!    a watch has seen R of its pods with `status.phase: Running`.
//!
//! Every process is started by this program and killed by its pid on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::{Client, ListParams, Namespace, Node, Pod, PostParams, WatchEvent, WatchParams};
use clap::Args;
use futures::StreamExt;
use serde_json::json;

use crate::cluster::{Cluster, System, kvstore_binary};
use crate::report::{markdown_table, ratio};

#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Bare pods for the scheduling throughput.
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Replicas of the Deployment timed to Running (0 = skip).
    #[arg(long, default_value_t = 1000)]
    pub replicas: usize,
    /// Pod creations in flight at once.
    #[arg(long, default_value_t = 64)]
    pub create_concurrency: usize,
    /// Store members.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Which stores, in order.
    #[arg(long, value_delimiter = ',', default_value = "etcd,kvstore")]
    pub systems: Vec<String>,
    #[arg(long)]
    pub kvstore_bin: Option<PathBuf>,
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// The apiserver binary (default: next to this program).
    #[arg(long)]
    pub apiserver_bin: Option<PathBuf>,
    /// The agent binary (default: next to this program).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// Append the result to this markdown file (e.g. bench/RESULTS.md).
    #[arg(long)]
    pub write: Option<PathBuf>,
}

/// What one system measured.
#[derive(Debug, Clone, Default)]
struct Outcome {
    nodes_ready_s: f64,
    create_s: f64,
    end_to_end_pods_per_s: f64,
    binding_window_pods_per_s: f64,
    deployment_running_s: Option<f64>,
}

/// A child process killed (by pid) on drop.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sibling(explicit: Option<&Path>, name: &str) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let me = std::env::current_exe()?;
    let p = me
        .parent()
        .context("this program has no directory")?
        .join(name);
    if !p.is_file() {
        bail!(
            "no {name} binary at {}; build it (cargo build -p {name}) or pass --{name}-bin",
            p.display()
        );
    }
    Ok(p)
}

/// Spawns `bin args`, stderr to `log`, and waits (≤ `timeout`) for a stdout line
/// starting with `ready`; returns the process and the rest of that line.
fn spawn_until(
    name: &'static str,
    bin: &Path,
    args: &[String],
    log: &Path,
    ready: &'static str,
    timeout: Duration,
) -> Result<(Proc, String)> {
    let err = std::fs::File::create(log)?;
    let mut child = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawn {}", bin.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let proc = Proc { child, name };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(ready) {
                let _ = tx.send(rest.trim().to_string());
            }
        }
    });
    match rx.recv_timeout(timeout) {
        Ok(rest) => Ok((proc, rest)),
        Err(_) => bail!(
            "{} did not print {ready:?} in {timeout:?}; log {}:\n{}",
            proc.name,
            log.display(),
            tail(log)
        ),
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn token_of(tokens: &Path, user: &str) -> Result<String> {
    let text = std::fs::read_to_string(tokens)?;
    text.lines()
        .find(|l| l.split(',').nth(1) == Some(user))
        .and_then(|l| l.split(',').next())
        .map(String::from)
        .with_context(|| format!("no token for {user} in {}", tokens.display()))
}

/// Time until `count` nodes report Ready=True.
async fn wait_nodes_ready(client: &Client, count: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let (nodes, _) = client
            .list_all::<Node>(None, &ListParams::default())
            .await?;
        let ready = nodes
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {count} nodes Ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Watches pods in `namespace` from `rv`, resuming when a watch ends, until `done`
/// says so; calls `on_pod(pod, now)` for every added or modified pod.
async fn watch_pods<F>(client: &Client, namespace: &str, rv: String, mut on_pod: F) -> Result<()>
where
    F: FnMut(&Pod, Instant) -> bool,
{
    let mut rv = rv;
    loop {
        let mut stream = client
            .watch::<Pod>(Some(namespace), &WatchParams::default(), &rv)
            .await?;
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                // Cut off as too slow: resume from the last resourceVersion seen.
                Err(e) if e.is_gone() => break,
                other => other?,
            };
            let pod = match ev {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => p,
                WatchEvent::Bookmark { resource_version } => {
                    rv = resource_version;
                    continue;
                }
                WatchEvent::Deleted(_) => continue,
                WatchEvent::Error(s) => bail!("watch error: {:?}", s.message),
            };
            if let Some(v) = &pod.metadata.resource_version {
                rv = v.clone();
            }
            if on_pod(&pod, Instant::now()) {
                return Ok(());
            }
        }
    }
}

fn bare_pod(namespace: &str, i: usize) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p-{i}"), "namespace": namespace, "labels": {"bench": "sched"}},
        "spec": {"containers": [{
            "name": "c", "image": "kvstore-busybox:latest",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}
        }]}
    }))?)
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    client.create(&ns, &PostParams::default()).await?;
    Ok(())
}

/// The list resourceVersion of pods in `namespace` (a watch from here misses nothing).
async fn pods_rv(client: &Client, namespace: &str) -> Result<String> {
    Ok(client
        .list::<Pod>(Some(namespace), &ListParams::default().limit(1))
        .await?
        .resource_version)
}

async fn measure(args: &ControlPlaneArgs, system: System) -> Result<Outcome> {
    let store_bin = match system {
        System::Etcd => args.etcd_bin.clone(),
        System::Kvstore => kvstore_binary(args.kvstore_bin.as_deref())?,
    };
    let apiserver_bin = sibling(args.apiserver_bin.as_deref(), "apiserver")?;
    let agent_bin = sibling(args.agent_bin.as_deref(), "agent")?;
    let store = Cluster::start(system, &store_bin, args.members)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("bench-control-plane-{system}-"))
        .tempdir()?;
    let data = dir.path().join("apiserver");
    let (_apiserver, url) = spawn_until(
        "apiserver",
        &apiserver_bin,
        &[
            "--etcd-servers".into(),
            store.endpoints.join(","),
            "--bind-address".into(),
            "127.0.0.1".into(),
            "--secure-port".into(),
            "0".into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--controllers".into(),
            "--max-mutating-requests-inflight".into(),
            "2000".into(),
            // The bench's own watches see every pod event (3 per pod) on a busy machine.
            "--watch-buffer-events".into(),
            "20000".into(),
        ],
        &dir.path().join("apiserver.log"),
        "apiserver: serving on ",
        Duration::from_secs(120),
    )?;
    let tokens = data.join("tokens.csv");
    let ca = data.join("pki").join("ca.crt");
    let admin = Client::new(
        api::Config::new([&url])?
            .with_ca_pem(std::fs::read(&ca)?)
            .with_token(token_of(&tokens, "admin")?),
    )?;
    let kubeconfig = dir.path().join("agent.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: agent\n  user:\n    token: {}\ncontexts:\n- name: bench\n  context:\n    cluster: bench\n    user: agent\ncurrent-context: bench\n",
            ca.display(),
            token_of(&tokens, "system:node:agent")?
        ),
    )?;

    let started = Instant::now();
    let (_agent, _) = spawn_until(
        "agent",
        &agent_bin,
        &[
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--simulate".into(),
            args.nodes.to_string(),
            "--node-name-prefix".into(),
            "sim".into(),
        ],
        &dir.path().join("agent.log"),
        "agent: ",
        Duration::from_secs(900),
    )?;
    wait_nodes_ready(&admin, args.nodes, Duration::from_secs(600)).await?;
    let nodes_ready_s = started.elapsed().as_secs_f64();
    eprintln!(
        "[{system}] {} nodes Ready in {nodes_ready_s:.1} s",
        args.nodes
    );

    // 1. Scheduling throughput.
    create_namespace(&admin, "bench").await?;
    let rv = pods_rv(&admin, "bench").await?;
    let total = args.pods;
    let watcher = {
        let client = admin.clone();
        tokio::spawn(async move {
            let mut bound: HashMap<String, Instant> = HashMap::new();
            watch_pods(&client, "bench", rv, |pod, now| {
                if pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some()
                    && let Some(name) = &pod.metadata.name
                {
                    bound.entry(name.clone()).or_insert(now);
                }
                bound.len() >= total
            })
            .await?;
            anyhow::Ok(bound)
        })
    };
    let t0 = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..total)
        .map(|i| {
            let client = admin.clone();
            async move {
                client
                    .create(&bare_pod("bench", i)?, &PostParams::default())
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(args.create_concurrency.max(1))
        .collect()
        .await;
    let create_s = t0.elapsed().as_secs_f64();
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        bail!("{failed} pod creates failed; first: {e:#}");
    }
    eprintln!("[{system}] {total} pods created in {create_s:.1} s");
    let bound = tokio::time::timeout(Duration::from_secs(1800), watcher)
        .await
        .context("pods not all bound in 30 min")???;
    let first = bound.values().min().copied().context("no binding")?;
    let last = bound.values().max().copied().context("no binding")?;
    let end_to_end_pods_per_s = total as f64 / last.duration_since(t0).as_secs_f64();
    let window = last.duration_since(first).as_secs_f64().max(1e-3);
    let binding_window_pods_per_s = total as f64 / window;
    eprintln!(
        "[{system}] all bound {:.1} s after the first create: {end_to_end_pods_per_s:.0} pods/s end to end, {binding_window_pods_per_s:.0} pods/s over the binding window",
        last.duration_since(t0).as_secs_f64()
    );

    // 2. A Deployment of R replicas to Running.
    let deployment_running_s = if args.replicas > 0 {
        create_namespace(&admin, "bench-deploy").await?;
        let rv = pods_rv(&admin, "bench-deploy").await?;
        let want = args.replicas;
        let watcher = {
            let client = admin.clone();
            tokio::spawn(async move {
                let mut running: HashMap<String, Instant> = HashMap::new();
                watch_pods(&client, "bench-deploy", rv, |pod, now| {
                    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                    if phase == Some("Running")
                        && let Some(name) = &pod.metadata.name
                    {
                        running.entry(name.clone()).or_insert(now);
                    }
                    running.len() >= want
                })
                .await?;
                anyhow::Ok(running)
            })
        };
        let deployment: api::Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "bench-deploy"},
            "spec": {
                "replicas": want,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "c", "image": "kvstore-busybox:latest",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}
                    }]}
                }
            }
        }))?;
        let t0 = Instant::now();
        admin.create(&deployment, &PostParams::default()).await?;
        let running = tokio::time::timeout(Duration::from_secs(1800), watcher)
            .await
            .context("deployment not Running in 30 min")???;
        let last = running.values().max().copied().context("no pod Running")?;
        let s = last.duration_since(t0).as_secs_f64();
        eprintln!("[{system}] Deployment of {want} replicas: all Running after {s:.1} s");
        Some(s)
    } else {
        None
    };
    Ok(Outcome {
        nodes_ready_s,
        create_s,
        end_to_end_pods_per_s,
        binding_window_pods_per_s,
        deployment_running_s,
    })
}

/// Runs the measurement on each system and prints (and optionally appends) one table.
pub async fn run(args: &ControlPlaneArgs) -> Result<()> {
    if args.nodes == 0 || args.pods == 0 {
        bail!("--nodes and --pods must be at least 1");
    }
    let mut outcomes: Vec<(System, Outcome)> = Vec::new();
    for s in &args.systems {
        let system = match s.as_str() {
            "etcd" => System::Etcd,
            "kvstore" => System::Kvstore,
            other => bail!("unknown system {other:?} (etcd or kvstore)"),
        };
        let o = measure(args, system)
            .await
            .with_context(|| format!("control-plane bench on {system}"))?;
        outcomes.push((system, o));
    }
    let get = |sys: System| outcomes.iter().find(|(s, _)| *s == sys).map(|(_, o)| o);
    let (etcd, kv) = (get(System::Etcd), get(System::Kvstore));
    let f1 = |v: f64| format!("{v:.1}");
    let f0 = |v: f64| format!("{v:.0}");
    let cell =
        |o: Option<&Outcome>, f: &dyn Fn(&Outcome) -> Option<f64>, fmt: &dyn Fn(f64) -> String| {
            o.and_then(f).map(fmt).unwrap_or_else(|| "-".into())
        };
    type Metric<'a> = (&'a str, Box<dyn Fn(&Outcome) -> Option<f64>>, bool);
    let metrics: Vec<Metric> = vec![
        (
            "scheduling throughput, first create → last binding (pods/s)",
            Box::new(|o| Some(o.end_to_end_pods_per_s)),
            true,
        ),
        (
            "scheduling throughput over the binding window (pods/s)",
            Box::new(|o| Some(o.binding_window_pods_per_s)),
            true,
        ),
        (
            "creating the pods (s)",
            Box::new(|o| Some(o.create_s)),
            false,
        ),
        (
            "Deployment created → all replicas Running (s)",
            Box::new(|o| o.deployment_running_s),
            false,
        ),
        (
            "agent start → all nodes Ready (s)",
            Box::new(|o| Some(o.nodes_ready_s)),
            false,
        ),
    ];
    let mut rows = Vec::new();
    for (label, f, per_s) in &metrics {
        let fmt: &dyn Fn(f64) -> String = if *per_s { &f0 } else { &f1 };
        rows.push(vec![
            label.to_string(),
            cell(etcd, f.as_ref(), fmt),
            cell(kv, f.as_ref(), fmt),
            ratio(kv.and_then(f), etcd.and_then(f)),
        ]);
    }
    let table = markdown_table(&["metric", "etcd 3.4", "kvstore", "kvstore/etcd"], &rows);
    println!("{table}");
    if let Some(path) = &args.write {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
        writeln!(
            f,
            "\n### run: `{command}`\n\n{} nodes, {} bare pods ({} at a time), a {}-replica Deployment; {}-member stores.\n\n{table}",
            args.nodes, args.pods, args.create_concurrency, args.replicas, args.members
        )?;
    }
    Ok(())
}
