//! `cluster`: one command for a local HA control plane (3 kvstore members with TLS, 3
//! apiservers running the scheduler and controllers under leader election, 2 node
//! agents, and a TCP load balancer for kubectl). See `tests/src/cluster/mod.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tests::cluster::{self, Component, Features, Layout, MEMBERS, State, proc, status, wait_until};

#[derive(Parser, Debug)]
#[command(
    name = "cluster",
    about = "A local HA control plane: 3 kvstore members, 3 apiservers (scheduler and controllers under leader election), 2 node agents"
)]
struct Cli {
    /// The cluster's directory: data, logs (logs/<component>.log), state.json, kubeconfig.
    #[arg(long, global = true, default_value = "data", env = "CLUSTER_DIR")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start what is not running (reusing existing data), wait until healthy, write DIR/kubeconfig.
    Up {
        /// Number of node agents.
        #[arg(long)]
        agents: Option<usize>,
        /// Simulated nodes (fake container runtime: pods are reported running, nothing runs),
        /// also chosen when no Docker daemon answers.
        #[arg(long)]
        simulate: bool,
        /// First port of the block the cluster uses: kubectl's load balancer on it,
        /// apiserver-N on +N, store-N on +10+N (client) and +20+N (peer), agent-N logs on +30+N.
        #[arg(long)]
        base_port: Option<u16>,
        /// Node names are PREFIX-1, PREFIX-2, ... (also the Docker label the agents own).
        #[arg(long)]
        node_prefix: Option<String>,
        /// Where kvstore, apiserver, agent and cluster are (default: beside this binary).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Seconds to wait for the whole cluster to be healthy.
        #[arg(long, default_value_t = 180)]
        timeout_s: u64,
    },
    /// Store members and leader, apiservers, lease holders, nodes.
    Status,
    /// SIGKILL one component by its recorded pid: store-N, apiserver-N, agent-N, lb,
    /// store-leader, or apiserver-leader (the apiserver holding kube-controller-manager).
    Kill { component: String },
    /// Stop (if running) and start one component again with its recorded command line.
    Restart { component: String },
    /// Stop every process the launcher started (SIGTERM, then SIGKILL); data stays.
    Down,
    /// Save a store snapshot (from the leader) to FILE.
    Snapshot { file: PathBuf },
    /// Replace the store's data with a snapshot (every member restores FILE; the old
    /// data dirs are kept as store-N.before-restore-<time>). The cluster must be down;
    /// run `cluster up` afterwards.
    Restore { file: PathBuf },
    /// The TCP load balancer (started by `up`; not for direct use).
    Lb {
        /// Address to listen on (host:port).
        #[arg(long)]
        listen: String,
        /// Apiservers, host:port, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        backends: Vec<String>,
    },
    /// docker-compose: write the shared certificates, tokens and kubeconfigs into DIR
    /// once (kept on later runs).
    ComposeInit {
        /// The port kubectl reaches the load balancer on from the host.
        #[arg(long, env = "KVSTORE_API_PORT", default_value_t = 6443)]
        api_port: u16,
        /// The first three octets of the compose network (the members are at .11-.13).
        #[arg(long, env = "KVSTORE_NET", default_value = "172.28.5")]
        net: String,
    },
    /// docker-compose: run PROGRAM with `@IP@` in its arguments replaced by this
    /// container's address toward HOST:PORT (the node agent's --node-ip).
    ExecWithIp {
        #[arg(long)]
        toward: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cluster: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("cluster: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Lb { listen, backends } => cluster::lb::run(listen, backends).await,
        Cmd::Up {
            agents,
            simulate,
            base_port,
            node_prefix,
            bin_dir,
            timeout_s,
        } => {
            up(
                &cli.dir,
                UpArgs {
                    agents,
                    simulate,
                    base_port,
                    node_prefix,
                    bin_dir,
                    timeout: Duration::from_secs(timeout_s),
                },
            )
            .await
        }
        Cmd::Status => {
            let (layout, state) = load(&cli.dir)?;
            print!("{}", status::report(&layout, &state).await);
            Ok(())
        }
        Cmd::Kill { component } => {
            let (layout, state) = load(&cli.dir)?;
            let name = resolve(&layout, &component).await?;
            let c = state
                .components
                .get(&name)
                .with_context(|| format!("{name} was never started"))?;
            if !proc::alive(c.pid, &c.program) {
                bail!("{name} (pid {}) is not running", c.pid);
            }
            proc::signal(c.pid, "KILL")?;
            println!("killed {name} (pid {}, SIGKILL)", c.pid);
            Ok(())
        }
        Cmd::Restart { component } => {
            let (layout, mut state) = load(&cli.dir)?;
            let name = resolve(&layout, &component).await?;
            if let Some(c) = state.components.get(&name)
                && proc::stop(c.pid, &c.program, Duration::from_secs(10))
            {
                println!("stopped {name} (pid {})", c.pid);
            }
            let features = Features::probe(&layout);
            let pid = start(&layout, &mut state, &name, &features)?;
            println!("started {name} (pid {pid})");
            Ok(())
        }
        Cmd::Down => down(&cli.dir),
        Cmd::Snapshot { file } => snapshot(&cli.dir, &file).await,
        Cmd::Restore { file } => restore(&cli.dir, &file),
        Cmd::ComposeInit { api_port, net } => cluster::compose::init(&cli.dir, api_port, &net),
        Cmd::ExecWithIp { toward, command } => {
            cluster::compose::exec_with_ip(&toward, &command).await
        }
    }
}

struct UpArgs {
    agents: Option<usize>,
    simulate: bool,
    base_port: Option<u16>,
    node_prefix: Option<String>,
    bin_dir: Option<PathBuf>,
    timeout: Duration,
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("resolve {}", dir.display()))
}

