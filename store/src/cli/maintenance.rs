//! Cluster maintenance commands: `endpoint status`, `endpoint health` and
//! `endpoint hashkv` (each endpoint asked on its own connection, concurrently; with
//! `--cluster` the endpoints are all members' client URLs) and `compaction`.

use std::io::Write;
use std::time::{Duration, Instant};

use etcd_client::CompactionOptions;
use etcd_client::proto::{PbHashKvResponse, PbStatusResponse};

use super::cluster::endpoints;
use super::output::{self, Json, Obj, OutputFormat};
use super::{Ctx, format_lease_id};

/// `endpoint ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum EndpointCommand {
    /// Prints out the status of endpoints specified in `--endpoints`.
    Status(ClusterFlag),
    /// Checks the healthiness of endpoints specified in `--endpoints`.
    Health(ClusterFlag),
    /// Prints the KV history hash for each endpoint in `--endpoints`.
    Hashkv(HashkvArgs),
}

/// `--cluster`: use all endpoints from the cluster member list.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterFlag {
    /// Use all endpoints from the cluster member list.
    #[arg(long)]
    pub cluster: bool,
}

/// `endpoint hashkv [--rev N] [--cluster]`.
#[derive(clap::Args, Debug, Clone)]
pub struct HashkvArgs {
    /// Maximum revision to hash (0 = latest revision).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    #[command(flatten)]
    pub cluster: ClusterFlag,
}

/// `compaction REV`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompactionArgs {
    /// The revision to compact up to.
    pub revision: i64,
    /// Wait until the compaction is physically applied to the backend.
    #[arg(long)]
    pub physical: bool,
}

pub(crate) async fn endpoint(ctx: &Ctx, cmd: EndpointCommand) -> anyhow::Result<()> {
    match cmd {
        EndpointCommand::Status(f) => status(ctx, endpoints(ctx, f.cluster).await?).await,
        EndpointCommand::Health(f) => health(ctx, endpoints(ctx, f.cluster).await?).await,
        EndpointCommand::Hashkv(a) => {
            hashkv(ctx, endpoints(ctx, a.cluster.cluster).await?, a.rev).await
        }
    }
}

pub(crate) async fn compaction(ctx: &Ctx, a: CompactionArgs) -> anyhow::Result<()> {
    let format = ctx.format();
    if format == OutputFormat::Table {
        return Err(output::unsupported(format));
    }
    let opts = a.physical.then(|| CompactionOptions::new().with_physical());
    let mut client = ctx.client().await?;
    let resp = ctx.call(client.compact(a.revision, opts)).await?;
    let mut out = std::io::stdout().lock();
    output::write_header_or_text(
        &mut out,
        format,
        resp.0.header.as_ref(),
        format_args!("compacted revision {}", a.revision),
    )?;
    Ok(())
}

async fn status(ctx: &Ctx, endpoints: Vec<String>) -> anyhow::Result<()> {
    let results = futures::future::join_all(endpoints.iter().map(|ep| async move {
        let mut client = ctx.client_for(std::slice::from_ref(ep)).await?;
        ctx.call(client.status()).await
    }))
    .await;
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (ep, res) in endpoints.into_iter().zip(results) {
        match res {
            Ok(s) => ok.push((ep, s.0)),
            Err(e) => {
                eprintln!("Failed to get the status of endpoint {ep} ({e:#})");
                failed.push(ep);
            }
        }
    }
    let mut out = std::io::stdout().lock();
    render_status(&mut out, &ok, ctx.format())?;
    if !failed.is_empty() {
        anyhow::bail!("failed to get the status of {}", failed.join(", "));
    }
    Ok(())
}

/// Whether the answering member is the leader, per its own header.
fn is_leader(s: &PbStatusResponse) -> bool {
    s.header.as_ref().is_some_and(|h| h.member_id == s.leader)
}

