//! Watch behaviour through `etcd-client`, against both backends: resuming from an old
//! revision, a compacted start revision, prev_kv, ordering and atomicity over 10,000
//! events, cancel, many watches on one stream, progress (on request and periodic), and
//! the NOPUT/NODELETE filters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use etcd_client::{
    Client, EventType, Txn, TxnOp, WatchFilterType, WatchOptions, WatchResponse, WatchStream,
};
use tests::{Backend, Server, TestResult, both_backends};

/// How long to wait for an expected watch response.
const RECV_TIMEOUT: Duration = Duration::from_secs(20);

both_backends!(
    resume_from_old_revision,
    compacted_start_revision,
    prev_kv,
    ordering_10000_events,
    cancel,
    many_watches_one_stream,
    progress_request,
    progress_notify_interval,
    filters,
);

async fn recv(stream: &mut WatchStream) -> Result<WatchResponse> {
    match tokio::time::timeout(RECV_TIMEOUT, stream.message()).await {
        Ok(Ok(Some(resp))) => Ok(resp),
        Ok(Ok(None)) => bail!("watch stream ended"),
        Ok(Err(e)) => bail!("watch stream error: {e}"),
        Err(_) => bail!("no watch response within {RECV_TIMEOUT:?}"),
    }
}

/// Receives the `created` response of a new watch and returns its watch id.
async fn created(stream: &mut WatchStream) -> Result<i64> {
    let resp = recv(stream).await?;
    ensure!(
        resp.created(),
        "expected a created response, got {:?}",
        resp.0
    );
    ensure!(!resp.canceled(), "watch canceled at creation: {:?}", resp.0);
    Ok(resp.watch_id())
}

/// `(type, key, value, mod_revision)` of every event, received until `n` events came.
async fn events(
    stream: &mut WatchStream,
    n: usize,
) -> Result<Vec<(EventType, String, String, i64)>> {
    let mut out = Vec::new();
    while out.len() < n {
        let resp = recv(stream).await?;
        ensure!(!resp.canceled(), "watch canceled: {:?}", resp.0);
        for ev in resp.events() {
            let kv = ev.kv().context("event without kv")?;
            out.push((
                ev.event_type(),
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.mod_revision(),
            ));
        }
    }
    ensure!(out.len() == n, "expected {n} events, got {out:?}");
    Ok(out)
}

async fn put(client: &mut Client, key: &str, value: &str) -> Result<i64> {
    let resp = client.put(key, value, None).await?;
    Ok(resp.header().context("no header")?.revision())
}

async fn delete(client: &mut Client, key: &str) -> Result<i64> {
    let resp = client.delete(key, None).await?;
    Ok(resp.header().context("no header")?.revision())
}

/// Asserts that nothing arrives on the stream for a while.
async fn quiet(stream: &mut WatchStream, wait: Duration) -> Result<()> {
    match tokio::time::timeout(wait, stream.message()).await {
        Err(_) => Ok(()),
        Ok(other) => bail!("expected no watch response, got {other:?}"),
    }
}

async fn resume_from_old_revision(backend: Backend) -> TestResult {
    let server = Server::start(backend).await?;
    let mut client = server.client().await?;
    let mut revs = Vec::new();
    for i in 1..=5 {
        revs.push(put(&mut client, &format!("r/{i}"), &format!("v{i}")).await?);
    }
    put(&mut client, "other", "x").await?;
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revs[1]);
    let mut stream = client.watch("r/", Some(opts)).await?;
    created(&mut stream).await?;
    let got = events(&mut stream, 4).await?;
    let want: Vec<_> = (2..=5)
        .map(|i| {
            (
                EventType::Put,
                format!("r/{i}"),
                format!("v{i}"),
                revs[i - 1],
            )
        })
        .collect();
    assert_eq!(got, want, "replayed history");
    // The watch carries on with live events after the replay.
    let live = put(&mut client, "r/6", "v6").await?;
    let got = events(&mut stream, 1).await?;
    assert_eq!(got, vec![(EventType::Put, "r/6".into(), "v6".into(), live)]);
    Ok(())
}

