//! Cluster membership commands (`member add|remove|update|list|promote`), `move-leader`
//! and the member-list lookup behind `endpoint ... --cluster`. Member IDs are read and
//! printed in hexadecimal, as etcdctl does.

use std::io::Write;

use anyhow::{anyhow, bail};
use etcd_client::MemberAddOptions;
use etcd_client::proto::{PbMember, PbResponseHeader};

use super::Ctx;
use super::output::{self, Json, Obj, OutputFormat};

/// `member ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum MemberCommand {
    /// Adds a member into the cluster.
    Add(MemberAddArgs),
    /// Removes a member from the cluster.
    Remove(MemberIdArgs),
    /// Updates the peer URLs of a member in the cluster.
    Update(MemberUpdateArgs),
    /// Lists all members in the cluster.
    List,
    /// Promotes a non-voting (learner) member in the cluster.
    Promote(MemberIdArgs),
}

/// `member add NAME --peer-urls URL[,URL] [--learner]`.
#[derive(clap::Args, Debug, Clone)]
pub struct MemberAddArgs {
    /// The name of the new member.
    pub name: Option<String>,
    /// Comma separated peer URLs for the new member.
    #[arg(long = "peer-urls")]
    pub peer_urls: Option<String>,
    /// Adds the member as a raft learner (non-voting).
    #[arg(long)]
    pub learner: bool,
}

/// A command taking one member ID (hexadecimal).
#[derive(clap::Args, Debug, Clone)]
pub struct MemberIdArgs {
    /// The member ID in hexadecimal.
    pub id: Option<String>,
}

/// `member update ID --peer-urls URL[,URL]`.
#[derive(clap::Args, Debug, Clone)]
pub struct MemberUpdateArgs {
    /// The member ID in hexadecimal.
    pub id: Option<String>,
    /// Comma separated new peer URLs of the member.
    #[arg(long = "peer-urls")]
    pub peer_urls: Option<String>,
}

/// `move-leader TARGET_ID`.
#[derive(clap::Args, Debug, Clone)]
pub struct MoveLeaderArgs {
    /// The ID (hexadecimal) of the member to hand leadership to.
    pub target: Option<String>,
}

/// Parses a member ID as etcdctl does: hexadecimal (an optional `0x` is accepted).
pub(crate) fn parse_member_id(arg: Option<&str>) -> anyhow::Result<u64> {
    let Some(s) = arg else {
        bail!("member ID is not provided");
    };
    let t = s.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(digits, 16)
        .map_err(|e| anyhow!("bad member ID arg ({e}: {s:?}), expecting ID in Hex"))
}

/// Splits a `--peer-urls` value; a missing or empty value is etcdctl's usage error.
fn peer_urls(arg: Option<&str>) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = arg
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        bail!("member peer urls not provided");
    }
    Ok(urls)
}

/// Member ID as etcdctl's `%16x`: hexadecimal, right-aligned in 16 columns with spaces.
fn padded_id(id: u64) -> String {
    format!("{id:16x}")
}

pub(crate) async fn member(ctx: &Ctx, cmd: MemberCommand) -> anyhow::Result<()> {
    match cmd {
        MemberCommand::List => list(ctx).await,
        MemberCommand::Add(a) => add(ctx, a).await,
        MemberCommand::Remove(a) => remove(ctx, a).await,
        MemberCommand::Update(a) => update(ctx, a).await,
        MemberCommand::Promote(a) => promote(ctx, a).await,
    }
}

async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let mut client = ctx.client().await?;
    let resp = ctx.call(client.member_list()).await?;
    let mut out = std::io::stdout().lock();
    render_member_list(
        &mut out,
        resp.0.header.as_ref(),
        &resp.0.members,
        ctx.format(),
    )?;
    Ok(())
}

/// Membership changes print one line (simple), their response (json), and have no
/// table form; that is refused before anything is changed.
fn check_change_format(format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Table {
        return Err(output::unsupported(format));
    }
    Ok(())
}

