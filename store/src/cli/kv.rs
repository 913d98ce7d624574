//! The key-value commands `put`, `get` and `del`: their flags (shared with the `txn`
//! operation grammar), building `etcd-client` options from them, and printing their
//! responses in the simple and JSON formats.

use std::io::Write;

use anyhow::bail;
use etcd_client::proto::{PbDeleteResponse, PbPutResponse, PbRangeResponse};
use etcd_client::{DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget};

use super::output::{self, Json, Obj, OutputFormat};
use super::{Ctx, parse_lease_id, read_stdin};

/// `put KEY [VALUE]`.
#[derive(clap::Args, Debug, Clone)]
pub struct PutArgs {
    /// The key to write.
    pub key: String,
    /// The value; read from stdin when omitted (unless --ignore-value).
    pub value: Option<String>,
    /// Lease ID (in hexadecimal) to attach to the key.
    #[arg(long)]
    pub lease: Option<String>,
    /// Return the previous key-value pair before modification.
    #[arg(long)]
    pub prev_kv: bool,
    /// Update the key using its current value.
    #[arg(long)]
    pub ignore_value: bool,
    /// Update the key using its current lease.
    #[arg(long)]
    pub ignore_lease: bool,
}

/// Sort targets for `get --sort-by`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "UPPER")]
pub enum SortBy {
    Key,
    Version,
    Create,
    Modify,
    Value,
}

/// Orders for `get --order`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "UPPER")]
pub enum Order {
    Ascend,
    Descend,
}

/// Consistency for `get --consistency`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

/// `get KEY [RANGE_END]`.
#[derive(clap::Args, Debug, Clone)]
pub struct GetArgs {
    /// The key (or the start of the range).
    pub key: String,
    /// The end of the range [key, range_end).
    pub range_end: Option<String>,
    /// Get keys with matching prefix.
    #[arg(long)]
    pub prefix: bool,
    /// Get keys that are greater than or equal to the given key (byte compare).
    #[arg(long)]
    pub from_key: bool,
    /// Specify the kv revision.
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Maximum number of results.
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Get only the keys.
    #[arg(long)]
    pub keys_only: bool,
    /// Get only the count.
    #[arg(long)]
    pub count_only: bool,
    /// Only write values when using the "simple" output format.
    #[arg(long)]
    pub print_value_only: bool,
    /// Sort target.
    #[arg(long, ignore_case = true)]
    pub sort_by: Option<SortBy>,
    /// Order of results (ASCEND by default).
    #[arg(long, ignore_case = true)]
    pub order: Option<Order>,
    /// Linearizable (l) or Serializable (s).
    #[arg(long, default_value = "l")]
    pub consistency: Consistency,
}

/// `del KEY [RANGE_END]`.
#[derive(clap::Args, Debug, Clone)]
pub struct DelArgs {
    /// The key (or the start of the range).
    pub key: String,
    /// The end of the range [key, range_end).
    pub range_end: Option<String>,
    /// Delete keys with matching prefix.
    #[arg(long)]
    pub prefix: bool,
    /// Delete keys that are greater than or equal to the given key (byte compare).
    #[arg(long)]
    pub from_key: bool,
    /// Return deleted key-value pairs.
    #[arg(long)]
    pub prev_kv: bool,
}

/// Builds the options of a put (the value is resolved by the caller).
pub(crate) fn put_options(a: &PutArgs) -> anyhow::Result<PutOptions> {
    let mut opts = PutOptions::new();
    if let Some(lease) = &a.lease {
        opts = opts.with_lease(parse_lease_id(lease)?);
    }
    if a.prev_kv {
        opts = opts.with_prev_key();
    }
    if a.ignore_value {
        opts = opts.with_ignore_value();
    }
    if a.ignore_lease {
        opts = opts.with_ignore_lease();
    }
    Ok(opts)
}

/// Checks the flag combinations etcdctl rejects and builds the range options.
pub(crate) fn get_options(a: &GetArgs) -> anyhow::Result<GetOptions> {
    check_range(a.prefix, a.from_key, a.range_end.is_some())?;
    if a.keys_only && a.count_only {
        bail!("`--keys-only` and `--count-only` cannot be set at the same time, choose one");
    }
    let mut opts = GetOptions::new();
    if a.prefix {
        opts = opts.with_prefix();
    } else if a.from_key {
        opts = opts.with_from_key();
    } else if let Some(end) = &a.range_end {
        opts = opts.with_range(end.as_bytes());
    }
    if a.rev != 0 {
        opts = opts.with_revision(a.rev);
    }
    if a.limit != 0 {
        opts = opts.with_limit(a.limit);
    }
    if a.keys_only {
        opts = opts.with_keys_only();
    }
    if a.count_only {
        opts = opts.with_count_only();
    }
    if a.consistency == Consistency::S {
        opts = opts.with_serializable();
    }
    if a.sort_by.is_some() || a.order.is_some() {
        let target = match a.sort_by.unwrap_or(SortBy::Key) {
            SortBy::Key => SortTarget::Key,
            SortBy::Version => SortTarget::Version,
            SortBy::Create => SortTarget::Create,
            SortBy::Modify => SortTarget::Mod,
            SortBy::Value => SortTarget::Value,
        };
        let order = match a.order.unwrap_or(Order::Ascend) {
            Order::Ascend => SortOrder::Ascend,
            Order::Descend => SortOrder::Descend,
        };
        opts = opts.with_sort(target, order);
    }
    Ok(opts)
}

