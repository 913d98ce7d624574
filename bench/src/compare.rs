//! `bench compare`: starts a real etcd cluster, runs a fixed set of workloads against
//! it, stops it, then does the same with a `kvstore` cluster, and prints one table with
//! both figures and their ratio (kvstore / etcd). `--write FILE` records the table with
//! the exact command, the machine and the date.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;

use crate::clients::Target;
use crate::cluster::{Cluster, StartError, System, kvstore_binary};
use crate::lease::{self, LeaseArgs};
use crate::put::{self, KeyArgs, PutArgs};
use crate::range::{self, Consistency, RangeArgs};
use crate::report::{Report, human, markdown_table, ratio};
use crate::txn::{self, TxnPutArgs};
use crate::watch::{self, WatchArgs};

/// Options of `bench compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// The etcd server binary.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// The kvstore binary (default: $CARGO_TARGET_DIR/release/kvstore, else next to
    /// this program).
    #[arg(long)]
    pub kvstore_bin: Option<PathBuf>,
    /// Members of the etcd cluster.
    #[arg(long, default_value_t = 3)]
    pub etcd_members: usize,
    /// Members of the kvstore cluster; if the binary refuses a multi-member cluster,
    /// the comparison falls back to one member and says so.
    #[arg(long, default_value_t = 3)]
    pub kvstore_members: usize,
    /// Puts of the one-client put workload.
    #[arg(long, default_value_t = 2_000)]
    pub put_single_total: u64,
    /// Puts of the many-client put workload.
    #[arg(long, default_value_t = 50_000)]
    pub put_total: u64,
    /// Clients of the many-client put and txn-put workloads.
    #[arg(long, default_value_t = 256)]
    pub put_clients: usize,
    /// Reads of each range workload.
    #[arg(long, default_value_t = 50_000)]
    pub range_total: u64,
    /// Clients of the range workloads.
    #[arg(long, default_value_t = 64)]
    pub range_clients: usize,
    /// Transactions of the txn-put workload.
    #[arg(long, default_value_t = 20_000)]
    pub txn_total: u64,
    /// Keep-alives of the lease workload (64 clients).
    #[arg(long, default_value_t = 20_000)]
    pub lease_total: u64,
    /// Watchers of the watch workload.
    #[arg(long, default_value_t = 1_000)]
    pub watchers: usize,
    /// Streams of the watch workload.
    #[arg(long, default_value_t = 10)]
    pub watch_streams: usize,
    /// Puts of the watch workload.
    #[arg(long, default_value_t = 300)]
    pub watch_puts: u64,
    /// Write the table, the command, the machine and the date to this markdown file.
    #[arg(long)]
    pub write: Option<PathBuf>,
}

/// One workload of the comparison, with its load shape.
#[derive(Debug, Clone)]
enum Workload {
    Put(PutArgs),
    Range(RangeArgs),
    TxnPut(TxnPutArgs),
    Lease(LeaseArgs),
    Watch(WatchArgs),
}

/// A workload with its name in the table and its connections and clients.
#[derive(Debug, Clone)]
struct Job {
    label: String,
    conns: usize,
    clients: usize,
    workload: Workload,
}

/// Connections for `clients` clients: one per 8 clients, at least one.
fn conns_for(clients: usize) -> usize {
    clients.div_ceil(8).max(1)
}