async fn compacted_start_revision(backend: Backend) -> TestResult {
    let server = Server::start(backend).await?;
    let mut client = server.client().await?;
    let mut revs = Vec::new();
    for i in 0..6 {
        revs.push(put(&mut client, "c/k", &format!("v{i}")).await?);
    }
    let compact_rev = revs[3];
    client.compact(compact_rev, None).await?;

    // Below the compacted revision: a response carrying compact_revision, and cancelled.
    let opts = WatchOptions::new().with_start_revision(compact_rev - 1);
    let mut stream = client.watch("c/k", Some(opts)).await?;
    let mut saw = None;
    for _ in 0..3 {
        let resp = recv(&mut stream).await?;
        if resp.compact_revision() != 0 {
            saw = Some(resp);
            break;
        }
        ensure!(resp.created(), "unexpected response {:?}", resp.0);
    }
    let resp = saw.context("no response with compact_revision")?;
    assert_eq!(resp.compact_revision(), compact_rev, "compact_revision");
    assert!(
        resp.canceled(),
        "watch on a compacted revision must be canceled"
    );
    assert!(resp.events().is_empty(), "no events: {:?}", resp.0);

    // At exactly the compacted revision the history is still there.
    let opts = WatchOptions::new().with_start_revision(compact_rev);
    let mut stream = client.watch("c/k", Some(opts)).await?;
    created(&mut stream).await?;
    let got = events(&mut stream, 3).await?;
    let want: Vec<_> = (3..6)
        .map(|i| (EventType::Put, "c/k".to_owned(), format!("v{i}"), revs[i]))
        .collect();
    assert_eq!(got, want);
    Ok(())
}

async fn prev_kv(backend: Backend) -> TestResult {
    let server = Server::start(backend).await?;
    let mut client = server.client().await?;
    let r1 = put(&mut client, "p", "v1").await?;
    let mut live = client
        .watch("p", Some(WatchOptions::new().with_prev_key()))
        .await?;
    created(&mut live).await?;
    let r2 = put(&mut client, "p", "v2").await?;
    let r3 = delete(&mut client, "p").await?;

    // From history (start revision r1) and live: the same events, same prev_kv.
    let opts = WatchOptions::new().with_prev_key().with_start_revision(r1);
    let mut replay = client.watch("p", Some(opts)).await?;
    created(&mut replay).await?;

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let resp = recv(&mut live).await?;
        seen.extend(resp.events().iter().cloned());
    }
    let mut replayed = Vec::new();
    while replayed.len() < 3 {
        let resp = recv(&mut replay).await?;
        replayed.extend(resp.events().iter().cloned());
    }
    assert_eq!(replayed.len(), 3);
    assert!(replayed[0].prev_kv().is_none(), "first put has no prev_kv");
    assert_eq!(replayed[0].kv().unwrap().mod_revision(), r1);
    for evs in [&seen[..], &replayed[1..]] {
        let (put_ev, del_ev) = (&evs[0], &evs[1]);
        assert_eq!(put_ev.event_type(), EventType::Put);
        assert_eq!(put_ev.kv().unwrap().value(), b"v2");
        assert_eq!(put_ev.kv().unwrap().mod_revision(), r2);
        let prev = put_ev.prev_kv().context("put without prev_kv")?;
        assert_eq!(
            (
                prev.key(),
                prev.value(),
                prev.mod_revision(),
                prev.version()
            ),
            (&b"p"[..], &b"v1"[..], r1, 1)
        );
        assert_eq!(del_ev.event_type(), EventType::Delete);
        let kv = del_ev.kv().unwrap();
        assert_eq!(
            (kv.key(), kv.mod_revision(), kv.version()),
            (&b"p"[..], r3, 0)
        );
        let prev = del_ev.prev_kv().context("delete without prev_kv")?;
        assert_eq!(
            (prev.value(), prev.mod_revision(), prev.version()),
            (&b"v2"[..], r2, 2)
        );
    }
    Ok(())
}

