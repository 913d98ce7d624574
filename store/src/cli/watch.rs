//! The `watch` command: opens one watch and prints its events as etcdctl does
//! (`PUT`/`DELETE`, then the previous key-value if asked for, then the key and value)
//! until Ctrl-C, or until the server cancels the watch (for example because the start
//! revision was compacted, which is reported with the compact revision).

use std::io::Write;

use anyhow::{anyhow, bail};
use etcd_client::WatchOptions;
use etcd_client::proto::{PbEvent, PbWatchResponse};

use super::output::{self, Json, Obj, OutputFormat};
use super::{Ctx, grpc_error};

/// `watch KEY [RANGE_END]`.
#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// The key (or the start of the range).
    pub key: String,
    /// The end of the range [key, range_end).
    pub range_end: Option<String>,
    /// Watch on a prefix.
    #[arg(long)]
    pub prefix: bool,
    /// Revision to start watching from.
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Get the previous key-value pair before the event happens.
    #[arg(long)]
    pub prev_kv: bool,
    /// Get periodic watch progress notifications from the server.
    #[arg(long)]
    pub progress_notify: bool,
}

pub(crate) fn watch_options(a: &WatchArgs) -> anyhow::Result<WatchOptions> {
    if a.prefix && a.range_end.is_some() {
        bail!("too many arguments, only accept one argument when `--prefix` is set.");
    }
    let mut opts = WatchOptions::new();
    if a.prefix {
        opts = opts.with_prefix();
    } else if let Some(end) = &a.range_end {
        opts = opts.with_range(end.as_bytes());
    }
    if a.rev != 0 {
        opts = opts.with_start_revision(a.rev);
    }
    if a.prev_kv {
        opts = opts.with_prev_key();
    }
    if a.progress_notify {
        opts = opts.with_progress_notify();
    }
    Ok(opts)
}

