//! One robustness run: start a cluster, run the workload under the nemesis for the
//! given time, heal, then the end phase (lease expiry, final reads, watchers catching
//! up, kill -9 of every member and restart, the reference history read back) and every
//! checker. Everything random comes from the seed: the workload's choices and the fault
//! schedule (process timing, of course, does not).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::{Mutex, watch};

use crate::check::{self, Anomaly, watch::RefEvent};
use crate::cluster::{Cluster, ClusterConfig};
use crate::history::{Clock, LeaseRecord, Op, Request, WatchLog};
use crate::nemesis::{Fault, FaultRecord, Nemesis};
use crate::workload::Endpoints;
use crate::workload::kv::{KvClient, execute};
use crate::workload::lease::LeaseClient;
use crate::workload::watch::{StopAt, Watcher};

pub const PREFIX: &str = "robust/";
const KV_PREFIX: &str = "robust/kv/";
const LEASE_PREFIX: &str = "robust/lease/";
const END_KEY: &str = "robust/zz-end";
/// Time allowed for a lease nobody keeps alive to disappear beyond its promise, after
/// the cluster is healed (an election restarts every lease clock at its full TTL).
const LEASE_GRACE: Duration = Duration::from_secs(3);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    pub duration: Duration,
    pub cluster: ClusterConfig,
    pub faults: Vec<Fault>,
    pub kv_clients: usize,
    pub keys: usize,
    pub watchers: usize,
    pub lease_clients: usize,
    /// Print faults as they happen.
    pub verbose: bool,
}