async fn ordering_10000_events(backend: Backend) -> TestResult {
    const WRITERS: usize = 4;
    const CYCLES: usize = 250; // each cycle writes txns of 1, 2, 3 and 4 puts
    const TOTAL: usize = WRITERS * CYCLES * 10;

    let server = Server::start(backend).await?;
    let client = server.client().await?;
    let start = client
        .clone()
        .get("x", None)
        .await?
        .header()
        .unwrap()
        .revision()
        + 1;
    let opts = WatchOptions::new().with_prefix().with_start_revision(start);
    let mut stream = client.clone().watch("o/", Some(opts)).await?;
    created(&mut stream).await?;

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut kv = client.kv_client();
        writers.push(tokio::spawn(async move {
            let mut acked: Vec<(i64, BTreeSet<String>)> = Vec::new();
            for c in 0..CYCLES {
                for n in 1..=4 {
                    let keys: BTreeSet<String> =
                        (0..n).map(|j| format!("o/{w}/{c}/{n}/{j}")).collect();
                    let ops: Vec<TxnOp> = keys
                        .iter()
                        .map(|k| TxnOp::put(k.as_str(), "x", None))
                        .collect();
                    let resp = kv.txn(Txn::new().and_then(ops)).await?;
                    acked.push((resp.header().unwrap().revision(), keys));
                }
            }
            anyhow::Ok(acked)
        }));
    }

    let mut responses: Vec<Vec<(i64, String)>> = Vec::new();
    let mut total = 0;
    while total < TOTAL {
        let resp = recv(&mut stream).await?;
        ensure!(!resp.canceled(), "watch canceled: {:?}", resp.0);
        let evs: Vec<(i64, String)> = resp
            .events()
            .iter()
            .map(|e| {
                let kv = e.kv().unwrap();
                (
                    kv.mod_revision(),
                    String::from_utf8_lossy(kv.key()).into_owned(),
                )
            })
            .collect();
        total += evs.len();
        if !evs.is_empty() {
            responses.push(evs);
        }
    }
    ensure!(total == TOTAL, "got {total} events, expected {TOTAL}");
    quiet(&mut stream, Duration::from_millis(300)).await?;

    let mut want: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for writer in writers {
        for (rev, keys) in writer.await?? {
            ensure!(
                want.insert(rev, keys).is_none(),
                "revision {rev} acknowledged twice"
            );
        }
    }
    let mut got: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    let mut response_of: HashMap<i64, usize> = HashMap::new();
    let mut last = 0;
    for (i, evs) in responses.iter().enumerate() {
        for (rev, key) in evs {
            ensure!(*rev >= last, "revision order broken: {rev} after {last}");
            last = *rev;
            let first = *response_of.entry(*rev).or_insert(i);
            ensure!(
                first == i,
                "events of revision {rev} split across responses {first} and {i}"
            );
            ensure!(
                got.entry(*rev).or_default().insert(key.clone()),
                "duplicate event {rev} {key}"
            );
        }
    }
    ensure!(
        got.len() == want.len(),
        "{} revisions watched, {} acknowledged",
        got.len(),
        want.len()
    );
    for (rev, keys) in &want {
        assert_eq!(got.get(rev), Some(keys), "events of revision {rev}");
    }
    let revs: Vec<i64> = want.keys().copied().collect();
    assert_eq!(revs.first(), Some(&start), "first revision");
    assert!(
        revs.windows(2).all(|w| w[1] == w[0] + 1),
        "acknowledged revisions have gaps"
    );
    Ok(())
}

async fn cancel(backend: Backend) -> TestResult {
    let server = Server::start(backend).await?;
    let mut client = server.client().await?;
    let mut stream = client.watch("c", None).await?;
    let id = created(&mut stream).await?;
    stream.cancel(id).await?;
    let resp = recv(&mut stream).await?;
    assert!(resp.canceled(), "cancel answered with {:?}", resp.0);
    assert_eq!(resp.watch_id(), id);
    put(&mut client, "c", "after-cancel").await?;
    quiet(&mut stream, Duration::from_secs(1)).await?;

    // The stream stays usable for new watches.
    stream.watch("c2", None).await?;
    let id2 = created(&mut stream).await?;
    let rev = put(&mut client, "c2", "v").await?;
    let resp = recv(&mut stream).await?;
    assert_eq!(resp.watch_id(), id2);
    assert_eq!(resp.events().len(), 1);
    assert_eq!(resp.events()[0].kv().unwrap().mod_revision(), rev);
    Ok(())
}

