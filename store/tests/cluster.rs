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
    /// Joined an existing cluster (after MemberAdd) rather than forming it.
    joined: bool,
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
                joined: false,
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
    fn new_member(&mut self) -> usize {
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

    fn peer_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].peer_port)
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.members[i].child.as_ref().unwrap().id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid} failed");
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
    async fn leader(&self) -> usize {
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
fn write_load(
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
async fn converged(cluster: &Cluster, members: &[usize]) -> (i64, u32) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_under_write_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]);
    for i in 0..3 {
        cluster.client(i).await;
    }
    let leader = cluster.leader().await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Writers on the survivors only: their acknowledged writes must all survive.
    let load = write_load(
        survivors.iter().map(|i| cluster.endpoint(*i)).collect(),
        "load",
        stop_rx,
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.kill9(leader);
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_tx.send(true).unwrap();
    let acked = load.await.unwrap();
    assert!(
        acked.len() > 20,
        "too few writes acknowledged: {}",
        acked.len()
    );
    let last_rev = acked.iter().map(|(_, r)| *r).max().unwrap();
    assert!(
        acked.iter().any(|(_, r)| *r > last_rev - 5),
        "writes resumed after the failover"
    );

    for &i in &survivors {
        let mut c = cluster.client(i).await;
        for (key, rev) in &acked {
            let r = c.get(key.as_str(), None).await.unwrap();
            assert_eq!(r.kvs().len(), 1, "member {i} lost acknowledged {key}");
            assert_eq!(r.kvs()[0].mod_revision(), *rev, "member {i}: {key}");
        }
    }
    // The killed member comes back, catches up, and all three agree byte for byte.
    cluster.spawn(leader);
    cluster.client(leader).await;
    let (rev, _) = converged(&cluster, &[0, 1, 2]).await;
    assert!(rev >= last_rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_keep_serving_with_two_down() {
    let mut cluster = Cluster::start(5, &[]);
    for i in 0..5 {
        cluster.client(i).await;
    }
    let leader = cluster.leader().await;
    // Take down the leader and one follower.
    let down = [leader, (leader + 1) % 5];
    for i in down {
        cluster.kill9(i);
    }
    let up: Vec<usize> = (0..5).filter(|i| !down.contains(i)).collect();
    let mut c = cluster.client(up[0]).await;
    eventually(|| {
        let mut c = c.clone();
        async move { c.put("with-two-down", "yes", None).await }
    })
    .await;
    for &i in &up {
        let mut ci = cluster.client(i).await;
        let r = eventually(|| {
            let mut ci = ci.clone();
            async move { ci.get("with-two-down", None).await }
        })
        .await;
        assert_eq!(r.kvs()[0].value(), b"yes", "member {i}");
        ci.put(format!("from-{i}"), "x", None).await.unwrap();
    }
    let r = c
        .get("from-", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(r.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_joins_through_a_snapshot_is_promoted_and_an_old_member_removed_under_load() {
    let mut cluster = Cluster::start(3, &["--snapshot-count", "30"]);
    for i in 0..3 {
        cluster.client(i).await;
    }
    let leader = cluster.leader().await;
    let mut c = cluster.client(leader).await;
    for i in 0..150 {
        c.put(format!("pre-{i}"), "v", None).await.unwrap();
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = write_load(
        (0..3).map(|i| cluster.endpoint(i)).collect(),
        "during",
        stop_rx,
    );

    // Add an empty member as a learner; it can only catch up from a snapshot (the log
    // before the last snapshot is purged).
    let new = cluster.new_member();
    let added = c
        .member_add(
            [cluster.peer_url(new)],
            Some(etcd_client::MemberAddOptions::new().with_is_learner()),
        )
        .await
        .unwrap();
    let new_id = added.member().unwrap().id();
    assert!(added.member().unwrap().is_learner());
    cluster.spawn(new);
    let mut nc = cluster.client(new).await;
    let promoted = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match c.member_promote(new_id).await {
                Ok(_) => break true,
                Err(e) => {
                    assert!(
                        e.to_string().contains("in sync") || e.to_string().contains("leader"),
                        "unexpected promote error: {e}"
                    );
                }
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(promoted, "the learner never caught up:\n{}", cluster.logs());
    let list = c.member_list().await.unwrap();
    assert!(
        list.members().iter().all(|m| !m.is_learner()),
        "{:?}",
        list.members()
    );
    assert_eq!(list.members().len(), 4);

    // Remove an old follower (not the one we talk to).
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let members = c.member_list().await.unwrap();
    let victim_id = members
        .members()
        .iter()
        .find(|m| {
            m.peer_urls()
                .iter()
                .any(|u| u.ends_with(&cluster.members[victim].peer_port.to_string()))
        })
        .unwrap()
        .id();
    c.member_remove(victim_id).await.unwrap();
    assert_eq!(c.member_list().await.unwrap().members().len(), 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).unwrap();
    let acked = load.await.unwrap();
    assert!(!acked.is_empty());

    // The promoted member holds everything, including what was written during the changes.
    let r = nc
        .get(
            "pre-",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(r.count(), 150);
    for (key, rev) in acked.iter().rev().take(20) {
        let r = nc.get(key.as_str(), None).await.unwrap();
        assert_eq!(r.kvs()[0].mod_revision(), *rev, "{key}");
    }
    let remaining: Vec<usize> = (0..4).filter(|i| *i != victim).collect();
    converged(&cluster, &remaining).await;
    let log =
        std::fs::read_to_string(cluster.dir.path().join(format!("m{}.log", new + 1))).unwrap();
    assert!(
        log.contains("snapshot"),
        "the learner should have installed a snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_minority_member_serves_nothing_stale_and_rejoins() {
    let cluster = Cluster::start(3, &[]);
    for i in 0..3 {
        cluster.client(i).await;
    }
    let leader = cluster.leader().await;
    let paused = (leader + 1) % 3;
    let mut pc = cluster.client(paused).await;
    pc.put("k", "before", None).await.unwrap();
    cluster.signal(paused, "-STOP");

    // The majority goes on.
    let mut lc = cluster.client(leader).await;
    for i in 0..20 {
        lc.put("k", format!("during-{i}"), None).await.unwrap();
    }
    // The paused member answers neither writes nor linearizable reads.
    let write =
        tokio::time::timeout(Duration::from_secs(1), pc.put("k", "from-paused", None)).await;
    assert!(write.is_err() || write.unwrap().is_err());
    let read = tokio::time::timeout(Duration::from_secs(1), pc.get("k", None)).await;
    assert!(read.is_err() || read.unwrap().is_err());

    // Resumed: its first linearizable read already reflects the majority's writes.
    cluster.signal(paused, "-CONT");
    let mut fresh = cluster.client(paused).await;
    let r = eventually(|| {
        let mut c = fresh.clone();
        async move { c.get("k", None).await }
    })
    .await;
    assert_eq!(r.kvs()[0].value(), b"during-19");
    let _ = fresh.status().await.unwrap();
    converged(&cluster, &[0, 1, 2]).await;
}
