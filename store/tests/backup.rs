//! Backup and restore end to end: `kvstore snapshot save` while clients write, restore
//! into a new cluster, bad snapshot files, scheduled snapshots, revision bumps, and the
//! quota alarm.

mod common;

use std::time::Duration;

use common::*;
use etcd_client::{GetOptions, PutOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_saved_under_writes_restores_into_a_new_cluster_with_its_exact_history() {
    let source = Cluster::start(3, &[]);
    for i in 0..3 {
        source.client(i).await;
    }
    let leader = source.leader().await;
    let mut c = source.client(leader).await;
    let lease = c.lease_grant(600, None).await.unwrap().id();
    c.put("leased", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = write_load((0..3).map(|i| source.endpoint(i)).collect(), "w", stop_rx);
    tokio::time::sleep(Duration::from_millis(800)).await;

    let file = source.dir.path().join("backup.db");
    let file_s = file.to_str().unwrap().to_string();
    let ep = source.endpoint(leader);
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        kvstore(&["--endpoints", &ep, "snapshot", "save", &file_s])
    })
    .await
    .unwrap();
    assert!(ok, "snapshot save failed: {out} {err}");
    assert!(out.contains("Snapshot saved at"), "{out}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).unwrap();
    let acked = load.await.unwrap();

    let (ok, out, err) = kvstore(&["-w", "json", "snapshot", "status", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let revision = status["revision"].as_i64().unwrap();
    assert!(
        acked.iter().any(|(_, r)| *r <= revision) && acked.iter().any(|(_, r)| *r > revision),
        "writes should straddle the snapshot (rev {revision})"
    );
    let source_hash = c.hash_kv(revision).await.unwrap().hash();

    // Every member of the new cluster restores the same file into its own data dir.
    let target = Cluster::prepare(3, &[]);
    for i in 0..3 {
        let dir = target.data_dir(i);
        let peer = target.peer_url(i);
        let name = target.members[i].name.clone();
        let (ok, out, err) = kvstore(&[
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--name",
            &name,
            "--initial-cluster",
            &target.initial_cluster,
            "--initial-cluster-token",
            "cluster-test",
            "--initial-advertise-peer-urls",
            &peer,
            "--data-dir",
            dir.to_str().unwrap(),
        ]);
        assert!(ok, "restore failed: {out} {err}");
    }
    let mut target = target;
    for i in 0..3 {
        target.spawn(i);
    }
    for i in 0..3 {
        target.client(i).await;
    }
    target.leader().await;
    let mut t = target.client(0).await;
    let status = t.status().await.unwrap();
    assert_ne!(
        status.header().unwrap().cluster_id(),
        c.status().await.unwrap().header().unwrap().cluster_id()
    );
    assert_eq!(status.header().unwrap().revision(), revision);
    for (key, rev) in &acked {
        let r = t.get(key.as_str(), None).await.unwrap();
        if *rev <= revision {
            assert_eq!(r.kvs().len(), 1, "{key} (rev {rev}) missing after restore");
            assert_eq!(r.kvs()[0].mod_revision(), *rev);
        } else {
            assert!(
                r.kvs().is_empty(),
                "{key} (rev {rev}) is after the snapshot but was restored"
            );
        }
    }
    assert_eq!(t.hash_kv(revision).await.unwrap().hash(), source_hash);
    let ttl = t
        .lease_time_to_live(
            lease,
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 600);
    assert_eq!(ttl.keys(), [b"leased".to_vec()]);
    // The restored cluster takes writes, continuing the revision sequence.
    let put = t.put("after-restore", "x", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), revision + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_snapshot_files_are_refused_and_change_nothing() {
    let cluster = Cluster::start(1, &[]);
    let mut c = cluster.client(0).await;
    for i in 0..20 {
        c.put(format!("k{i}"), "v", None).await.unwrap();
    }
    let dir = cluster.dir.path();
    let good = dir.join("good.db");
    let (ok, _, err) = kvstore(&[
        "--endpoints",
        &cluster.endpoint(0),
        "snapshot",
        "save",
        good.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let bytes = std::fs::read(&good).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.db",
            bytes[..bytes.len() - 100].to_vec(),
            "integrity check",
        ),
        ("flipped.db", flipped, "integrity check"),
        ("empty.db", Vec::new(), "is empty"),
        (
            "foreign.db",
            b"SQLite format 3\0 and then some other bytes of another format entirely".to_vec(),
            "not a kvstore snapshot",
        ),
    ];
    for (name, content, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, &content).unwrap();
        let (ok, _, err) = kvstore(&["snapshot", "status", path.to_str().unwrap()]);
        assert!(!ok && err.contains(expected), "status of {name}: {err}");
        let target = dir.join(format!("restore-{name}"));
        let (ok, _, err) = kvstore(&[
            "snapshot",
            "restore",
            path.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ]);
        assert!(!ok && err.contains(expected), "restore of {name}: {err}");
        assert!(
            !target.exists(),
            "a refused restore created {}",
            target.display()
        );
    }
    // A non-empty data dir is refused and left as it was.
    let busy = dir.join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("precious"), b"keep me").unwrap();
    let (ok, _, err) = kvstore(&[
        "snapshot",
        "restore",
        good.to_str().unwrap(),
        "--data-dir",
        busy.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("not empty"), "{err}");
    let entries: Vec<_> = std::fs::read_dir(&busy)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("precious")]);
    assert_eq!(std::fs::read(busy.join("precious")).unwrap(), b"keep me");
    // The good file is fine.
    let (ok, out, err) = kvstore(&["-w", "json", "snapshot", "status", good.to_str().unwrap()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["total_keys"], 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_snapshot_save_completes_against_kvstore() {
    let cluster = Cluster::start(1, &[]);
    let mut c = cluster.client(0).await;
    c.put("a", "b", None).await.unwrap();
    let file = cluster.dir.path().join("etcdctl.db");
    let out = std::process::Command::new("etcdctl")
        .args([
            "--endpoints",
            &cluster.endpoint(0),
            "snapshot",
            "save",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, out, err) = kvstore(&["snapshot", "status", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains(", 2, 1, "), "revision 2, 1 key: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_snapshots_keep_exactly_the_last_n() {
    let snapshots = tempfile::tempdir().unwrap();
    let dir = snapshots.path().to_str().unwrap().to_string();
    let cluster = Cluster::start(
        1,
        &[
            "--snapshot-interval",
            "300ms",
            "--snapshot-retention",
            "3",
            "--snapshot-dir",
            &dir,
        ],
    );
    let mut c = cluster.client(0).await;
    for i in 0..12 {
        c.put(format!("k{i}"), "v", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let files: Vec<_> = std::fs::read_dir(snapshots.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let complete: Vec<_> = files.iter().filter(|f| f.ends_with(".db")).collect();
    assert_eq!(complete.len(), 3, "{files:?}");
    let (ok, out, err) = kvstore(&["snapshot", "list", "--snapshot-dir", &dir]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    // Newest last, and it holds (nearly) everything written.
    let newest = out.lines().last().unwrap();
    let keys: u64 = newest.split(", ").nth(3).unwrap().parse().unwrap();
    assert!(keys >= 9, "{newest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_with_bump_revision_never_goes_backwards_and_marks_old_revisions_compacted() {
    let source = Cluster::start(1, &[]);
    let mut c = source.client(0).await;
    for i in 0..10 {
        c.put("k", format!("v{i}"), None).await.unwrap();
    }
    let file = source.dir.path().join("s.db");
    let (ok, _, err) = kvstore(&[
        "--endpoints",
        &source.endpoint(0),
        "snapshot",
        "save",
        file.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let target = Cluster::prepare(1, &[]);
    let (ok, out, err) = kvstore(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--name",
        &target.members[0].name,
        "--initial-cluster",
        &target.initial_cluster,
        "--initial-cluster-token",
        "cluster-test",
        "--initial-advertise-peer-urls",
        &target.peer_url(0),
        "--data-dir",
        target.data_dir(0).to_str().unwrap(),
        "--bump-revision",
        "1000",
        "--mark-compacted",
    ]);
    assert!(ok, "{out} {err}");
    let mut target = target;
    target.spawn(0);
    let mut t = target.client(0).await;
    let r = t.get("k", None).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 11 + 1000);
    assert_eq!(r.kvs()[0].value(), b"v9");
    let old = t.get("k", Some(GetOptions::new().with_revision(5))).await;
    assert!(
        old.unwrap_err()
            .to_string()
            .contains("required revision has been compacted")
    );
    let put = t.put("k", "new", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), 1012);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_alarm_refuses_puts_allows_deletes_and_compaction_and_is_disarmed() {
    let cluster = Cluster::start(
        1,
        &["--quota-backend-bytes", "400000", "--snapshot-count", "50"],
    );
    let mut c = cluster.client(0).await;
    let value = "x".repeat(8 * 1024);
    let mut refused = None;
    for i in 0..400 {
        match c.put(format!("big{i}"), value.clone(), None).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
    }
    let refused = refused.expect("the quota never tripped");
    assert!(
        refused.contains("etcdserver: mvcc: database space exceeded"),
        "{refused}"
    );
    let ep = cluster.endpoint(0);
    let (ok, out, _) = kvstore(&["--endpoints", &ep, "alarm", "list"]);
    assert!(ok && out.contains("alarm:NOSPACE"), "{out}");
    // Puts stay refused; deletes and compaction go through.
    let again = c.put("another", "v", None).await.unwrap_err().to_string();
    assert!(again.contains("database space exceeded"), "{again}");
    let del = c
        .delete("big", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(del.deleted() > 0);
    let rev = del.header().unwrap().revision();
    c.compact(rev, None).await.unwrap();
    let (ok, out, err) = kvstore(&["--endpoints", &ep, "defrag"]);
    assert!(ok, "{out} {err}");
    let (ok, out, _) = kvstore(&["--endpoints", &ep, "alarm", "disarm"]);
    assert!(ok && out.contains("alarm:NOSPACE"), "{out}");
    let (ok, out, _) = kvstore(&["--endpoints", &ep, "alarm", "list"]);
    assert!(
        ok && out.trim().is_empty(),
        "alarms left after disarm: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_compaction_in_revision_mode_keeps_the_last_n_revisions() {
    let cluster = Cluster::start(
        1,
        &[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "5",
            "--experimental-auto-compaction-interval",
            "200ms",
        ],
    );
    let mut c = cluster.client(0).await;
    let mut last = 0;
    for i in 0..20 {
        last = c
            .put("k", format!("v{i}"), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let old = c
        .get("k", Some(GetOptions::new().with_revision(last - 10)))
        .await;
    assert!(
        old.unwrap_err()
            .to_string()
            .contains("required revision has been compacted"),
        "revision {} should be compacted",
        last - 10
    );
    let kept = c
        .get("k", Some(GetOptions::new().with_revision(last - 5)))
        .await
        .unwrap();
    assert_eq!(kept.kvs()[0].value(), b"v14");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_compaction_in_periodic_mode_keeps_a_time_window() {
    let cluster = Cluster::start(
        1,
        &[
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "1s",
        ],
    );
    let mut c = cluster.client(0).await;
    let first = c
        .put("k", "early", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut last = first;
    for i in 0..25 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = c
            .put("k", format!("v{i}"), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
    }
    // 2.5 s of writes with a 1 s window: the earliest revisions are compacted, the last
    // few hundred milliseconds are not.
    let old = c
        .get("k", Some(GetOptions::new().with_revision(first)))
        .await;
    assert!(old.unwrap_err().to_string().contains("compacted"));
    let recent = c
        .get("k", Some(GetOptions::new().with_revision(last - 2)))
        .await;
    assert!(recent.is_ok(), "{recent:?}");
}
