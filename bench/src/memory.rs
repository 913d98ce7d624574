//! `bench watch-memory`: resident memory per idle watcher, etcd vs kvstore. Starts a
//! one-member cluster of each, reads the member's RSS, opens `--watchers` watches on one
//! prefix spread over `--streams` streams, waits for every confirmation, and reads the
//! RSS again: (after - before) / watchers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use etcd_client::WatchOptions;

use crate::clients;
use crate::cluster::{Cluster, System, kvstore_binary};

#[derive(Debug, Args)]
pub struct MemoryArgs {
    #[arg(long, default_value_t = 10_000)]
    pub watchers: usize,
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    #[arg(long)]
    pub kvstore_bin: Option<PathBuf>,
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
}

fn rss_bytes(pid: u32) -> Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("read /proc status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS")?
        .parse()
        .context("malformed VmRSS")?;
    Ok(kb * 1024)
}

/// Bytes of RSS per watcher for one system.
async fn measure(
    system: System,
    binary: &std::path::Path,
    args: &MemoryArgs,
) -> Result<(u64, u64, f64)> {
    let cluster = Cluster::start(system, binary, 1)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pid = cluster.pid(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_bytes(pid)?;
    let client = clients::connect_one(&cluster.endpoints[0]).await?;
    let mut keep = Vec::new();
    let per_stream = args.watchers.div_ceil(args.streams.max(1));
    let mut opened = 0;
    while opened < args.watchers {
        let n = per_stream.min(args.watchers - opened);
        let mut wc = client.watch_client();
        let options = WatchOptions::new().with_prefix();
        let mut stream = wc.watch("/mem/", Some(options.clone())).await?;
        for _ in 1..n {
            stream.watch("/mem/", Some(options.clone())).await?;
        }
        let (sender, mut answers) = stream.split();
        let mut created = 0;
        while created < n {
            let answer = tokio::time::timeout(Duration::from_secs(20), answers.message())
                .await
                .context("watch creation timed out")??
                .context("stream closed")?;
            if answer.canceled() {
                bail!("watch canceled: {}", answer.cancel_reason());
            }
            created += usize::from(answer.created());
        }
        keep.push((sender, answers));
        opened += n;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_bytes(pid)?;
    drop(keep);
    Ok((
        before,
        after,
        after.saturating_sub(before) as f64 / args.watchers as f64,
    ))
}

pub async fn run(args: &MemoryArgs) -> Result<()> {
    let kvstore = kvstore_binary(args.kvstore_bin.as_deref())?;
    let etcd = measure(System::Etcd, &args.etcd_bin, args).await?;
    let ours = measure(System::Kvstore, &kvstore, args).await?;
    println!(
        "| system | RSS before (MiB) | RSS with {} watchers (MiB) | bytes per watcher |",
        args.watchers
    );
    println!("| --- | --- | --- | --- |");
    for (name, (before, after, per)) in [("etcd 3.4.23", etcd), ("kvstore", ours)] {
        println!(
            "| {name} | {:.1} | {:.1} | {per:.0} |",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0
        );
    }
    println!("\nRatio (kvstore / etcd): {:.2}", ours.2 / etcd.2);
    Ok(())
}
