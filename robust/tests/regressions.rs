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

/// Found by the 10-minute soak (`chaos --duration 10m --seed 20261125`, faults slow-disk
/// and delay-links): a lease key was deleted ~1.1 s before the TTL promised by its last
/// answered keep-alive. A deposed leader that had not noticed yet kept answering
/// keep-alives from its own clock, while the new leader's clocks started at its election.
/// Fixed: only a leader with a fresh lease answers keep-alives, and a new leader starts
/// every lease clock at TTL + election_timeout_max. Here the leader is cut off while a
/// client keeps its lease alive through it; every keep-alive it still answers is a promise
/// the new leader must keep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_makes_no_lease_promise_the_new_leader_breaks() {
    let cluster = Cluster::start(ClusterConfig::default()).await.unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    let mut c = cluster.client(leader).await.unwrap();
    let ttl_s = 2;
    let lease = c.lease_grant(ttl_s, None).await.unwrap().id();
    c.put(
        "leased",
        "v",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    let (mut keeper, mut answers) = c.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    answers.message().await.unwrap().unwrap();
    cluster.isolate(leader);
    // Keep alive through the cut-off leader for a while; remember the last promise.
    let mut promised_until = Instant::now() + Duration::from_secs(ttl_s as u64);
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        if keeper.keep_alive().await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(300), answers.message()).await {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                promised_until = Instant::now() + Duration::from_secs(r.ttl() as u64);
            }
            Ok(_) => break,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Until the promise runs out, the key must still be there on the majority side.
    let others: Vec<usize> = (0..cluster.size()).filter(|i| *i != leader).collect();
    let mut oc = cluster.client(others[0]).await.unwrap();
    while Instant::now() + Duration::from_millis(300) < promised_until {
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_secs(1),
            oc.get(
                "leased",
                Some(etcd_client::GetOptions::new().with_serializable()),
            ),
        )
        .await
        {
            assert_eq!(
                r.count(),
                1,
                "the lease expired before the TTL its last keep-alive promised\n{}",
                cluster.log_tail(10)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.heal();
}
