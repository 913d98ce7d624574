//! The shared harness of the apiserver's end-to-end tests: real processes only.
//!
//! [`Cluster::start`] starts a store (real etcd 3.4 or `kvstore serve`, one member, via
//! the `tests` crate) and N `apiserver` processes on free loopback ports over one data
//! directory (one CA, one token file, one admin kubeconfig), and gives: base URLs, the
//! admin token, the CA PEM, the kubeconfig path, `reqwest` clients that trust the CA,
//! a [`Cluster::kubectl`] helper that runs the real kubectl with `--kubeconfig`, and
//! raw store access. Every process is killed by its pid on drop; when the test panics
//! the logs are printed.
//!
//! [`KvstoreCluster`] starts a 3-member `kvstore serve` cluster for leader-change tests
//! ([`Cluster::start_on`] puts apiservers on it).
//!
//! Stable API (other test files rely on it): `Cluster::start(Backend)`,
//! `Cluster::start_n(Backend, n)`, `Cluster::start_on(endpoints, n)`, `url()`,
//! `url_of(i)`, `admin_token()`, `ca_pem()`, `kubeconfig()`, `data_dir()`,
//! `token_file()`, `client()`, `client_with_token(Option<&str>)`, `kubectl(&[..])`,
//! `kubectl_stdin(&[..], stdin)`, `restart_apiserver(i)`, `kill_apiserver(i)`,
//! `add_token(token, user, groups)`, `store_endpoints()`, `etcd()`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tempfile::TempDir;
pub use tests::Backend;

/// How long an apiserver may take to print its serving line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one kubectl run may take.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// One apiserver process.
pub struct ApiServer {
    child: Option<Child>,
    pub secure_port: u16,
    pub insecure_port: u16,
    pub url: String,
    pub insecure_url: String,
    pub log_path: PathBuf,
    args: Vec<String>,
}

impl ApiServer {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Store members, apiservers and their shared data dir.
pub struct Cluster {
    store: Option<tests::Server>,
    kv_cluster: Option<KvstoreCluster>,
    endpoints: Vec<String>,
    pub apiservers: Vec<ApiServer>,
    dir: TempDir,
    admin_token: String,
    extra_args: Vec<String>,
    /// Each apiserver on its own data dir, seeded from the first (see [`Cluster::start_ha`]).
    separate_dirs: bool,
}

/// The files an apiserver of an existing cluster needs in a fresh data dir: the CA
/// (the new apiserver issues its own serving certificate from it), the
/// service-account signing key and the token file.
pub const HA_SEED_FILES: &[&str] = &["pki/ca.crt", "pki/ca.key", "sa.key", "tokens.csv"];

/// Output of one kubectl run.
#[derive(Debug)]
pub struct KubectlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    /// stdout, or an error with both streams when kubectl failed.
    pub fn ok(&self) -> Result<&str> {
        if self.success {
            Ok(&self.stdout)
        } else {
            bail!(
                "kubectl failed:\nstdout: {}\nstderr: {}",
                self.stdout,
                self.stderr
            )
        }
    }
}

pub fn apiserver_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_apiserver"))
}

impl Cluster {
    /// One store member of `backend` and one apiserver.
    pub async fn start(backend: Backend) -> Result<Self> {
        Self::start_n(backend, 1).await
    }

    /// One store member of `backend` and `n` apiservers over it.
    pub async fn start_n(backend: Backend, n: usize) -> Result<Self> {
        Self::start_with_args(backend, n, &[]).await
    }

    /// Like [`Cluster::start_n`], with extra apiserver flags.
    pub async fn start_with_args(backend: Backend, n: usize, extra: &[&str]) -> Result<Self> {
        let store = tests::Server::start(backend).await?;
        let endpoints = vec![store.endpoint()];
        let mut c = Self::new(endpoints)?;
        c.extra_args = extra.iter().map(|s| s.to_string()).collect();
        c.store = Some(store);
        c.spawn_apiservers(n).await?;
        Ok(c)
    }

    /// `n` apiservers over one store member of `backend`, each with its own data dir:
    /// the first creates the PKI, signing key and token file; each later one starts
    /// from a fresh dir holding only copies of [`HA_SEED_FILES`].
    pub async fn start_ha(backend: Backend, n: usize, extra: &[&str]) -> Result<Self> {
        let store = tests::Server::start(backend).await?;
        let mut c = Self::new(vec![store.endpoint()])?;
        c.store = Some(store);
        c.separate_dirs = true;
        c.extra_args = extra.iter().map(|s| s.to_string()).collect();
        c.spawn_apiservers(n).await?;
        Ok(c)
    }

