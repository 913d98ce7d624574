//! One store member under test: real etcd 3.4 or `kvstore serve`, on free loopback ports,
//! with its data and log in a temporary directory.
//!
//! Start waits until a Maintenance Status RPC answers. Drop kills the member by its pid
//! and, when the thread is panicking (a failed test), prints the member's log.
//! [`Server::kill9`] and [`Server::restart`] reuse the same data dir and ports, for the
//! durability tests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::{Client, ConnectOptions};
use tempfile::TempDir;

use crate::ports::free_port;
use crate::process::{ManagedChild, read_log};
use crate::raw::RawClient;

/// How long a member may take to answer its first Status RPC.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a start is retried with fresh ports (a port may be taken meanwhile).
const START_ATTEMPTS: usize = 3;

/// Which implementation serves the etcd v3 API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Real etcd 3.4 (`etcd` on the PATH, or `ETCD_BIN`).
    Etcd,
    /// Our `kvstore serve` (next to the test binary, or `KVSTORE_BIN`).
    Kvstore,
}

impl Backend {
    /// Both backends, reference first.
    pub const ALL: [Backend; 2] = [Backend::Etcd, Backend::Kvstore];

    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Etcd => "etcd",
            Backend::Kvstore => "kvstore",
        }
    }

    /// The program to run.
    pub fn program(self) -> Result<PathBuf> {
        match self {
            Backend::Etcd => Ok(std::env::var_os("ETCD_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("etcd"))),
            Backend::Kvstore => kvstore_bin(),
        }
    }
}

/// Finds the `kvstore` binary: `KVSTORE_BIN`, else `target/<profile>/kvstore` next to the
/// test executable (`target/<profile>/deps/<test>`).
pub fn kvstore_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("KVSTORE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("test executable has no parent dir")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps dir has no parent")?;
    }
    let bin = dir.join("kvstore");
    if !bin.exists() {
        bail!(
            "kvstore binary not found at {}; build it first (`cargo build --workspace --bins`) \
             or set KVSTORE_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// The files a client needs to reach a member that serves `https://`: the CA that
/// signed the member's certificate, and a client certificate when the member demands one.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A running member. Dropping it kills the process.
pub struct Server {
    backend: Backend,
    /// Set for members started with [`Server::start_tls`]: the client URL is `https://`.
    tls: Option<ClientTls>,
    dir: Option<TempDir>,
    root: PathBuf,
    client_port: u16,
    peer_port: u16,
    extra_args: Vec<String>,
    child: Option<ManagedChild>,
    starts: usize,
}

impl Server {
    /// Starts a member with default flags.
    pub async fn start(backend: Backend) -> Result<Self> {
        Self::start_with(backend, &[]).await
    }

    /// Starts a member with extra flags (the same spelling works for both backends, e.g.
    /// `--max-txn-ops`, `--experimental-watch-progress-notify-interval`).
    pub async fn start_with(backend: Backend, extra_args: &[&str]) -> Result<Self> {
        Self::start_inner(backend, None, extra_args).await
    }

    /// Starts a member whose client URL is `https://` (its certificate flags, e.g.
    /// `--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`, are in
    /// `extra_args`); the harness's own clients connect with `tls`.
    pub async fn start_tls(backend: Backend, tls: ClientTls, extra_args: &[&str]) -> Result<Self> {
        Self::start_inner(backend, Some(tls), extra_args).await
    }

    async fn start_inner(
        backend: Backend,
        tls: Option<ClientTls>,
        extra_args: &[&str],
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", backend.name()))
            .tempdir()?;
        let mut server = Server {
            backend,
            tls,
            root: dir.path().to_path_buf(),
            dir: Some(dir),
            client_port: 0,
            peer_port: 0,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
            starts: 0,
        };
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            server.client_port = free_port();
            server.peer_port = free_port();
            // A failed first start may leave a half-initialised data dir behind.
            let _ = std::fs::remove_dir_all(server.data_dir());
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    eprintln!("[harness] {} start failed, retrying: {e:#}", backend.name());
                    if let Some(mut child) = server.child.take() {
                        child.kill9();
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("no start attempt")))
            .with_context(|| format!("log:\n{}", server.log()))
    }

    /// The backend this member runs.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `http://127.0.0.1:PORT` (`https://` for a TLS member), the client URL.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The member's data directory (kept across [`Server::restart`]).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The log file holding the member's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("member.log")
    }

    /// The log so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path())
    }

    /// The pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ManagedChild::pid)
    }

    /// A fresh `etcd-client` connection.
    pub async fn client(&self) -> Result<Client> {
        match &self.tls {
            Some(tls) => connect_tls(&self.endpoint(), tls).await,
            None => connect(&self.endpoint()).await,
        }
    }

    /// A fresh raw protobuf client.
    pub async fn raw(&self) -> Result<RawClient> {
        RawClient::connect(&self.endpoint()).await
    }

    /// `kill -9` the member (SIGKILL to its pid) and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill9();
        }
    }

    /// Starts the member again on the same data dir and ports, and waits until ready.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn_and_wait()
            .await
            .with_context(|| format!("restart failed; log:\n{}", self.log()))
    }

    fn args(&self) -> Vec<String> {
        let name = "default";
        let client = self.endpoint();
        let data = self.data_dir().display().to_string();
        let mut args: Vec<String> = match self.backend {
            Backend::Etcd => {
                let peer = format!("http://127.0.0.1:{}", self.peer_port);
                vec![
                    "--name".into(),
                    name.into(),
                    "--data-dir".into(),
                    data,
                    "--listen-client-urls".into(),
                    client.clone(),
                    "--advertise-client-urls".into(),
                    client,
                    "--listen-peer-urls".into(),
                    peer.clone(),
                    "--initial-advertise-peer-urls".into(),
                    peer.clone(),
                    "--initial-cluster".into(),
                    format!("{name}={peer}"),
                    "--logger".into(),
                    "zap".into(),
                    "--log-level".into(),
                    "error".into(),
                ]
            }
            Backend::Kvstore => vec![
                "serve".into(),
                "--name".into(),
                name.into(),
                "--data-dir".into(),
                data,
                "--listen-client-urls".into(),
                client,
            ],
        };
        args.extend(self.extra_args.iter().cloned());
        args
    }

    async fn spawn_and_wait(&mut self) -> Result<()> {
        let program = self.backend.program()?;
        let args = self.args();
        self.starts += 1;
        append_log_line(
            &self.log_path(),
            &format!(
                "==== [harness] start #{}: {} {}",
                self.starts,
                program.display(),
                args.join(" ")
            ),
        );
        let child = ManagedChild::spawn(self.backend.name(), &program, &args, &self.log_path())?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(ManagedChild::exited) {
                bail!(
                    "{} exited before it was ready: {status}",
                    self.backend.name()
                );
            }
            let attempt = async {
                let mut client = self.client().await?;
                client.status().await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(_)) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => return Err(e.context("not ready in time")),
                Err(_) => bail!("not ready in time (status RPC hangs)"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        let label = format!("{} member on {}", self.backend.name(), self.endpoint());
        if std::thread::panicking() {
            // Keep the data for a post-mortem and show what the member said.
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!(
                    "==== {label} log (data kept in {}) ====\n{}\n==== end of log ====",
                    kept.display(),
                    read_log(&kept.join("member.log"))
                );
            }
        } else {
            crate::report::record_log(&label, &self.log());
        }
    }
}

/// Connects an `etcd-client` over TLS to one `https://` endpoint.
pub async fn connect_tls(endpoint: &str, tls: &ClientTls) -> Result<Client> {
    let mut config = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(&tls.ca)?));
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        config = config.identity(etcd_client::Identity::from_pem(
            std::fs::read(cert)?,
            std::fs::read(key)?,
        ));
    }
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(20))
        .with_tls(config);
    Ok(Client::connect([endpoint], Some(options)).await?)
}

/// Connects an `etcd-client` to one endpoint with short timeouts.
pub async fn connect(endpoint: &str) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(20));
    Ok(Client::connect([endpoint], Some(options)).await?)
}

fn append_log_line(path: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}
