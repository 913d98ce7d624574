//! `bench tls-cost`: what TLS costs. For etcd and for kvstore in turn, starts a plain
//! cluster and a TLS one (client and peer ports, client certificates required on both,
//! certificates from `kvstore certs`), runs the same put workload on each (256 clients
//! by default, writes to the leader, 8-byte sequential keys, 256-byte values) and prints
//! one table; `--write FILE` replaces (or appends) the file's "TLS cost" section.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::clients::{self, Target};
use crate::cluster::{Cluster, System, kvstore_binary};
use crate::put::{self, KeyArgs, PutArgs};
use crate::report::Report;

/// Heading of the section `--write` maintains.
const SECTION: &str = "## TLS cost: puts, plain vs TLS";

#[derive(Debug, Args)]
pub struct TlsCostArgs {
    /// The etcd server binary.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// The kvstore binary (default: $CARGO_TARGET_DIR/release/kvstore, else next to
    /// this program); also makes the certificates.
    #[arg(long)]
    pub kvstore_bin: Option<PathBuf>,
    /// Members of each cluster.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Puts per run.
    #[arg(long, default_value_t = 50_000)]
    pub total: u64,
    /// Concurrent clients (one connection per 8).
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Replace or append the TLS section of this Markdown file.
    #[arg(long)]
    pub write: Option<PathBuf>,
}

pub async fn run(args: &TlsCostArgs) -> Result<()> {
    let kvstore = kvstore_binary(args.kvstore_bin.as_deref())?;
    let certs = tempfile::tempdir().context("create a certificate directory")?;
    let members: Vec<String> = [System::Etcd, System::Kvstore]
        .iter()
        .flat_map(|s| (1..=args.members).map(move |i| format!("{s}-{i}")))
        .collect();
    let out = Command::new(&kvstore)
        .args(["certs", "--dir"])
        .arg(certs.path())
        .args(["--member", &members.join(","), "--client", "bench"])
        .output()
        .with_context(|| format!("run {} certs", kvstore.display()))?;
    if !out.status.success() {
        bail!(
            "kvstore certs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = certs.path();
    clients::set_tls(
        &dir.join("ca.pem"),
        Some(&dir.join("bench.pem")),
        Some(&dir.join("bench-key.pem")),
    )?;
    let put = PutArgs {
        total: args.total,
        keys: KeyArgs {
            key_size: 8,
            key_space_size: 100_000,
            sequential_keys: true,
        },
        val_size: 256,
        target_leader: true,
    };
    let mut rows = Vec::new();
    for (system, binary) in [(System::Etcd, &args.etcd_bin), (System::Kvstore, &kvstore)] {
        let mut pair = Vec::new();
        for tls in [false, true] {
            let cluster = if tls {
                Cluster::start_tls(system, binary, args.members, dir).await
            } else {
                Cluster::start(system, binary, args.members).await
            }
            .map_err(|e| anyhow::anyhow!("{system} cluster (tls: {tls}): {e}"))?;
            let target = Target {
                endpoints: cluster.endpoints.clone(),
                conns: args.clients.div_ceil(8).max(1),
                clients: args.clients,
            };
            let report = put::run(&target, &put).await?;
            eprintln!(
                "{system} {}: {:.0} puts/s, p99 {:.1} ms, {} errors",
                if tls { "TLS" } else { "plain" },
                report.throughput_per_s,
                report.latency_ms.p99,
                report.errors
            );
            pair.push(report);
        }
        rows.push((system, pair));
    }
    let doc = section(args, &kvstore, &rows);
    println!("{doc}");
    if let Some(path) = &args.write {
        write_section(path, &doc)?;
    }
    Ok(())
}

fn section(
    args: &TlsCostArgs,
    kvstore: &std::path::Path,
    rows: &[(System, Vec<Report>)],
) -> String {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut s = format!(
        "{SECTION}\n\n- date: {date}\n- command: `bench tls-cost --members {} --total {} --clients {}`\n\
         - binaries: `{}` and `{}`\n\
         - load: {} puts from {} clients (one connection per 8) to the leader, 8-byte \
         sequential keys, 256-byte values; TLS on client and peer ports with client \
         certificates required on both (ECDSA P-256 from `kvstore certs`)\n\n\
         | system | plain ops/s | TLS ops/s | TLS / plain | plain p99 ms | TLS p99 ms | errors |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
        args.members,
        args.total,
        args.clients,
        args.etcd_bin.display(),
        kvstore.display(),
        args.total,
        args.clients
    );
    for (system, pair) in rows {
        let (plain, tls) = (&pair[0], &pair[1]);
        s.push_str(&format!(
            "| {system} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} | {} |\n",
            plain.throughput_per_s,
            tls.throughput_per_s,
            tls.throughput_per_s / plain.throughput_per_s.max(1.0),
            plain.latency_ms.p99,
            tls.latency_ms.p99,
            plain.errors + tls.errors
        ));
    }
    s
}

/// Replaces the file's TLS section (up to the next `## ` heading) or appends it.
fn write_section(path: &std::path::Path, section: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match old.find(SECTION) {
        Some(start) => {
            let rest = &old[start + SECTION.len()..];
            let end = rest
                .find("\n## ")
                .map(|i| start + SECTION.len() + i + 1)
                .unwrap_or(old.len());
            format!("{}{section}\n{}", &old[..start], &old[end..])
        }
        None => format!(
            "{}\n{section}",
            old.trim_end_matches('\n').to_owned() + "\n"
        ),
    };
    std::fs::write(path, new).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_in_place_and_other_sections_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("R.md");
        std::fs::write(&path, "# R\n\n## A\n\na\n").unwrap();
        write_section(&path, &format!("{SECTION}\n\nfirst\n")).unwrap();
        std::fs::write(
            &path,
            std::fs::read_to_string(&path).unwrap() + "\n## B\n\nb\n",
        )
        .unwrap();
        write_section(&path, &format!("{SECTION}\n\nsecond\n")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("## A\n\na\n"), "{text}");
        assert!(text.contains("second") && !text.contains("first"), "{text}");
        assert!(text.contains("## B\n\nb\n"), "{text}");
    }
}