impl RunConfig {
    pub fn new(seed: u64, duration: Duration, faults: &[Fault]) -> RunConfig {
        RunConfig {
            seed,
            duration,
            cluster: ClusterConfig::default(),
            faults: faults.to_vec(),
            kv_clients: 4,
            keys: 6,
            watchers: 2,
            lease_clients: 2,
            verbose: false,
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub ops_ok: usize,
    pub ops_indeterminate: usize,
    pub writes_acknowledged: usize,
    pub watch_events: usize,
    pub watch_reconnects: usize,
    pub leases: usize,
    pub leases_kept_alive: usize,
    pub faults: Vec<FaultRecord>,
    pub anomalies: Vec<Anomaly>,
    /// Keys whose linearizability search ran out of budget.
    pub undecided_keys: Vec<String>,
    /// Kept when anomalies were found: member logs and data.
    pub kept_dir: Option<PathBuf>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {}", self.seed)?;
        writeln!(
            f,
            "operations: {} answered ({} acknowledged writes), {} indeterminate",
            self.ops_ok, self.writes_acknowledged, self.ops_indeterminate
        )?;
        writeln!(
            f,
            "watch events received: {} ({} reconnects); leases: {} ({} kept alive)",
            self.watch_events, self.watch_reconnects, self.leases, self.leases_kept_alive
        )?;
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for r in &self.faults {
            *counts.entry(r.fault.name()).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort();
        writeln!(f, "faults injected: {} {counts:?}", self.faults.len())?;
        for r in &self.faults {
            writeln!(f, "  {r}")?;
        }
        if !self.undecided_keys.is_empty() {
            writeln!(
                f,
                "linearizability undecided for keys {:?}",
                self.undecided_keys
            )?;
        }
        writeln!(f, "anomalies: {}", self.anomalies.len())?;
        for a in &self.anomalies {
            writeln!(f, "  {a}")?;
        }
        if let Some(d) = &self.kept_dir {
            writeln!(f, "member logs and data kept in {}", d.display())?;
        }
        Ok(())
    }
}

/// Derives the seed of one task from the run's seed (distinct, stable streams).
fn sub_seed(seed: u64, role: u64, index: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(role << 32)
        .wrapping_add(index as u64)
}

pub async fn run(config: RunConfig) -> anyhow::Result<Report> {
    let cluster = Cluster::start(config.cluster.clone()).await?;
    let cluster = Arc::new(Mutex::new(cluster));
    match drive(&config, cluster.clone()).await {
        Ok(mut report) => {
            if !report.anomalies.is_empty() || std::env::var_os("ROBUST_KEEP_DIR").is_some() {
                report.kept_dir = Some(cluster.lock().await.keep_dir());
            }
            Ok(report)
        }
        Err(e) => {
            let mut c = cluster.lock().await;
            let tail = c.log_tail(30);
            let dir = c.keep_dir();
            Err(e.context(format!(
                "seed {}: the run could not finish; member logs and data kept in {}\n{tail}",
                config.seed,
                dir.display()
            )))
        }
    }
}

async fn drive(config: &RunConfig, cluster: Arc<Mutex<Cluster>>) -> anyhow::Result<Report> {
    let urls = cluster.lock().await.endpoints();
    let clock = Clock::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (watch_stop_tx, watch_stop_rx) = watch::channel(None::<StopAt>);
    let keys: Vec<String> = (0..config.keys)
        .map(|k| format!("{KV_PREFIX}{k}"))
        .collect();

    let kv_tasks: Vec<_> = (0..config.kv_clients)
        .map(|id| {
            let client = KvClient {
                id,
                keys: keys.clone(),
                seed: sub_seed(config.seed, 1, id),
                clock,
            };
            tokio::spawn(client.run(Endpoints::new(urls.clone()), stop_rx.clone()))
        })
        .collect();
    let watch_tasks: Vec<_> = (0..config.watchers)
        .map(|id| {
            let w = Watcher {
                id,
                prefix: PREFIX.into(),
                start_revision: 1,
                seed: sub_seed(config.seed, 2, id),
                clock,
            };
            tokio::spawn(w.run(Endpoints::new(urls.clone()), watch_stop_rx.clone()))
        })
        .collect();
    let lease_tasks: Vec<_> = (0..config.lease_clients)
        .map(|id| {
            let l = LeaseClient {
                id,
                prefix: LEASE_PREFIX.into(),
                seed: sub_seed(config.seed, 3, id),
                clock,
            };
            tokio::spawn(l.run(Endpoints::new(urls.clone()), stop_rx.clone()))
        })
        .collect();
    let nemesis = Nemesis {
        faults: config.faults.clone(),
        seed: sub_seed(config.seed, 4, 0),
        clock,
        verbose: config.verbose,
    };
    let nemesis_task = tokio::spawn(nemesis.run(cluster.clone(), stop_rx.clone()));

    tokio::time::sleep(config.duration).await;
    stop_tx.send_replace(true);
    let (faults, mut anomalies) = nemesis_task.await?;
    let mut ops: Vec<Op> = Vec::new();
    for t in kv_tasks {
        ops.extend(t.await?);
    }
    let mut leases: Vec<LeaseRecord> = Vec::new();
    for t in lease_tasks {
        leases.extend(t.await?);
    }

    // Heal everything and let the cluster settle.
    {
        let mut c = cluster.lock().await;
        c.heal();
        c.revive_all()?;
        if let Err(e) = c.wait_leader(SETTLE_TIMEOUT).await {
            anomalies.push(Anomaly::new("unavailable", format!("after the run: {e:#}")));
        }
    }
    let healed_ns = clock.now_ns();
    let mut admin = Endpoints::new(urls.clone());

    // Final linearizable reads, part of the checked history.
    final_reads(&mut admin, &keys, &clock, &mut ops).await?;

    // Leases: once every promise is past (and elections after the heal had time to
    // restart lease clocks), every lease key must be gone.
    let kept_ttl_ns = crate::workload::lease::KEPT_TTL_S as u64 * 1_000_000_000;
    let promise_ns = leases
        .iter()
        .map(|l| l.alive_until_ns)
        .max()
        .unwrap_or(0)
        .max(healed_ns + kept_ttl_ns);
    let check_at_ns = promise_ns + LEASE_GRACE.as_nanos() as u64;
    let now_ns = clock.now_ns();
    if check_at_ns > now_ns {
        tokio::time::sleep(Duration::from_nanos(check_at_ns - now_ns)).await;
    }
    let lease_checked_ns = clock.now_ns();
    let present: HashSet<String> = read_prefix(&mut admin, LEASE_PREFIX)
        .await?
        .into_keys()
        .collect();
    anomalies.extend(check::lease::check_expired(
        &leases,
        &present,
        lease_checked_ns,
        healed_ns,
        LEASE_GRACE.as_nanos() as u64,
    ));

    // A last write every watcher must see, then let watchers catch up.
    let end_revision = put_with_retry(&mut admin, END_KEY).await?;
    watch_stop_tx.send_replace(Some(StopAt {
        revision: end_revision,
        deadline: Instant::now() + SETTLE_TIMEOUT,
    }));
    let mut logs: Vec<WatchLog> = Vec::new();
    for t in watch_tasks {
        logs.push(t.await?);
    }

    // Durability: kill -9 every member, restart them all.
    {
        let mut c = cluster.lock().await;
        for m in 0..c.size() {
            c.kill(m);
        }
        for m in 0..c.size() {
            c.spawn(m)?;
        }
        if let Err(e) = c.wait_leader(SETTLE_TIMEOUT).await {
            anomalies.push(Anomaly::new(
                "unavailable",
                format!("after restarting every member: {e:#}"),
            ));
        }
    }
    // The reads after the restart join the history: a write acknowledged before it and
    // missing after it is then not linearizable. (Comparing them with the reads before
    // the restart would be wrong: a write that timed out may still land in between.)
    let mut admin = Endpoints::new(urls.clone());
    final_reads(&mut admin, &keys, &clock, &mut ops).await?;
    let reference = read_reference(&mut admin, end_revision).await?;
    anomalies.extend(converged(&cluster, end_revision).await);

    let dir = cluster.lock().await.dir().to_path_buf();
    write_history(&dir.join("history.txt"), &ops, &logs, &leases)?;

    // The checkers.
    let (lin, undecided) = check::linearizable(&ops);
    anomalies.extend(lin);
    anomalies.extend(check::reads::check(&ops));
    anomalies.extend(check::watch::check(&logs, &reference, Some(end_revision)));
    anomalies.extend(check::durability::check(&ops, &leases, &reference));
    anomalies.extend(check::lease::check_not_early(&leases, &logs));

    Ok(Report {
        seed: config.seed,
        ops_ok: ops.iter().filter(|o| o.response.is_some()).count(),
        ops_indeterminate: ops.iter().filter(|o| o.response.is_none()).count(),
        writes_acknowledged: ops
            .iter()
            .filter(|o| o.response.is_some() && o.request.is_write())
            .count(),
        watch_events: logs.iter().map(|l| l.events.len()).sum(),
        watch_reconnects: logs.iter().map(|l| l.reconnects).sum(),
        leases: leases.len(),
        leases_kept_alive: leases.iter().filter(|l| l.keep_alives_ok > 0).count(),
        faults,
        anomalies,
        undecided_keys: undecided,
        kept_dir: None,
    })
}

/// Dumps what the checkers see, for a post-mortem (kept with the logs on an anomaly).
fn write_history(
    path: &std::path::Path,
    ops: &[Op],
    logs: &[WatchLog],
    leases: &[LeaseRecord],
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut sorted: Vec<&Op> = ops.iter().collect();
    sorted.sort_by_key(|o| o.invoke_ns);
    for o in sorted {
        writeln!(f, "{o:?}")?;
    }
    for l in leases {
        writeln!(f, "{l:?}")?;
    }
    for l in logs {
        writeln!(
            f,
            "watcher {} from {} ({} reconnects):",
            l.watcher, l.start_revision, l.reconnects
        )?;
        for e in &l.events {
            writeln!(f, "  {e:?}")?;
        }
    }
    Ok(())
}

/// Reads every key linearizably (retrying through elections), records the reads in
/// `ops`.
async fn final_reads(
    admin: &mut Endpoints,
    keys: &[String],
    clock: &Clock,
    ops: &mut Vec<Op>,
) -> anyhow::Result<()> {
    for key in keys {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut member = 0;
        loop {
            let op = execute(
                usize::MAX,
                admin,
                member % admin.len(),
                key.clone(),
                Request::Get {
                    serializable: false,
                },
                clock,
            )
            .await;
            if op.response.is_some() {
                ops.push(op);
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "final read of {key} kept failing: {:?}",
                op.error
            );
            member += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

async fn read_prefix(
    admin: &mut Endpoints,
    prefix: &str,
) -> anyhow::Result<HashMap<String, String>> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut member = 0;
    loop {
        if let Ok(mut c) = admin.client(member % admin.len()).await
            && let Ok(Ok(r)) = tokio::time::timeout(
                Duration::from_secs(3),
                c.get(prefix, Some(GetOptions::new().with_prefix())),
            )
            .await
        {
            return Ok(r
                .kvs()
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        String::from_utf8_lossy(kv.value()).into_owned(),
                    )
                })
                .collect());
        }
        anyhow::ensure!(Instant::now() < deadline, "reading {prefix} kept failing");
        member += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn put_with_retry(admin: &mut Endpoints, key: &str) -> anyhow::Result<i64> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut member = 0;
    loop {
        if let Ok(mut c) = admin.client(member % admin.len()).await
            && let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(3), c.put(key, "end", None)).await
        {
            return r.header().map(|h| h.revision()).context("no header");
        }
        anyhow::ensure!(Instant::now() < deadline, "the end marker put kept failing");
        member += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The committed history of the prefix up to `end_revision`, read back with a fresh
/// watch from revision 1.
async fn read_reference(admin: &mut Endpoints, end_revision: i64) -> anyhow::Result<Vec<RefEvent>> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut member = 0;
    'attempt: loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "could not read the history back up to revision {end_revision}"
        );
        member += 1;
        let Ok(mut c) = admin.client(member % admin.len()).await else {
            continue;
        };
        let opts = WatchOptions::new().with_prefix().with_start_revision(1);
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(3), c.watch(PREFIX, Some(opts))).await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut events = Vec::new();
        loop {
            let Ok(Ok(Some(resp))) =
                tokio::time::timeout(Duration::from_secs(5), stream.message()).await
            else {
                continue 'attempt;
            };
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                events.push(RefEvent {
                    revision: kv.mod_revision(),
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    value: (ev.event_type() == EventType::Put)
                        .then(|| String::from_utf8_lossy(kv.value()).into_owned()),
                });
            }
            if events.last().is_some_and(|e| e.revision >= end_revision) {
                events.retain(|e| e.revision <= end_revision);
                return Ok(events);
            }
        }
    }
}

/// Every member has the same HashKV at `revision`.
async fn converged(cluster: &Mutex<Cluster>, revision: i64) -> Vec<Anomaly> {
    let c = cluster.lock().await;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let mut hashes = Vec::new();
        for m in 0..c.size() {
            let h = match c.client(m).await {
                Ok(mut client) => {
                    match tokio::time::timeout(Duration::from_secs(3), client.hash_kv(revision))
                        .await
                    {
                        Ok(Ok(h)) => Some(h.hash()),
                        _ => None,
                    }
                }
                Err(_) => None,
            };
            hashes.push(h);
        }
        if hashes.iter().all(|h| h.is_some() && *h == hashes[0]) {
            return Vec::new();
        }
        if Instant::now() > deadline {
            return vec![Anomaly::new(
                "diverged",
                format!("members' HashKV at revision {revision} differ or are missing: {hashes:?}"),
            )];
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