fn status_json(s: &PbStatusResponse) -> Json {
    Obj::new()
        .val("header", output::header_json(s.header.as_ref()))
        .str("version", &s.version)
        .int("dbSize", s.db_size)
        .uint("leader", s.leader)
        .uint("raftIndex", s.raft_index)
        .uint("raftTerm", s.raft_term)
        .uint("raftAppliedIndex", s.raft_applied_index)
        .val(
            "errors",
            Json::Arr(s.errors.iter().map(|e| Json::from(e.as_str())).collect()),
        )
        .int("dbSizeInUse", s.db_size_in_use)
        .bool("isLearner", s.is_learner)
        .build()
}

pub(crate) fn render_status(
    out: &mut impl Write,
    statuses: &[(String, PbStatusResponse)],
    format: OutputFormat,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => {
            let v: Vec<Json> = statuses
                .iter()
                .map(|(ep, s)| {
                    Obj::new()
                        .always("Endpoint", ep.as_str())
                        .always("Status", status_json(s))
                        .build()
                })
                .collect();
            output::write_json(out, &Json::Arr(v))
        }
        OutputFormat::Simple => {
            for (ep, s) in statuses {
                let id = s.header.as_ref().map_or(0, |h| h.member_id);
                writeln!(
                    out,
                    "{ep}, {}, {}, {}, {}, {}, {}, {}, {}, {}",
                    format_lease_id(id as i64),
                    s.version,
                    output::human_bytes(s.db_size),
                    is_leader(s),
                    s.is_learner,
                    s.raft_term,
                    s.raft_index,
                    s.raft_applied_index,
                    s.errors.join(", ")
                )?;
            }
            Ok(())
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = statuses
                .iter()
                .map(|(ep, s)| {
                    let (id, rev) = s
                        .header
                        .as_ref()
                        .map_or((0, 0), |h| (h.member_id, h.revision));
                    vec![
                        ep.clone(),
                        format_lease_id(id as i64),
                        s.version.clone(),
                        output::human_bytes(s.db_size),
                        is_leader(s).to_string(),
                        s.is_learner.to_string(),
                        s.raft_term.to_string(),
                        s.raft_index.to_string(),
                        s.raft_applied_index.to_string(),
                        rev.to_string(),
                        s.errors.join(", "),
                    ]
                })
                .collect();
            let headers = [
                "endpoint",
                "id",
                "version",
                "db size",
                "is leader",
                "is learner",
                "raft term",
                "raft index",
                "raft applied index",
                "revision",
                "errors",
            ];
            out.write_all(output::table(&headers, &rows).as_bytes())
        }
    }
}

/// One endpoint's health: a linearizable read must succeed (permission denied counts
/// as healthy, as in etcdctl: the cluster answered).
pub(crate) struct Health {
    pub endpoint: String,
    pub healthy: bool,
    pub took: Duration,
    pub error: String,
}

async fn health(ctx: &Ctx, endpoints: Vec<String>) -> anyhow::Result<()> {
    let format = ctx.format();
    let checks = futures::future::join_all(endpoints.iter().map(|ep| async move {
        let start = Instant::now();
        let res = async {
            let mut client = ctx.client_for(std::slice::from_ref(ep)).await?;
            ctx.call(client.get("health", None)).await
        }
        .await;
        let took = start.elapsed();
        let (healthy, error) = match res {
            Ok(_) => (true, String::new()),
            Err(e) => {
                let msg = format!("{e:#}");
                (msg.contains("permission denied"), msg)
            }
        };
        Health {
            endpoint: ep.clone(),
            healthy,
            took,
            error,
        }
    }))
    .await;
    let mut out = std::io::stdout().lock();
    render_health(&mut out, &mut std::io::stderr(), &checks, format)?;
    if checks.iter().any(|h| !h.healthy) {
        anyhow::bail!("unhealthy cluster");
    }
    Ok(())
}