async fn add(ctx: &Ctx, a: MemberAddArgs) -> anyhow::Result<()> {
    let Some(name) = a.name.filter(|n| !n.is_empty()) else {
        bail!("member name not provided");
    };
    let urls = peer_urls(a.peer_urls.as_deref())?;
    let format = ctx.format();
    check_change_format(format)?;
    let opts = a.learner.then(|| MemberAddOptions::new().with_is_learner());
    let mut client = ctx.client().await?;
    let resp = ctx.call(client.member_add(&urls, opts)).await?;
    let r = resp.0;
    let mut out = std::io::stdout().lock();
    if format == OutputFormat::Json {
        let v = Obj::new()
            .val("header", output::header_json(r.header.as_ref()))
            .val("member", r.member.as_ref().map_or(Json::Null, member_json))
            .val("members", members_json(&r.members))
            .build();
        output::write_json(&mut out, &v)?;
        return Ok(());
    }
    let new_id = r.member.as_ref().map_or(0, |m| m.id);
    let cluster_id = r.header.as_ref().map_or(0, |h| h.cluster_id);
    // The URLs the server recorded (it may have normalised them), else ours.
    let new_urls = r
        .member
        .as_ref()
        .map(|m| m.peer_ur_ls.clone())
        .filter(|u| !u.is_empty())
        .unwrap_or(urls);
    write!(
        out,
        "{}",
        member_added_text(&name, new_id, cluster_id, &new_urls, &r.members)
    )?;
    Ok(())
}

/// The text `member add` prints in the simple format: the confirmation and the
/// environment for starting the new member.
pub(crate) fn member_added_text(
    name: &str,
    new_id: u64,
    cluster_id: u64,
    new_urls: &[String],
    members: &[PbMember],
) -> String {
    let mut initial = Vec::new();
    let mut seen_new = false;
    for m in members {
        let member_name = if m.id == new_id {
            seen_new = true;
            name
        } else {
            m.name.as_str()
        };
        for u in &m.peer_ur_ls {
            initial.push(format!("{member_name}={u}"));
        }
    }
    if !seen_new {
        initial.extend(new_urls.iter().map(|u| format!("{name}={u}")));
    }
    format!(
        "Member {} added to cluster {}\n\nETCD_NAME={}\nETCD_INITIAL_CLUSTER={}\n\
         ETCD_INITIAL_ADVERTISE_PEER_URLS={}\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
        padded_id(new_id),
        padded_id(cluster_id),
        go_quote(name),
        go_quote(&initial.join(",")),
        go_quote(&new_urls.join(",")),
    )
}

/// Quotes a string like Go's `%q` does for ordinary text.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Prints the outcome of remove/update/promote: `Member <id> <verb> cluster <id>`.
fn print_change(
    format: OutputFormat,
    id: u64,
    verb: &str,
    header: Option<&PbResponseHeader>,
    members: &[PbMember],
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if format == OutputFormat::Json {
        let v = Obj::new()
            .val("header", output::header_json(header))
            .val("members", members_json(members))
            .build();
        output::write_json(&mut out, &v)?;
    } else {
        let cluster_id = header.map_or(0, |h| h.cluster_id);
        writeln!(out, "{}", change_line(id, verb, cluster_id))?;
    }
    Ok(())
}

pub(crate) fn change_line(id: u64, verb: &str, cluster_id: u64) -> String {
    format!(
        "Member {} {verb} cluster {}",
        padded_id(id),
        padded_id(cluster_id)
    )
}

async fn remove(ctx: &Ctx, a: MemberIdArgs) -> anyhow::Result<()> {
    let id = parse_member_id(a.id.as_deref())?;
    let format = ctx.format();
    check_change_format(format)?;
    let mut client = ctx.client().await?;
    let r = ctx.call(client.member_remove(id)).await?.0;
    print_change(format, id, "removed from", r.header.as_ref(), &r.members)
}

async fn update(ctx: &Ctx, a: MemberUpdateArgs) -> anyhow::Result<()> {
    let id = parse_member_id(a.id.as_deref())?;
    let urls = peer_urls(a.peer_urls.as_deref())?;
    let format = ctx.format();
    check_change_format(format)?;
    let mut client = ctx.client().await?;
    let r = ctx.call(client.member_update(id, urls)).await?.0;
    print_change(format, id, "updated in", r.header.as_ref(), &r.members)
}

async fn promote(ctx: &Ctx, a: MemberIdArgs) -> anyhow::Result<()> {
    let id = parse_member_id(a.id.as_deref())?;
    let format = ctx.format();
    check_change_format(format)?;
    let mut client = ctx.client().await?;
    let r = ctx.call(client.member_promote(id)).await?.0;
    print_change(format, id, "promoted in", r.header.as_ref(), &r.members)
}

fn member_json(m: &PbMember) -> Json {
    let strings = |v: &[String]| Json::Arr(v.iter().map(|s| Json::from(s.as_str())).collect());
    Obj::new()
        .uint("ID", m.id)
        .str("name", &m.name)
        .val("peerURLs", strings(&m.peer_ur_ls))
        .val("clientURLs", strings(&m.client_ur_ls))
        .bool("isLearner", m.is_learner)
        .build()
}

fn members_json(members: &[PbMember]) -> Json {
    Json::Arr(members.iter().map(member_json).collect())
}

