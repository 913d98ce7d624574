//! `chaos`: the soak run. Starts a `kvstore` cluster, runs the recorded workload under
//! seeded faults for `--duration`, checks everything, prints operations, faults and
//! anomalies, and exits non-zero on any anomaly. A failure is replayed with its seed.

use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use robust::nemesis::Fault;
use robust::run::{RunConfig, run};

#[derive(Parser, Debug)]
#[command(about = "Robustness soak of a kvstore cluster under seeded faults")]
struct Args {
    /// How long the workload and the faults run, e.g. `10m`, `90s`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the workload and the fault schedule (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Members (3 or 5).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Comma-separated faults (default: all): kill-leader, kill-random, pause,
    /// isolate-leader, minority-split, delay-links, slow-disk, restart-all, wipe-readd.
    #[arg(long)]
    faults: Option<String>,
    #[arg(long, default_value_t = 4)]
    kv_clients: usize,
    #[arg(long, default_value_t = 6)]
    keys: usize,
    #[arg(long, default_value_t = 2)]
    watchers: usize,
    #[arg(long, default_value_t = 2)]
    lease_clients: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let faults = match &args.faults {
        None => Fault::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|f| Fault::parse(f.trim()).ok_or_else(|| anyhow::anyhow!("unknown fault {f:?}")))
            .collect::<anyhow::Result<_>>()?,
    };
    println!(
        "chaos: seed {seed}, {} members, {:?}, faults {:?}",
        args.members,
        args.duration,
        faults.iter().map(|f| f.name()).collect::<Vec<_>>()
    );
    let mut config = RunConfig::new(seed, args.duration, &faults);
    config.cluster.size = args.members;
    config.kv_clients = args.kv_clients;
    config.keys = args.keys;
    config.watchers = args.watchers;
    config.lease_clients = args.lease_clients;
    config.verbose = true;
    let report = match run(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chaos: seed {seed}: {e:#}");
            std::process::exit(2);
        }
    };
    println!("{report}");
    if !report.anomalies.is_empty() {
        bail!(
            "{} anomalies; replay with --seed {seed}",
            report.anomalies.len()
        );
    }
    Ok(())
}