pub(crate) fn render_health(
    out: &mut impl Write,
    err: &mut impl Write,
    checks: &[Health],
    format: OutputFormat,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => {
            let v: Vec<Json> = checks
                .iter()
                .map(|h| {
                    Obj::new()
                        .always("endpoint", h.endpoint.as_str())
                        .always("health", h.healthy)
                        .always("took", output::go_duration(h.took))
                        .str("error", &h.error)
                        .build()
                })
                .collect();
            output::write_json(out, &Json::Arr(v))
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = checks
                .iter()
                .map(|h| {
                    vec![
                        h.endpoint.clone(),
                        h.healthy.to_string(),
                        output::go_duration(h.took),
                        h.error.clone(),
                    ]
                })
                .collect();
            out.write_all(output::table(&["endpoint", "health", "took", "error"], &rows).as_bytes())
        }
        OutputFormat::Simple => {
            for h in checks {
                if h.healthy {
                    writeln!(
                        out,
                        "{} is healthy: successfully committed proposal: took = {}",
                        h.endpoint,
                        output::go_duration(h.took)
                    )?;
                } else {
                    writeln!(
                        err,
                        "{} is unhealthy: failed to commit proposal: {}",
                        h.endpoint, h.error
                    )?;
                }
            }
            Ok(())
        }
    }
}

async fn hashkv(ctx: &Ctx, endpoints: Vec<String>, rev: i64) -> anyhow::Result<()> {
    let results = futures::future::join_all(endpoints.iter().map(|ep| async move {
        let mut client = ctx.client_for(std::slice::from_ref(ep)).await?;
        ctx.call(client.hash_kv(rev)).await
    }))
    .await;
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (ep, res) in endpoints.into_iter().zip(results) {
        match res {
            Ok(h) => ok.push((ep, h.0)),
            Err(e) => {
                eprintln!("Failed to get the hash of endpoint {ep} ({e:#})");
                failed.push(ep);
            }
        }
    }
    let mut out = std::io::stdout().lock();
    render_hashkv(&mut out, &ok, ctx.format())?;
    if !failed.is_empty() {
        anyhow::bail!("failed to get the hash of {}", failed.join(", "));
    }
    Ok(())
}

fn hashkv_json(h: &PbHashKvResponse) -> Json {
    Obj::new()
        .val("header", output::header_json(h.header.as_ref()))
        .uint("hash", u64::from(h.hash))
        .int("compact_revision", h.compact_revision)
        .int("hash_revision", h.hash_revision)
        .build()
}

