//! The process harness: a cluster of real `kvstore serve` processes on loopback, each
//! peer link behind its own [`LinkProxy`], with the member-level faults (kill -9, stop,
//! SIGSTOP/SIGCONT, restart, slow disk, wipe and re-add) and the network faults built
//! on the proxies (isolate a member, split into groups, delay, heal).
//!
//! Every slot owns a fixed client port and a few pre-allocated peer ports, one per
//! *generation*: a wiped member re-joins under the next peer URL (a new member ID, as
//! etcd requires). Every member's dial map already routes all generations of every
//! other slot through the right proxy, so links to a re-added member are faulty too.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etcd_client::{Client, ConnectOptions};

use crate::proxy::{LinkMode, LinkProxy};

/// Which server the cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// `kvstore serve`, every peer link behind a proxy (all faults available).
    #[default]
    Kvstore,
    /// A real etcd (`$ETCD_BIN`, else `etcd` on the PATH), used to validate the checkers
    /// against a reference implementation. etcd cannot dial its peers through the
    /// proxies (the proxies exist but carry nothing), so only the process faults
    /// (`Fault::PROCESS`: kill, pause, restart) apply to it.
    Etcd,
}

/// Shape and timing of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub backend: Backend,
    pub size: usize,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// Peer URLs reserved per member for re-adds after a wipe.
    pub generations: usize,
    /// More `kvstore serve` flags for every member.
    pub extra_args: Vec<String>,
    /// Environment variables for every member (e.g. failpoints).
    pub env: Vec<(String, String)>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            backend: Backend::Kvstore,
            size: 3,
            heartbeat_ms: 50,
            election_ms: 500,
            generations: 8,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// One member position in the cluster, across its re-adds.
struct Slot {
    client_port: u16,
    /// Peer port of each generation; `peer_ports[generation]` is the current one.
    peer_ports: Vec<u16>,
    generation: usize,
    child: Option<Child>,
    paused: bool,
    /// Started with `--initial-cluster-state existing` (it was re-added).
    joined: bool,
    fsync_delay_ms: Option<u64>,
}

pub struct Cluster {
    /// Deleted with the cluster unless [`Cluster::keep_dir`] took it.
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    bin: PathBuf,
    config: ClusterConfig,
    slots: Vec<Slot>,
    /// `proxies[i][j]`: the link member i uses to reach member j (`None` on the diagonal).
    proxies: Vec<Vec<Option<LinkProxy>>>,
}

/// The `kvstore` binary: `$KVSTORE_BIN`, else beside the running executable (a test
/// binary lives in `target/<profile>/deps/`, the server in `target/<profile>/`).
pub fn kvstore_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("KVSTORE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("executable has no directory")?;
    for _ in 0..2 {
        let candidate = dir.join("kvstore");
        if candidate.is_file() {
            return Ok(candidate);
        }
        match dir.parent() {
            Some(p) => dir = p,
            None => break,
        }
    }
    bail!(
        "kvstore binary not found next to {}; build it (`cargo build -p kvstore --bins`) or set KVSTORE_BIN",
        exe.display()
    )
}

/// The etcd binary: `$ETCD_BIN`, else `etcd` looked up on the PATH.
pub fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN").map_or_else(|| PathBuf::from("etcd"), PathBuf::from)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const TOKEN: &str = "robust-cluster";

