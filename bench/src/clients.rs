//! Connections and the closed-loop driver shared by every workload: `--conns` gRPC
//! connections spread over the endpoints (or only the leader's, for
//! `--target-leader`), `--clients` tasks sharing them, and a counter that hands out
//! exactly `--total` operations among the tasks.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_client::{Client, ConnectOptions};

use crate::report::Recorder;

/// Time limit of one request; a request that takes longer counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to connect and how many connections and client tasks to use.
#[derive(Debug, Clone)]
pub struct Target {
    /// Client endpoints (`host:port` or URLs).
    pub endpoints: Vec<String>,
    /// Number of gRPC connections.
    pub conns: usize,
    /// Number of concurrent client tasks (each has one request in flight).
    pub clients: usize,
}

impl Target {
    /// Checks the shape of the target before anything connects.
    pub fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            bail!("--endpoints is empty");
        }
        if self.conns == 0 || self.clients == 0 {
            bail!("--conns and --clients must be at least 1");
        }
        Ok(())
    }

    /// The same target, restricted to the current leader's endpoint.
    pub async fn leader_only(&self) -> Result<Target> {
        let leader = find_leader(&self.endpoints).await?;
        Ok(Target {
            endpoints: vec![leader],
            ..self.clone()
        })
    }
}

/// TLS settings for `https://` endpoints (`--cacert`, `--cert`, `--key`), set once at
/// startup.
static TLS: std::sync::OnceLock<etcd_client::TlsOptions> = std::sync::OnceLock::new();

/// Reads the CA and the optional client certificate used for every `https://` endpoint.
pub fn set_tls(
    ca: &std::path::Path,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<()> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let mut tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
    if let (Some(cert), Some(key)) = (cert, key) {
        tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
    }
    TLS.set(tls)
        .map_err(|_| anyhow::anyhow!("TLS settings given twice"))
}

/// Connects to one endpoint (one HTTP/2 connection).
pub async fn connect_one(endpoint: &str) -> Result<Client> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    if endpoint.starts_with("https://")
        && let Some(tls) = TLS.get()
    {
        options = options.with_tls(tls.clone());
    }
    Client::connect([endpoint], Some(options))
        .await
        .with_context(|| format!("connect to {endpoint}"))
}

/// Opens `target.conns` connections, connection `i` to endpoint `i mod n`, so the load
/// spreads evenly over the members as etcd's own benchmark tool spreads it.
pub async fn connect(target: &Target) -> Result<Vec<Client>> {
    target.validate()?;
    let mut conns = Vec::with_capacity(target.conns);
    for i in 0..target.conns {
        conns.push(connect_one(&target.endpoints[i % target.endpoints.len()]).await?);
    }
    Ok(conns)
}

/// The endpoint of the member that is the Raft leader, found by asking each endpoint
/// for its status.
pub async fn find_leader(endpoints: &[String]) -> Result<String> {
    let mut last_error = None;
    for endpoint in endpoints {
        let status = async {
            let mut client = connect_one(endpoint).await?;
            tokio::time::timeout(REQUEST_TIMEOUT, client.status())
                .await
                .context("status timed out")?
                .context("status")
        }
        .await;
        match status {
            Ok(status) => {
                let member_id = status.header().map(|h| h.member_id()).unwrap_or(0);
                if status.leader() != 0 && status.leader() == member_id {
                    return Ok(endpoint.clone());
                }
            }
            Err(e) => last_error = Some(e),
        }
    }
    match last_error {
        Some(e) => Err(e.context("no endpoint reported itself as leader")),
        None => bail!("no endpoint of {endpoints:?} reported itself as leader"),
    }
}

/// Hands out operation numbers `0..total` to competing client tasks.
#[derive(Debug)]
pub struct OpCounter {
    next: AtomicU64,
    total: u64,
}

impl OpCounter {
    /// A counter for `total` operations.
    pub fn new(total: u64) -> Self {
        Self {
            next: AtomicU64::new(0),
            total,
        }
    }

    /// The next operation number, or `None` once all `total` have been handed out.
    pub fn next(&self) -> Option<u64> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n < self.total).then_some(n)
    }
}

/// Runs `clients` tasks made by `task(client_index, counter)` until the counter is
/// exhausted, and returns their merged recorders and the wall time from the first
/// task's start to the last task's end.
pub async fn run_clients<F, Fut>(
    clients: usize,
    total: u64,
    mut task: F,
) -> Result<(Recorder, Duration)>
where
    F: FnMut(usize, Arc<OpCounter>) -> Fut,
    Fut: Future<Output = Recorder> + Send + 'static,
{
    let counter = Arc::new(OpCounter::new(total));
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(task(i, counter.clone())))
        .collect();
    let mut merged = Recorder::new();
    for handle in handles {
        merged.merge(&handle.await.context("client task panicked")?);
    }
    Ok((merged, started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_hands_out_each_number_once() {
        let c = OpCounter::new(3);
        assert_eq!(c.next(), Some(0));
        assert_eq!(c.next(), Some(1));
        assert_eq!(c.next(), Some(2));
        assert_eq!(c.next(), None);
        assert_eq!(c.next(), None);
    }

    #[test]
    fn empty_target_is_rejected() {
        let t = Target {
            endpoints: vec![],
            conns: 1,
            clients: 1,
        };
        assert!(t.validate().is_err());
        let t = Target {
            endpoints: vec!["127.0.0.1:2379".into()],
            conns: 0,
            clients: 1,
        };
        assert!(t.validate().is_err());
    }
}
