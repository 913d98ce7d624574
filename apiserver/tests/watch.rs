//! Watches over real processes: resume from a resourceVersion with no gap and no
//! duplicate (within one apiserver, across an apiserver restart, across a store leader
//! change), 410 for a compacted resourceVersion, a slow watcher cut off without
//! stalling writers or other watchers, and two apiservers seeing each other's writes.

mod common;

use std::time::Duration;

use common::{Backend, Cluster, KvstoreCluster, WatchStream, get_json, send_json};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(20);

fn cm_pod(name: &str, note: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "annotations": {"note": note}},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

fn rv_of(v: &Value) -> i64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1)
}

/// Creates pod `name` (or updates its annotation when it exists) through `url`; returns its new rv.
async fn write(http: &reqwest::Client, url: &str, name: &str, note: &str) -> anyhow::Result<i64> {
    let base = format!("{url}/api/v1/namespaces/default/pods");
    let (code, body) = send_json(http, Method::POST, &base, &cm_pod(name, note)).await?;
    if code == 201 {
        return Ok(rv_of(&body));
    }
    anyhow::ensure!(code == 409, "create {name}: {code} {body}");
    let patch = json!({"metadata": {"annotations": {"note": note}}});
    let r = http
        .patch(format!("{base}/{name}"))
        .header("Content-Type", "application/merge-patch+json")
        .body(patch.to_string())
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "patch {name}: {}", r.status());
    Ok(rv_of(&r.json::<Value>().await?))
}

async fn watch_basic(backend: Backend) -> anyhow::Result<()> {
    let c = Cluster::start(backend).await?;
    let http = c.client();
    let base = format!("{}/api/v1/namespaces/default/pods", c.url());
    let rv0 = write(&http, &c.url(), "a", "1").await?;
    let mut w = WatchStream::open(
        &http,
        &format!("{base}?watch=1&resourceVersion={rv0}&allowWatchBookmarks=true"),
    )
    .await?;
    let rv1 = write(&http, &c.url(), "a", "2").await?;
    let rv2 = write(&http, &c.url(), "b", "1").await?;
    let (code, _) = send_json(&http, Method::DELETE, &format!("{base}/a"), &json!({})).await?;
    assert_eq!(code, 200);
    let e1 = w.next_change(T).await?.unwrap();
    assert_eq!(
        (e1["type"].as_str(), rv_of(&e1["object"])),
        (Some("MODIFIED"), rv1)
    );
    let e2 = w.next_change(T).await?.unwrap();
    assert_eq!(
        (e2["type"].as_str(), rv_of(&e2["object"])),
        (Some("ADDED"), rv2)
    );
    let e3 = w.next_change(T).await?.unwrap();
    assert_eq!(e3["type"], "DELETED");
    assert_eq!(e3["object"]["metadata"]["name"], "a");
    assert!(rv_of(&e3["object"]) > rv2);
    // A bookmark arrives (interval 2 s in the harness) with a revision at least as new.
    loop {
        let e = w.next(T).await?.unwrap();
        if e["type"] == "BOOKMARK" {
            assert!(rv_of(&e["object"]) >= rv_of(&e3["object"]));
            break;
        }
    }
    // Without a resourceVersion: the current objects as ADDED first.
    let mut w2 = WatchStream::open(&http, &format!("{base}?watch=1")).await?;
    let e = w2.next_change(T).await?.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("b"))
    );
    // Label selector on a watch.
    let mut w3 =
        WatchStream::open(&http, &format!("{base}?watch=1&labelSelector=team%3Dx")).await?;
    let mut labeled = cm_pod("c", "1");
    labeled["metadata"]["labels"] = json!({"team": "x"});
    write(&http, &c.url(), "d", "unlabeled").await?;
    let (code, _) = send_json(&http, Method::POST, &base, &labeled).await?;
    assert_eq!(code, 201);
    let e = w3.next_change(T).await?.unwrap();
    assert_eq!(e["object"]["metadata"]["name"], "c");
    Ok(())
}

#[tokio::test]
async fn watch_from_resource_version_kvstore() -> anyhow::Result<()> {
    watch_basic(Backend::Kvstore).await
}

#[tokio::test]
async fn watch_from_resource_version_etcd() -> anyhow::Result<()> {
    watch_basic(Backend::Etcd).await
}