    /// Like [`Cluster::start_ha`], over a 3-member kvstore cluster.
    pub async fn start_ha_on(kv: KvstoreCluster, n: usize, extra: &[&str]) -> Result<Self> {
        let mut c = Self::new(kv.endpoints())?;
        c.kv_cluster = Some(kv);
        c.separate_dirs = true;
        c.extra_args = extra.iter().map(|s| s.to_string()).collect();
        c.spawn_apiservers(n).await?;
        Ok(c)
    }

    /// The data dir of apiserver `i`.
    pub fn data_dir_of(&self, i: usize) -> PathBuf {
        if self.separate_dirs && i > 0 {
            self.dir.path().join(format!("data-{i}"))
        } else {
            self.data_dir()
        }
    }

    /// Copies [`HA_SEED_FILES`] from the first data dir into apiserver `i`'s.
    fn seed_data_dir(&self, i: usize) -> Result<()> {
        let to = self.data_dir_of(i);
        if to.join("tokens.csv").exists() {
            return Ok(());
        }
        std::fs::create_dir_all(to.join("pki"))?;
        for f in HA_SEED_FILES {
            std::fs::copy(self.data_dir().join(f), to.join(f))
                .with_context(|| format!("seed {f} into {}", to.display()))?;
        }
        Ok(())
    }

    /// `n` apiservers over a 3-member kvstore cluster.
    pub async fn start_on(kv: KvstoreCluster, n: usize) -> Result<Self> {
        let endpoints = kv.endpoints();
        let mut c = Self::new(endpoints)?;
        c.kv_cluster = Some(kv);
        c.spawn_apiservers(n).await?;
        Ok(c)
    }

    fn new(endpoints: Vec<String>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("apiserver-test-")
            .tempdir()?;
        std::fs::create_dir_all(dir.path().join("data"))?;
        Ok(Self {
            store: None,
            kv_cluster: None,
            endpoints,
            apiservers: Vec::new(),
            dir,
            admin_token: String::new(),
            extra_args: Vec::new(),
            separate_dirs: false,
        })
    }

    async fn spawn_apiservers(&mut self, n: usize) -> Result<()> {
        for i in 0..n {
            let a = self.spawn_apiserver(i).await?;
            self.apiservers.push(a);
        }
        self.admin_token = read_admin_token(&self.token_file())?;
        Ok(())
    }