impl Cluster {
    /// Starts every member and waits for a leader.
    pub async fn start(config: ClusterConfig) -> anyhow::Result<Cluster> {
        let bin = match config.backend {
            Backend::Kvstore => kvstore_bin()?,
            Backend::Etcd => etcd_bin(),
        };
        let dir = tempfile::Builder::new().prefix("robust-").tempdir()?;
        let mut slots = Vec::new();
        for _ in 0..config.size {
            slots.push(Slot {
                client_port: free_port()?,
                peer_ports: (0..config.generations)
                    .map(|_| free_port())
                    .collect::<anyhow::Result<_>>()?,
                generation: 0,
                child: None,
                paused: false,
                joined: false,
                fsync_delay_ms: None,
            });
        }
        let mut proxies = Vec::new();
        for i in 0..config.size {
            let mut row = Vec::new();
            for (j, to) in slots.iter().enumerate() {
                row.push(if i == j {
                    None
                } else {
                    Some(LinkProxy::start(loopback(to.peer_ports[0])).await?)
                });
            }
            proxies.push(row);
        }
        let mut cluster = Cluster {
            path: dir.path().to_path_buf(),
            dir: Some(dir),
            bin,
            config,
            slots,
            proxies,
        };
        for i in 0..cluster.size() {
            cluster.spawn(i)?;
        }
        cluster.wait_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Where data directories and member logs live.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory (logs, data) after the cluster is dropped, for a post-mortem.
    pub fn keep_dir(&mut self) -> PathBuf {
        if let Some(d) = self.dir.take() {
            let _kept = d.keep();
        }
        self.path.clone()
    }

    pub fn name(&self, i: usize) -> String {
        match self.slots[i].generation {
            0 => format!("m{i}"),
            g => format!("m{i}g{g}"),
        }
    }

    pub fn peer_url(&self, i: usize) -> String {
        let s = &self.slots[i];
        format!("http://127.0.0.1:{}", s.peer_ports[s.generation])
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.slots[i].client_port)
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.size()).map(|i| self.endpoint(i)).collect()
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.slots[i].child.is_some()
    }

    /// Whether member i was started and its process has since exited on its own (for
    /// instance, it refused to start from what its data directory held).
    pub fn has_exited(&mut self, i: usize) -> bool {
        match &mut self.slots[i].child {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => false,
        }
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.slots[i].paused
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.path.join(self.name(i))
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.path.join(format!("m{i}.log"))
    }

    fn initial_cluster(&self) -> String {
        (0..self.size())
            .map(|i| format!("{}={}", self.name(i), self.peer_url(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member i dials every generation of every other member through its proxy.
    fn dial_map(&self, i: usize) -> String {
        let mut entries = Vec::new();
        for (j, slot) in self.slots.iter().enumerate() {
            let Some(proxy) = &self.proxies[i][j] else {
                continue;
            };
            for port in &slot.peer_ports {
                entries.push(format!("http://127.0.0.1:{port}=http://{}", proxy.addr()));
            }
        }
        entries.join(",")
    }

    /// Starts member i (no-op if it runs).
    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        if self.slots[i].child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))?;
        let slot = &self.slots[i];
        let mut cmd = Command::new(&self.bin);
        if self.config.backend == Backend::Kvstore {
            cmd.arg("serve");
        }
        cmd.args(["--name", &self.name(i)])
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(["--listen-client-urls", &self.endpoint(i)])
            .args(["--listen-peer-urls", &self.peer_url(i)])
            .args(["--initial-advertise-peer-urls", &self.peer_url(i)])
            .args(["--initial-cluster", &self.initial_cluster()])
            .args([
                "--initial-cluster-state",
                if slot.joined { "existing" } else { "new" },
            ])
            .args(["--initial-cluster-token", TOKEN])
            .args([
                "--heartbeat-interval",
                &self.config.heartbeat_ms.to_string(),
            ])
            .args(["--election-timeout", &self.config.election_ms.to_string()]);
        match self.config.backend {
            Backend::Kvstore => {
                cmd.args(["--experimental-peer-dial-map", &self.dial_map(i)]);
            }
            Backend::Etcd => {
                cmd.args(["--advertise-client-urls", &self.endpoint(i)])
                    .args(["--log-level", "error"]);
            }
        }
        cmd.args(&self.config.extra_args)
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .env_remove("KVSTORE_FAILPOINT_FSYNC_DELAY_MS")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(ms) = slot.fsync_delay_ms {
            cmd.env("KVSTORE_FAILPOINT_FSYNC_DELAY_MS", ms.to_string());
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        self.slots[i].child = Some(child);
        self.slots[i].paused = false;
        Ok(())
    }

    fn signal(&self, i: usize, sig: &str) -> anyhow::Result<()> {
        let Some(child) = &self.slots[i].child else {
            return Ok(());
        };
        let ok = Command::new("kill")
            .args(["-s", sig, &child.id().to_string()])
            .status()?
            .success();
        if !ok {
            bail!("kill -s {sig} {} failed", child.id());
        }
        Ok(())
    }

    /// `kill -9`: no chance to flush anything not already fsynced.
    pub fn kill(&mut self, i: usize) {
        if self.slots[i].paused {
            let _ = self.signal(i, "CONT");
        }
        if let Some(mut c) = self.slots[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.slots[i].paused = false;
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing.
    pub fn pause(&mut self, i: usize) -> anyhow::Result<()> {
        if self.slots[i].child.is_some() && !self.slots[i].paused {
            self.signal(i, "STOP")?;
            self.slots[i].paused = true;
        }
        Ok(())
    }

    pub fn resume(&mut self, i: usize) -> anyhow::Result<()> {
        if self.slots[i].paused {
            self.signal(i, "CONT")?;
            self.slots[i].paused = false;
        }
        Ok(())
    }

    /// Sets the fsync delay member i gets from its next (re)start on.
    pub fn set_fsync_delay(&mut self, i: usize, delay_ms: Option<u64>) {
        self.slots[i].fsync_delay_ms = delay_ms;
    }

    /// kill -9 and start again (with the current fsync delay).
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)
    }

    /// Resumes every paused member and starts every stopped one.
    pub fn revive_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.size() {
            self.resume(i)?;
            self.spawn(i)?;
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        for i in 0..self.size() {
            self.kill(i);
        }
    }

    /// A client for member i alone, with bounded connect and request timeouts.
    pub async fn client(&self, i: usize) -> anyhow::Result<Client> {
        connect(&self.endpoint(i)).await
    }

    /// The member that says it is leader, if one answers now.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.size() {
            if !self.is_running(i) || self.is_paused(i) {
                continue;
            }
            let Ok(mut c) = self.client(i).await else {
                continue;
            };
            let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(500), c.status()).await
            else {
                continue;
            };
            if s.leader() != 0 && Some(s.leader()) == s.header().map(|h| h.member_id()) {
                return Some(i);
            }
        }
        None
    }

    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if Instant::now() > deadline {
                bail!("no leader within {timeout:?}:\n{}", self.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wipes member i and brings it back as a new member under its next peer URL:
    /// kill -9, delete its data, MemberRemove, MemberAdd, start with
    /// `--initial-cluster-state existing`.
    pub async fn wipe_and_readd(&mut self, i: usize) -> anyhow::Result<()> {
        if self.slots[i].generation + 1 >= self.slots[i].peer_ports.len() {
            bail!("member {i} has used all its reserved peer URLs");
        }
        let old_url = self.peer_url(i);
        let helper = (0..self.size())
            .find(|&j| j != i && self.is_running(j) && !self.is_paused(j))
            .context("no other member runs")?;
        let mut c = self.client(helper).await?;
        self.kill(i);
        std::fs::remove_dir_all(self.data_dir(i)).ok();
        let id = retry(|| {
            let mut c = c.clone();
            let old_url = old_url.clone();
            async move {
                let list = c.member_list().await?;
                Ok(list
                    .members()
                    .iter()
                    .find(|m| m.peer_urls().contains(&old_url))
                    .map(|m| m.id()))
            }
        })
        .await?;
        if let Some(id) = id {
            retry(|| {
                let mut c = c.clone();
                async move {
                    match c.member_remove(id).await {
                        Ok(_) => Ok(()),
                        // A retry after an indeterminate first attempt.
                        Err(e) if e.to_string().contains("not found") => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        }
        self.slots[i].generation += 1;
        let new_url = self.peer_url(i);
        retry(|| {
            let mut c = c.clone();
            let new_url = new_url.clone();
            async move {
                match c.member_add([new_url], None).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.to_string().contains("exist") => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
        .await?;
        let port = self.slots[i].peer_ports[self.slots[i].generation];
        for j in 0..self.size() {
            if let Some(p) = &self.proxies[j][i] {
                p.set_target(loopback(port));
            }
        }
        self.slots[i].joined = true;
        self.spawn(i)?;
        c.status().await.ok();
        Ok(())
    }

    /// Sets the link member `from` uses to reach member `to`.
    pub fn set_link(&self, from: usize, to: usize, mode: LinkMode) {
        if let Some(p) = &self.proxies[from][to] {
            p.set_mode(mode);
        }
    }

    /// Cuts every link between different groups (members in no group keep their links).
    pub fn partition(&self, groups: &[Vec<usize>]) {
        let group_of = |m: usize| groups.iter().position(|g| g.contains(&m));
        for i in 0..self.size() {
            for j in 0..self.size() {
                if let (Some(a), Some(b)) = (group_of(i), group_of(j))
                    && a != b
                {
                    self.set_link(i, j, LinkMode::Drop);
                }
            }
        }
    }

    /// Cuts member i off from all others, both directions.
    pub fn isolate(&self, i: usize) {
        let rest: Vec<usize> = (0..self.size()).filter(|&j| j != i).collect();
        self.partition(&[vec![i], rest]);
    }

    pub fn set_all_links(&self, mode: LinkMode) {
        for i in 0..self.size() {
            for j in 0..self.size() {
                self.set_link(i, j, mode);
            }
        }
    }

    pub fn heal(&self) {
        self.set_all_links(LinkMode::Pass);
    }

    /// The last `lines` lines of every member's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for i in 0..self.size() {
            let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("--- m{i} ---\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Connects to one endpoint with bounded timeouts (etcd-client dials lazily).
pub async fn connect(endpoint: &str) -> anyhow::Result<Client> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(3));
    Ok(Client::connect([endpoint], Some(opts)).await?)
}

/// Retries an admin call for at most 20 s (the cluster may be electing).
async fn retry<T, F, Fut>(mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout(Duration::from_secs(3), f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if Instant::now() > deadline => return Err(e.into()),
            Err(_) if Instant::now() > deadline => bail!("admin call timed out"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
