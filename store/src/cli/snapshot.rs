//! `kvstore snapshot save|status|restore|list`: backups of a member's state. `save` talks
//! to one endpoint through etcd-client's Snapshot stream (so it also saves real etcd);
//! `status`, `restore` and `list` work on files (the format lives in `crate::backup`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};

use super::output::OutputFormat;
use super::{Ctx, grpc_error};
use crate::backup::{self, RestoreOptions, SnapshotInfo, SnapshotWriter};

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Stores a snapshot of one member's state to a file.
    Save { file: PathBuf },
    /// Shows revision, keys, size and hash of a snapshot file.
    Status { file: PathBuf },
    /// Restores a snapshot into a new, empty data directory for a new cluster member.
    Restore(RestoreArgs),
    /// Lists the scheduled snapshots in a directory (as written by `serve --snapshot-dir`).
    List {
        #[arg(long)]
        snapshot_dir: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    pub file: PathBuf,
    /// Name of the member this data dir is for.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Directory to create; must not exist or be empty. Default: NAME.kvstore.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The new cluster's members (`name=peerURL,...`), as `serve` will be given.
    #[arg(long)]
    pub initial_cluster: Option<String>,
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    #[arg(long, default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// Raise the revision by this much, so it never goes backwards for watchers.
    #[arg(long, default_value_t = 0)]
    pub bump_revision: i64,
    /// Mark every revision up to the restored one as compacted (use with --bump-revision).
    #[arg(long)]
    pub mark_compacted: bool,
}

pub async fn run(ctx: &Ctx, cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Save { file } => save(ctx, file).await,
        SnapshotCommand::Status { file } => {
            let info = backup::status(&file)?;
            print_info(ctx.format(), &[(file.display().to_string(), info)])
        }
        SnapshotCommand::Restore(args) => restore(args),
        SnapshotCommand::List { snapshot_dir } => {
            let mut rows = Vec::new();
            for f in backup::list(&snapshot_dir)? {
                let info = backup::status(&f)?;
                rows.push((f.display().to_string(), info));
            }
            print_info(ctx.format(), &rows)
        }
    }
}

async fn save(ctx: &Ctx, file: PathBuf) -> anyhow::Result<()> {
    let endpoints = &ctx.global.endpoints;
    if endpoints.len() != 1 {
        bail!("snapshot must be requested to one selected node, not multiple {endpoints:?}");
    }
    let mut client = ctx.client().await?;
    let mut stream = client.snapshot().await.map_err(grpc_error)?;
    let mut writer = SnapshotWriter::create(&file)?;
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal();
    let mut last_shown = Instant::now();
    let mut trailer: Option<Vec<u8>> = None;
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                writer.abort();
                return Err(grpc_error(e)).context("snapshot stream failed");
            }
        };
        // The server's last message carries the SHA-256 of everything before it.
        if msg.remaining_bytes() == 0 && msg.blob().len() == backup::HASH_LEN {
            trailer = Some(msg.blob().to_vec());
            continue;
        }
        if let Err(e) = writer.write(msg.blob()) {
            writer.abort();
            return Err(e.into());
        }
        if progress && last_shown.elapsed().as_millis() >= 100 {
            show_progress(writer.bytes, started);
            last_shown = Instant::now();
        }
    }
    let Some(hash) = trailer else {
        writer.abort();
        bail!("snapshot stream ended without its SHA-256 trailer (incomplete)");
    };
    let total = writer.finish(Some(&hash))?;
    if progress {
        show_progress(total, started);
        eprintln!();
    }
    println!("Snapshot saved at {}", file.display());
    Ok(())
}

fn show_progress(bytes: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    eprint!(
        "\r{:>10.1} MiB  {:>8.1} MiB/s",
        bytes as f64 / 1048576.0,
        bytes as f64 / 1048576.0 / secs
    );
}

fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.kvstore", args.name)));
    // The same checks `serve` makes, so a bad command fails before anything is written.
    let spec = args
        .initial_cluster
        .clone()
        .unwrap_or_else(|| format!("{}={}", args.name, args.initial_advertise_peer_urls));
    let members = crate::raft::parse_initial_cluster(&spec, &args.initial_cluster_token)?;
    let own = crate::raft::member_id(
        &args.initial_advertise_peer_urls,
        &args.initial_cluster_token,
    );
    if members.get(&own).is_none_or(|m| m.name != args.name) {
        bail!(
            "couldn't find local name {:?} with peer URL {} in --initial-cluster",
            args.name,
            args.initial_advertise_peer_urls
        );
    }
    let opts = RestoreOptions {
        bump_revision: args.bump_revision,
        mark_compacted: args.mark_compacted,
    };
    if opts.bump_revision < 0 {
        bail!("--bump-revision must not be negative");
    }
    let info = backup::restore(&args.file, &data_dir, &opts)?;
    println!(
        "restored snapshot {} (revision {}, {} keys) into {} for member {:?}; start it with `kvstore serve --name {} --data-dir {} --initial-cluster {} --initial-cluster-token {} --initial-cluster-state new ...`",
        args.file.display(),
        info.revision,
        info.total_keys,
        data_dir.display(),
        args.name,
        args.name,
        data_dir.display(),
        spec,
        args.initial_cluster_token
    );
    Ok(())
}

fn print_info(format: OutputFormat, rows: &[(String, SnapshotInfo)]) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            for (file, info) in rows {
                let mut v = serde_json::to_value(info)?;
                v["file"] = serde_json::Value::String(file.clone());
                println!("{v}");
            }
        }
        OutputFormat::Table => {
            let table_rows: Vec<Vec<String>> = rows
                .iter()
                .map(|(file, i)| {
                    vec![
                        file.clone(),
                        i.hash.clone(),
                        i.revision.to_string(),
                        i.total_keys.to_string(),
                        human(i.total_size),
                        i.version.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                super::output::table(
                    &[
                        "FILE",
                        "HASH",
                        "REVISION",
                        "TOTAL KEYS",
                        "TOTAL SIZE",
                        "VERSION"
                    ],
                    &table_rows
                )
            );
        }
        OutputFormat::Simple => {
            for (file, i) in rows {
                if rows.len() > 1 {
                    print!("{file}, ");
                }
                println!(
                    "{}, {}, {}, {}, {}",
                    i.hash,
                    i.revision,
                    i.total_keys,
                    human(i.total_size),
                    i.version
                );
            }
        }
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}
