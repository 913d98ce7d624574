//! Crash durability: concurrent writers put keys and record each acknowledged put (with
//! the revision of its response) plus a lease with a key attached; the member is killed
//! with SIGKILL mid-stream and restarted on the same data dir; every acknowledged write,
//! at its acknowledged mod_revision, and the lease must be there.
//!
//! The kvstore variant is the one that matters; the etcd variant validates the test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use etcd_client::{Client, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions};
use tests::server::connect;
use tests::{Backend, Server, TestResult, both_backends};

both_backends!(kill9_loses_no_acknowledged_write);

const WRITERS: usize = 4;
const LEASE_ID: i64 = 0x7d0;
const LEASE_TTL: i64 = 3000;

/// One writer: puts `dur/<round>/<w>/<i>` until the member dies; returns acknowledged
/// (key → (value, revision)).
async fn writer(
    endpoint: String,
    round: usize,
    w: usize,
    acked: Arc<AtomicUsize>,
) -> BTreeMap<String, (String, i64)> {
    let mut done = BTreeMap::new();
    let Ok(client) = connect(&endpoint).await else {
        return done;
    };
    let mut kv = client.kv_client();
    for i in 0.. {
        let key = format!("dur/{round}/{w}/{i:06}");
        let value = format!("value-{round}-{w}-{i}");
        let put = tokio::time::timeout(
            Duration::from_secs(5),
            kv.put(key.as_str(), value.as_str(), None),
        );
        match put.await {
            Ok(Ok(resp)) => {
                let rev = resp.header().map(|h| h.revision()).unwrap_or(-1);
                done.insert(key, (value, rev));
                acked.fetch_add(1, Ordering::Relaxed);
            }
            // The member is gone: whatever was not acknowledged may or may not be there.
            _ => break,
        }
    }
    done
}

/// Runs the writers until `min_acked` puts were acknowledged, then kills the member
/// (SIGKILL) while they are still writing; returns what was acknowledged.
async fn write_then_crash(
    server: &mut Server,
    round: usize,
    min_acked: usize,
) -> anyhow::Result<BTreeMap<String, (String, i64)>> {
    let acked = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(server.endpoint(), round, w, acked.clone())))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::Relaxed) < min_acked {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "writers made too little progress: {} acknowledged",
            acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    let mut written = BTreeMap::new();
    for t in tasks {
        written.extend(t.await?);
    }
    ensure!(
        written.len() >= min_acked,
        "only {} acknowledged writes",
        written.len()
    );
    Ok(written)
}

async fn kill9_loses_no_acknowledged_write(backend: Backend) -> TestResult {
    let mut server = Server::start(backend).await?;
    let mut client = server.client().await?;
    client
        .lease_grant(LEASE_TTL, Some(LeaseGrantOptions::new().with_id(LEASE_ID)))
        .await?;
    let lease_put = client
        .put(
            "dur/leased",
            "held",
            Some(PutOptions::new().with_lease(LEASE_ID)),
        )
        .await?;
    let lease_put_rev = lease_put.header().unwrap().revision();

    // Two crash rounds: the second one crashes a member that itself recovered.
    let mut written: BTreeMap<String, (String, i64)> = BTreeMap::new();
    for round in 0..2 {
        written.extend(write_then_crash(&mut server, round, 400).await?);
        server.restart().await?;
        check_after_restart(&server, &written, lease_put_rev).await?;
        println!(
            "round {round}: {} acknowledged writes survived kill -9 and restart",
            written.len()
        );
    }

    // And the store keeps working after the crashes.
    let mut client = server.client().await?;
    let now = client.get("dur/", None).await?.header().unwrap().revision();
    let after = client.put("dur/after", "x", None).await?;
    assert_eq!(after.header().unwrap().revision(), now + 1);
    Ok(())
}

async fn check_after_restart(
    server: &Server,
    written: &BTreeMap<String, (String, i64)>,
    lease_put_rev: i64,
) -> TestResult {
    // Acknowledged revisions are distinct and each is one put.
    let mut revs: Vec<i64> = written.values().map(|(_, r)| *r).collect();
    revs.sort();
    ensure!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "two puts acknowledged with one revision"
    );
    let max_acked = *revs.last().unwrap();

    let mut client: Client = server.client().await?;
    let all = client
        .get("dur/", Some(GetOptions::new().with_prefix()))
        .await?;
    let now = all.header().unwrap().revision();
    ensure!(
        now >= max_acked,
        "revision went back: {now} < acknowledged {max_acked}"
    );
    let stored: BTreeMap<String, (String, i64, i64, i64)> = all
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                (
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    kv.mod_revision(),
                    kv.create_revision(),
                    kv.version(),
                ),
            )
        })
        .collect();
    let mut lost = Vec::new();
    for (key, (value, rev)) in written {
        match stored.get(key) {
            Some((v, m, c, ver)) if v == value && m == rev && c == rev && *ver == 1 => {}
            other => lost.push(format!(
                "{key}: acknowledged ({value}, rev {rev}), found {other:?}"
            )),
        }
    }
    ensure!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost or changed, e.g. {:?}",
        lost.len(),
        written.len(),
        &lost[..lost.len().min(10)]
    );
    // Every put that landed (acknowledged or not) took one revision after the lease's.
    let total_puts = stored.len() - 1; // minus dur/leased
    ensure!(
        now - lease_put_rev == total_puts as i64,
        "revision {now} does not match {total_puts} puts after revision {lease_put_rev}"
    );

    // The lease survived with its key.
    let leased = stored.get("dur/leased").context("leased key lost")?;
    assert_eq!((leased.0.as_str(), leased.1), ("held", lease_put_rev));
    let ttl = client
        .lease_time_to_live(LEASE_ID, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    assert_eq!(ttl.id(), LEASE_ID);
    assert_eq!(ttl.granted_ttl(), LEASE_TTL);
    assert!(
        ttl.ttl() > 0 && ttl.ttl() <= LEASE_TTL,
        "remaining ttl {}",
        ttl.ttl()
    );
    assert_eq!(ttl.keys(), [b"dur/leased".to_vec()]);
    let leased_kv = client.get("dur/leased", None).await?;
    assert_eq!(leased_kv.kvs()[0].lease(), LEASE_ID);
    Ok(())
}
