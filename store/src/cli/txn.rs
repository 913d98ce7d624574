//! The `txn` command: parsing etcdctl's transaction text (compares, a blank line,
//! success operations, a blank line, failure operations), sending it as one `Txn`,
//! and printing the result as etcdctl does.
//!
//! Compare lines look like `mod("k") > "0"`, `value("k") = "v"`, `version("k") != "2"`,
//! `create("k") < "5"`, `lease("k") = "694d77aa9e38260f"` (lease IDs in hex). Operation
//! lines are `put`, `get` and `del` with the same flags as the top-level commands, with
//! shell-like quoting (`put "a key" "a value"`). End of input ends the current section.

use std::io::{BufRead, Write};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use etcd_client::proto::{PbTxnOpResponse, PbTxnResponse};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::kv::{self, DelArgs, GetArgs, PutArgs};
use super::output::{self, Json, Obj, OutputFormat};
use super::{Ctx, parse_lease_id};

/// `txn [-i]`: reads the transaction from stdin.
#[derive(clap::Args, Debug, Clone)]
pub struct TxnArgs {
    /// Print prompts for each section (input is still read from stdin).
    #[arg(short, long)]
    pub interactive: bool,
}

/// One operation line of a transaction.
#[derive(Parser, Debug)]
#[command(
    name = "txn operation",
    no_binary_name = true,
    disable_help_subcommand = true,
    disable_help_flag = true
)]
enum OpLine {
    Put(PutArgs),
    Get(GetArgs),
    #[command(alias = "delete")]
    Del(DelArgs),
}

/// A transaction as parsed from text.
pub(crate) struct ParsedTxn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl ParsedTxn {
    fn into_txn(self) -> Txn {
        Txn::new()
            .when(self.compares)
            .and_then(self.success)
            .or_else(self.failure)
    }
}

pub(crate) async fn run(ctx: &Ctx, a: TxnArgs) -> anyhow::Result<()> {
    let format = ctx.format();
    if format == OutputFormat::Table {
        return Err(output::unsupported(format));
    }
    let stdin = std::io::stdin();
    let lines = stdin.lock().lines();
    let sections = read_sections(lines, |i| {
        if a.interactive {
            println!("{}", PROMPTS[i]);
        }
    })?;
    let parsed = parse_sections(&sections)?;
    let mut client = ctx.client().await?;
    let resp = ctx.call(client.txn(parsed.into_txn())).await?;
    let mut out = std::io::stdout().lock();
    render_txn(&mut out, &resp.0, format)?;
    Ok(())
}

/// The prompts `txn -i` prints before each section, as etcdctl does.
const PROMPTS: [&str; 3] = [
    "compares:",
    "success requests (get, put, del):",
    "failure requests (get, put, del):",
];

/// Splits input lines into the three sections (compares, success, failure); a blank
/// line or end of input ends a section. `prompt(i)` runs before section `i` is read.
fn read_sections(
    mut lines: impl Iterator<Item = std::io::Result<String>>,
    mut prompt: impl FnMut(usize),
) -> anyhow::Result<[Vec<String>; 3]> {
    let mut sections: [Vec<String>; 3] = Default::default();
    for (i, section) in sections.iter_mut().enumerate() {
        prompt(i);
        for l in lines.by_ref() {
            let l = l.context("cannot read the transaction from stdin")?;
            let l = l.trim();
            if l.is_empty() {
                break;
            }
            section.push(l.to_string());
        }
    }
    for l in lines {
        let l = l.context("cannot read the transaction from stdin")?;
        if !l.trim().is_empty() {
            bail!("unexpected input after the failure requests: {}", l.trim());
        }
    }
    Ok(sections)
}

fn parse_sections(sections: &[Vec<String>; 3]) -> anyhow::Result<ParsedTxn> {
    let ops = |lines: &[String]| -> anyhow::Result<Vec<TxnOp>> {
        lines.iter().map(|l| parse_op(l)).collect()
    };
    Ok(ParsedTxn {
        compares: sections[0]
            .iter()
            .map(|l| parse_compare(l))
            .collect::<anyhow::Result<_>>()?,
        success: ops(&sections[1])?,
        failure: ops(&sections[2])?,
    })
}

