//! The nemesis: injects one fault at a time, drawn from the run's seed, holds it, heals
//! it, and waits for the cluster to have a leader again before the next one. One fault
//! at a time keeps a quorum possible, so every stall it finds is a real one.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::{Mutex, watch};

use crate::check::Anomaly;
use crate::cluster::Cluster;
use crate::history::Clock;
use crate::proxy::LinkMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    KillLeader,
    KillRandom,
    Pause,
    IsolateLeader,
    MinoritySplit,
    DelayLinks,
    SlowDisk,
    RestartAll,
    WipeReadd,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::KillLeader,
        Fault::KillRandom,
        Fault::Pause,
        Fault::IsolateLeader,
        Fault::MinoritySplit,
        Fault::DelayLinks,
        Fault::SlowDisk,
        Fault::RestartAll,
        Fault::WipeReadd,
    ];

    /// The faults that need no support from the server (no peer proxies, no
    /// failpoints, no membership API use): the ones a real etcd can be put through.
    pub const PROCESS: [Fault; 4] = [
        Fault::KillLeader,
        Fault::KillRandom,
        Fault::Pause,
        Fault::RestartAll,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-leader",
            Fault::KillRandom => "kill-random",
            Fault::Pause => "pause",
            Fault::IsolateLeader => "isolate-leader",
            Fault::MinoritySplit => "minority-split",
            Fault::DelayLinks => "delay-links",
            Fault::SlowDisk => "slow-disk",
            Fault::RestartAll => "restart-all",
            Fault::WipeReadd => "wipe-readd",
        }
    }

    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub fault: Fault,
    /// Which member(s) and how, for the report.
    pub detail: String,
    pub start_ns: u64,
    pub healed_ns: u64,
}

impl std::fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.3}s..{:>8.3}s {} {}",
            self.start_ns as f64 / 1e9,
            self.healed_ns as f64 / 1e9,
            self.fault.name(),
            self.detail
        )
    }
}

/// How long a cluster may stay without a leader after a fault is healed.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Nemesis {
    pub faults: Vec<Fault>,
    pub seed: u64,
    pub clock: Clock,
    pub verbose: bool,
}

impl Nemesis {
    /// Injects faults until `stop`; returns what it did and any failure to recover.
    pub async fn run(
        self,
        cluster: Arc<Mutex<Cluster>>,
        stop: watch::Receiver<bool>,
    ) -> (Vec<FaultRecord>, Vec<Anomaly>) {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut records = Vec::new();
        let mut anomalies = Vec::new();
        if self.faults.is_empty() {
            return (records, anomalies);
        }
        // Every listed fault once first (in a seeded order), so that even a short run
        // covers all of them; then random picks.
        let mut first_round = self.faults.clone();
        first_round.sort_by_key(|_| rng.random::<u32>());
        loop {
            let quiet = Duration::from_millis(rng.random_range(800..2_000));
            if sleep_or_stop(quiet, &stop).await {
                break;
            }
            let fault = match first_round.pop() {
                Some(f) => f,
                None => *self.faults.choose(&mut rng).unwrap_or(&Fault::KillRandom),
            };
            let hold = Duration::from_millis(rng.random_range(1_000..3_500));
            let start_ns = self.clock.now_ns();
            let detail = match inject(&cluster, fault, hold, &mut rng).await {
                Ok(d) => d,
                Err(e) => {
                    anomalies.push(Anomaly::new(
                        "nemesis",
                        format!("{} failed: {e:#}", fault.name()),
                    ));
                    format!("FAILED: {e:#}")
                }
            };
            let record = FaultRecord {
                fault,
                detail,
                start_ns,
                healed_ns: self.clock.now_ns(),
            };
            if self.verbose {
                eprintln!("fault {record}");
            }
            records.push(record);
            let c = cluster.lock().await;
            if let Err(e) = c.wait_leader(RECOVERY_TIMEOUT).await {
                anomalies.push(Anomaly::new(
                    "unavailable",
                    format!("after healing {}: {e:#}", fault.name()),
                ));
            }
        }
        (records, anomalies)
    }
}

