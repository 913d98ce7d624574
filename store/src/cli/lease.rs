//! The `lease` commands: grant, revoke, keep-alive (once or until the lease is gone),
//! timetolive and list, with etcdctl's simple text and JSON (etcdctl flattens the
//! response header into lease JSON objects, and so do we).

use std::io::Write;
use std::time::Duration;

use etcd_client::LeaseTimeToLiveOptions;
use etcd_client::proto::{
    PbLeaseGrantResponse, PbLeaseKeepAliveResponse, PbLeaseLeasesResponse,
    PbLeaseTimeToLiveResponse,
};

use super::output::{self, Json, Obj, OutputFormat};
use super::{Ctx, format_lease_id, grpc_error, parse_lease_id};

/// `lease ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum LeaseCommand {
    /// Creates leases.
    Grant {
        /// Time to live in seconds.
        ttl: i64,
    },
    /// Revokes leases.
    Revoke {
        /// Lease ID in hex.
        id: String,
    },
    /// Get lease information.
    Timetolive {
        /// Lease ID in hex.
        id: String,
        /// Get keys attached to this lease.
        #[arg(long)]
        keys: bool,
    },
    /// List all active leases.
    List,
    /// Keeps leases alive (renew).
    KeepAlive {
        /// Lease ID in hex.
        id: String,
        /// Resets the keep-alive time to its original value and exits.
        #[arg(long)]
        once: bool,
    },
}

pub(crate) async fn run(ctx: &Ctx, cmd: LeaseCommand) -> anyhow::Result<()> {
    let format = ctx.format();
    let table_ok = matches!(cmd, LeaseCommand::List);
    if format == OutputFormat::Table && !table_ok {
        return Err(output::unsupported(format));
    }
    let id = match &cmd {
        LeaseCommand::Revoke { id }
        | LeaseCommand::Timetolive { id, .. }
        | LeaseCommand::KeepAlive { id, .. } => parse_lease_id(id)?,
        _ => 0,
    };
    let mut client = ctx.client().await?;
    let mut out = std::io::stdout().lock();
    match cmd {
        LeaseCommand::Grant { ttl } => {
            let resp = ctx.call(client.lease_grant(ttl, None)).await?;
            render_grant(&mut out, &resp.0, format)?;
        }
        LeaseCommand::Revoke { .. } => {
            let resp = ctx
                .call(client.lease_revoke(id))
                .await
                .map_err(|e| anyhow::anyhow!("failed to revoke lease ({e})"))?;
            output::write_header_or_text(
                &mut out,
                format,
                resp.0.header.as_ref(),
                format_args!("lease {} revoked", format_lease_id(id)),
            )?;
        }
        LeaseCommand::Timetolive { keys, .. } => {
            let opts = keys.then(|| LeaseTimeToLiveOptions::new().with_keys());
            let resp = ctx.call(client.lease_time_to_live(id, opts)).await?;
            render_time_to_live(&mut out, &resp.0, format, keys)?;
        }
        LeaseCommand::List => {
            let resp = ctx.call(client.leases()).await?;
            render_list(&mut out, &resp.0, format)?;
        }
        LeaseCommand::KeepAlive { once, .. } => {
            drop(out);
            keep_alive(ctx, client, id, once, format).await?;
        }
    }
    Ok(())
}

