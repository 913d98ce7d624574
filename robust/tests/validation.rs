//! Validation of the checkers themselves, both ways:
//!
//! * against a real etcd 3.4 cluster under the process faults (the reference
//!   implementation), the same workload and checkers must find nothing;
//! * against `kvstore` deliberately weakened by a failpoint (`store/src/failpoint.rs`),
//!   they must find the violation the failpoint makes possible.
//!
//! Needs `etcd` on the PATH (or `ETCD_BIN`) and the server built
//! (`cargo build -p kvstore --bins`) or `KVSTORE_BIN`. The runs take turns: each wants
//! the machine's cores.

use std::time::{Duration, Instant};

use robust::check::{self, Anomaly, watch::RefEvent};
use robust::cluster::{Backend, Cluster, ClusterConfig};
use robust::history::{Clock, Op, Request};
use robust::nemesis::Fault;
use robust::run::{RunConfig, run};
use robust::workload::Endpoints;
use robust::workload::kv::execute;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const STALE_READS: &str = "KVSTORE_FAILPOINT_STALE_READS";
const NO_DURABILITY: &str = "KVSTORE_FAILPOINT_NO_DURABILITY";

fn with_failpoint(name: &str) -> ClusterConfig {
    let mut config = ClusterConfig::default();
    config.env.push((name.to_string(), "1".to_string()));
    config
}

/// Records one operation through member `member`.
async fn op(eps: &mut Endpoints, member: usize, key: &str, request: Request, clock: &Clock) -> Op {
    execute(0, eps, member, key.to_string(), request, clock).await
}

fn put(value: String) -> Request {
    Request::Put { value }
}

const LINEARIZABLE_GET: Request = Request::Get {
    serializable: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkers_find_nothing_on_real_etcd() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let seed = 4242;
    let mut config = RunConfig::new(seed, Duration::from_secs(15), &Fault::PROCESS);
    config.cluster.backend = Backend::Etcd;
    let report = run(config).await.unwrap_or_else(|e| panic!("{e:#}"));
    println!("{report}");
    assert!(
        report.anomalies.is_empty(),
        "the checkers flag real etcd (a checker bug, or the workload asks more than etcd promises):\n{report}"
    );
    assert!(report.undecided_keys.is_empty(), "{report}");
    assert!(
        report.faults.len() >= 3,
        "too few faults injected:\n{report}"
    );
    for fault in Fault::PROCESS {
        assert!(
            report.faults.iter().any(|r| r.fault == fault),
            "{} never injected:\n{report}",
            fault.name()
        );
    }
    assert!(
        report
            .faults
            .iter()
            .all(|r| !r.detail.starts_with("FAILED")),
        "{report}"
    );
    assert!(
        report.ops_ok >= 300,
        "too few operations completed:\n{report}"
    );
    assert!(report.writes_acknowledged >= 100, "{report}");
    assert!(report.watch_events >= 100, "{report}");
    assert!(report.leases_kept_alive >= 1, "{report}");
}

/// The recorded operations of stale-read rounds against one cluster.
struct StaleReadRounds {
    cluster: Cluster,
    eps: Endpoints,
    clock: Clock,
    ops: Vec<Op>,
    seq: u64,
}

const STALE_KEY: &str = "robust/kv/stale";

impl StaleReadRounds {
    async fn start(config: ClusterConfig) -> StaleReadRounds {
        let cluster = Cluster::start(config).await.unwrap();
        StaleReadRounds {
            eps: Endpoints::new(cluster.endpoints()),
            cluster,
            clock: Clock::new(),
            ops: Vec::new(),
            seq: 0,
        }
    }

    async fn put_through(&mut self, member: usize) {
        self.seq += 1;
        let request = put(format!("v{}", self.seq));
        let o = op(&mut self.eps, member, STALE_KEY, request, &self.clock).await;
        self.ops.push(o);
    }

    async fn read_through(&mut self, member: usize) {
        let o = op(
            &mut self.eps,
            member,
            STALE_KEY,
            LINEARIZABLE_GET,
            &self.clock,
        )
        .await;
        self.ops.push(o);
    }

    /// Holds replication back from a follower while the leader acknowledges writes,
    /// then reads through that follower: by freezing it (SIGSTOP) and reading the
    /// moment it resumes (a race it usually loses), or by cutting its links and reading
    /// while it is still cut off (deterministic).
    async fn round(&mut self, isolate: bool, follower_offset: usize) {
        let leader = self
            .cluster
            .wait_leader(Duration::from_secs(10))
            .await
            .unwrap();
        let follower = (leader + follower_offset) % self.cluster.size();
        // The follower learns a first value and has a connection ready.
        self.put_through(leader).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.read_through(follower).await;
        if isolate {
            self.cluster.isolate(follower);
        } else {
            self.cluster.pause(follower).unwrap();
        }
        for _ in 0..3 {
            self.put_through(leader).await;
        }
        if isolate {
            self.read_through(follower).await;
            self.cluster.heal();
        } else {
            self.cluster.resume(follower).unwrap();
            self.read_through(follower).await;
        }
    }

    fn anomalies(&self) -> Vec<Anomaly> {
        let (mut anomalies, undecided) = check::linearizable(&self.ops);
        anomalies.extend(check::reads::check(&self.ops));
        assert!(undecided.is_empty(), "{undecided:?}");
        anomalies
    }
}

