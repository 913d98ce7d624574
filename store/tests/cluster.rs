//! A real 3-member cluster of `kvstore serve` processes on loopback: replication, reads
//! on every member, forwarding, leader failure, restart, snapshot catch-up and leases.

mod common;

use std::time::{Duration, Instant};

use common::*;
use etcd_client::{GetOptions, PutOptions, WatchOptions};

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

/// Runs the real etcdctl 3.4 against the given endpoints.
fn etcdctl(endpoints: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new("etcdctl")
        .args(["--endpoints", endpoints])
        .args(args)
        .output()
        .expect("etcdctl is installed by scripts/setup.sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_manages_the_cluster() {
    let mut cluster = Cluster::start(3, &["--snapshot-count", "50"]);
    for i in 0..3 {
        cluster.client(i).await;
    }
    cluster.leader().await;
    let all = (0..3)
        .map(|i| format!("http://{}", cluster.endpoint(i)))
        .collect::<Vec<_>>()
        .join(",");

    // member list shows every member with its client URL once they have published it.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, out, err) = etcdctl(&all, &["member", "list"]);
        assert!(ok, "{err}");
        if out.lines().count() == 3
            && out
                .lines()
                .all(|l| l.contains(", started, m") && !l.contains(", , "))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member list never complete: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, out, err) = etcdctl(&all, &["endpoint", "status", "--cluster", "-w", "json"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status.as_array().unwrap().len(), 3, "{out}");
    let leaders: Vec<u64> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Status"]["leader"].as_u64().unwrap())
        .collect();
    assert!(
        leaders.iter().all(|l| *l == leaders[0] && *l != 0),
        "{leaders:?}"
    );
    // etcdctl 3.4 prints health lines on stderr.
    let (ok, out, err) = etcdctl(&all, &["endpoint", "health", "--cluster"]);
    assert!(
        ok && format!("{out}{err}").matches("is healthy").count() == 3,
        "{out} {err}"
    );

    // move-leader to a follower.
    let leader_id = leaders[0];
    let follower_id = status
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Status"]["header"]["member_id"].as_u64().unwrap())
        .find(|id| *id != leader_id)
        .unwrap();
    let (ok, out, err) = etcdctl(&all, &["move-leader", &format!("{follower_id:x}")]);
    assert!(ok && out.contains("Leadership transferred"), "{out} {err}");

    // member add --learner, start it, promote it, remove an old member.
    let mut c = cluster.client(0).await;
    for i in 0..100 {
        // Right after the transfer a put may still meet "leader changed", as with etcd:
        // clients retry it.
        let mut tries = 0;
        while let Err(e) = c.put(format!("k{i}"), "v", None).await {
            tries += 1;
            assert!(tries < 50, "put k{i} keeps failing: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let new = cluster.new_member();
    let peer = cluster.peer_url(new);
    let (ok, out, err) = etcdctl(
        &all,
        &[
            "member",
            "add",
            &cluster.members[new].name,
            "--peer-urls",
            &peer,
            "--learner",
        ],
    );
    assert!(ok && out.contains("added to cluster"), "{out} {err}");
    let new_id = out.split_whitespace().nth(1).unwrap().to_string();
    cluster.spawn(new);
    cluster.client(new).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, err) = etcdctl(&all, &["member", "promote", &new_id]);
        if ok {
            assert!(out.contains("promoted"), "{out}");
            break;
        }
        assert!(
            err.contains("in sync with leader"),
            "unexpected promote error: {err}"
        );
        assert!(Instant::now() < deadline, "learner never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // MemberList is served from each member's applied membership (as in etcd), so ask
    // the new member, and give it a moment to publish its own name and client URL.
    let new_ep = format!("http://{}", cluster.endpoint(new));
    let deadline = Instant::now() + Duration::from_secs(15);
    let out = loop {
        let (ok, out, _) = etcdctl(&new_ep, &["member", "list"]);
        assert!(
            ok && out.lines().count() == 4 && !out.contains("true"),
            "{out}"
        );
        if !out.contains("unstarted") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "the new member never published itself: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let victim = out
        .lines()
        .find(|l| l.contains(", m1,"))
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let (ok, out, err) = etcdctl(&new_ep, &["member", "remove", &victim]);
    assert!(ok && out.contains("removed from cluster"), "{out} {err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out, _) = etcdctl(&new_ep, &["member", "list"]);
        assert!(ok, "{out}");
        if out.lines().count() == 3 && !out.contains(", m1,") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "m1 still listed after its removal: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The promoted member serves linearizable reads of what was written before it joined.
    let mut nc = cluster.client(new).await;
    let r = nc
        .get("k", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .unwrap();
    assert_eq!(r.count(), 100);
}