/// Parses a whole transaction text.
#[cfg(test)]
pub(crate) fn parse_txn(text: &str) -> anyhow::Result<ParsedTxn> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    parse_sections(&read_sections(lines, |_| {})?)
}

/// Parses one compare line, e.g. `mod("k") > "0"`.
pub(crate) fn parse_compare(line: &str) -> anyhow::Result<Compare> {
    let malformed = || anyhow!("malformed comparison: {line}");
    let open = line.find('(').ok_or_else(malformed)?;
    let target = line[..open].trim();
    let rest = &line[open + 1..];
    let (key, rest) = take_quoted(rest).ok_or_else(malformed)?;
    let rest = rest.trim_start();
    let rest = rest.strip_prefix(')').ok_or_else(malformed)?.trim_start();
    let (op, rest) = if let Some(r) = rest.strip_prefix("!=") {
        (CompareOp::NotEqual, r)
    } else if let Some(r) = rest.strip_prefix('=') {
        (CompareOp::Equal, r)
    } else if let Some(r) = rest.strip_prefix('<') {
        (CompareOp::Less, r)
    } else if let Some(r) = rest.strip_prefix('>') {
        (CompareOp::Greater, r)
    } else {
        return Err(malformed());
    };
    let rest = rest.trim();
    let value = if rest.starts_with('"') {
        let (v, tail) = take_quoted(rest).ok_or_else(malformed)?;
        if !tail.trim().is_empty() {
            return Err(malformed());
        }
        v
    } else if !rest.is_empty() && !rest.contains(char::is_whitespace) {
        // Lenient: an unquoted number or lease ID.
        rest.as_bytes().to_vec()
    } else {
        return Err(malformed());
    };
    let invalid = || anyhow!("invalid txn compare request: {line}");
    let number = |v: &[u8]| -> anyhow::Result<i64> {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .ok_or_else(invalid)
    };
    Ok(match target {
        "ver" | "version" => Compare::version(key, op, number(&value)?),
        "c" | "create" => Compare::create_revision(key, op, number(&value)?),
        "m" | "mod" => Compare::mod_revision(key, op, number(&value)?),
        "val" | "value" => Compare::value(key, op, value),
        "lease" => {
            let text = std::str::from_utf8(&value).map_err(|_| invalid())?;
            let id = parse_lease_id(text).map_err(|_| invalid())?;
            Compare::lease(key, op, id)
        }
        _ => bail!("malformed comparison: {line} (unknown target {target:?})"),
    })
}

/// Parses one operation line, e.g. `put k v`, `get k --prefix`, `del k`.
pub(crate) fn parse_op(line: &str) -> anyhow::Result<TxnOp> {
    let invalid = |why: String| anyhow!("invalid txn request: {line} ({why})");
    let words = split_words(line).map_err(|e| invalid(e.to_string()))?;
    let op = OpLine::try_parse_from(&words).map_err(|e| {
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or("").trim();
        invalid(first.trim_start_matches("error: ").to_string())
    })?;
    match op {
        OpLine::Put(a) => {
            let opts = kv::put_options(&a)?;
            let value = match (a.value, a.ignore_value) {
                (Some(v), false) => v.into_bytes(),
                (None, true) => Vec::new(),
                (Some(_), true) => {
                    return Err(invalid("value given with --ignore-value".into()));
                }
                (None, false) => {
                    return Err(invalid("put needs a key and a value".into()));
                }
            };
            Ok(TxnOp::put(a.key.into_bytes(), value, Some(opts)))
        }
        OpLine::Get(a) => {
            let opts = kv::get_options(&a)?;
            Ok(TxnOp::get(a.key.into_bytes(), Some(opts)))
        }
        OpLine::Del(a) => {
            let opts = kv::del_options(&a)?;
            Ok(TxnOp::delete(a.key.into_bytes(), Some(opts)))
        }
    }
}

