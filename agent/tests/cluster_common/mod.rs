//! The agent's end-to-end harness: real processes only. [`Cluster::start`] runs a real
//! etcd and a real `apiserver` binary (built beforehand with `cargo build -p apiserver`;
//! its absence is a loud failure, never a skip) on free loopback ports, and the scheduler
//! and controllers in the test process (`controllers::run`, over HTTPS like any outside
//! program, with a short node grace period). [`AgentProc`] runs the real `agent` binary
//! as `system:node:agent` (the token the apiserver writes into its tokens.csv) on its
//! own 127.0.0.x address.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use api::{CancellationToken, Client};
use tempfile::TempDir;

/// How long any wait in these tests may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(120);

pub fn free_port_on(ip: &str) -> u16 {
    TcpListener::bind(format!("{ip}:0"))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A loopback address no other test process picks at the same time (127.0.x.y from the
/// pid and a counter).
pub fn loopback_ip() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!(
        "127.{}.{}.{}",
        10 + (pid % 200),
        (pid / 200) % 250,
        2 + (n % 250)
    )
}

fn sibling_bin(name: &str) -> Result<PathBuf> {
    // target/debug/deps/<test> → target/debug/<name>
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("test binary has no target dir")?;
    let bin = dir.join(name);
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build -p {name}` before these tests",
            bin.display()
        );
    }
    Ok(bin)
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Proc(pub Child);

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
    /// The first apiserver's URL (the one in the kubeconfigs).
    pub url: String,
    pub urls: Vec<String>,
    controllers: Option<CancellationToken>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(c) = &self.controllers {
            c.cancel();
        }
    }
}

impl Cluster {
    /// etcd + apiserver + the controllers (node grace period `node_grace`).
    pub async fn start(node_grace: Duration) -> Result<Self> {
        let mut c = Self::start_bare().await?;
        let mut config = controllers::RunConfig::new("agent-test");
        config.leader_elect = false;
        config.node_lifecycle.grace_period = node_grace;
        config.node_lifecycle.monitor_period = Duration::from_millis(500);
        let token = CancellationToken::new();
        tokio::spawn(controllers::run(c.client()?, config, token.clone()));
        c.controllers = Some(token);
        Ok(c)
    }

    /// etcd + apiserver, no controllers.
    pub async fn start_bare() -> Result<Self> {
        Self::start_bare_n(1).await
    }

    /// etcd + `n` apiservers over it (one data dir: one CA, one token file), no controllers.
    pub async fn start_bare_n(n: usize) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("agent-e2e-").tempdir()?;
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
            .context("spawn etcd")?;
        let etcd = Proc(etcd);
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let mut apiservers = Vec::new();
        let mut urls = Vec::new();
        for i in 0..n.max(1) {
            let (p, url) = spawn_apiserver(dir.path(), i, &endpoint).await?;
            apiservers.push(Some(p));
            urls.push(url);
        }
        let c = Cluster {
            _etcd: etcd,
            apiservers,
            dir,
            url: urls[0].clone(),
            urls,
            controllers: None,
        };
        c.write_agent_kubeconfig()?;
        Ok(c)
    }

    /// Kills apiserver `i` (SIGKILL).
    pub fn kill_apiserver(&mut self, i: usize) {
        self.apiservers[i] = None;
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.data_dir().join("admin.kubeconfig")
    }

    pub fn agent_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("agent.kubeconfig")
    }

    /// A kubeconfig for user system:node:agent (group system:nodes) from tokens.csv.
    fn write_agent_kubeconfig(&self) -> Result<()> {
        let tokens = std::fs::read_to_string(self.data_dir().join("tokens.csv"))?;
        let token = tokens
            .lines()
            .find(|l| l.split(',').nth(1) == Some("system:node:agent"))
            .and_then(|l| l.split(',').next())
            .context("tokens.csv has no system:node:agent line")?;
        let ca = self.data_dir().join("pki").join("ca.crt");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: agent\n  user:\n    token: {token}\ncontexts:\n- name: agent\n  context:\n    cluster: c\n    user: agent\ncurrent-context: agent\n",
            self.url,
            ca.display()
        );
        std::fs::write(self.agent_kubeconfig(), text)?;
        Ok(())
    }

    pub fn client(&self) -> Result<Client> {
        Ok(Client::from_kubeconfig(&self.admin_kubeconfig())?)
    }

    /// Runs the real kubectl as admin; returns stdout or fails with both streams.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
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

    /// `kubectl apply -f` of YAML text.
    pub fn apply(&self, name: &str, yaml: &str) -> Result<String> {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml)?;
        self.kubectl(&["apply", "-f", &path.display().to_string()])
    }

    pub fn apiserver_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("apiserver-{i}.log")))
            .unwrap_or_default()
    }
}

/// Starts apiserver `i` over `etcd` with the data dir under `dir`; waits until it serves.
async fn spawn_apiserver(dir: &Path, i: usize, etcd: &str) -> Result<(Proc, String)> {
    let data = dir.join("data");
    let log = std::fs::File::create(dir.join(format!("apiserver-{i}.log")))?;
    let mut child = Command::new(sibling_bin("apiserver")?)
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
    let url = wait_line(stdout, "apiserver: serving on ", Duration::from_secs(60))
        .await
        .context("apiserver did not print its serving line")?;
    Ok((proc, url))
}

/// Waits for a stdout line starting with `prefix`; returns the rest of it.
async fn wait_line(
    stdout: std::process::ChildStdout,
    prefix: &'static str,
    timeout: Duration,
) -> Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(prefix) {
                let _ = tx.send(rest.trim().to_string());
            }
        }
    });
    Ok(tokio::task::spawn_blocking(move || rx.recv_timeout(timeout)).await??)
}

/// One `agent` process.
pub struct AgentProc {
    proc: Option<Proc>,
    pub name: String,
    pub ip: String,
    pub log: PathBuf,
    args: Vec<String>,
    /// Extra environment of the agent process.
    pub env: Vec<(String, String)>,
    kubeconfig: PathBuf,
}

impl AgentProc {
    /// Starts `agent --kubeconfig .. --node-name name --node-ip ip --kubelet-port <free>`
    /// plus `extra`, and waits until it says it registered.
    pub async fn start(cluster: &Cluster, name: &str, ip: &str, extra: &[&str]) -> Result<Self> {
        Self::start_with_env(cluster, name, ip, extra, &[]).await
    }

    /// [`AgentProc::start`] with extra environment variables.
    pub async fn start_with_env(
        cluster: &Cluster,
        name: &str,
        ip: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let port = free_port_on(ip);
        let mut args: Vec<String> = [
            "--node-name",
            name,
            "--node-ip",
            ip,
            "--kubelet-port",
            &port.to_string(),
            "--resync-s",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut a = AgentProc {
            proc: None,
            name: name.into(),
            ip: ip.into(),
            log: cluster.dir.path().join(format!("agent-{name}.log")),
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            kubeconfig: cluster.agent_kubeconfig(),
        };
        a.spawn().await?;
        Ok(a)
    }

    /// `agent --simulate n --node-name-prefix prefix`.
    pub async fn simulate(cluster: &Cluster, prefix: &str, n: usize) -> Result<Self> {
        let mut a = AgentProc {
            proc: None,
            name: prefix.into(),
            ip: "127.0.0.1".into(),
            log: cluster.dir.path().join(format!("agent-sim-{prefix}.log")),
            args: vec![
                "--simulate".into(),
                n.to_string(),
                "--node-name-prefix".into(),
                prefix.into(),
            ],
            env: Vec::new(),
            kubeconfig: cluster.agent_kubeconfig(),
        };
        a.spawn().await?;
        Ok(a)
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_agent"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("spawn agent")?;
        let stdout = child.stdout.take().context("agent stdout")?;
        self.proc = Some(Proc(child));
        if let Err(e) = wait_line(stdout, "agent: ", Duration::from_secs(60)).await {
            bail!(
                "agent {} did not start ({e}); its log:\n{}",
                self.name,
                self.log_text()
            );
        }
        Ok(())
    }

    /// SIGKILL: the agent dies at once; its containers keep running.
    pub fn kill(&mut self) {
        self.proc = None;
    }

    /// Starts the same agent again.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn().await
    }

    /// The agent's pid (0 when it is not running).
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map(|p| p.0.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Polls `f` every 200 ms until it returns Some, failing after [`WAIT`].
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
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