/// The layout and state of an existing cluster directory.
fn load(dir: &Path) -> Result<(Layout, State)> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("no cluster directory {} (run `cluster up`)", dir.display()))?;
    let state = State::load(&dir)?
        .with_context(|| format!("no cluster in {} (run `cluster up`)", dir.display()))?;
    let layout = Layout {
        dir,
        bin_dir: state.bin_dir.clone(),
        base_port: state.base_port,
        agents: state.agents,
        runtime: state.runtime.clone(),
        node_prefix: state.node_prefix.clone(),
    };
    Ok((layout, state))
}

/// `store-leader` / `apiserver-leader` → the component's name now.
async fn resolve(layout: &Layout, component: &str) -> Result<String> {
    match component {
        "store-leader" => {
            let members = status::store_members(layout).await;
            status::leader_name(&members).context("no store member reports a leader")
        }
        "apiserver-leader" => {
            let client = status::admin_client(layout, &layout.apiserver_urls(), 3)?;
            let holder = status::lease_holder(&client, "kube-controller-manager")
                .await?
                .context("nobody holds the kube-controller-manager lease")?;
            status::apiserver_of_holder(layout, &holder)
                .with_context(|| format!("which apiserver is lease holder {holder:?}?"))
        }
        other => {
            cluster::split_name(other)?;
            Ok(other.to_string())
        }
    }
}

/// Starts `name` if its recorded process is not running; returns its pid.
fn start(layout: &Layout, state: &mut State, name: &str, features: &Features) -> Result<u32> {
    let (program, args) = layout.command(name, features)?;
    let log = layout.log_path(name);
    let pid = proc::spawn_detached(&program, &args, &log)?;
    state.components.insert(
        name.to_string(),
        Component {
            pid,
            program,
            args,
            log,
        },
    );
    state.save(&layout.dir)?;
    Ok(pid)
}

/// Starts `name` unless it already runs.
fn ensure(layout: &Layout, state: &mut State, name: &str, features: &Features) -> Result<()> {
    if let Some(c) = state.components.get(name)
        && proc::alive(c.pid, &c.program)
    {
        println!("  {name:<12} already running (pid {})", c.pid);
        return Ok(());
    }
    let pid = start(layout, state, name, features)?;
    println!(
        "  {name:<12} started (pid {pid}, log {})",
        layout.log_path(name).display()
    );
    Ok(())
}

