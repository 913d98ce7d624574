//! The multi-process cluster harness shared by the store's integration tests: real
//! `kvstore serve` processes on free loopback ports, with kill -9, SIGSTOP/SIGCONT,
//! restart, joining members, a write load that records acknowledged writes, and a
//! convergence check by HashKV.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};

pub const BIN: &str = env!("CARGO_BIN_EXE_kvstore");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub child: Option<Child>,
    /// Joined an existing cluster (after MemberAdd) rather than forming it.
    pub joined: bool,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    pub initial_cluster: String,
    pub extra: Vec<String>,
}

impl Cluster {
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let mut c = Cluster::prepare(n, extra);
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    /// A cluster whose members are described but not started (so their data dirs can be
    /// prepared first, e.g. by `snapshot restore`).
    pub fn prepare(n: usize, extra: &[&str]) -> Cluster {
        let members: Vec<Member> = (1..=n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
                joined: false,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            members,
            initial_cluster,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    pub fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))
            .unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.data_dir(i))
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
            .args([
                "--initial-cluster-state",
                if m.joined { "existing" } else { "new" },
            ])
            .args(["--initial-cluster-token", "cluster-test"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.members[i].child = Some(child);
    }

    /// Prepares a new member (not started) to join with `--initial-cluster-state existing`.
    pub fn new_member(&mut self) -> usize {
        let i = self.members.len();
        let m = Member {
            name: format!("m{}", i + 1),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
            joined: true,
        };
        self.initial_cluster
            .push_str(&format!(",{}=http://127.0.0.1:{}", m.name, m.peer_port));
        self.members.push(m);
        i
    }

    pub fn peer_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].peer_port)
    }

    pub fn signal(&self, i: usize, sig: &str) {
        let pid = self.members[i].child.as_ref().unwrap().id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid} failed");
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    pub async fn client(&self, i: usize) -> Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = Client::connect([self.endpoint(i)], None).await
                && c.status().await.is_ok()
            {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "member {i} did not start:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the member that reports itself leader, waiting for one.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for i in 0..self.members.len() {
                if self.members[i].child.is_none() {
                    continue;
                }
                if let Ok(mut c) = Client::connect([self.endpoint(i)], None).await
                    && let Ok(s) = c.status().await
                    && s.leader() != 0
                    && s.leader() == s.header().map(|h| h.member_id()).unwrap_or(0)
                {
                    return i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader elected:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {} ---\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_some() {
                // A paused member must be resumed to die promptly.
                let _ = Command::new("kill")
                    .args([
                        "-CONT",
                        &self.members[i].child.as_ref().unwrap().id().to_string(),
                    ])
                    .status();
            }
            self.kill9(i);
        }
    }
}

/// Puts keys `prefix-0, prefix-1, ...` through the given endpoints in turn until told to
/// stop; returns the keys acknowledged with their revisions. Failures (elections, a dead
/// member) are retried on the next endpoint; an unacknowledged put is not recorded.
pub fn write_load(
    endpoints: Vec<String>,
    prefix: &'static str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<(String, i64)>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut clients = Vec::new();
        for e in &endpoints {
            if let Ok(c) = Client::connect([e.clone()], None).await {
                clients.push(c);
            }
        }
        let mut n = 0u64;
        while !*stop.borrow() {
            let key = format!("{prefix}-{n}");
            let count = clients.len();
            let c = &mut clients[(n as usize) % count];
            let put =
                tokio::time::timeout(Duration::from_secs(3), c.put(key.clone(), "v", None)).await;
            if let Ok(Ok(resp)) = put {
                acked.push((key, resp.header().unwrap().revision()));
            }
            n += 1;
        }
        acked
    })
}

/// Waits until every listed member reports the same HashKV at the same revision.
pub async fn converged(cluster: &Cluster, members: &[usize]) -> (i64, u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen = Vec::new();
        for &i in members {
            let mut c = cluster.client(i).await;
            let rev = c.status().await.unwrap().header().unwrap().revision();
            seen.push((rev, i));
        }
        let rev = seen.iter().map(|(r, _)| *r).min().unwrap();
        let mut hashes = Vec::new();
        for &i in members {
            let mut c = cluster.client(i).await;
            if let Ok(h) = c.hash_kv(rev).await {
                hashes.push(h.hash());
            }
        }
        let same_rev = seen.iter().all(|(r, _)| *r == rev);
        if same_rev && hashes.len() == members.len() && hashes.iter().all(|h| *h == hashes[0]) {
            return (rev, hashes[0]);
        }
        assert!(
            Instant::now() < deadline,
            "members did not converge: {seen:?} {hashes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Retries `f` until it succeeds (the cluster may be electing), for at most 15 s.
pub async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "still failing: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

pub async fn all_kvs(c: &mut Client) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let resp = c
        .get(
            "",
            Some(GetOptions::new().with_all_keys().with_serializable()),
        )
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision()))
        .collect()
}

/// Runs the `kvstore` binary (client commands) and returns (success, stdout, stderr).
pub fn kvstore(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
