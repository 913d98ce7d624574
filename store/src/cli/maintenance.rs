//! Cluster maintenance commands: `endpoint status` and `endpoint health` (each endpoint
//! asked on its own connection, concurrently) and `compaction`.

use std::io::Write;
use std::time::{Duration, Instant};

use etcd_client::CompactionOptions;
use etcd_client::proto::PbStatusResponse;

use super::output::{self, Json, Obj, OutputFormat};
use super::{Ctx, format_lease_id};

/// `endpoint ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum EndpointCommand {
    /// Prints out the status of endpoints specified in `--endpoints`.
    Status,
    /// Checks the healthiness of endpoints specified in `--endpoints`.
    Health,
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
        EndpointCommand::Status => status(ctx).await,
        EndpointCommand::Health => health(ctx).await,
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
    if format == OutputFormat::Json {
        let v = Obj::new()
            .val("header", output::header_json(resp.0.header.as_ref()))
            .build();
        output::write_json(&mut out, &v)?;
    } else {
        writeln!(out, "compacted revision {}", a.revision)?;
    }
    Ok(())
}

async fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let endpoints = ctx.global.endpoints.clone();
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

async fn health(ctx: &Ctx) -> anyhow::Result<()> {
    let format = ctx.format();
    let endpoints = ctx.global.endpoints.clone();
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
}
