//! `bench lease-keepalive`: every client grants one lease, opens a keep-alive stream
//! for it, then sends keep-alive requests one at a time, each timed until its answer.

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::clients::{self, REQUEST_TIMEOUT, Target};
use crate::report::{Recorder, Report};

/// Options of `bench lease-keepalive`.
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// Number of keep-alive requests.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// TTL of each client's lease in seconds (long enough to outlive the run).
    #[arg(long, default_value_t = 600)]
    pub ttl_s: i64,
}

/// Runs the workload and returns its report.
pub async fn run(target: &Target, args: &LeaseArgs) -> Result<Report> {
    let conns = clients::connect(target).await?;
    // Grant the leases and open the streams before the clock starts.
    let mut streams = Vec::with_capacity(target.clients);
    for i in 0..target.clients {
        let mut lease = conns[i % conns.len()].lease_client();
        let granted = lease
            .grant(args.ttl_s, None)
            .await
            .context("grant a lease")?;
        let stream = lease
            .keep_alive(granted.id())
            .await
            .context("open a keep-alive stream")?;
        streams.push((granted.id(), stream));
    }
    let ids: Vec<i64> = streams.iter().map(|(id, _)| *id).collect();
    let mut streams: Vec<_> = streams.into_iter().map(Some).collect();
    let (recorder, elapsed) = clients::run_clients(target.clients, args.total, |i, counter| {
        let (id, (mut keeper, mut answers)) = streams[i].take().expect("one task per client");
        async move {
            let mut rec = Recorder::new();
            while counter.next().is_some() {
                let round_trip = async {
                    keeper.keep_alive().await?;
                    match answers.message().await? {
                        Some(answer) if answer.ttl() > 0 => Ok::<(), anyhow::Error>(()),
                        Some(_) => bail!("lease {id:x} expired"),
                        None => bail!("keep-alive stream closed"),
                    }
                };
                rec.time(REQUEST_TIMEOUT, round_trip).await;
            }
            rec
        }
    })
    .await?;
    // Leave no leases behind (best effort: they would expire after `--ttl-s` anyway).
    let mut lease = conns[0].lease_client();
    for id in ids {
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, lease.revoke(id)).await;
    }
    Ok(recorder.report("lease-keepalive", elapsed))
}