/// Builds the options of a delete.
pub(crate) fn del_options(a: &DelArgs) -> anyhow::Result<DeleteOptions> {
    check_range(a.prefix, a.from_key, a.range_end.is_some())?;
    let mut opts = DeleteOptions::new();
    if a.prefix {
        opts = opts.with_prefix();
    } else if a.from_key {
        opts = opts.with_from_key();
    } else if let Some(end) = &a.range_end {
        opts = opts.with_range(end.as_bytes());
    }
    if a.prev_kv {
        opts = opts.with_prev_key();
    }
    Ok(opts)
}

fn check_range(prefix: bool, from_key: bool, has_end: bool) -> anyhow::Result<()> {
    if prefix && from_key {
        bail!("`--prefix` and `--from-key` cannot be set at the same time, choose one");
    }
    if prefix && has_end {
        bail!("too many arguments, only accept one argument when `--prefix` is set.");
    }
    if from_key && has_end {
        bail!("too many arguments, only accept one argument when `--from-key` is set.");
    }
    Ok(())
}

pub(crate) async fn put(ctx: &Ctx, a: PutArgs) -> anyhow::Result<()> {
    let format = ctx.format();
    if format == OutputFormat::Table {
        return Err(output::unsupported(format));
    }
    let opts = put_options(&a)?;
    let value: Vec<u8> = match (&a.value, a.ignore_value) {
        (Some(_), true) => bail!("value must not be given when `--ignore-value` is set"),
        (Some(v), false) => v.clone().into_bytes(),
        (None, true) => Vec::new(),
        (None, false) => read_stdin()?,
    };
    let mut client = ctx.client().await?;
    let resp = ctx
        .call(client.put(a.key.as_bytes(), value, Some(opts)))
        .await?;
    let mut out = std::io::stdout().lock();
    render_put(&mut out, &resp.0, format)?;
    Ok(())
}

pub(crate) async fn get(ctx: &Ctx, a: GetArgs) -> anyhow::Result<()> {
    let format = ctx.format();
    if format == OutputFormat::Table {
        return Err(output::unsupported(format));
    }
    let opts = get_options(&a)?;
    let mut client = ctx.client().await?;
    let resp = ctx.call(client.get(a.key.as_bytes(), Some(opts))).await?;
    let mut out = std::io::stdout().lock();
    render_get(&mut out, &resp.0, format, a.print_value_only, a.count_only)?;
    Ok(())
}

pub(crate) async fn del(ctx: &Ctx, a: DelArgs) -> anyhow::Result<()> {
    let format = ctx.format();
    if format == OutputFormat::Table {
        return Err(output::unsupported(format));
    }
    let opts = del_options(&a)?;
    let mut client = ctx.client().await?;
    let resp = ctx
        .call(client.delete(a.key.as_bytes(), Some(opts)))
        .await?;
    let mut out = std::io::stdout().lock();
    render_del(&mut out, &resp.0, format)?;
    Ok(())
}

pub(crate) fn put_json(r: &PbPutResponse) -> Json {
    Obj::new()
        .val("header", output::header_json(r.header.as_ref()))
        .val(
            "prev_kv",
            r.prev_kv
                .as_ref()
                .map(output::kv_json)
                .unwrap_or(Json::Null),
        )
        .build()
}

pub(crate) fn range_json(r: &PbRangeResponse) -> Json {
    Obj::new()
        .val("header", output::header_json(r.header.as_ref()))
        .val("kvs", output::kvs_json(&r.kvs))
        .bool("more", r.more)
        .int("count", r.count)
        .build()
}

pub(crate) fn del_json(r: &PbDeleteResponse) -> Json {
    Obj::new()
        .val("header", output::header_json(r.header.as_ref()))
        .int("deleted", r.deleted)
        .val("prev_kvs", output::kvs_json(&r.prev_kvs))
        .build()
}

pub(crate) fn render_put(
    out: &mut impl Write,
    r: &PbPutResponse,
    format: OutputFormat,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        return output::write_json(out, &put_json(r));
    }
    writeln!(out, "OK")?;
    if let Some(prev) = &r.prev_kv {
        output::simple_kv(out, prev, false, false)?;
    }
    Ok(())
}

