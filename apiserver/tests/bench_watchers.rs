//! Load measurement (ignored by default; run with `cargo test -p apiserver --test
//! bench_watchers -- --ignored --nocapture`): 1,000 watchers of pods over 10 HTTP/2
//! connections while writers create pods; reports events per second delivered by the
//! apiserver to all watchers, and the p50/p99 latency of the creates under that load.
//! The numbers go to bench/RESULTS.md.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Cluster};
use serde_json::json;

const WATCHERS: usize = 1000;
const CONNECTIONS: usize = 10;
const WRITES: usize = 400;
const WRITERS: usize = 8;

async fn run(backend: Backend) -> anyhow::Result<()> {
    let c = Cluster::start_with_args(backend, 1, &["--watch-buffer-events", "10000"]).await?;
    let url = format!("{}/api/v1/namespaces/default/pods?watch=1", c.url());
    let clients: Vec<reqwest::Client> = (0..CONNECTIONS).map(|_| c.client()).collect();
    let mut watchers = Vec::new();
    for i in 0..WATCHERS {
        let resp = clients[i % CONNECTIONS].get(&url).send().await?;
        anyhow::ensure!(resp.status().is_success(), "watch {i}: {}", resp.status());
        watchers.push(tokio::spawn(async move {
            let mut resp = resp;
            let mut lines = 0usize;
            while lines < WRITES {
                match tokio::time::timeout(Duration::from_secs(120), resp.chunk()).await {
                    Ok(Ok(Some(b))) => lines += b.iter().filter(|x| **x == b'\n').count(),
                    _ => break,
                }
            }
            (lines, Instant::now())
        }));
    }
    let start = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let http = c.client();
        let base = format!("{}/api/v1/namespaces/default/pods", c.url());
        writers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (w..WRITES).step_by(WRITERS) {
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}")},
                                 "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
                let t = Instant::now();
                let r = http.post(&base).json(&pod).send().await;
                lat.push(t.elapsed());
                if !r.map(|r| r.status().is_success()).unwrap_or(false) {
                    return Err(anyhow::anyhow!("write {i} failed"));
                }
            }
            Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for w in writers {
        lat.extend(w.await??);
    }
    let writes_done = start.elapsed();
    let mut events = 0usize;
    let mut last = start;
    for w in watchers {
        let (n, t) = w.await?;
        events += n;
        last = last.max(t);
    }
    let elapsed = last.duration_since(start);
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    println!(
        "RESULT backend={} watchers={WATCHERS} writes={WRITES} writers={WRITERS} events={events} \
         elapsed_s={:.2} events_per_s={:.0} writes_done_s={:.2} create_p50_ms={:.1} create_p99_ms={:.1}",
        backend.name(),
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        writes_done.as_secs_f64(),
        p(0.50).as_secs_f64() * 1000.0,
        p(0.99).as_secs_f64() * 1000.0,
    );
    assert_eq!(events, WATCHERS * WRITES, "every watcher gets every event");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load measurement; run explicitly"]
async fn bench_1000_watchers_kvstore() -> anyhow::Result<()> {
    run(Backend::Kvstore).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load measurement; run explicitly"]
async fn bench_1000_watchers_etcd() -> anyhow::Result<()> {
    run(Backend::Etcd).await
}