/// Sleeps, returning early (true) when told to stop.
async fn sleep_or_stop(d: Duration, stop: &watch::Receiver<bool>) -> bool {
    let mut stop = stop.clone();
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Injects `fault`, holds it for `hold`, heals it; returns what it did.
async fn inject(
    cluster: &Mutex<Cluster>,
    fault: Fault,
    hold: Duration,
    rng: &mut StdRng,
) -> anyhow::Result<String> {
    let size = cluster.lock().await.size();
    let random = rng.random_range(0..size);
    let leader = {
        let c = cluster.lock().await;
        c.wait_leader(RECOVERY_TIMEOUT).await?
    };
    // Locks are held only while changing the cluster, never while holding a fault.
    match fault {
        Fault::KillLeader | Fault::KillRandom => {
            let m = if fault == Fault::KillLeader {
                leader
            } else {
                random
            };
            cluster.lock().await.kill(m);
            tokio::time::sleep(hold).await;
            cluster.lock().await.spawn(m)?;
            Ok(format!("m{m} (leader m{leader})"))
        }
        Fault::Pause => {
            let m = if rng.random_bool(0.5) { leader } else { random };
            cluster.lock().await.pause(m)?;
            tokio::time::sleep(hold).await;
            cluster.lock().await.resume(m)?;
            Ok(format!("m{m} (leader m{leader})"))
        }
        Fault::IsolateLeader => {
            cluster.lock().await.isolate(leader);
            tokio::time::sleep(hold).await;
            cluster.lock().await.heal();
            Ok(format!("m{leader}"))
        }
        Fault::MinoritySplit => {
            let mut members: Vec<usize> = (0..size).collect();
            members.sort_by_key(|_| rng.random::<u32>());
            let minority = members[..(size - 1) / 2].to_vec();
            let majority = members[(size - 1) / 2..].to_vec();
            cluster
                .lock()
                .await
                .partition(&[minority.clone(), majority.clone()]);
            tokio::time::sleep(hold).await;
            cluster.lock().await.heal();
            Ok(format!("{minority:?} | {majority:?} (leader m{leader})"))
        }
        Fault::DelayLinks => {
            let delay_ms = rng.random_range(20..150);
            cluster
                .lock()
                .await
                .set_all_links(LinkMode::Delay { delay_ms });
            tokio::time::sleep(hold).await;
            cluster.lock().await.heal();
            Ok(format!("{delay_ms} ms on every link"))
        }
        Fault::SlowDisk => {
            let m = if rng.random_bool(0.5) { leader } else { random };
            let delay_ms = rng.random_range(20..120);
            {
                let mut c = cluster.lock().await;
                c.set_fsync_delay(m, Some(delay_ms));
                c.restart(m)?;
            }
            tokio::time::sleep(hold * 2).await;
            let mut c = cluster.lock().await;
            c.set_fsync_delay(m, None);
            c.restart(m)?;
            Ok(format!("m{m} fsync +{delay_ms} ms (leader m{leader})"))
        }
        Fault::RestartAll => {
            let mut c = cluster.lock().await;
            for m in 0..size {
                c.kill(m);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            for m in 0..size {
                c.spawn(m)?;
            }
            Ok("kill -9 all, restart".into())
        }
        Fault::WipeReadd => {
            let m = random;
            let mut c = cluster.lock().await;
            c.wipe_and_readd(m).await?;
            let name = c.name(m);
            caught_up(&c, m).await?;
            Ok(format!("m{m} wiped, re-added as {name} (leader m{leader})"))
        }
    }
}

/// Waits until member `m` serves a linearizable read (it has applied the commit index).
async fn caught_up(c: &Cluster, m: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + RECOVERY_TIMEOUT;
    loop {
        if let Ok(mut client) = c.client(m).await
            && let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(2), client.get("robust/", None)).await
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("re-added member m{m} did not catch up:\n{}", c.log_tail(15));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
