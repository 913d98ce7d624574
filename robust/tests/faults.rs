//! The short robustness runs for CI: fixed seeds, each with one family of faults, each
//! asserting that faults were injected, operations completed, and no checker found an
//! anomaly. Needs the server built (`cargo build -p kvstore --bins`) or `KVSTORE_BIN`.
//! The runs take the machine's cores, so they take turns.

use std::time::Duration;

use robust::nemesis::Fault;
use robust::run::{RunConfig, run};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const RUN_TIME: Duration = Duration::from_secs(15);

async fn run_clean(seed: u64, faults: &[Fault]) {
    let report = run(RunConfig::new(seed, RUN_TIME, faults))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("{report}");
    assert!(report.anomalies.is_empty(), "seed {seed}:\n{report}");
    assert!(
        report.undecided_keys.is_empty(),
        "seed {seed}: linearizability undecided:\n{report}"
    );
    assert!(
        report.faults.len() >= 3,
        "too few faults injected:\n{report}"
    );
    assert!(
        report.ops_ok >= 300,
        "too few operations completed:\n{report}"
    );
    assert!(report.writes_acknowledged >= 100, "{report}");
    assert!(report.watch_events >= 100, "{report}");
    assert!(report.leases_kept_alive >= 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_pauses_keep_the_history_linearizable_and_watches_whole() {
    let _turn = ONE_AT_A_TIME.lock().await;
    run_clean(101, &[Fault::KillLeader, Fault::KillRandom, Fault::Pause]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_slow_links_keep_the_history_linearizable_and_watches_whole() {
    let _turn = ONE_AT_A_TIME.lock().await;
    run_clean(
        202,
        &[
            Fault::IsolateLeader,
            Fault::MinoritySplit,
            Fault::DelayLinks,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_slow_disks_and_full_restarts_lose_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    run_clean(303, &[Fault::WipeReadd, Fault::SlowDisk, Fault::RestartAll]).await;
}