    async fn spawn_apiserver(&self, i: usize) -> Result<ApiServer> {
        if self.separate_dirs && i > 0 {
            self.seed_data_dir(i)?;
        }
        let mut last = None;
        for _ in 0..3 {
            let secure = tests::ports::free_port();
            let insecure = tests::ports::free_port();
            let mut args = vec![
                "--etcd-servers".to_string(),
                self.endpoints.join(","),
                "--bind-address".into(),
                "127.0.0.1".into(),
                "--secure-port".into(),
                secure.to_string(),
                "--insecure-port".into(),
                insecure.to_string(),
                "--data-dir".into(),
                self.data_dir_of(i).display().to_string(),
                "--audit-log-path".into(),
                self.dir
                    .path()
                    .join(format!("audit-{i}.log"))
                    .display()
                    .to_string(),
                "--bookmark-interval-s".into(),
                "2".into(),
            ];
            args.extend(self.extra_args.iter().cloned());
            let log_path = self.dir.path().join(format!("apiserver-{i}.log"));
            match start_process(&args, &log_path).await {
                Ok((child, url, insecure_url)) => {
                    return Ok(ApiServer {
                        child: Some(child),
                        secure_port: secure,
                        insecure_port: insecure,
                        url,
                        insecure_url,
                        log_path,
                        args,
                    });
                }
                Err(e) => {
                    eprintln!("[harness] apiserver {i} start failed, retrying: {e:#}");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no attempt")))
    }

    /// Kills apiserver `i` (SIGKILL, by pid) and starts it again on the same ports.
    pub async fn restart_apiserver(&mut self, i: usize) -> Result<()> {
        let a = &mut self.apiservers[i];
        a.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match start_process(&a.args, &a.log_path).await {
                Ok((child, url, insecure_url)) => {
                    a.child = Some(child);
                    a.url = url;
                    a.insecure_url = insecure_url;
                    return Ok(());
                }
                // The old process's port may linger for a moment.
                Err(e) if Instant::now() < deadline => {
                    eprintln!("[harness] restart of apiserver {i} failed, retrying: {e:#}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Kills apiserver `i` (by pid).
    pub fn kill_apiserver(&mut self, i: usize) {
        self.apiservers[i].kill();
    }

    /// Base URL of the first apiserver's secure port.
    pub fn url(&self) -> String {
        self.url_of(0)
    }

    pub fn url_of(&self, i: usize) -> String {
        self.apiservers[i].url.clone()
    }

    /// The plain-HTTP test port of apiserver `i` (no token = admin).
    pub fn insecure_url_of(&self, i: usize) -> String {
        self.apiservers[i].insecure_url.clone()
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn token_file(&self) -> PathBuf {
        self.data_dir().join("tokens.csv")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("admin.kubeconfig")
    }

    /// The cluster CA (PEM), once TLS is served.
    pub fn ca_pem(&self) -> Option<String> {
        std::fs::read_to_string(self.data_dir().join("pki").join("ca.crt")).ok()
    }

    /// The store's client endpoints.
    pub fn store_endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
    }

    /// A store client (to inspect what was written, or to compact).
    pub async fn etcd(&self) -> Result<etcd_client::Client> {
        tests::server::connect(&self.endpoints[0]).await
    }

    /// The single store member (None on a [`KvstoreCluster`]).
    pub fn store_member(&mut self) -> Option<&mut tests::Server> {
        self.store.as_mut()
    }

    pub fn kv_cluster(&mut self) -> Option<&mut KvstoreCluster> {
        self.kv_cluster.as_mut()
    }

    /// Appends a static token (takes effect for apiservers started or restarted later,
    /// as the token file is read at start).
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.token_file())?;
        writeln!(f, "{token},{user},{user},\"{}\"", groups.join(","))?;
        Ok(())
    }

    /// A client with the admin token that trusts the cluster CA.
    pub fn client(&self) -> reqwest::Client {
        self.client_with_token(Some(&self.admin_token))
    }

    /// A client with `token` (None: no Authorization header) that trusts the cluster CA.
    pub fn client_with_token(&self, token: Option<&str>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .use_rustls_tls();
        if let Some(pem) = self.ca_pem()
            && let Ok(cert) = reqwest::Certificate::from_pem(pem.as_bytes())
        {
            b = b.add_root_certificate(cert);
        }
        if let Some(t) = token {
            let mut headers = reqwest::header::HeaderMap::new();
            if let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")) {
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
            b = b.default_headers(headers);
        }
        b.build().expect("reqwest client")
    }

    /// Runs the real kubectl with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Result<KubectlOutput> {
        self.kubectl_stdin(args, None)
    }

    /// Runs the real kubectl with the admin kubeconfig and `stdin`.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<KubectlOutput> {
        let kubeconfig = self.kubeconfig();
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--request-timeout=30s")
            .args(args)
            .env("KUBECACHEDIR", self.dir.path().join("kubecache"))
            .env("HOME", self.dir.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawn kubectl")?;
        if let Some(input) = stdin
            && let Some(mut s) = child.stdin.take()
        {
            s.write_all(input.as_bytes())?;
        }
        let deadline = Instant::now() + KUBECTL_TIMEOUT;
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output()?;
                bail!(
                    "kubectl {args:?} timed out\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output()?;
        Ok(KubectlOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Starts `kubectl args…` in the background (e.g. `get -w`), stdout piped.
    pub fn kubectl_spawn(&self, args: &[&str]) -> Result<Child> {
        Ok(Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .env("KUBECACHEDIR", self.dir.path().join("kubecache"))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }

    /// All apiserver logs (for failure messages).
    pub fn logs(&self) -> String {
        self.apiservers
            .iter()
            .enumerate()
            .map(|(i, a)| format!("---- apiserver {i} ----\n{}", a.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in &mut self.apiservers {
            a.kill();
        }
        if std::thread::panicking() {
            eprintln!("==== apiserver logs ====\n{}\n==== end ====", self.logs());
        }
    }
}

fn read_admin_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .find(|l| l.split(',').nth(1) == Some("admin"))
        .and_then(|l| l.split(',').next())
        .map(String::from)
        .ok_or_else(|| anyhow!("no admin token in {}", path.display()))
}

/// Spawns the apiserver and waits for its serving lines; returns (child, url, insecure url).
async fn start_process(args: &[String], log_path: &Path) -> Result<(Child, String, String)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)?;
    let mut child = Command::new(apiserver_bin())
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("spawn apiserver")?;
    let stdout = child.stdout.take().context("apiserver stdout")?;
    let log_copy = log_path.to_path_buf();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    // Copy stdout into the log, and hand the serving lines to the waiter.
    std::thread::spawn(move || {
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&log_copy)
            .ok();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if line.starts_with("apiserver: ") {
                let _ = tx.blocking_send(line);
            }
        }
    });
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let mut url = None;
    let mut insecure = None;
    while url.is_none() || insecure.is_none() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "apiserver exited during start ({status}):\n{}",
                std::fs::read_to_string(log_path).unwrap_or_default()
            );
        }
        match tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(200)),
            rx.recv(),
        )
        .await
        {
            Ok(Some(line)) => {
                if let Some(u) = line.strip_prefix("apiserver: serving on ") {
                    url = Some(u.trim().to_string());
                } else if let Some(u) = line.strip_prefix("apiserver: insecure port on ") {
                    insecure = Some(u.trim().to_string());
                }
            }
            Ok(None) => bail!("apiserver closed stdout"),
            Err(_) if tokio::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "apiserver did not start in time:\n{}",
                    std::fs::read_to_string(log_path).unwrap_or_default()
                );
            }
            Err(_) => {}
        }
    }
    let (url, insecure) = (url.unwrap_or_default(), insecure.unwrap_or_default());
    // Ready = the store answers through it.
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    loop {
        if let Ok(r) = probe.get(format!("{insecure}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("apiserver not ready in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((child, url, insecure))
}

/// A 3-member `kvstore serve` cluster on free ports (for leader changes).
pub struct KvstoreCluster {
    dir: TempDir,
    pub members: Vec<KvMember>,
    initial_cluster: String,
}

pub struct KvMember {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    child: Option<Child>,
}

impl KvstoreCluster {
    pub async fn start(n: usize) -> Result<Self> {
        let members: Vec<KvMember> = (1..=n)
            .map(|i| KvMember {
                name: format!("m{i}"),
                client_port: tests::ports::free_port(),
                peer_port: tests::ports::free_port(),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Self {
            dir: tempfile::Builder::new()
                .prefix("kvstore-cluster-")
                .tempdir()?,
            members,
            initial_cluster,
        };
        for i in 0..n {
            c.spawn(i)?;
        }
        c.leader().await?;
        Ok(c)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let bin = tests::server::kvstore_bin()?;
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))?;
        let child = Command::new(bin)
            .arg("serve")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(&m.name))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client_port),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer_port),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer_port),
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "apiserver-test"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.members[i].child = Some(child);
        Ok(())
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The index of the member that reports itself leader, waiting for one.
    pub async fn leader(&self) -> Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for (i, m) in self.members.iter().enumerate() {
                if m.child.is_none() {
                    continue;
                }
                if let Ok(Ok(mut c)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    tests::server::connect(&format!("http://127.0.0.1:{}", m.client_port)),
                )
                .await
                    && let Ok(Ok(s)) =
                        tokio::time::timeout(Duration::from_secs(2), c.status()).await
                    && s.leader() != 0
                    && s.leader() == s.header().map(|h| h.member_id()).unwrap_or(0)
                {
                    return Ok(i);
                }
            }
            if Instant::now() > deadline {
                bail!("no leader elected");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills member `i` (by pid).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data dir.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        self.spawn(i)
    }
}