/// Sends keep-alives: once, or every third of the TTL until the lease is gone.
async fn keep_alive(
    ctx: &Ctx,
    client: etcd_client::Client,
    id: i64,
    once: bool,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let mut lease = client.lease_client();
    let (mut keeper, mut stream) = ctx.call(lease.keep_alive(id)).await.map_err(|e| {
        if e.to_string().contains("lease not found") {
            anyhow::anyhow!("etcdserver: requested lease not found")
        } else {
            e
        }
    })?;
    // Opening the stream already renewed the lease once, but its answer is consumed
    // by `etcd-client`; ask again to learn the TTL to print.
    loop {
        ctx.call(keeper.keep_alive()).await?;
        let resp = tokio::select! {
            r = stream.message() => r.map_err(grpc_error)?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(resp) = resp else {
            anyhow::bail!("lease keep-alive stream closed by the server");
        };
        let resp = resp.0;
        let mut out = std::io::stdout().lock();
        if resp.ttl <= 0 {
            writeln!(out, "lease {} expired or revoked.", format_lease_id(id))?;
            return Ok(());
        }
        render_keep_alive(&mut out, &resp, format)?;
        out.flush()?;
        drop(out);
        if once {
            return Ok(());
        }
        let wait = Duration::from_secs((resp.ttl / 3).max(1) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

pub(crate) fn render_grant(
    out: &mut impl Write,
    r: &PbLeaseGrantResponse,
    format: OutputFormat,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        let v = Obj::new()
            .flatten(output::header_json(r.header.as_ref()))
            .always("ID", r.id)
            .always("TTL", r.ttl)
            .always("Error", r.error.as_str())
            .build();
        return output::write_json(out, &v);
    }
    writeln!(
        out,
        "lease {} granted with TTL({}s)",
        format_lease_id(r.id),
        r.ttl
    )
}

pub(crate) fn render_keep_alive(
    out: &mut impl Write,
    r: &PbLeaseKeepAliveResponse,
    format: OutputFormat,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        let v = Obj::new()
            .flatten(output::header_json(r.header.as_ref()))
            .always("ID", r.id)
            .always("TTL", r.ttl)
            .build();
        return output::write_json(out, &v);
    }
    writeln!(
        out,
        "lease {} keepalived with TTL({})",
        format_lease_id(r.id),
        r.ttl
    )
}

pub(crate) fn render_time_to_live(
    out: &mut impl Write,
    r: &PbLeaseTimeToLiveResponse,
    format: OutputFormat,
    with_keys: bool,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        let keys = if r.keys.is_empty() {
            Json::Null
        } else {
            Json::Arr(
                r.keys
                    .iter()
                    .map(|k| Json::from(output::base64(k)))
                    .collect(),
            )
        };
        let v = Obj::new()
            .flatten(output::header_json(r.header.as_ref()))
            .always("id", r.id)
            .always("ttl", r.ttl)
            .always("granted-ttl", r.granted_ttl)
            .always("keys", keys)
            .build();
        return output::write_json(out, &v);
    }
    let id = format_lease_id(r.id);
    if r.granted_ttl == 0 && r.ttl == -1 {
        return writeln!(out, "lease {id} already expired");
    }
    write!(
        out,
        "lease {id} granted with TTL({}s), remaining({}s)",
        r.granted_ttl, r.ttl
    )?;
    if with_keys {
        out.write_all(b", attached keys([")?;
        for (i, k) in r.keys.iter().enumerate() {
            if i > 0 {
                out.write_all(b" ")?;
            }
            out.write_all(k)?;
        }
        out.write_all(b"])")?;
    }
    writeln!(out)
}

pub(crate) fn render_list(
    out: &mut impl Write,
    r: &PbLeaseLeasesResponse,
    format: OutputFormat,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => {
            let leases: Vec<Json> = r
                .leases
                .iter()
                .map(|l| Json::field("id", l.id.into()))
                .collect();
            let v = Obj::new()
                .flatten(output::header_json(r.header.as_ref()))
                .always("leases", leases)
                .build();
            output::write_json(out, &v)
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = r
                .leases
                .iter()
                .map(|l| vec![format_lease_id(l.id)])
                .collect();
            out.write_all(output::table(&["id"], &rows).as_bytes())
        }
        OutputFormat::Simple => {
            writeln!(out, "found {} leases", r.leases.len())?;
            for l in &r.leases {
                writeln!(out, "{}", format_lease_id(l.id))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{PbLeaseStatus, PbResponseHeader};

    fn header() -> Option<PbResponseHeader> {
        Some(PbResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 14,
            raft_term: 2,
        })
    }

    fn text(f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn grant_text_and_json() {
        let r = PbLeaseGrantResponse {
            header: header(),
            id: 0x694d77aa9e38260f,
            ttl: 60,
            error: String::new(),
        };
        assert_eq!(
            text(|o| render_grant(o, &r, OutputFormat::Simple)),
            "lease 694d77aa9e38260f granted with TTL(60s)\n"
        );
        assert_eq!(
            text(|o| render_grant(o, &r, OutputFormat::Json)),
            concat!(
                r#"{"cluster_id":1,"member_id":2,"revision":14,"raft_term":2,"#,
                r#""ID":7587852521871779343,"TTL":60,"Error":""}"#,
                "\n"
            )
        );
    }

    #[test]
    fn time_to_live_text() {
        let r = PbLeaseTimeToLiveResponse {
            header: header(),
            id: 0x2040a212d8f58021,
            ttl: 99,
            granted_ttl: 100,
            keys: vec![b"lk".to_vec(), b"lk2".to_vec()],
        };
        assert_eq!(
            text(|o| render_time_to_live(o, &r, OutputFormat::Simple, true)),
            "lease 2040a212d8f58021 granted with TTL(100s), remaining(99s), attached keys([lk lk2])\n"
        );
        assert_eq!(
            text(|o| render_time_to_live(o, &r, OutputFormat::Simple, false)),
            "lease 2040a212d8f58021 granted with TTL(100s), remaining(99s)\n"
        );
        let j = text(|o| render_time_to_live(o, &r, OutputFormat::Json, true));
        assert!(
            j.contains(r#""ttl":99,"granted-ttl":100,"keys":["bGs=","bGsy"]"#),
            "{j}"
        );
        let gone = PbLeaseTimeToLiveResponse {
            header: header(),
            id: 0x2040a212d8f58021,
            ttl: -1,
            granted_ttl: 0,
            keys: vec![],
        };
        assert_eq!(
            text(|o| render_time_to_live(o, &gone, OutputFormat::Simple, true)),
            "lease 2040a212d8f58021 already expired\n"
        );
        let j = text(|o| render_time_to_live(o, &gone, OutputFormat::Json, true));
        assert!(j.contains(r#""ttl":-1,"granted-ttl":0,"keys":null"#), "{j}");
    }

    #[test]
    fn list_formats() {
        let r = PbLeaseLeasesResponse {
            header: header(),
            leases: vec![PbLeaseStatus { id: 0x1d }, PbLeaseStatus { id: 0x1f }],
        };
        assert_eq!(
            text(|o| render_list(o, &r, OutputFormat::Simple)),
            "found 2 leases\n1d\n1f\n"
        );
        let t = text(|o| render_list(o, &r, OutputFormat::Table));
        assert!(t.contains("| ID |") && t.contains("| 1d |"), "{t}");
        let j = text(|o| render_list(o, &r, OutputFormat::Json));
        assert!(j.contains(r#""leases":[{"id":29},{"id":31}]"#), "{j}");
    }
}
