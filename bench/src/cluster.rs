//! Local clusters for `bench compare`: N members of real etcd or of `kvstore` on
//! loopback, each with its own free ports, data directory and log file in a temporary
//! directory. Members take etcd's flags; they are killed by their own pid when the
//! cluster is dropped.

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::clients;

/// How long a cluster may take to start serving and elect a leader.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Which server a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Etcd,
    Kvstore,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Etcd => "etcd",
            System::Kvstore => "kvstore",
        })
    }
}

/// A cluster could not start.
#[derive(Debug)]
pub enum StartError {
    /// A member exited during startup; `log` is the end of its log. For a multi-member
    /// `kvstore` this is how a binary without Raft refuses the cluster.
    MemberExited { member: String, log: String },
    /// Anything else (spawn failure, no leader in time).
    Other(anyhow::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::MemberExited { member, log } => {
                write!(f, "member {member} exited during startup: {log}")
            }
            StartError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

/// One member (running unless killed).
struct Member {
    name: String,
    child: Child,
    log_path: PathBuf,
    /// How it was started, to restart it on the same data dir.
    binary: PathBuf,
    args: Vec<String>,
}

/// A running local cluster; dropping it kills its members and removes its data.
pub struct Cluster {
    pub system: System,
    members: Vec<Member>,
    /// Client endpoints, one per member.
    pub endpoints: Vec<String>,
    dir: TempDir,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("system", &self.system)
            .field("endpoints", &self.endpoints)
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The etcd flags of member `index` of a cluster whose peers are `peer_urls`.
pub fn member_args(
    names: &[String],
    index: usize,
    client_url: &str,
    peer_urls: &[String],
    data_dir: &Path,
    token: &str,
) -> Vec<String> {
    let initial_cluster = names
        .iter()
        .zip(peer_urls)
        .map(|(name, url)| format!("{name}={url}"))
        .collect::<Vec<_>>()
        .join(",");
    [
        ("--name", names[index].clone()),
        ("--data-dir", data_dir.display().to_string()),
        ("--listen-client-urls", client_url.to_owned()),
        ("--advertise-client-urls", client_url.to_owned()),
        ("--listen-peer-urls", peer_urls[index].clone()),
        ("--initial-advertise-peer-urls", peer_urls[index].clone()),
        ("--initial-cluster", initial_cluster),
        ("--initial-cluster-state", "new".to_owned()),
        ("--initial-cluster-token", token.to_owned()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

impl Cluster {
    /// Starts `members` members of `system` from `binary` and waits until every member
    /// answers and one is leader.
    pub async fn start(
        system: System,
        binary: &Path,
        members: usize,
    ) -> std::result::Result<Cluster, StartError> {
        Self::start_inner(system, binary, members, None).await
    }

    /// Like [`Cluster::start`], with TLS on the client and peer ports and client
    /// certificates required on both. `certs` holds `ca.pem` and `NAME.pem`/`NAME-key.pem`
    /// for every member name (`SYSTEM-1`, ...), as `kvstore certs` writes them; clients
    /// need [`crate::clients::set_tls`].
    pub async fn start_tls(
        system: System,
        binary: &Path,
        members: usize,
        certs: &Path,
    ) -> std::result::Result<Cluster, StartError> {
        Self::start_inner(system, binary, members, Some(certs)).await
    }

    async fn start_inner(
        system: System,
        binary: &Path,
        members: usize,
        certs: Option<&Path>,
    ) -> std::result::Result<Cluster, StartError> {
        let scheme = if certs.is_some() { "https" } else { "http" };
        let dir = tempfile::Builder::new()
            .prefix(&format!("bench-{system}-"))
            .tempdir()
            .context("create a temporary directory")?;
        let names: Vec<String> = (1..=members).map(|i| format!("{system}-{i}")).collect();
        let client_urls: Vec<String> = (0..members)
            .map(|_| Ok(format!("{scheme}://127.0.0.1:{}", free_port()?)))
            .collect::<Result<_>>()?;
        let peer_urls: Vec<String> = (0..members)
            .map(|_| Ok(format!("{scheme}://127.0.0.1:{}", free_port()?)))
            .collect::<Result<_>>()?;
        let mut cluster = Cluster {
            system,
            members: Vec::with_capacity(members),
            endpoints: client_urls.clone(),
            dir,
        };
        for (i, name) in names.iter().enumerate() {
            let data_dir = cluster.dir.path().join(name);
            let mut args = member_args(&names, i, &client_urls[i], &peer_urls, &data_dir, "bench");
            if system == System::Etcd {
                args.extend(["--log-level".to_owned(), "error".to_owned()]);
            }
            if let Some(certs) = certs {
                let file = |f: String| certs.join(f).display().to_string();
                let (cert, key, ca) = (
                    file(format!("{name}.pem")),
                    file(format!("{name}-key.pem")),
                    file("ca.pem".to_owned()),
                );
                for (flag, value) in [
                    ("--cert-file", &cert),
                    ("--key-file", &key),
                    ("--trusted-ca-file", &ca),
                    ("--peer-cert-file", &cert),
                    ("--peer-key-file", &key),
                    ("--peer-trusted-ca-file", &ca),
                ] {
                    args.push(format!("{flag}={value}"));
                }
                args.push("--client-cert-auth".to_owned());
                args.push("--peer-client-cert-auth".to_owned());
            }
            if system == System::Kvstore {
                args.insert(0, "serve".to_owned());
            }
            let log_path = cluster.dir.path().join(format!("{name}.log"));
            let child = spawn_member(binary, &args, &log_path)?;
            cluster.members.push(Member {
                name: name.clone(),
                child,
                log_path,
                binary: binary.to_path_buf(),
                args,
            });
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Waits until every member answers a status request and one is leader.
    async fn wait_ready(&mut self) -> std::result::Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            for member in &mut self.members {
                if let Ok(Some(status)) = member.child.try_wait() {
                    let log = std::fs::read_to_string(&member.log_path).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(3).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    return Err(StartError::MemberExited {
                        member: member.name.clone(),
                        log: format!("{status}: {}", tail.join(" / ")),
                    });
                }
            }
            if self.all_serving().await && clients::find_leader(&self.endpoints).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StartError::Other(anyhow::anyhow!(
                    "{} cluster not ready after {START_TIMEOUT:?} (logs in {})",
                    self.system,
                    self.dir.path().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether every member answers a status request.
    async fn all_serving(&self) -> bool {
        for endpoint in &self.endpoints {
            let ok = async {
                let mut client = clients::connect_one(endpoint).await?;
                tokio::time::timeout(Duration::from_secs(2), client.status())
                    .await
                    .context("status timed out")??;
                anyhow::Ok(())
            }
            .await;
            if ok.is_err() {
                return false;
            }
        }
        true
    }

    /// Number of members.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The process ID of member `index`.
    pub fn pid(&self, index: usize) -> u32 {
        self.members[index].child.id()
    }

    /// Kills member `index` with SIGKILL (its own pid) and reaps it.
    pub fn kill(&mut self, index: usize) {
        let member = &mut self.members[index];
        let _ = member.child.kill();
        let _ = member.child.wait();
    }

    /// Restarts member `index` on its data dir and waits until the cluster is ready.
    pub async fn restart(&mut self, index: usize) -> Result<()> {
        let member = &mut self.members[index];
        member.child = spawn_member(&member.binary, &member.args, &member.log_path)?;
        self.wait_ready().await.map_err(|e| anyhow::anyhow!("{e}"))
    }
}

fn spawn_member(binary: &Path, args: &[String], log_path: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .context("open a member log")?;
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("clone a log handle")?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", binary.display()))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            // SIGKILL to this child's own pid, then reap it.
            let _ = member.child.kill();
            let _ = member.child.wait();
        }
    }
}

/// The `kvstore` binary to start: `--kvstore-bin`, else `$CARGO_TARGET_DIR/release/kvstore`,
/// else `kvstore` next to this program.
pub fn kvstore_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("release").join("kvstore"));
    }
    if let Ok(me) = std::env::current_exe()
        && let Some(dir) = me.parent()
    {
        candidates.push(dir.join("kvstore"));
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(found) => Ok(found.clone()),
        None => bail!("no kvstore binary at {candidates:?}; build it or pass --kvstore-bin"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_flags_are_etcds() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let peers = vec![
            "http://127.0.0.1:1".to_owned(),
            "http://127.0.0.1:2".to_owned(),
        ];
        let args = member_args(
            &names,
            1,
            "http://127.0.0.1:9",
            &peers,
            Path::new("/d/b"),
            "t",
        );
        let flag = |name: &str| {
            let i = args.iter().position(|a| a == name).unwrap();
            args[i + 1].clone()
        };
        assert_eq!(flag("--name"), "b");
        assert_eq!(flag("--data-dir"), "/d/b");
        assert_eq!(flag("--listen-client-urls"), "http://127.0.0.1:9");
        assert_eq!(flag("--listen-peer-urls"), "http://127.0.0.1:2");
        assert_eq!(flag("--initial-advertise-peer-urls"), "http://127.0.0.1:2");
        assert_eq!(
            flag("--initial-cluster"),
            "a=http://127.0.0.1:1,b=http://127.0.0.1:2"
        );
        assert_eq!(flag("--initial-cluster-state"), "new");
        assert_eq!(flag("--initial-cluster-token"), "t");
    }
}