pub(crate) async fn run(ctx: &Ctx, a: WatchArgs) -> anyhow::Result<()> {
    let format = ctx.format();
    if format == OutputFormat::Table {
        return Err(output::unsupported(format));
    }
    let opts = watch_options(&a)?;
    let mut client = ctx.client().await?;
    let mut stream = ctx.call(client.watch(a.key.as_bytes(), Some(opts))).await?;
    loop {
        let msg = tokio::select! {
            m = stream.message() => m.map_err(grpc_error)?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(resp) = msg else {
            bail!("watch stream closed by the server");
        };
        let resp = resp.0;
        {
            let mut out = std::io::stdout().lock();
            render_watch(&mut out, &resp, format)?;
            out.flush()?;
        }
        if resp.canceled {
            return Err(cancel_error(&resp));
        }
    }
}

/// The error for a watch the server canceled; a compaction names the compact revision.
pub(crate) fn cancel_error(r: &PbWatchResponse) -> anyhow::Error {
    if r.compact_revision != 0 {
        anyhow!(
            "watch was canceled (etcdserver: mvcc: required revision has been compacted; \
             compact revision is {})",
            r.compact_revision
        )
    } else if !r.cancel_reason.is_empty() {
        anyhow!("watch was canceled ({})", r.cancel_reason)
    } else {
        anyhow!("watch is canceled by the server")
    }
}

fn event_json(e: &PbEvent) -> Json {
    Obj::new()
        .int("type", i64::from(e.r#type))
        .val(
            "kv",
            e.kv.as_ref().map(output::kv_json).unwrap_or(Json::Null),
        )
        .val(
            "prev_kv",
            e.prev_kv
                .as_ref()
                .map(output::kv_json)
                .unwrap_or(Json::Null),
        )
        .build()
}

/// etcdctl's JSON for a watch response (Go's `clientv3.WatchResponse` field names).
pub(crate) fn watch_json(r: &PbWatchResponse) -> Json {
    let events: Vec<Json> = r.events.iter().map(event_json).collect();
    Obj::new()
        .always("Header", output::header_json(r.header.as_ref()))
        .always(
            "Events",
            if events.is_empty() {
                Json::Null
            } else {
                Json::Arr(events)
            },
        )
        .always("CompactRevision", r.compact_revision)
        .always("Canceled", r.canceled)
        .always("Created", r.created)
        .build()
}

/// Prints one watch response. The "created" confirmation prints nothing; a progress
/// notification (no events) prints `progress notify: REV` in the simple format.
pub(crate) fn render_watch(
    out: &mut impl Write,
    r: &PbWatchResponse,
    format: OutputFormat,
) -> std::io::Result<()> {
    if r.created && r.events.is_empty() && !r.canceled {
        return Ok(());
    }
    if format == OutputFormat::Json {
        if r.canceled && r.events.is_empty() {
            return Ok(());
        }
        return output::write_json(out, &watch_json(r));
    }
    if r.events.is_empty() && !r.canceled {
        let rev = r.header.as_ref().map_or(0, |h| h.revision);
        return writeln!(out, "progress notify: {rev}");
    }
    for e in &r.events {
        writeln!(out, "{}", if e.r#type == 1 { "DELETE" } else { "PUT" })?;
        if let Some(prev) = &e.prev_kv {
            output::simple_kv(out, prev, false, false)?;
        }
        if let Some(kv) = &e.kv {
            output::simple_kv(out, kv, false, false)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{PbKeyValue, PbResponseHeader};

    fn kv(key: &str, value: &str, rev: i64) -> PbKeyValue {
        PbKeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: 18,
            mod_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn prints_events_like_etcdctl() {
        let r = PbWatchResponse {
            header: Some(PbResponseHeader {
                revision: 20,
                ..Default::default()
            }),
            events: vec![
                PbEvent {
                    r#type: 0,
                    kv: Some(kv("w1", "b", 19)),
                    prev_kv: Some(kv("w1", "a", 18)),
                },
                PbEvent {
                    r#type: 1,
                    kv: Some(PbKeyValue {
                        key: b"w1".to_vec(),
                        mod_revision: 20,
                        ..Default::default()
                    }),
                    prev_kv: None,
                },
            ],
            ..Default::default()
        };
        let mut out = Vec::new();
        render_watch(&mut out, &r, OutputFormat::Simple).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PUT\nw1\na\nw1\nb\nDELETE\nw1\n\n"
        );
        let j = watch_json(&r).to_string();
        assert!(
            j.starts_with(r#"{"Header":{"revision":20},"Events":[{"kv":{"#),
            "{j}"
        );
        assert!(
            j.contains(r#"{"type":1,"kv":{"key":"dzE=","mod_revision":20}}"#),
            "{j}"
        );
        assert!(
            j.ends_with(r#""CompactRevision":0,"Canceled":false,"Created":false}"#),
            "{j}"
        );
    }

    #[test]
    fn created_is_silent_and_progress_is_reported() {
        let created = PbWatchResponse {
            created: true,
            ..Default::default()
        };
        let mut out = Vec::new();
        render_watch(&mut out, &created, OutputFormat::Simple).unwrap();
        assert!(out.is_empty());
        let progress = PbWatchResponse {
            header: Some(PbResponseHeader {
                revision: 7,
                ..Default::default()
            }),
            ..Default::default()
        };
        render_watch(&mut out, &progress, OutputFormat::Simple).unwrap();
        assert_eq!(out, b"progress notify: 7\n");
    }

    #[test]
    fn compaction_cancel_names_the_revision() {
        let r = PbWatchResponse {
            canceled: true,
            compact_revision: 6,
            ..Default::default()
        };
        let e = cancel_error(&r).to_string();
        assert!(
            e.contains("compacted") && e.contains("compact revision is 6"),
            "{e}"
        );
        let mut out = Vec::new();
        render_watch(&mut out, &r, OutputFormat::Simple).unwrap();
        assert!(out.is_empty());
    }
}