/// With reads served from local state, a follower that missed some writes answers a
/// linearizable read with a value older than a write acknowledged before the read
/// began: the checkers must say so. The same rounds on an unweakened store (first, as a
/// control) must leave them silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkers_catch_stale_reads_from_a_weakened_store() {
    let _turn = ONE_AT_A_TIME.lock().await;
    {
        let mut control = StaleReadRounds::start(ClusterConfig::default()).await;
        control.round(false, 1).await;
        control.round(true, 2).await;
        let anomalies = control.anomalies();
        assert!(
            anomalies.is_empty(),
            "false positive on a correct store: {anomalies:#?}\n{:#?}",
            control.ops
        );
        assert!(
            control.ops.iter().filter(|o| o.response.is_some()).count() >= 8,
            "the control did too little: {:#?}",
            control.ops
        );
    }

    let mut weak = StaleReadRounds::start(with_failpoint(STALE_READS)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    for round in 0.. {
        assert!(
            Instant::now() < deadline,
            "no stale read caught in {round} rounds; history:\n{:#?}\n{}",
            weak.ops,
            weak.cluster.log_tail(10)
        );
        // Alternate the two ways, starting with the racy one, and the follower.
        let isolate = round % 2 == 1;
        weak.round(isolate, 1 + round % 2).await;
        let anomalies = weak.anomalies();
        if !anomalies.is_empty() {
            println!(
                "caught in round {round} ({}): {anomalies:#?}",
                if isolate { "isolated" } else { "paused" }
            );
            assert!(
                anomalies
                    .iter()
                    .any(|a| a.kind == "linearizability" && a.detail.contains(STALE_KEY)),
                "{anomalies:#?}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Acknowledges writes of distinct keys (written once each, so a range read is the
/// whole history), kills every member with -9, restarts them all and reads the keys
/// back. Returns the writes, what was read back (`None`: every member exited instead of
/// starting) and the durability checker's verdict.
async fn writes_then_kill_all(
    config: ClusterConfig,
) -> (Vec<Op>, Option<Vec<RefEvent>>, Vec<Anomaly>) {
    let mut cluster = Cluster::start(config).await.unwrap();
    let clock = Clock::new();
    let mut eps = Endpoints::new(cluster.endpoints());
    let leader = cluster.wait_leader(Duration::from_secs(10)).await.unwrap();
    let mut ops = Vec::new();
    for i in 0..20 {
        let key = format!("robust/kv/d{i}");
        ops.push(op(&mut eps, leader, &key, put(format!("w{i}")), &clock).await);
    }
    let acknowledged = ops.iter().filter(|o| o.response.is_some()).count();
    assert!(acknowledged >= 10, "too few writes acknowledged: {ops:#?}");
    for m in 0..cluster.size() {
        cluster.kill(m);
    }
    for m in 0..cluster.size() {
        cluster.spawn(m).unwrap();
    }
    let reference = read_back(&mut cluster, "robust/kv/").await;
    let anomalies = check::durability::check(&ops, &[], &reference.clone().unwrap_or_default());
    println!(
        "{acknowledged} writes acknowledged; read back after kill -9 of all: {}; {} anomalies",
        match &reference {
            Some(r) => format!("{} keys", r.len()),
            None => format!("nothing, every member exited:\n{}", cluster.log_tail(2)),
        },
        anomalies.len()
    );
    (ops, reference, anomalies)
}

/// With the WAL bypassed and appends acknowledged at once, killing every member with -9
/// loses acknowledged writes: the durability checker must say so. The same procedure on
/// an unweakened store (first, as a control) must leave it silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkers_catch_lost_writes_from_a_store_without_durability() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (ops, reference, anomalies) = writes_then_kill_all(ClusterConfig::default()).await;
    assert!(
        anomalies.is_empty(),
        "false positive on a durable store: {anomalies:#?}"
    );
    let acknowledged = ops.iter().filter(|o| o.response.is_some()).count();
    assert!(
        reference.is_some_and(|r| r.len() >= acknowledged),
        "the durable store did not come back with every acknowledged write"
    );

    // Without its log the weakened store may not come back at all: each member then
    // refuses to start (its persisted commit index is past its surviving log) and
    // exits. Nothing of the acknowledged writes is durable then, and the checker must
    // say so just as when the members come back without them.
    let (ops, _, anomalies) = writes_then_kill_all(with_failpoint(NO_DURABILITY)).await;
    println!("{anomalies:#?}");
    assert!(!anomalies.is_empty(), "no lost write reported");
    for a in &anomalies {
        assert_eq!(a.kind, "lost-write", "{a}");
        assert!(
            ops.iter()
                .any(|o| o.response.is_some() && a.detail.contains(&format!("{} ", o.key))),
            "{a} names no acknowledged write"
        );
    }
}

/// Every key under `prefix` as a history of one put each, read linearizably once the
/// restarted cluster answers; `None` once every member has exited instead.
async fn read_back(cluster: &mut Cluster, prefix: &str) -> Option<Vec<RefEvent>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if (0..cluster.size()).all(|m| cluster.has_exited(m)) {
            return None;
        }
        for m in 0..cluster.size() {
            let Ok(mut c) = cluster.client(m).await else {
                continue;
            };
            let get = c.get(prefix, Some(etcd_client::GetOptions::new().with_prefix()));
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(3), get).await {
                return Some(
                    r.kvs()
                        .iter()
                        .map(|kv| RefEvent {
                            revision: kv.mod_revision(),
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            value: Some(String::from_utf8_lossy(kv.value()).into_owned()),
                        })
                        .collect(),
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "the restarted cluster never answered a read:\n{}",
            cluster.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
