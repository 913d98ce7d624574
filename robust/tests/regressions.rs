//! Named regression tests, one per server bug the robustness runs found.

use std::time::{Duration, Instant};

use robust::cluster::{Cluster, ClusterConfig};
use robust::proxy::LinkMode;

/// Found by `chaos --seed 202 --faults isolate-leader,minority-split,delay-links`: with
/// every peer link delayed 100 ms one way, no write committed until the delay was
/// lifted (writes timed out, then landed seconds later). openraft uses the heartbeat
/// interval as the timeout of every AppendEntries/heartbeat call, and the peer
/// transport (`store/src/raft/network.rs`, `option.hard_ttl()`) enforces it, so any
/// round trip longer than `--heartbeat-interval` stops replication altogether, although
/// it is far below the election timeout (etcd keeps committing in that case). Fixed:
/// peer RPCs now get at least the election timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_while_links_are_slower_than_the_heartbeat() {
    let cluster = Cluster::start(ClusterConfig::default()).await.unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    let mut c = cluster.client(leader).await.unwrap();
    c.put("before", "v", None).await.unwrap();
    // 40 ms each way: an 80 ms round trip, above the 50 ms heartbeat, far below the
    // 500 ms election timeout.
    cluster.set_all_links(LinkMode::Delay { delay_ms: 40 });
    let started = Instant::now();
    for i in 0..5 {
        let put =
            tokio::time::timeout(Duration::from_secs(3), c.put(format!("k{i}"), "v", None)).await;
        assert!(
            matches!(put, Ok(Ok(_))),
            "put {i} did not commit with an 80 ms peer round trip ({:?} in): {put:?}\n{}",
            started.elapsed(),
            cluster.log_tail(10)
        );
    }
}
