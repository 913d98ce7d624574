//! A real 3-member cluster of `kvstore serve` processes on loopback: replication, reads
//! on every member, forwarding, leader failure, restart, snapshot catch-up and leases.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions, WatchOptions};

const BIN: &str = env!("CARGO_BIN_EXE_kvstore");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

struct Cluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
    extra: Vec<String>,
}

impl Cluster {
    fn start(n: usize, extra: &[&str]) -> Cluster {
        let members: Vec<Member> = (1..=n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            dir: tempfile::tempdir().unwrap(),
            members,
            initial_cluster,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    fn spawn(&mut self, i: usize) {
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

    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    async fn client(&self, i: usize) -> Client {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = Client::connect([self.endpoint(i)], None).await {
                if c.status().await.is_ok() {
                    return c;
                }
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
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for i in 0..self.members.len() {
                if self.members[i].child.is_none() {
                    continue;
                }
                if let Ok(mut c) = Client::connect([self.endpoint(i)], None).await {
                    if let Ok(s) = c.status().await {
                        if s.leader() == s.header().map(|h| h.member_id()).unwrap_or(0)
                            && s.leader() != 0
                        {
                            return i;
                        }
                    }
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

    fn logs(&self) -> String {
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
            self.kill9(i);
        }
    }
}

/// Retries `f` until it succeeds (the cluster may be electing), for at most 15 s.
async fn eventually<T, F, Fut>(mut f: F) -> T
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

async fn all_kvs(c: &mut Client) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_and_survive_leader_failure() {
    let mut cluster = Cluster::start(3, &[]);
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cluster.client(i).await);
    }
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;

    // A watch on one follower sees writes made through the other members.
    let mut stream = clients[follower]
        .watch("k", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();

    // Writes through every member (followers forward to the leader).
    for round in 0..10 {
        for (i, c) in clients.iter_mut().enumerate() {
            eventually(|| {
                let mut c = c.clone();
                async move {
                    c.put(format!("k{i}-{round}"), format!("v{round}"), None)
                        .await
                }
            })
            .await;
        }
    }
    // Linearizable reads on every member see all 30 keys at the same revision.
    let mut revisions = Vec::new();
    for c in clients.iter_mut() {
        let r = c
            .get("k", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(r.count(), 30);
        revisions.push(r.header().unwrap().revision());
    }
    assert!(
        revisions.iter().all(|r| *r == revisions[0]),
        "{revisions:?}"
    );
    let mut seen = 0;
    while seen < 30 {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("watch on a follower stalled")
            .unwrap()
            .unwrap();
        seen += resp.events().len();
    }
    assert_eq!(seen, 30);

    // Kill the leader: the others elect a new one and keep serving writes and reads.
    cluster.kill9(leader);
    let survivor = (leader + 1) % 3;
    eventually(|| {
        let mut c = clients[survivor].clone();
        async move { c.put("after-failover", "yes", None).await }
    })
    .await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    let other = (leader + 2) % 3;
    let r = clients[other].get("after-failover", None).await.unwrap();
    assert_eq!(r.kvs()[0].value(), b"yes");

    // The old leader comes back from its data dir and catches up.
    cluster.spawn(leader);
    let mut back = cluster.client(leader).await;
    let r = eventually(|| {
        let mut c = back.clone();
        async move { c.get("after-failover", None).await }
    })
    .await;
    assert_eq!(r.kvs()[0].value(), b"yes");
    // Every member holds the same data.
    let reference = all_kvs(&mut back).await;
    assert_eq!(reference.len(), 31);
    for i in 0..3 {
        let mut c = cluster.client(i).await;
        assert_eq!(all_kvs(&mut c).await, reference, "member {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_fell_behind_catches_up_from_a_snapshot() {
    // Snapshot (and purge the log) every 20 entries, so a member that misses 200 writes
    // can only catch up by receiving a snapshot.
    let mut cluster = Cluster::start(3, &["--snapshot-count", "20"]);
    for i in 0..3 {
        cluster.client(i).await;
    }
    let leader = cluster.leader().await;
    let lagging = (leader + 1) % 3;
    cluster.kill9(lagging);
    let mut c = cluster.client(leader).await;
    for i in 0..200 {
        eventually(|| {
            let mut c = c.clone();
            async move { c.put(format!("s{i:03}"), format!("{i}"), None).await }
        })
        .await;
    }
    c.delete("s000", None).await.unwrap();
    let want = all_kvs(&mut c).await;
    cluster.spawn(lagging);
    let mut lagger = cluster.client(lagging).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = all_kvs(&mut lagger).await;
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lagging member did not catch up: {} of {} keys\n{}",
            got.len(),
            want.len(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // History came along: an old revision reads the same on the caught-up member.
    let old = c
        .get("s000", Some(GetOptions::new().with_revision(5)))
        .await
        .unwrap();
    let old_lagger = lagger
        .get(
            "s000",
            Some(GetOptions::new().with_revision(5).with_serializable()),
        )
        .await
        .unwrap();
    assert_eq!(old.kvs().len(), old_lagger.kvs().len());
    let log =
        std::fs::read_to_string(cluster.dir.path().join(format!("m{}.log", lagging + 1))).unwrap();
    assert!(
        log.contains("snapshot"),
        "the member should have installed a snapshot:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_kept_alive_through_followers_and_expire_on_the_leader() {
    let cluster = Cluster::start(3, &[]);
    for i in 0..3 {
        cluster.client(i).await;
    }
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let mut c = cluster.client(follower).await;
    let kept = c.lease_grant(2, None).await.unwrap().id();
    let dropped = c.lease_grant(2, None).await.unwrap().id();
    c.put("kept", "v", Some(PutOptions::new().with_lease(kept)))
        .await
        .unwrap();
    c.put("dropped", "v", Some(PutOptions::new().with_lease(dropped)))
        .await
        .unwrap();
    let (mut keeper, mut responses) = c.lease_keep_alive(kept).await.unwrap();
    for _ in 0..8 {
        keeper.keep_alive().await.unwrap();
        let r = responses.message().await.unwrap().unwrap();
        assert_eq!(r.ttl(), 2);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // 4 s later: the kept lease's key is there, the other lease's key is gone everywhere.
    for i in 0..3 {
        let mut ci = cluster.client(i).await;
        assert_eq!(ci.get("kept", None).await.unwrap().count(), 1, "member {i}");
        assert_eq!(
            ci.get("dropped", None).await.unwrap().count(),
            0,
            "member {i}"
        );
    }
    let ttl = c.lease_time_to_live(dropped, None).await.unwrap();
    assert_eq!(ttl.ttl(), -1);
}