fn jobs(args: &CompareArgs) -> Vec<Job> {
    // etcd's published benchmark shape: 8-byte keys, 256-byte values, writes to the
    // leader; sequential keys over a key space large enough not to repeat much.
    let keys = KeyArgs {
        key_size: 8,
        key_space_size: 100_000,
        sequential_keys: true,
    };
    let put = |total| PutArgs {
        total,
        keys: keys.clone(),
        val_size: 256,
        target_leader: true,
    };
    let range = |consistency| RangeArgs {
        key: "foo".to_owned(),
        end: None,
        consistency,
        total: args.range_total,
        no_prepare: false,
    };
    let job = |label: String, clients: usize, workload| Job {
        label,
        conns: conns_for(clients),
        clients,
        workload,
    };
    vec![
        job(
            "put, 1 client".to_owned(),
            1,
            Workload::Put(put(args.put_single_total)),
        ),
        job(
            format!("put, {} clients", args.put_clients),
            args.put_clients,
            Workload::Put(put(args.put_total)),
        ),
        job(
            format!("range l, {} clients", args.range_clients),
            args.range_clients,
            Workload::Range(range(Consistency::L)),
        ),
        job(
            format!("range s, {} clients", args.range_clients),
            args.range_clients,
            Workload::Range(range(Consistency::S)),
        ),
        job(
            format!("txn-put, {} clients", args.put_clients),
            args.put_clients,
            Workload::TxnPut(TxnPutArgs {
                total: args.txn_total,
                txn_ops: 1,
                keys: keys.clone(),
                val_size: 256,
                target_leader: true,
            }),
        ),
        job(
            "lease-keepalive, 64 clients".to_owned(),
            64,
            Workload::Lease(LeaseArgs {
                total: args.lease_total,
                ttl_s: 600,
            }),
        ),
        Job {
            label: format!(
                "watch, {} watchers / {} streams",
                args.watchers, args.watch_streams
            ),
            conns: args.watch_streams,
            clients: 1,
            workload: Workload::Watch(WatchArgs {
                watchers: args.watchers,
                streams: args.watch_streams,
                puts: args.watch_puts,
                put_clients: 10,
                prefix: "/bench-watch/".to_owned(),
                val_size: 32,
            }),
        },
    ]
}

async fn run_job(endpoints: &[String], job: &Job) -> Result<Report> {
    let target = Target {
        endpoints: endpoints.to_vec(),
        conns: job.conns,
        clients: job.clients,
    };
    let mut report = match &job.workload {
        Workload::Put(a) => put::run(&target, a).await,
        Workload::Range(a) => range::run(&target, a).await,
        Workload::TxnPut(a) => txn::run(&target, a).await,
        Workload::Lease(a) => lease::run(&target, a).await,
        Workload::Watch(a) => watch::run(&target, a).await,
    }?;
    report.workload.clone_from(&job.label);
    Ok(report)
}

/// What one system did: its cluster size and a report (or an error) per job.
#[derive(Debug)]
struct SystemRun {
    members: usize,
    results: Vec<Result<Report, String>>,
}

async fn run_system(
    system: System,
    binary: &Path,
    members: usize,
    jobs: &[Job],
) -> Result<SystemRun> {
    eprintln!(
        "== starting {members}-member {system} ({})",
        binary.display()
    );
    let cluster = match Cluster::start(system, binary, members).await {
        Ok(cluster) => cluster,
        Err(e) => return Err(anyhow::anyhow!("{system}: {e}")),
    };
    run_on(cluster, jobs).await
}

async fn run_on(cluster: Cluster, jobs: &[Job]) -> Result<SystemRun> {
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        eprintln!("-- {}: {}", cluster.system, job.label);
        let result = run_job(&cluster.endpoints, job).await;
        match &result {
            Ok(report) => eprint!("{report}"),
            Err(e) => eprintln!("   failed: {e:#}"),
        }
        results.push(result.map_err(|e| format!("{e:#}")));
    }
    Ok(SystemRun {
        members: cluster.size(),
        results,
    })
}