/// Collects `n` change events and checks they are the expected notes in order.
async fn expect_notes(w: &mut WatchStream, name: &str, notes: &[String]) -> anyhow::Result<i64> {
    let mut last = 0;
    for want in notes {
        let e = w
            .next_change(T)
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        assert_eq!(e["object"]["metadata"]["name"], name, "{e}");
        assert_eq!(
            e["object"]["metadata"]["annotations"]["note"].as_str(),
            Some(want.as_str()),
            "{e}"
        );
        let rv = rv_of(&e["object"]);
        assert!(rv > last, "revisions must rise: {rv} after {last}");
        last = rv;
    }
    Ok(last)
}

#[tokio::test]
async fn watch_resumes_across_apiserver_restart() -> anyhow::Result<()> {
    let mut c = Cluster::start_n(Backend::Kvstore, 2).await?;
    let http = c.client();
    let rv0 = write(&http, &c.url_of(0), "p", "0").await?;
    let url = |c: &Cluster| {
        format!(
            "{}/api/v1/namespaces/default/pods?watch=1&resourceVersion=",
            c.url_of(0)
        )
    };
    let mut w = WatchStream::open(&http, &format!("{}{rv0}", url(&c))).await?;
    let first: Vec<String> = (1..=3).map(|i| i.to_string()).collect();
    for n in &first {
        write(&http, &c.url_of(0), "p", n).await?;
    }
    let last = expect_notes(&mut w, "p", &first).await?;
    drop(w);
    c.kill_apiserver(0);
    // Writes while apiserver 0 is down, through apiserver 1.
    let second: Vec<String> = (4..=6).map(|i| i.to_string()).collect();
    for n in &second {
        write(&http, &c.url_of(1), "p", n).await?;
    }
    c.restart_apiserver(0).await?;
    let more: Vec<String> = (7..=8).map(|i| i.to_string()).collect();
    let mut w = WatchStream::open(&http, &format!("{}{last}", url(&c))).await?;
    for n in &more {
        write(&http, &c.url_of(1), "p", n).await?;
    }
    let all: Vec<String> = second.iter().chain(more.iter()).cloned().collect();
    expect_notes(&mut w, "p", &all).await?;
    Ok(())
}

#[tokio::test]
async fn compacted_resource_version_is_410() -> anyhow::Result<()> {
    let c = Cluster::start(Backend::Kvstore).await?;
    let http = c.client();
    for i in 0..5 {
        write(&http, &c.url(), "p", &i.to_string()).await?;
    }
    let mut etcd = c.etcd().await?;
    let rev = etcd
        .get(
            "/registry/",
            Some(etcd_client::GetOptions::new().with_count_only()),
        )
        .await?
        .header()
        .unwrap()
        .revision();
    etcd.compact(rev, None).await?;
    let r = http
        .get(format!(
            "{}/api/v1/namespaces/default/pods?watch=1&resourceVersion=2",
            c.url()
        ))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 410);
    let status: Value = r.json().await?;
    assert_eq!(status["reason"], "Expired");
    // A list continue token at a compacted revision is 410 too.
    let (code, page) = get_json(
        &http,
        &format!(
            "{}/api/v1/pods?limit=1&resourceVersion=2&resourceVersionMatch=Exact",
            c.url()
        ),
    )
    .await?;
    assert_eq!(code, 410, "{page}");
    Ok(())
}

#[tokio::test]
async fn two_apiservers_see_each_others_writes() -> anyhow::Result<()> {
    let c = Cluster::start_n(Backend::Kvstore, 2).await?;
    let http = c.client();
    let mut w1 = WatchStream::open(
        &http,
        &format!(
            "{}/api/v1/namespaces/default/pods?watch=1&resourceVersion=1",
            c.url_of(1)
        ),
    )
    .await?;
    let mut w0 = WatchStream::open(
        &http,
        &format!(
            "{}/api/v1/namespaces/default/pods?watch=1&resourceVersion=1",
            c.url_of(0)
        ),
    )
    .await?;
    write(&http, &c.url_of(0), "from0", "x").await?;
    write(&http, &c.url_of(1), "from1", "y").await?;
    for w in [&mut w0, &mut w1] {
        let a = w.next_change(T).await?.unwrap();
        let b = w.next_change(T).await?.unwrap();
        assert_eq!(a["object"]["metadata"]["name"], "from0");
        assert_eq!(b["object"]["metadata"]["name"], "from1");
    }
    let (_, obj) = get_json(
        &http,
        &format!("{}/api/v1/namespaces/default/pods/from0", c.url_of(1)),
    )
    .await?;
    assert_eq!(obj["metadata"]["annotations"]["note"], "x");
    Ok(())
}