/// The row etcdctl prints for a member: ID, status, name, peer URLs, client URLs,
/// learner flag. A member that has not started yet has no name.
fn member_row(m: &PbMember) -> Vec<String> {
    let status = if m.name.is_empty() {
        "unstarted"
    } else {
        "started"
    };
    vec![
        format!("{:x}", m.id),
        status.to_string(),
        m.name.clone(),
        m.peer_ur_ls.join(","),
        m.client_ur_ls.join(","),
        m.is_learner.to_string(),
    ]
}

pub(crate) fn render_member_list(
    out: &mut impl Write,
    header: Option<&PbResponseHeader>,
    members: &[PbMember],
    format: OutputFormat,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Simple => {
            for m in members {
                writeln!(out, "{}", member_row(m).join(", "))?;
            }
            Ok(())
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = members.iter().map(member_row).collect();
            let headers = [
                "ID",
                "Status",
                "Name",
                "Peer Addrs",
                "Client Addrs",
                "Is Learner",
            ];
            out.write_all(output::table(&headers, &rows).as_bytes())
        }
        OutputFormat::Json => {
            let v = Obj::new()
                .val("header", output::header_json(header))
                .val("members", members_json(members))
                .build();
            output::write_json(out, &v)
        }
    }
}

/// The endpoints to use for `endpoint ... [--cluster]`: the given ones, or with
/// `--cluster` every member's client URLs as the given endpoints report them.
pub(crate) async fn endpoints(ctx: &Ctx, cluster: bool) -> anyhow::Result<Vec<String>> {
    if !cluster {
        return Ok(ctx.global.endpoints.clone());
    }
    let fetched = async {
        let mut client = ctx.client().await?;
        ctx.call(client.member_list()).await
    }
    .await
    .map_err(|e| anyhow!("failed to fetch endpoints from etcd cluster member list: {e:#}"))?;
    Ok(fetched
        .0
        .members
        .iter()
        .flat_map(|m| m.client_ur_ls.iter().cloned())
        .collect())
}