/// Reads a double-quoted, Go-escaped string at the start of `s` (after optional
/// whitespace). Returns the bytes and the remaining text.
fn take_quoted(s: &str) -> Option<(Vec<u8>, &str)> {
    let s = s.trim_start();
    let body = s.strip_prefix('"')?;
    let mut out = Vec::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'n' => out.push(b'\n'),
                    't' => out.push(b'\t'),
                    'r' => out.push(b'\r'),
                    '0' => out.push(0),
                    '\\' => out.push(b'\\'),
                    '"' => out.push(b'"'),
                    '\'' => out.push(b'\''),
                    'x' => {
                        let hi = chars.next()?.1.to_digit(16)?;
                        let lo = chars.next()?.1.to_digit(16)?;
                        out.push((hi * 16 + lo) as u8);
                    }
                    _ => return None,
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    None
}

/// Splits an operation line into words: whitespace separated, with `"..."` (Go
/// escapes) and `'...'` (literal) quoting.
pub(crate) fn split_words(line: &str) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let mut word = Vec::new();
        loop {
            if rest.starts_with('"') {
                let (bytes, tail) = take_quoted(rest)
                    .ok_or_else(|| anyhow!("unterminated or bad quoted string"))?;
                word.extend(bytes);
                rest = tail;
            } else if let Some(body) = rest.strip_prefix('\'') {
                let end = body
                    .find('\'')
                    .ok_or_else(|| anyhow!("unterminated quote"))?;
                word.extend_from_slice(&body.as_bytes()[..end]);
                rest = &body[end + 1..];
            } else {
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                    .unwrap_or(rest.len());
                word.extend_from_slice(&rest.as_bytes()[..end]);
                rest = &rest[end..];
            }
            if rest.is_empty() || rest.starts_with(char::is_whitespace) {
                break;
            }
        }
        words.push(String::from_utf8(word).map_err(|_| anyhow!("word is not valid UTF-8"))?);
        rest = rest.trim_start();
    }
    Ok(words)
}

pub(crate) fn txn_json(r: &PbTxnResponse) -> Json {
    let responses: Vec<Json> = r
        .responses
        .iter()
        .map(|op| {
            let inner = match &op.response {
                Some(PbTxnOpResponse::ResponseRange(g)) => {
                    Json::field("ResponseRange", kv::range_json(g))
                }
                Some(PbTxnOpResponse::ResponsePut(p)) => {
                    Json::field("ResponsePut", kv::put_json(p))
                }
                Some(PbTxnOpResponse::ResponseDeleteRange(d)) => {
                    Json::field("ResponseDeleteRange", kv::del_json(d))
                }
                Some(PbTxnOpResponse::ResponseTxn(t)) => Json::field("ResponseTxn", txn_json(t)),
                None => Json::Null,
            };
            Obj::new().val("Response", inner).build()
        })
        .collect();
    Obj::new()
        .val("header", output::header_json(r.header.as_ref()))
        .bool("succeeded", r.succeeded)
        .val("responses", Json::Arr(responses))
        .build()
}