/// Fails with the end of its log when `name`'s process has exited.
fn check_alive(layout: &Layout, state: &State, name: &str) -> Result<()> {
    let c = state
        .components
        .get(name)
        .with_context(|| format!("{name} was not started"))?;
    if proc::alive(c.pid, &c.program) {
        return Ok(());
    }
    bail!(
        "{name} (pid {}) exited; the end of {}:\n{}",
        c.pid,
        layout.log_path(name).display(),
        log_tail(&layout.log_path(name), 25)
    )
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

async fn up(dir: &Path, args: UpArgs) -> Result<()> {
    let dir = absolute(dir)?;
    let existing = State::load(&dir)?;
    let bin_dir = match args.bin_dir {
        Some(b) => absolute(&b)?,
        None => std::env::current_exe()?
            .parent()
            .context("the cluster binary has no directory")?
            .to_path_buf(),
    };
    let base_port = args
        .base_port
        .or(existing.as_ref().map(|s| s.base_port))
        .unwrap_or(6443);
    if !(1024..=65000).contains(&base_port) {
        bail!("--base-port must be in 1024..=65000 (the cluster uses base..base+40)");
    }
    let agents = args
        .agents
        .or(existing.as_ref().map(|s| s.agents))
        .unwrap_or(2);
    if agents > 64 {
        bail!("--agents must be at most 64");
    }
    let node_prefix = args
        .node_prefix
        .or(existing.as_ref().map(|s| s.node_prefix.clone()))
        .unwrap_or_else(|| "node".into());
    let docker = cluster::docker_available();
    let runtime = if args.simulate {
        "fake".to_string()
    } else if let Some(s) = &existing {
        s.runtime.clone()
    } else if docker {
        "docker".to_string()
    } else {
        "fake".to_string()
    };
    if runtime == "docker" && !docker {
        bail!(
            "this cluster's agents run pods in Docker, but `docker info` does not answer; start Docker, or run `cluster up --simulate`"
        );
    }
    let layout = Layout {
        dir: dir.clone(),
        bin_dir: bin_dir.clone(),
        base_port,
        agents,
        runtime: runtime.clone(),
        node_prefix: node_prefix.clone(),
    };
    for bin in ["kvstore", "apiserver", "agent", "cluster"] {
        if !layout.bin(bin).is_file() {
            bail!(
                "{} is missing: build the workspace first (`cargo build --workspace --bins`) or pass --bin-dir",
                layout.bin(bin).display()
            );
        }
    }
    let mut state = existing.unwrap_or(State {
        base_port,
        agents,
        runtime: runtime.clone(),
        node_prefix: node_prefix.clone(),
        bin_dir: bin_dir.clone(),
        components: Default::default(),
    });
    state.base_port = base_port;
    state.agents = agents;
    state.runtime = runtime.clone();
    state.node_prefix = node_prefix;
    state.bin_dir = bin_dir;
    state.save(&dir)?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let features = Features::probe(&layout);
    println!(
        "cluster in {} (ports {}..{})",
        dir.display(),
        base_port,
        base_port + 40
    );
    if runtime == "fake" {
        println!(
            "nodes are SIMULATED: {}; pods are reported Running but no container runs",
            if docker {
                "--simulate was given"
            } else {
                "no Docker daemon answers `docker info`"
            }
        );
    }
    if !features.apiserver_controllers {
        println!(
            "warning: this apiserver has no --controllers flag: no scheduler or controllers will run"
        );
    }

    // Certificates for the store members (server+client: client and peer ports) and for
    // the store's clients (the apiservers, and `admin` for this tool and kvstore/etcdctl).
    let pki = layout.pki_dir();
    let needed = [
        "ca.pem",
        "store-1.pem",
        "store-2.pem",
        "store-3.pem",
        "apiserver.pem",
        "admin.pem",
    ];
    if needed.iter().any(|f| !pki.join(f).exists()) {
        let out = std::process::Command::new(layout.bin("kvstore"))
            .arg("certs")
            .arg("--dir")
            .arg(&pki)
            .args([
                "--member",
                "store-1,store-2,store-3",
                "--client",
                "apiserver,admin",
            ])
            .args(["--hosts", "127.0.0.1,localhost"])
            .output()
            .context("run kvstore certs")?;
        if !out.status.success() {
            bail!(
                "kvstore certs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        println!("  certificates  {}", pki.display());
    }

    let deadline = tokio::time::Instant::now() + args.timeout;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());

    for n in 1..=MEMBERS {
        ensure(&layout, &mut state, &format!("store-{n}"), &features)?;
    }
    wait_until("the store to elect a leader", left(), || {
        let layout = &layout;
        let state = &state;
        async move {
            for n in 1..=MEMBERS {
                check_alive(layout, state, &format!("store-{n}"))?;
            }
            let members = status::store_members(layout).await;
            let up = members.iter().filter(|m| m.error.is_none()).count();
            Ok(up == MEMBERS && status::leader_name(&members).is_some())
        }
    })
    .await?;
    println!("  store         3 members, leader elected");

    ensure(&layout, &mut state, "apiserver-1", &features)?;
    let url1 = layout.apiserver_urls()[0].clone();
    wait_until("apiserver-1 to serve", left(), || {
        let (layout, state, url1) = (&layout, &state, &url1);
        async move {
            check_alive(layout, state, "apiserver-1")?;
            if !layout.dir.join("apiserver-1/tokens.csv").exists()
                || !layout.dir.join("apiserver-1/pki/ca.crt").exists()
            {
                return Ok(false);
            }
            status::apiserver_ready(layout, url1).await?;
            Ok(true)
        }
    })
    .await?;
    for n in 2..=MEMBERS {
        cluster::share_apiserver_identity(
            &dir.join("apiserver-1"),
            &dir.join(format!("apiserver-{n}")),
        )?;
        ensure(&layout, &mut state, &format!("apiserver-{n}"), &features)?;
    }
    for n in 2..=MEMBERS {
        let name = format!("apiserver-{n}");
        let url = layout.apiserver_urls()[n - 1].clone();
        wait_until(&format!("{name} to serve"), left(), || {
            let (layout, state, url, name) = (&layout, &state, &url, &name);
            async move {
                check_alive(layout, state, name)?;
                status::apiserver_ready(layout, url).await?;
                Ok(true)
            }
        })
        .await?;
    }
    println!("  apiservers    3 ready");

    let api1 = dir.join("apiserver-1");
    let admin_token = cluster::token_of(&api1.join("tokens.csv"), "admin")?;
    cluster::write_kubeconfig(
        &layout.kubeconfig(),
        &api1.join("admin.kubeconfig"),
        &layout.lb_url(),
        "admin",
        &admin_token,
    )?;
    let node_token = cluster::token_of(&api1.join("tokens.csv"), "system:node:agent")?;
    cluster::write_kubeconfig(
        &layout.agent_kubeconfig(),
        &api1.join("admin.kubeconfig"),
        &url1,
        "system:node:agent",
        &node_token,
    )?;

    ensure(&layout, &mut state, "lb", &features)?;
    let lb_url = layout.lb_url();
    wait_until("the load balancer to reach an apiserver", left(), || {
        let (layout, state, lb_url) = (&layout, &state, &lb_url);
        async move {
            check_alive(layout, state, "lb")?;
            status::apiserver_ready(layout, lb_url).await?;
            Ok(true)
        }
    })
    .await?;

    for n in 1..=agents {
        ensure(&layout, &mut state, &format!("agent-{n}"), &features)?;
    }
    let client = status::admin_client(&layout, &layout.apiserver_urls(), 6)?;
    wait_until("the nodes to be Ready", left(), || {
        let (layout, state, client) = (&layout, &state, &client);
        async move {
            for n in 1..=layout.agents {
                check_alive(layout, state, &format!("agent-{n}"))?;
            }
            let nodes = status::nodes(client).await?;
            let ready = (1..=layout.agents)
                .filter(|n| {
                    nodes
                        .iter()
                        .any(|(name, r)| *name == layout.node_name(*n) && r == "True")
                })
                .count();
            Ok(ready == layout.agents)
        }
    })
    .await?;
    println!(
        "  nodes         {agents} Ready ({})",
        status::runtime_text(&runtime)
    );
    println!();
    print!("{}", status::report(&layout, &state).await);
    println!();
    println!("The cluster is up. Use it with:");
    println!(
        "  export KUBECONFIG={}; kubectl get nodes",
        layout.kubeconfig().display()
    );
    let me = layout.bin("cluster");
    let d = dir.display();
    println!(
        "  {} --dir {d} status | kill store-leader | restart store-1 | down",
        me.display()
    );
    println!("logs: {d}/logs/<component>.log");
    Ok(())
}

fn down(dir: &Path) -> Result<()> {
    let (layout, state) = load(dir)?;
    let mut names = layout.component_names();
    // Anything recorded but outside the current shape (e.g. more agents before).
    for k in state.components.keys() {
        if !names.contains(k) {
            names.push(k.clone());
        }
    }
    names.reverse();
    let mut stopped = 0;
    for name in &names {
        if let Some(c) = state.components.get(name)
            && proc::stop(c.pid, &c.program, Duration::from_secs(10))
        {
            println!("stopped {name} (pid {})", c.pid);
            stopped += 1;
        }
    }
    if layout.runtime == "docker" {
        for n in 1..=layout.agents {
            let node = layout.node_name(n);
            let out = std::process::Command::new("docker")
                .args(["ps", "-aq", "--filter"])
                .arg(format!("label=io.kvstore.node={node}"))
                .output();
            let ids: Vec<String> = out
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .stdout(std::process::Stdio::null())
                    .status();
                println!("removed {} pod container(s) of {node}", ids.len());
            }
        }
    }
    println!(
        "{stopped} process(es) stopped; data kept in {} (`cluster up` starts it again)",
        layout.dir.display()
    );
    Ok(())
}

async fn snapshot(dir: &Path, file: &Path) -> Result<()> {
    let (layout, _) = load(dir)?;
    let members = status::store_members(&layout).await;
    let leader = status::leader_name(&members).context("no store leader")?;
    let endpoint = members
        .iter()
        .find(|m| m.name == leader)
        .map(|m| m.endpoint.clone())
        .context("leader endpoint")?;
    let mut args = layout.kvstore_client_args();
    args[1] = endpoint;
    let status = std::process::Command::new(layout.bin("kvstore"))
        .args(&args)
        .arg("snapshot")
        .arg("save")
        .arg(file)
        .status()
        .context("run kvstore snapshot save")?;
    if !status.success() {
        bail!("kvstore snapshot save failed");
    }
    Ok(())
}

fn restore(dir: &Path, file: &Path) -> Result<()> {
    let (layout, state) = load(dir)?;
    if !file.is_file() {
        bail!("{} is not a snapshot file", file.display());
    }
    for (name, c) in &state.components {
        if name.starts_with("store-") && proc::alive(c.pid, &c.program) {
            bail!(
                "{name} is running (pid {}): run `cluster down` first",
                c.pid
            );
        }
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let initial: Vec<String> = (1..=MEMBERS)
        .map(|m| format!("store-{m}=https://127.0.0.1:{}", layout.store_peer_port(m)))
        .collect();
    for n in 1..=MEMBERS {
        let data = layout.dir.join(format!("store-{n}"));
        if data.exists() {
            let kept = layout.dir.join(format!("store-{n}.before-restore-{stamp}"));
            std::fs::rename(&data, &kept)?;
            println!("kept the old data of store-{n} in {}", kept.display());
        }
        let out = std::process::Command::new(layout.bin("kvstore"))
            .args(["snapshot", "restore"])
            .arg(file)
            .args(["--name", &format!("store-{n}"), "--data-dir"])
            .arg(&data)
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", "cluster-local"])
            .args([
                "--initial-advertise-peer-urls",
                &format!("https://127.0.0.1:{}", layout.store_peer_port(n)),
            ])
            .output()
            .context("run kvstore snapshot restore")?;
        if !out.status.success() {
            bail!(
                "kvstore snapshot restore for store-{n} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    println!(
        "restored {} into 3 members; run `cluster up`",
        file.display()
    );
    Ok(())
}