/// `move-leader TARGET`: finds the leader among the endpoints (the one whose status
/// names itself as leader) and asks it to hand leadership to `TARGET`.
pub(crate) async fn move_leader(ctx: &Ctx, a: MoveLeaderArgs) -> anyhow::Result<()> {
    let Some(arg) = a.target.as_deref() else {
        bail!("move-leader expects one argument");
    };
    let target = parse_member_id(Some(arg))?;
    let format = ctx.format();
    check_change_format(format)?;
    let endpoints = ctx.global.endpoints.clone();
    let mut leader = None;
    for ep in &endpoints {
        let mut client = ctx.client_for(std::slice::from_ref(ep)).await?;
        let status = ctx.call(client.status()).await?.0;
        let member_id = status.header.as_ref().map_or(0, |h| h.member_id);
        if member_id != 0 && member_id == status.leader {
            leader = Some((client, status.leader));
            break;
        }
    }
    let Some((mut client, leader_id)) = leader else {
        bail!("no leader endpoint given at [{}]", endpoints.join(" "));
    };
    // A target outside the cluster would only get "bad leader transferee" back.
    if let Ok(list) = ctx.call(client.member_list()).await
        && !list.0.members.iter().any(|m| m.id == target)
    {
        bail!("member {target:x} is not a member of the cluster (bad leader transferee)");
    }
    let resp = ctx.call(client.move_leader(target)).await?;
    let mut out = std::io::stdout().lock();
    output::write_header_or_text(
        &mut out,
        format,
        resp.0.header.as_ref(),
        format_args!("Leadership transferred from {leader_id:x} to {target:x}"),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, name: &str, peer: &str, client: &str, learner: bool) -> PbMember {
        PbMember {
            id,
            name: name.into(),
            peer_ur_ls: vec![peer.into()],
            client_ur_ls: if client.is_empty() {
                vec![]
            } else {
                vec![client.into()]
            },
            is_learner: learner,
        }
    }

    fn members() -> Vec<PbMember> {
        vec![
            m(
                0x1443fe8899ceead9,
                "e2",
                "http://127.0.0.1:42380",
                "http://127.0.0.1:42379",
                false,
            ),
            m(0xdaee1e932990fb0d, "", "http://127.0.0.1:44380", "", true),
        ]
    }

    fn header() -> PbResponseHeader {
        PbResponseHeader {
            cluster_id: 14665745333935175146,
            member_id: 1460290566847654617,
            revision: 0,
            raft_term: 2,
        }
    }

    #[test]
    fn member_ids_parse_as_hex() {
        assert_eq!(
            parse_member_id(Some("daee1e932990fb0d")).unwrap(),
            0xdaee1e932990fb0d
        );
        assert_eq!(parse_member_id(Some("0x10")).unwrap(), 16);
        let e = parse_member_id(Some("zz")).unwrap_err().to_string();
        assert!(e.starts_with("bad member ID arg") && e.ends_with("expecting ID in Hex"));
        assert!(parse_member_id(Some("")).is_err());
        assert!(parse_member_id(Some("1ffffffffffffffff")).is_err());
        assert_eq!(
            parse_member_id(None).unwrap_err().to_string(),
            "member ID is not provided"
        );
    }

    #[test]
    fn peer_urls_split_and_required() {
        assert_eq!(
            peer_urls(Some("http://a:1, http://b:2")).unwrap(),
            vec!["http://a:1", "http://b:2"]
        );
        for missing in [None, Some(""), Some(" , ")] {
            assert_eq!(
                peer_urls(missing).unwrap_err().to_string(),
                "member peer urls not provided"
            );
        }
    }

    #[test]
    fn member_list_simple_like_etcdctl() {
        let mut out = Vec::new();
        render_member_list(&mut out, None, &members(), OutputFormat::Simple).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1443fe8899ceead9, started, e2, http://127.0.0.1:42380, http://127.0.0.1:42379, false\n\
             daee1e932990fb0d, unstarted, , http://127.0.0.1:44380, , true\n"
        );
    }

    #[test]
    fn member_list_table_like_etcdctl() {
        let mut out = Vec::new();
        render_member_list(&mut out, None, &members()[..1], OutputFormat::Table).unwrap();
        let expected = "\
+------------------+---------+------+------------------------+------------------------+------------+
|        ID        | STATUS  | NAME |       PEER ADDRS       |      CLIENT ADDRS      | IS LEARNER |
+------------------+---------+------+------------------------+------------------------+------------+
| 1443fe8899ceead9 | started |   e2 | http://127.0.0.1:42380 | http://127.0.0.1:42379 |      false |
+------------------+---------+------+------------------------+------------------------+------------+
";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn member_list_json_like_etcdctl() {
        let mut out = Vec::new();
        render_member_list(&mut out, Some(&header()), &members(), OutputFormat::Json).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"header":{"cluster_id":14665745333935175146,"member_id":1460290566847654617,"raft_term":2},"#,
                r#""members":[{"ID":1460290566847654617,"name":"e2","peerURLs":["http://127.0.0.1:42380"],"#,
                r#""clientURLs":["http://127.0.0.1:42379"]},"#,
                r#"{"ID":15775580162131819277,"peerURLs":["http://127.0.0.1:44380"],"isLearner":true}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn member_add_text_like_etcdctl() {
        let mut list = members();
        list.insert(
            1,
            m(
                0x52dd07b4c2a11d88,
                "e3",
                "http://127.0.0.1:43380",
                "http://127.0.0.1:43379",
                false,
            ),
        );
        let text = member_added_text(
            "e4",
            0xdaee1e932990fb0d,
            0xcb8731adc38c75ea,
            &["http://127.0.0.1:44380".to_string()],
            &list,
        );
        assert_eq!(
            text,
            "Member daee1e932990fb0d added to cluster cb8731adc38c75ea\n\n\
             ETCD_NAME=\"e4\"\n\
             ETCD_INITIAL_CLUSTER=\"e2=http://127.0.0.1:42380,e3=http://127.0.0.1:43380,e4=http://127.0.0.1:44380\"\n\
             ETCD_INITIAL_ADVERTISE_PEER_URLS=\"http://127.0.0.1:44380\"\n\
             ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n"
        );
        // A list without the new member still names it in the initial cluster.
        let text = member_added_text("n", 0x53817766f894420, 1, &["http://x:1".into()], &[]);
        assert!(
            text.starts_with("Member  53817766f894420 added to cluster                1\n"),
            "{text}"
        );
        assert!(
            text.contains("ETCD_INITIAL_CLUSTER=\"n=http://x:1\"\n"),
            "{text}"
        );
    }

    #[test]
    fn change_lines_pad_ids_like_go() {
        assert_eq!(
            change_line(0x53817766f894420, "removed from", 0xcb8731adc38c75ea),
            "Member  53817766f894420 removed from cluster cb8731adc38c75ea"
        );
        assert_eq!(
            change_line(0xdaee1e932990fb0d, "promoted in", 0xcb8731adc38c75ea),
            "Member daee1e932990fb0d promoted in cluster cb8731adc38c75ea"
        );
    }

    #[test]
    fn go_quote_escapes() {
        assert_eq!(go_quote("e4"), "\"e4\"");
        assert_eq!(go_quote("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\x01\"");
    }
}