impl Drop for KvstoreCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// GETs `path` and returns (status, JSON body).
pub async fn get_json(client: &reqwest::Client, url: &str) -> Result<(u16, Value)> {
    let r = client.get(url).send().await?;
    let code = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Sends `method` with a JSON body and returns (status, JSON body).
pub async fn send_json(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: &Value,
) -> Result<(u16, Value)> {
    let r = client.request(method, url).json(body).send().await?;
    let code = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Sends raw bytes with a content type and returns (status, JSON body).
pub async fn send_raw(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(u16, Value)> {
    let r = client
        .request(method, url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await?;
    let code = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// A streaming watch: JSON events, one per line.
pub struct WatchStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl WatchStream {
    /// Opens `GET url` (a `?watch=1` URL) and checks the answer is 200.
    pub async fn open(client: &reqwest::Client, url: &str) -> Result<Self> {
        let resp = client.get(url).send().await?;
        if !resp.status().is_success() {
            let code = resp.status();
            let text = resp.text().await.unwrap_or_default();
            bail!("watch {url}: HTTP {code}: {text}");
        }
        Ok(Self {
            resp,
            buf: Vec::new(),
        })
    }

    /// The next event, None at the end of the stream; errors after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<Value>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(serde_json::from_slice(&line)?));
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Ok(None)) => return Ok(None),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => bail!("no watch event within {timeout:?}"),
            }
        }
    }

    /// The next event that is not a BOOKMARK.
    pub async fn next_change(&mut self, timeout: Duration) -> Result<Option<Value>> {
        loop {
            match self.next(timeout).await? {
                Some(e) if e["type"] == "BOOKMARK" => continue,
                other => return Ok(other),
            }
        }
    }
}

/// Polls `f` until it returns Some, for at most 30 s.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