/// `ENDPOINT, HASH, COMPACT REVISION` per endpoint, plus `HASH REVISION` when the
/// servers report it (etcd 3.6 and later).
pub(crate) fn render_hashkv(
    out: &mut impl Write,
    hashes: &[(String, PbHashKvResponse)],
    format: OutputFormat,
) -> std::io::Result<()> {
    let with_hash_rev = hashes.iter().any(|(_, h)| h.hash_revision != 0);
    let row = |ep: &str, h: &PbHashKvResponse| {
        let mut r = vec![
            ep.to_string(),
            h.hash.to_string(),
            h.compact_revision.to_string(),
        ];
        if with_hash_rev {
            r.push(h.hash_revision.to_string());
        }
        r
    };
    match format {
        OutputFormat::Json => {
            let v: Vec<Json> = hashes
                .iter()
                .map(|(ep, h)| {
                    Obj::new()
                        .always("Endpoint", ep.as_str())
                        .always("HashKV", hashkv_json(h))
                        .build()
                })
                .collect();
            output::write_json(out, &Json::Arr(v))
        }
        OutputFormat::Simple => {
            for (ep, h) in hashes {
                writeln!(out, "{}", row(ep, h).join(", "))?;
            }
            Ok(())
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = hashes.iter().map(|(ep, h)| row(ep, h)).collect();
            let mut headers = vec!["endpoint", "hash", "compact revision"];
            if with_hash_rev {
                headers.push("hash revision");
            }
            out.write_all(output::table(&headers, &rows).as_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::PbResponseHeader;

    fn status() -> PbStatusResponse {
        PbStatusResponse {
            header: Some(PbResponseHeader {
                cluster_id: 324952591200643719,
                member_id: 0x2e1259d415f2a040,
                revision: 17,
                raft_term: 2,
            }),
            version: "3.4.23".into(),
            db_size: 20480,
            leader: 0x2e1259d415f2a040,
            raft_index: 27,
            raft_term: 2,
            raft_applied_index: 27,
            db_size_in_use: 16384,
            ..Default::default()
        }
    }

    #[test]
    fn status_simple_matches_etcdctl() {
        let mut out = Vec::new();
        render_status(
            &mut out,
            &[("127.0.0.1:23790".into(), status())],
            OutputFormat::Simple,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1:23790, 2e1259d415f2a040, 3.4.23, 20 kB, true, false, 2, 27, 27, \n"
        );
    }

    #[test]
    fn status_json_and_table() {
        let mut out = Vec::new();
        let rows = [("127.0.0.1:23790".to_string(), status())];
        render_status(&mut out, &rows, OutputFormat::Json).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"[{"Endpoint":"127.0.0.1:23790","Status":{"header":{"cluster_id":324952591200643719,"#,
                r#""member_id":3319814642761637952,"revision":17,"raft_term":2},"version":"3.4.23","#,
                r#""dbSize":20480,"leader":3319814642761637952,"raftIndex":27,"raftTerm":2,"#,
                r#""raftAppliedIndex":27,"dbSizeInUse":16384}}]"#,
                "\n"
            )
        );
        let mut out = Vec::new();
        render_status(&mut out, &rows, OutputFormat::Table).unwrap();
        let t = String::from_utf8(out).unwrap();
        assert!(t.contains("| IS LEADER |"), "{t}");
        assert!(
            t.contains("| 127.0.0.1:23790 | 2e1259d415f2a040 |  3.4.23 |   20 kB |"),
            "{t}"
        );
        assert!(t.contains("|       17 |"), "{t}");
    }

    #[test]
    fn health_lines() {
        let checks = [
            Health {
                endpoint: "a:1".into(),
                healthy: true,
                took: Duration::from_micros(1500),
                error: String::new(),
            },
            Health {
                endpoint: "b:2".into(),
                healthy: false,
                took: Duration::from_secs(5),
                error: "context deadline exceeded".into(),
            },
        ];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        render_health(&mut out, &mut err, &checks, OutputFormat::Simple).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a:1 is healthy: successfully committed proposal: took = 1.5ms\n"
        );
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "b:2 is unhealthy: failed to commit proposal: context deadline exceeded\n"
        );
        let mut out = Vec::new();
        render_health(&mut out, &mut Vec::new(), &checks, OutputFormat::Json).unwrap();
        let j = String::from_utf8(out).unwrap();
        assert!(
            j.starts_with(r#"[{"endpoint":"a:1","health":true,"took":"1.5ms"}"#),
            "{j}"
        );
        assert!(j.contains(r#""error":"context deadline exceeded""#), "{j}");
    }

    fn hash(hash: u32, hash_revision: i64) -> PbHashKvResponse {
        PbHashKvResponse {
            header: Some(PbResponseHeader {
                cluster_id: 7,
                member_id: 9,
                revision: 1,
                raft_term: 2,
            }),
            hash,
            compact_revision: -1,
            hash_revision,
        }
    }

    #[test]
    fn hashkv_simple_table_json() {
        let rows = [
            ("http://127.0.0.1:42379".to_string(), hash(1084519789, 0)),
            ("127.0.0.1:43379".to_string(), hash(1084519789, 0)),
        ];
        let mut out = Vec::new();
        render_hashkv(&mut out, &rows, OutputFormat::Simple).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "http://127.0.0.1:42379, 1084519789, -1\n127.0.0.1:43379, 1084519789, -1\n"
        );
        let mut out = Vec::new();
        render_hashkv(&mut out, &rows[1..], OutputFormat::Table).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\
+-----------------+------------+------------------+
|    ENDPOINT     |    HASH    | COMPACT REVISION |
+-----------------+------------+------------------+
| 127.0.0.1:43379 | 1084519789 |               -1 |
+-----------------+------------+------------------+
"
        );
        let mut out = Vec::new();
        render_hashkv(&mut out, &rows[1..], OutputFormat::Json).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"[{"Endpoint":"127.0.0.1:43379","HashKV":{"header":{"cluster_id":7,"member_id":9,"#,
                r#""revision":1,"raft_term":2},"hash":1084519789,"compact_revision":-1}}]"#,
                "\n"
            )
        );
        // A server that reports the hash revision gets the extra column.
        let mut out = Vec::new();
        render_hashkv(
            &mut out,
            &[("a:1".into(), hash(5, 12))],
            OutputFormat::Simple,
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a:1, 5, -1, 12\n");
    }
}
