//! Differential test: seeded random request sequences (puts, deletes, ranges, Txns,
//! compactions, leases and the error cases) sent to real etcd 3.4 and to kvstore, every
//! response compared. `DIFF_SEED=<n>` reruns one seed, `DIFF_OPS=<n>` changes the length,
//! `DIFF_KEEP_GOING=1` lists every difference instead of stopping at the first.
//!
//! `etcd_against_etcd` runs the same comparison between two real etcd members: it shows
//! that the generator and the comparison are deterministic, so a difference found
//! against kvstore is kvstore's.

use tests::Backend;
use tests::differential::Run;
use tests::report::run_test;

const OPS: usize = 1200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_1_etcd_vs_kvstore() {
    run_test("seed_1", Run::new(0x5eed_0001, OPS).execute()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_2_etcd_vs_kvstore() {
    run_test("seed_2", Run::new(0x5eed_0002, OPS).execute()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_against_etcd() {
    let run = Run {
        candidate: Backend::Etcd,
        ..Run::new(0x5eed_0003, OPS)
    };
    run_test("etcd_against_etcd", run.execute()).await;
}