#[tokio::test]
async fn slow_watcher_is_cut_off_without_stalling_writers() -> anyhow::Result<()> {
    let c = Cluster::start_with_args(Backend::Kvstore, 1, &["--watch-buffer-events", "5"]).await?;
    let http = c.client();
    // No resourceVersion: served by the watch cache (whose buffers are what this tests).
    let base = format!("{}/api/v1/namespaces/default/pods?watch=1", c.url());
    // The slow watcher: a plain HTTP/1.1 connection with a tiny receive buffer (the
    // loopback's autotuned buffers would otherwise absorb tens of MB), not read until
    // the writes are done.
    let addr = c
        .insecure_url_of(0)
        .trim_start_matches("http://")
        .to_string();
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(8 * 1024)?;
    let mut slow = socket.connect(addr.parse()?).await?;
    let req =
        format!("GET /api/v1/namespaces/default/pods?watch=1 HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    slow.write_all(req.as_bytes()).await?;
    // The fast watcher reads as events come.
    let mut fast = WatchStream::open(&http, &base).await?;
    let writes = 100;
    let reader = tokio::spawn(async move {
        let mut names = Vec::new();
        while names.len() < writes {
            match fast.next_change(T).await {
                Ok(Some(e)) => names.push(
                    e["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                ),
                other => anyhow::bail!("fast watcher ended early: {other:?} after {}", names.len()),
            }
        }
        Ok(names)
    });
    // Big objects fill the socket buffers quickly; every write must still complete.
    let big = "x".repeat(200 * 1024);
    for i in 0..writes {
        let mut p = cm_pod(&format!("big-{i}"), "n");
        p["metadata"]["annotations"]["blob"] = json!(big);
        let url = format!("{}/api/v1/namespaces/default/pods", c.url());
        let (code, body) =
            tokio::time::timeout(T, send_json(&http, Method::POST, &url, &p)).await??;
        assert_eq!(code, 201, "{body}");
    }
    // The fast watcher got everything, in order.
    let names = reader.await??;
    assert_eq!(
        names,
        (0..writes).map(|i| format!("big-{i}")).collect::<Vec<_>>()
    );
    // The slow one ends with an ERROR event (410) after what it had buffered.
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::time::timeout(T, slow.read(&mut chunk)).await??;
        anyhow::ensure!(n > 0, "slow watcher closed without an ERROR event");
        raw.extend_from_slice(&chunk[..n]);
        if let Some(pos) = find(&raw, b"\"type\":\"ERROR\"") {
            let tail = String::from_utf8_lossy(&raw[pos..]).to_string();
            if tail.contains("}}") {
                assert!(tail.contains("\"code\":410"), "{tail}");
                break;
            }
        }
    }
    let saw = count(&raw, b"\"type\":\"ADDED\"");
    assert!(
        saw < writes,
        "the slow watcher should have been cut off early, saw {saw}"
    );
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

#[tokio::test]
async fn watch_survives_store_leader_change() -> anyhow::Result<()> {
    let kv = KvstoreCluster::start(3).await?;
    let mut c = Cluster::start_on(kv, 1).await?;
    let http = c.client();
    let rv0 = write(&http, &c.url(), "p", "0").await?;
    let mut w = WatchStream::open(
        &http,
        &format!(
            "{}/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv0}",
            c.url()
        ),
    )
    .await?;
    let mut notes = Vec::new();
    for i in 1..=3 {
        write(&http, &c.url(), "p", &i.to_string()).await?;
        notes.push(i.to_string());
    }
    let kv = c.kv_cluster().unwrap();
    let leader = kv.leader().await?;
    kv.kill(leader);
    kv.leader().await?;
    for i in 4..=8 {
        // Writes may fail while the store elects a leader; retry until one lands.
        let note = i.to_string();
        common::eventually("a write after the leader change", || async {
            write(&http, &c.url(), "p", &note).await.ok()
        })
        .await?;
        notes.push(note);
    }
    expect_notes(&mut w, "p", &notes).await?;
    Ok(())
}