/// Runs the comparison, prints the table and writes the file if asked.
pub async fn run(args: &CompareArgs, json: bool) -> Result<()> {
    let jobs = jobs(args);
    let kvstore_bin = kvstore_binary(args.kvstore_bin.as_deref())?;

    let etcd = run_system(System::Etcd, &args.etcd_bin, args.etcd_members, &jobs).await?;

    eprintln!(
        "== starting {}-member kvstore ({})",
        args.kvstore_members,
        kvstore_bin.display()
    );
    let mut fallback_from = None;
    let cluster = match Cluster::start(System::Kvstore, &kvstore_bin, args.kvstore_members).await {
        Ok(cluster) => cluster,
        Err(StartError::MemberExited { member, log }) if args.kvstore_members > 1 => {
            eprintln!(
                "!! kvstore refused a {}-member cluster ({member}: {log}); falling back to 1 member",
                args.kvstore_members
            );
            fallback_from = Some(args.kvstore_members);
            Cluster::start(System::Kvstore, &kvstore_bin, 1)
                .await
                .map_err(|e| anyhow::anyhow!("kvstore: {e}"))?
        }
        Err(e) => return Err(anyhow::anyhow!("kvstore: {e}")),
    };
    let kvstore = run_on(cluster, &jobs).await?;

    let headline = headline(etcd.members, kvstore.members, fallback_from);
    let table = table(&jobs, &etcd, &kvstore);
    let failures = failures(&jobs, &etcd, &kvstore);
    if json {
        println!(
            "{}",
            serde_json::to_string(&json_summary(&headline, &etcd, &kvstore))?
        );
    } else {
        println!("\n{headline}\n\n{table}\n{RATIO_NOTE}");
        if !failures.is_empty() {
            println!("\n{failures}");
        }
    }
    if let Some(path) = &args.write {
        let top = results_document(&headline, &table, &failures, args, &kvstore_bin);
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let doc = keep_later_sections(&top, &old);
        std::fs::write(path, doc).with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Both systems' reports (or errors) for machines.
fn json_summary(headline: &str, etcd: &SystemRun, kvstore: &SystemRun) -> serde_json::Value {
    let side = |run: &SystemRun| {
        serde_json::json!({
            "members": run.members,
            "results": run.results.iter().map(|r| match r {
                Ok(report) => serde_json::to_value(report).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": e }),
            }).collect::<Vec<_>>(),
        })
    };
    serde_json::json!({ "headline": headline, "etcd": side(etcd), "kvstore": side(kvstore) })
}

const RATIO_NOTE: &str =
    "Ratio is kvstore / etcd: above 1 is better for throughput, worse for latency.";

/// The first line of the comparison: who ran with how many members, and a loud
/// warning when the clusters differ in size.
fn headline(etcd_members: usize, kvstore_members: usize, fallback_from: Option<usize>) -> String {
    let members = |n: usize| format!("{n} member{}", if n == 1 { "" } else { "s" });
    let kvstore = match fallback_from {
        Some(asked) => format!(
            "{} (it refused {asked}: Raft not built yet)",
            members(kvstore_members)
        ),
        None => members(kvstore_members),
    };
    let line = format!("kvstore: {kvstore} vs etcd: {}", members(etcd_members));
    if kvstore_members == etcd_members {
        line
    } else {
        format!("**{line} — NOT A FAIR COMPARISON**")
    }
}

/// One table row per figure of each job: throughput, p50, p99 (and for watch, the put
/// rate while watched), and errors.
fn table(jobs: &[Job], etcd: &SystemRun, kvstore: &SystemRun) -> String {
    type Figure = fn(&Report) -> Option<f64>;
    let mut rows = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let throughput_name = match job.workload {
            Workload::Watch(_) => "events/s",
            _ => "ops/s",
        };
        let mut figures: Vec<(&str, Figure)> = vec![
            (throughput_name, |r| Some(r.throughput_per_s)),
            ("p50 ms", |r| Some(r.latency_ms.p50)),
            ("p99 ms", |r| Some(r.latency_ms.p99)),
        ];
        if let Workload::Watch(_) = job.workload {
            figures.push(("p99.9 ms", |r| Some(r.latency_ms.p999)));
            figures.push(("puts/s while watched", |r| {
                r.extra.get("puts_per_s").copied()
            }));
        }
        figures.push(("errors", |r| {
            Some(r.errors as f64 + r.extra.get("put_errors").copied().unwrap_or(0.0))
        }));
        for (name, figure) in figures {
            let get = |run: &SystemRun| run.results[i].as_ref().ok().and_then(figure);
            let (e, k) = (get(etcd), get(kvstore));
            let cell = |v: Option<f64>, run: &SystemRun| match (v, &run.results[i]) {
                (Some(v), _) if name == "errors" => format!("{v}"),
                (Some(v), _) => human(v),
                (None, Err(_)) => "failed".to_owned(),
                (None, Ok(_)) => "-".to_owned(),
            };
            let r = if name == "errors" {
                "".to_owned()
            } else {
                ratio(k, e)
            };
            rows.push(vec![
                job.label.clone(),
                name.to_owned(),
                cell(e, etcd),
                cell(k, kvstore),
                r,
            ]);
        }
    }
    markdown_table(&["workload", "figure", "etcd", "kvstore", "ratio"], &rows)
}

/// The error message of every failed job, and the first error of jobs with errors.
fn failures(jobs: &[Job], etcd: &SystemRun, kvstore: &SystemRun) -> String {
    let mut out = String::new();
    for (system, run) in [("etcd", etcd), ("kvstore", kvstore)] {
        for (job, result) in jobs.iter().zip(&run.results) {
            match result {
                Err(e) => {
                    let _ = writeln!(out, "- {system}, {}: failed: {e}", job.label);
                }
                Ok(Report {
                    first_error: Some(e),
                    errors,
                    ..
                }) => {
                    let _ = writeln!(
                        out,
                        "- {system}, {}: {errors} errors, first: {e}",
                        job.label
                    );
                }
                Ok(_) => {}
            }
        }
    }
    out
}

/// Output of a command, trimmed; empty if it cannot run.
fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Cores, memory and the disk under the temporary directory, from /proc and `df`.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .map_or("unknown CPU".to_owned(), |m| m.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or("unknown".to_owned(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
        });
    let tmp = std::env::temp_dir();
    let df = command_output("df", &["-hT", &tmp.display().to_string()]);
    let disk = df
        .lines()
        .nth(1)
        .unwrap_or("unknown")
        .split_whitespace()
        .collect::<Vec<_>>();
    let disk = match disk.as_slice() {
        [dev, fstype, size, _used, avail, ..] => {
            format!(
                "{dev} ({fstype}, {size}, {avail} free) holding {}",
                tmp.display()
            )
        }
        _ => "unknown".to_owned(),
    };
    format!("{cores} cores ({model}), {mem} memory, disk {disk}")
}

fn results_document(
    headline: &str,
    table: &str,
    failures: &str,
    args: &CompareArgs,
    kvstore_bin: &Path,
) -> String {
    let command: Vec<String> = std::env::args().collect();
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let etcd_version = command_output(&args.etcd_bin.display().to_string(), &["--version"]);
    let etcd_version = etcd_version.lines().next().unwrap_or("unknown");
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
    let mut doc = String::new();
    let _ = writeln!(doc, "# kvstore vs etcd, side by side\n");
    let _ = writeln!(doc, "{headline}\n");
    let _ = writeln!(doc, "- date: {date}");
    let _ = writeln!(doc, "- command: `{}`", command.join(" "));
    let _ = writeln!(doc, "- machine: {}", machine());
    let _ = writeln!(
        doc,
        "- etcd: {etcd_version} (`{}`)",
        args.etcd_bin.display()
    );
    let _ = writeln!(
        doc,
        "- kvstore: `{}`{}",
        kvstore_bin.display(),
        if commit.is_empty() {
            String::new()
        } else {
            format!(" (built from commit {commit} plus any uncommitted changes)")
        }
    );
    let _ = writeln!(
        doc,
        "- load: clients run on the same machine as the servers; puts have 8-byte keys \
         (sequential over 100,000) and 256-byte values and go to the leader; reads spread over \
         all members; one connection per 8 clients; the two clusters run one after the other.\n"
    );
    let _ = writeln!(doc, "{table}\n{RATIO_NOTE}");
    if !failures.is_empty() {
        let _ = writeln!(doc, "\n## Errors\n\n{failures}");
    }
    doc
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::LatencySummary;

    fn report(throughput: f64, p99: f64) -> Report {
        Report {
            workload: "x".into(),
            ops: 10,
            errors: 0,
            elapsed_s: 1.0,
            throughput_per_s: throughput,
            latency_ms: LatencySummary {
                p50: p99 / 2.0,
                p99,
                ..LatencySummary::default()
            },
            first_error: None,
            extra: BTreeMap::new(),
        }
    }

    fn args() -> CompareArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: CompareArgs,
        }
        Wrapper::parse_from(["bench"]).args
    }

    #[test]
    fn the_table_has_both_figures_and_their_ratio() {
        let jobs: Vec<Job> = jobs(&args()).into_iter().take(1).collect();
        let etcd = SystemRun {
            members: 3,
            results: vec![Ok(report(1000.0, 2.0))],
        };
        let kvstore = SystemRun {
            members: 3,
            results: vec![Ok(report(500.0, 4.0))],
        };
        let t = table(&jobs, &etcd, &kvstore);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| workload | figure | etcd | kvstore | ratio |");
        assert_eq!(lines[2], "| put, 1 client | ops/s | 1,000 | 500 | 0.50 |");
        assert_eq!(
            lines[4],
            "| put, 1 client | p99 ms | 2.000 | 4.000 | 2.00 |"
        );
        assert_eq!(lines[5], "| put, 1 client | errors | 0 | 0 |  |");
    }

    #[test]
    fn a_failed_job_shows_as_failed() {
        let jobs: Vec<Job> = jobs(&args()).into_iter().take(1).collect();
        let etcd = SystemRun {
            members: 3,
            results: vec![Ok(report(1000.0, 2.0))],
        };
        let kvstore = SystemRun {
            members: 1,
            results: vec![Err("connection refused".into())],
        };
        let t = table(&jobs, &etcd, &kvstore);
        assert!(
            t.contains("| put, 1 client | ops/s | 1,000 | failed | - |"),
            "{t}"
        );
        assert!(failures(&jobs, &etcd, &kvstore).contains("kvstore, put, 1 client: failed"));
    }

    #[test]
    fn unequal_clusters_are_called_out() {
        let h = headline(3, 1, Some(3));
        assert_eq!(
            h,
            "**kvstore: 1 member (it refused 3: Raft not built yet) vs etcd: 3 members \
             — NOT A FAIR COMPARISON**"
        );
        assert_eq!(
            headline(3, 3, None),
            "kvstore: 3 members vs etcd: 3 members"
        );
    }

    #[test]
    fn the_default_jobs_cover_every_workload() {
        let jobs = jobs(&args());
        assert_eq!(jobs.len(), 7);
        assert_eq!(jobs[1].label, "put, 256 clients");
        assert_eq!(jobs[1].conns, 32);
        assert_eq!(jobs[2].label, "range l, 64 clients");
        assert_eq!(conns_for(1), 1);
    }
}

/// The new top section followed by every `## ` section of the old file: `--write`
/// replaces only the comparison table, never the other records in the file.
fn keep_later_sections(top: &str, old: &str) -> String {
    match old.find("\n## ") {
        Some(i) => format!("{}\n\n{}", top.trim_end(), &old[i + 1..]),
        None => top.to_string(),
    }
}

#[cfg(test)]
mod write_tests {
    use super::keep_later_sections;

    #[test]
    fn write_keeps_the_other_sections() {
        let old = "# t\n\nold table\n\n## Failover\n\nkept\n\n## TLS\n\nkept too\n";
        let new = keep_later_sections("# t\n\nnew table\n", old);
        assert_eq!(
            new,
            "# t\n\nnew table\n\n## Failover\n\nkept\n\n## TLS\n\nkept too\n"
        );
        assert_eq!(keep_later_sections("# t\n", ""), "# t\n");
    }
}
