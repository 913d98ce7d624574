//! `bench failover`: the time from killing the leader (SIGKILL) to the first write that
//! was issued after the kill and acknowledged, repeated and summarised by the median,
//! for real etcd and for kvstore with the same heartbeat and election timeouts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use crate::clients;
use crate::cluster::{Cluster, System, kvstore_binary};

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// Leader kills per system.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    #[arg(long)]
    pub kvstore_bin: Option<PathBuf>,
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// Append the result to this markdown file (e.g. bench/RESULTS.md).
    #[arg(long)]
    pub write: Option<PathBuf>,
}

/// Milliseconds from kill to first acknowledged new write, one per round.
async fn measure(system: System, binary: &std::path::Path, rounds: usize) -> Result<Vec<f64>> {
    let mut cluster = Cluster::start(system, binary, 3)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut samples = Vec::new();
    for round in 0..rounds {
        let leader = clients::find_leader(&cluster.endpoints).await?;
        let index = cluster
            .endpoints
            .iter()
            .position(|e| *e == leader)
            .context("leader not among the endpoints")?;
        let survivors: Vec<String> = cluster
            .endpoints
            .iter()
            .filter(|e| **e != leader)
            .cloned()
            .collect();
        let mut writers = Vec::new();
        for endpoint in &survivors {
            writers.push(clients::connect_one(endpoint).await?);
        }
        // Warm the connections so the measurement is of the election, not of dialing.
        for w in &mut writers {
            w.put("failover-warm", "x", None).await?;
        }
        let killed_at = Instant::now();
        cluster.kill(index);
        let mut n = 0u64;
        let elapsed = loop {
            let count = writers.len();
            let w = &mut writers[(n as usize) % count];
            n += 1;
            let put = tokio::time::timeout(
                Duration::from_millis(300),
                w.put(format!("failover-{round}-{n}"), "v", None),
            );
            if let Ok(Ok(_)) = put.await {
                break killed_at.elapsed();
            }
            if killed_at.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("{system}: no write acknowledged within 60 s of killing the leader");
            }
        };
        samples.push(elapsed.as_secs_f64() * 1000.0);
        cluster.restart(index).await?;
        // Let the restarted member catch up before the next kill.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(samples)
}

fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let mid = s.len() / 2;
    if s.len().is_multiple_of(2) {
        (s[mid - 1] + s[mid]) / 2.0
    } else {
        s[mid]
    }
}

pub async fn run(args: &FailoverArgs) -> Result<()> {
    let kvstore = kvstore_binary(args.kvstore_bin.as_deref())?;
    let etcd = measure(System::Etcd, &args.etcd_bin, args.rounds).await?;
    let ours = measure(System::Kvstore, &kvstore, args.rounds).await?;
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let table = format!(
        "| system | median ms | min ms | max ms | samples (ms) |\n| --- | --- | --- | --- | --- |\n\
         | etcd 3.4.23 | {:.0} | {:.0} | {:.0} | {} |\n| kvstore | {:.0} | {:.0} | {:.0} | {} |\n\n\
         Ratio of medians (kvstore / etcd): {:.2}\n",
        median(&etcd),
        etcd.iter().cloned().fold(f64::INFINITY, f64::min),
        etcd.iter().cloned().fold(0.0, f64::max),
        fmt(&etcd),
        median(&ours),
        ours.iter().cloned().fold(f64::INFINITY, f64::min),
        ours.iter().cloned().fold(0.0, f64::max),
        fmt(&ours),
        median(&ours) / median(&etcd),
    );
    print!("{table}");
    if let Some(path) = &args.write {
        let section = format!(
            "\n## Leader failover: kill -9 of the leader to the first acknowledged new write\n\n\
             - command: `bench failover --rounds {} --write {}`\n\
             - both with 3 members, heartbeat 100 ms, election timeout 1000 ms (etcd's defaults; kvstore uses the same flags); writes go to the two survivors with a 300 ms timeout per attempt\n\n{table}",
            args.rounds,
            path.display()
        );
        let mut existing = std::fs::read_to_string(path).unwrap_or_default();
        existing.push_str(&section);
        std::fs::write(path, existing).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
