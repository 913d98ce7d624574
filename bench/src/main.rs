//! `bench`: an etcd-style load generator for any etcd v3 endpoints — ours or real
//! etcd — and `bench compare`, which runs the same workloads against a real etcd
//! cluster and a `kvstore` cluster and prints both side by side. This file owns the
//! command line; each workload lives in its own module and talks to the servers only
//! through `etcd-client`.

mod clients;
mod cluster;
mod compare;
mod control_plane;
mod failover;
mod lease;
mod memory;
mod put;
mod range;
mod report;
mod tls;
mod txn;
mod watch;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::clients::Target;

/// etcd-style load generator and side-by-side comparison with real etcd.
#[derive(Debug, Parser)]
#[command(name = "bench", version)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: BenchCommand,
}

/// Options every workload takes.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// Client endpoints, comma separated.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    endpoints: Vec<String>,
    /// Number of gRPC connections, spread over the endpoints.
    #[arg(long, global = true, default_value_t = 1)]
    conns: usize,
    /// Number of concurrent clients (each with one request in flight).
    #[arg(long, global = true, default_value_t = 1)]
    clients: usize,
    /// Print the report as one line of JSON.
    #[arg(long, global = true)]
    json: bool,
    /// CA bundle to verify https:// endpoints with (as etcd's benchmark tool).
    #[arg(long, global = true)]
    cacert: Option<std::path::PathBuf>,
    /// Client certificate for https:// endpoints.
    #[arg(long, global = true)]
    cert: Option<std::path::PathBuf>,
    /// Client key for https:// endpoints. (Its clap id is not `key`: `range` has a
    /// positional `key`, and two args may not share an id.)
    #[arg(id = "tls_key", long = "key", global = true)]
    key: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Put keys.
    Put(put::PutArgs),
    /// Read a key or a range.
    Range(range::RangeArgs),
    /// Transactions that put keys.
    TxnPut(txn::TxnPutArgs),
    /// Keep leases alive.
    LeaseKeepalive(lease::LeaseArgs),
    /// Watchers on one prefix while keys are put under it.
    Watch(watch::WatchArgs),
    /// Start real etcd and kvstore clusters, run the same workloads on both and print
    /// one table.
    Compare(compare::CompareArgs),
    /// Time from killing the leader to the first acknowledged write, etcd vs kvstore.
    Failover(failover::FailoverArgs),
    /// Resident memory per idle watcher, etcd vs kvstore.
    WatchMemory(memory::MemoryArgs),
    /// Put throughput with and without TLS, etcd vs kvstore.
    TlsCost(tls::TlsCostArgs),
    /// Scheduler and controllers at scale: pods scheduled per second and a Deployment
    /// to Running, over simulated nodes, on etcd and on kvstore.
    ControlPlane(control_plane::ControlPlaneArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(ca) = &cli.global.cacert {
        clients::set_tls(ca, cli.global.cert.as_deref(), cli.global.key.as_deref())?;
    }
    let target = Target {
        endpoints: cli.global.endpoints.clone(),
        conns: cli.global.conns,
        clients: cli.global.clients,
    };
    let report = match &cli.command {
        BenchCommand::Put(args) => put::run(&target, args).await?,
        BenchCommand::Range(args) => range::run(&target, args).await?,
        BenchCommand::TxnPut(args) => txn::run(&target, args).await?,
        BenchCommand::LeaseKeepalive(args) => lease::run(&target, args).await?,
        BenchCommand::Watch(args) => watch::run(&target, args).await?,
        BenchCommand::Compare(args) => return compare::run(args, cli.global.json).await,
        BenchCommand::Failover(args) => return failover::run(args).await,
        BenchCommand::WatchMemory(args) => return memory::run(args).await,
        BenchCommand::TlsCost(args) => return tls::run(args).await,
        BenchCommand::ControlPlane(args) => return control_plane::run(args).await,
    };
    report::print(&report, cli.global.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_style_flags_parse() {
        let cli = Cli::parse_from([
            "bench",
            "--endpoints",
            "a:1,b:2",
            "--conns",
            "4",
            "--clients",
            "16",
            "put",
            "--total",
            "100",
            "--key-size",
            "8",
            "--val-size",
            "256",
            "--key-space-size",
            "1000",
            "--sequential-keys",
            "--target-leader",
        ]);
        assert_eq!(cli.global.endpoints, ["a:1", "b:2"]);
        assert_eq!((cli.global.conns, cli.global.clients), (4, 16));
        let BenchCommand::Put(put) = cli.command else {
            panic!("not put")
        };
        assert_eq!(put.total, 100);
        assert!(put.keys.sequential_keys && put.target_leader);
    }

    #[test]
    fn control_plane_flags() {
        let cli = Cli::parse_from([
            "bench",
            "control-plane",
            "--nodes",
            "10",
            "--pods",
            "100",
            "--replicas",
            "0",
            "--systems",
            "kvstore",
        ]);
        let BenchCommand::ControlPlane(cp) = cli.command else {
            panic!("not control-plane")
        };
        assert_eq!((cp.nodes, cp.pods, cp.replicas), (10, 100, 0));
        assert_eq!(cp.systems, ["kvstore"]);
        assert_eq!((cp.create_concurrency, cp.members), (64, 3));
    }

    #[test]
    fn range_consistency_and_global_flags_after_the_subcommand() {
        let cli = Cli::parse_from([
            "bench",
            "range",
            "--consistency",
            "s",
            "--clients",
            "64",
            "--json",
        ]);
        assert_eq!(cli.global.clients, 64);
        assert!(cli.global.json);
        let BenchCommand::Range(range) = cli.command else {
            panic!("not range")
        };
        assert_eq!(range.consistency, range::Consistency::S);
    }
}