pub(crate) fn render_txn(
    out: &mut impl Write,
    r: &PbTxnResponse,
    format: OutputFormat,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        return output::write_json(out, &txn_json(r));
    }
    writeln!(out, "{}", if r.succeeded { "SUCCESS" } else { "FAILURE" })?;
    for op in &r.responses {
        writeln!(out)?;
        match &op.response {
            Some(PbTxnOpResponse::ResponseRange(g)) => {
                kv::render_get(out, g, format, false, false)?
            }
            Some(PbTxnOpResponse::ResponsePut(p)) => kv::render_put(out, p, format)?,
            Some(PbTxnOpResponse::ResponseDeleteRange(d)) => kv::render_del(out, d, format)?,
            Some(PbTxnOpResponse::ResponseTxn(t)) => render_txn(out, t, format)?,
            None => writeln!(out, "unexpected response")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{
        PbCompare, PbCompareTarget, PbDeleteResponse, PbKeyValue, PbPutResponse, PbRangeResponse,
        PbResponseHeader, PbResponseOp, PbTargetUnion, PbTxnRequest, PbTxnRequestOp,
    };

    fn pb(c: Compare) -> PbCompare {
        // `Compare` is a transparent wrapper; go through a Txn to read it back.
        let req: PbTxnRequest = Txn::new().when(vec![c]).into();
        req.compare.into_iter().next().unwrap()
    }

    #[test]
    fn parses_every_compare_target() {
        let c = pb(parse_compare(r#"mod("k1") > "0""#).unwrap());
        assert_eq!(c.key, b"k1");
        assert_eq!(c.target, PbCompareTarget::Mod as i32);
        assert_eq!(c.result, CompareOp::Greater as i32);
        assert_eq!(c.target_union, Some(PbTargetUnion::ModRevision(0)));

        let c = pb(parse_compare(r#"value("a key") != "a \"v\"""#).unwrap());
        assert_eq!(c.key, b"a key");
        assert_eq!(c.result, CompareOp::NotEqual as i32);
        assert_eq!(
            c.target_union,
            Some(PbTargetUnion::Value(b"a \"v\"".to_vec()))
        );

        let c = pb(parse_compare(r#"version("k") = "3""#).unwrap());
        assert_eq!(c.target_union, Some(PbTargetUnion::Version(3)));
        assert_eq!(c.result, CompareOp::Equal as i32);

        let c = pb(parse_compare(r#"c("k") < "5""#).unwrap());
        assert_eq!(c.target_union, Some(PbTargetUnion::CreateRevision(5)));
        assert_eq!(c.result, CompareOp::Less as i32);

        let c = pb(parse_compare(r#"lease("k") = "694d77aa9e38260f""#).unwrap());
        assert_eq!(
            c.target_union,
            Some(PbTargetUnion::Lease(0x694d77aa9e38260f))
        );

        // Lenient: no spaces, unquoted numbers.
        let c = pb(parse_compare(r#"mod("k")=5"#).unwrap());
        assert_eq!(c.target_union, Some(PbTargetUnion::ModRevision(5)));
    }

    #[test]
    fn rejects_bad_compares() {
        for bad in [
            "bogus",
            r#"mod("k") >> "1""#,
            r#"mod("k" > "1""#,
            r#"mod(k) > "1""#,
            r#"value("k") = "v" extra"#,
            r#"value("k") ="#,
            r#"size("k") = "1""#,
        ] {
            let e = parse_compare(bad).err().unwrap().to_string();
            assert!(e.contains("malformed comparison"), "{bad}: {e}");
        }
        for bad in [r#"version("k") = "x""#, r#"lease("k") = "zz""#] {
            let e = parse_compare(bad).err().unwrap().to_string();
            assert!(e.contains("invalid txn compare request"), "{bad}: {e}");
        }
    }

    fn pb_op(op: TxnOp) -> PbTxnRequestOp {
        let req: PbTxnRequest = Txn::new().and_then(vec![op]).into();
        req.success.into_iter().next().unwrap()
    }

    #[test]
    fn parses_operations() {
        use etcd_client::proto::PbTxnOpRequest as R;
        match pb_op(parse_op(r#"put "a key" 'a value' --lease=ff --prev-kv"#).unwrap()).request {
            Some(R::RequestPut(p)) => {
                assert_eq!(p.key, b"a key");
                assert_eq!(p.value, b"a value");
                assert_eq!(p.lease, 255);
                assert!(p.prev_kv);
            }
            other => panic!("{other:?}"),
        }
        match pb_op(parse_op("get k --prefix --limit=1").unwrap()).request {
            Some(R::RequestRange(g)) => {
                assert_eq!(g.key, b"k");
                assert_eq!(g.range_end, b"l");
                assert_eq!(g.limit, 1);
            }
            other => panic!("{other:?}"),
        }
        match pb_op(parse_op("del k z --prev-kv").unwrap()).request {
            Some(R::RequestDeleteRange(d)) => {
                assert_eq!(d.key, b"k");
                assert_eq!(d.range_end, b"z");
                assert!(d.prev_kv);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_bad_operations() {
        for bad in [
            "frob k v",
            "put k",
            "put k v --lease=xyz",
            "get",
            "get k --bogus",
            r#"put "k v"#,
            "get k z --prefix",
        ] {
            assert!(parse_op(bad).is_err(), "{bad}");
        }
        let e = parse_op("frob k6 x").err().unwrap().to_string();
        assert!(e.starts_with("invalid txn request: frob k6 x"), "{e}");
    }

    #[test]
    fn splits_words_with_quotes() {
        assert_eq!(
            split_words(r#"put "k 5" "hello world""#).unwrap(),
            vec!["put", "k 5", "hello world"]
        );
        assert_eq!(split_words(r#"a'b c'"d\te""#).unwrap(), vec!["ab cd\te"]);
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn parses_sections() {
        let t =
            parse_txn("mod(\"k\") > \"0\"\nvalue(\"k\") = \"v\"\n\nput k v\nget k\n\ndel k\n\n")
                .unwrap();
        assert_eq!(
            (t.compares.len(), t.success.len(), t.failure.len()),
            (2, 2, 1)
        );
        // End of input closes sections; no compares is allowed.
        let t = parse_txn("\nput k v").unwrap();
        assert_eq!(
            (t.compares.len(), t.success.len(), t.failure.len()),
            (0, 1, 0)
        );
        assert!(parse_txn("\n\n\n\nput k v\n").is_err());
        assert!(parse_txn("bogus\n\n\n").is_err());
    }

    #[test]
    fn renders_like_etcdctl() {
        let kv = PbKeyValue {
            key: b"k1".to_vec(),
            value: b"v1".to_vec(),
            create_revision: 8,
            mod_revision: 8,
            version: 1,
            lease: 0,
        };
        let sub = PbResponseHeader {
            revision: 11,
            ..Default::default()
        };
        let r = PbTxnResponse {
            header: Some(PbResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 12,
                raft_term: 2,
            }),
            succeeded: true,
            responses: vec![
                PbResponseOp {
                    response: Some(PbTxnOpResponse::ResponseRange(PbRangeResponse {
                        header: Some(sub),
                        kvs: vec![kv.clone()],
                        more: false,
                        count: 1,
                    })),
                },
                PbResponseOp {
                    response: Some(PbTxnOpResponse::ResponsePut(PbPutResponse {
                        header: Some(sub),
                        prev_kv: None,
                    })),
                },
                PbResponseOp {
                    response: Some(PbTxnOpResponse::ResponseDeleteRange(PbDeleteResponse {
                        header: Some(sub),
                        deleted: 0,
                        prev_kvs: vec![],
                    })),
                },
            ],
        };
        let mut out = Vec::new();
        render_txn(&mut out, &r, OutputFormat::Simple).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "SUCCESS\n\nk1\nv1\n\nOK\n\n0\n"
        );
        let j = txn_json(&r).to_string();
        assert_eq!(
            j,
            concat!(
                r#"{"header":{"cluster_id":1,"member_id":2,"revision":12,"raft_term":2},"succeeded":true,"responses":["#,
                r#"{"Response":{"ResponseRange":{"header":{"revision":11},"kvs":[{"key":"azE=","create_revision":8,"mod_revision":8,"version":1,"value":"djE="}],"count":1}}},"#,
                r#"{"Response":{"ResponsePut":{"header":{"revision":11}}}},"#,
                r#"{"Response":{"ResponseDeleteRange":{"header":{"revision":11}}}}]}"#
            )
        );
        let failed = PbTxnResponse {
            succeeded: false,
            ..r
        };
        let mut out = Vec::new();
        render_txn(&mut out, &failed, OutputFormat::Simple).unwrap();
        assert!(String::from_utf8(out).unwrap().starts_with("FAILURE\n\n"));
    }
}