async fn many_watches_one_stream(backend: Backend) -> TestResult {
    const N: usize = 32;
    let server = Server::start(backend).await?;
    let mut client = server.client().await?;
    let mut stream = client
        .watch("m/", Some(WatchOptions::new().with_prefix()))
        .await?;
    let prefix_id = created(&mut stream).await?;
    let mut ids = Vec::new();
    for i in 0..N {
        stream.watch(format!("m/{i:02}"), None).await?;
        ids.push(created(&mut stream).await?);
    }
    let distinct: BTreeSet<i64> = ids.iter().copied().chain([prefix_id]).collect();
    assert_eq!(distinct.len(), N + 1, "watch ids must be distinct: {ids:?}");

    let mut revs = Vec::new();
    for i in 0..N {
        revs.push(put(&mut client, &format!("m/{i:02}"), &i.to_string()).await?);
    }
    let mut per_watch: BTreeMap<i64, Vec<(String, i64)>> = BTreeMap::new();
    let mut total = 0;
    while total < 2 * N {
        let resp = recv(&mut stream).await?;
        for ev in resp.events() {
            let kv = ev.kv().unwrap();
            per_watch.entry(resp.watch_id()).or_default().push((
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.mod_revision(),
            ));
            total += 1;
        }
    }
    quiet(&mut stream, Duration::from_millis(500)).await?;
    let all: Vec<(String, i64)> = (0..N).map(|i| (format!("m/{i:02}"), revs[i])).collect();
    assert_eq!(per_watch.get(&prefix_id), Some(&all), "prefix watch");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            per_watch.get(id),
            Some(&vec![all[i].clone()]),
            "watch {i} (id {id})"
        );
    }
    Ok(())
}

async fn progress_request(backend: Backend) -> TestResult {
    let server = Server::start(backend).await?;
    let mut client = server.client().await?;
    let mut stream = client.watch("pr/watched", None).await?;
    created(&mut stream).await?;
    let mut rev = 0;
    for i in 0..3 {
        rev = put(&mut client, "pr/unwatched", &i.to_string()).await?;
    }
    stream.request_progress().await?;
    let resp = recv(&mut stream).await?;
    assert!(
        resp.events().is_empty(),
        "progress carries no events: {:?}",
        resp.0
    );
    assert!(!resp.created() && !resp.canceled(), "{:?}", resp.0);
    assert_eq!(resp.compact_revision(), 0);
    assert_eq!(resp.header().unwrap().revision(), rev, "progress revision");
    Ok(())
}

async fn progress_notify_interval(backend: Backend) -> TestResult {
    let server = Server::start_with(
        backend,
        &["--experimental-watch-progress-notify-interval", "1s"],
    )
    .await?;
    let mut client = server.client().await?;
    let opts = WatchOptions::new().with_progress_notify();
    let mut stream = client.watch("pn/watched", Some(opts)).await?;
    created(&mut stream).await?;
    let rev = put(&mut client, "pn/unwatched", "x").await?;
    // Two notifications within a few intervals, both at the current revision.
    for _ in 0..2 {
        let resp = tokio::time::timeout(Duration::from_secs(5), recv(&mut stream))
            .await
            .context("no progress notification within 5s")??;
        assert!(resp.events().is_empty(), "{:?}", resp.0);
        assert!(!resp.created() && !resp.canceled(), "{:?}", resp.0);
        assert_eq!(resp.header().unwrap().revision(), rev, "notified revision");
    }
    Ok(())
}

async fn filters(backend: Backend) -> TestResult {
    let server = Server::start(backend).await?;
    let mut client = server.client().await?;
    let nop = WatchOptions::new()
        .with_prefix()
        .with_filters([WatchFilterType::NoPut]);
    let mut no_put = client.watch("f/", Some(nop)).await?;
    created(&mut no_put).await?;
    let nod = WatchOptions::new()
        .with_prefix()
        .with_filters([WatchFilterType::NoDelete]);
    let mut no_delete = client.watch("f/", Some(nod)).await?;
    created(&mut no_delete).await?;

    let r1 = put(&mut client, "f/1", "a").await?;
    let r2 = delete(&mut client, "f/1").await?;
    let r3 = put(&mut client, "f/2", "b").await?;
    let r4 = delete(&mut client, "f/2").await?;

    let got = events(&mut no_put, 2).await?;
    assert_eq!(
        got,
        vec![
            (EventType::Delete, "f/1".into(), String::new(), r2),
            (EventType::Delete, "f/2".into(), String::new(), r4),
        ],
        "NOPUT"
    );
    let got = events(&mut no_delete, 2).await?;
    assert_eq!(
        got,
        vec![
            (EventType::Put, "f/1".into(), "a".into(), r1),
            (EventType::Put, "f/2".into(), "b".into(), r3),
        ],
        "NODELETE"
    );
    quiet(&mut no_put, Duration::from_millis(300)).await?;
    quiet(&mut no_delete, Duration::from_millis(300)).await?;
    Ok(())
}