pub(crate) fn render_get(
    out: &mut impl Write,
    r: &PbRangeResponse,
    format: OutputFormat,
    values_only: bool,
    count_only: bool,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        return output::write_json(out, &range_json(r));
    }
    if count_only {
        return writeln!(out, "{}", r.count);
    }
    for kv in &r.kvs {
        output::simple_kv(out, kv, false, values_only)?;
    }
    Ok(())
}

pub(crate) fn render_del(
    out: &mut impl Write,
    r: &PbDeleteResponse,
    format: OutputFormat,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        return output::write_json(out, &del_json(r));
    }
    writeln!(out, "{}", r.deleted)?;
    for kv in &r.prev_kvs {
        output::simple_kv(out, kv, false, false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use etcd_client::proto::{PbKeyValue, PbResponseHeader};

    #[derive(Parser)]
    struct G {
        #[command(flatten)]
        a: GetArgs,
    }

    fn parse_get(args: &[&str]) -> Result<GetArgs, clap::Error> {
        G::try_parse_from(std::iter::once("get").chain(args.iter().copied())).map(|g| g.a)
    }

    #[test]
    fn get_flag_checks() {
        assert!(get_options(&parse_get(&["k", "--prefix"]).unwrap()).is_ok());
        let e = get_options(&parse_get(&["k", "z", "--prefix"]).unwrap()).unwrap_err();
        assert!(e.to_string().contains("only accept one argument"), "{e}");
        let e = get_options(&parse_get(&["k", "--prefix", "--from-key"]).unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("cannot be set at the same time"),
            "{e}"
        );
        let e =
            get_options(&parse_get(&["k", "--keys-only", "--count-only"]).unwrap()).unwrap_err();
        assert!(e.to_string().contains("--count-only"), "{e}");
    }

    #[test]
    fn sort_flags_are_case_insensitive_and_checked() {
        let a = parse_get(&["k", "--sort-by", "modify", "--order", "DESCEND"]).unwrap();
        assert_eq!(a.sort_by, Some(SortBy::Modify));
        assert_eq!(a.order, Some(Order::Descend));
        let a = parse_get(&["k", "--sort-by=VALUE"]).unwrap();
        assert_eq!(a.sort_by, Some(SortBy::Value));
        let e = parse_get(&["k", "--sort-by", "SIZE"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("SIZE") && e.contains("KEY"), "{e}");
        assert!(parse_get(&["k", "--consistency", "x"]).is_err());
        assert!(parse_get(&["k", "--rev", "abc"]).is_err());
    }

    fn header() -> Option<PbResponseHeader> {
        Some(PbResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 3,
            raft_term: 4,
        })
    }

    #[test]
    fn renders_get_like_etcdctl() {
        let r = PbRangeResponse {
            header: header(),
            kvs: vec![PbKeyValue {
                key: b"foo".to_vec(),
                value: b"bar".to_vec(),
                create_revision: 2,
                mod_revision: 3,
                version: 2,
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        let mut out = Vec::new();
        render_get(&mut out, &r, OutputFormat::Simple, false, false).unwrap();
        assert_eq!(out, b"foo\nbar\n");
        out.clear();
        render_get(&mut out, &r, OutputFormat::Simple, true, false).unwrap();
        assert_eq!(out, b"bar\n");
        out.clear();
        render_get(&mut out, &r, OutputFormat::Simple, false, true).unwrap();
        assert_eq!(out, b"1\n");
        out.clear();
        render_get(&mut out, &r, OutputFormat::Json, false, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"header":{"cluster_id":1,"member_id":2,"revision":3,"raft_term":4},"#,
                r#""kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,"value":"YmFy"}],"count":1}"#,
                "\n"
            )
        );
        let empty = PbRangeResponse {
            header: header(),
            ..Default::default()
        };
        let mut out = Vec::new();
        render_get(&mut out, &empty, OutputFormat::Json, false, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"header\":{\"cluster_id\":1,\"member_id\":2,\"revision\":3,\"raft_term\":4}}\n"
        );
    }

    #[test]
    fn renders_put_and_del() {
        let prev = PbKeyValue {
            key: b"k".to_vec(),
            value: b"old".to_vec(),
            ..Default::default()
        };
        let mut out = Vec::new();
        let p = PbPutResponse {
            header: header(),
            prev_kv: Some(prev.clone()),
        };
        render_put(&mut out, &p, OutputFormat::Simple).unwrap();
        assert_eq!(out, b"OK\nk\nold\n");
        out.clear();
        let d = PbDeleteResponse {
            header: header(),
            deleted: 1,
            prev_kvs: vec![prev],
        };
        render_del(&mut out, &d, OutputFormat::Simple).unwrap();
        assert_eq!(out, b"1\nk\nold\n");
        let j = del_json(&d).to_string();
        assert!(
            j.contains(r#""deleted":1,"prev_kvs":[{"key":"aw==","value":"b2xk"}]"#),
            "{j}"
        );
    }
}
