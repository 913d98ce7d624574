//! The real `etcdctl` 3.4 as a client: every command a user would type, with its printed
//! output checked. Each body runs against real etcd (validating the expectations) and
//! against kvstore.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tests::etcdctl::{etcdctl, spawn_etcdctl};
use tests::{Backend, Server, TestResult, both_backends};
use tokio::io::{AsyncBufReadExt, BufReader};

both_backends!(
    put_and_get,
    get_options,
    delete,
    txn_from_stdin,
    watch_with_rev_and_prev_kv,
    lease_lifecycle,
    compaction,
    endpoint_status_json,
);

/// Runs etcdctl and returns stdout, failing on a non-zero exit.
async fn ok(server: &Server, args: &[&str]) -> Result<String> {
    Ok(etcdctl(&server.endpoint(), args, None)
        .await?
        .ok()?
        .to_owned())
}

/// The header revision of a `-w json` answer.
fn json_revision(out: &str) -> Result<i64> {
    let v: Value = serde_json::from_str(out).with_context(|| format!("not json: {out}"))?;
    v["header"]["revision"]
        .as_i64()
        .with_context(|| format!("no header.revision in {out}"))
}

fn lines(items: &[&str]) -> String {
    let mut s = items.join("\n");
    s.push('\n');
    s
}

async fn put_and_get(backend: Backend) -> TestResult {
    let s = Server::start(backend).await?;
    assert_eq!(ok(&s, &["put", "foo", "bar"]).await?, "OK\n");
    assert_eq!(ok(&s, &["get", "foo"]).await?, lines(&["foo", "bar"]));
    assert_eq!(ok(&s, &["get", "missing"]).await?, "");
    assert_eq!(
        ok(&s, &["put", "foo", "baz", "--prev-kv"]).await?,
        lines(&["OK", "foo", "bar"])
    );
    let json = ok(&s, &["get", "foo", "-w", "json"]).await?;
    let v: Value = serde_json::from_str(&json)?;
    assert_eq!(v["count"], 1);
    let kv = &v["kvs"][0];
    // Keys and values are base64 in etcdctl's JSON: "foo" = Zm9v, "baz" = YmF6.
    assert_eq!(kv["key"], "Zm9v");
    assert_eq!(kv["value"], "YmF6");
    assert_eq!(kv["version"], 2);
    assert_eq!(
        kv["create_revision"], 2,
        "first write of a fresh store is revision 2"
    );
    assert_eq!(kv["mod_revision"], 3);
    assert_eq!(json_revision(&json)?, 3);
    Ok(())
}

async fn get_options(backend: Backend) -> TestResult {
    let s = Server::start(backend).await?;
    // Revisions 2..=6.
    for (k, v) in [
        ("a/1", "c"),
        ("a/2", "a"),
        ("a/3", "b"),
        ("b/1", "z"),
        ("c", "y"),
    ] {
        ok(&s, &["put", k, v]).await?;
    }
    assert_eq!(
        ok(&s, &["get", "a/", "--prefix"]).await?,
        lines(&["a/1", "c", "a/2", "a", "a/3", "b"])
    );
    assert_eq!(
        ok(&s, &["get", "a/3", "--from-key", "--keys-only"]).await?,
        lines(&["a/3", "", "b/1", "", "c", ""])
    );
    assert_eq!(
        ok(&s, &["get", "a/", "--prefix", "--limit", "2"]).await?,
        lines(&["a/1", "c", "a/2", "a"])
    );
    assert_eq!(
        ok(
            &s,
            &[
                "get",
                "a/",
                "--prefix",
                "--sort-by",
                "VALUE",
                "--order",
                "ASCEND"
            ]
        )
        .await?,
        lines(&["a/2", "a", "a/3", "b", "a/1", "c"])
    );
    assert_eq!(
        ok(
            &s,
            &[
                "get",
                "",
                "--prefix",
                "--sort-by",
                "KEY",
                "--order",
                "DESCEND",
                "--keys-only"
            ]
        )
        .await?,
        lines(&["c", "", "b/1", "", "a/3", "", "a/2", "", "a/1", ""])
    );
    assert_eq!(
        ok(
            &s,
            &[
                "get",
                "",
                "--prefix",
                "--sort-by",
                "MODIFY",
                "--order",
                "DESCEND",
                "--limit",
                "1"
            ]
        )
        .await?,
        lines(&["c", "y"])
    );
    ok(&s, &["put", "a/1", "new"]).await?; // revision 7
    assert_eq!(
        ok(&s, &["get", "a/1", "--rev", "6"]).await?,
        lines(&["a/1", "c"])
    );
    assert_eq!(
        ok(&s, &["get", "a/1", "--rev", "7"]).await?,
        lines(&["a/1", "new"])
    );
    assert_eq!(
        ok(&s, &["get", "a/", "--prefix", "--rev", "3"]).await?,
        lines(&["a/1", "c", "a/2", "a"])
    );
    assert_eq!(
        ok(&s, &["get", "a/", "--prefix", "--rev", "2"]).await?,
        lines(&["a/1", "c"])
    );
    // etcdctl 3.4 has no --count-only; a limited JSON answer still counts every key.
    let limited = ok(&s, &["get", "", "--prefix", "--limit", "1", "-w", "json"]).await?;
    let v: Value = serde_json::from_str(&limited)?;
    assert_eq!(v["count"], 5, "{limited}");
    assert_eq!(v["more"], true, "{limited}");
    assert_eq!(v["kvs"].as_array().map(Vec::len), Some(1), "{limited}");
    let future = etcdctl(&s.endpoint(), &["get", "a/1", "--rev", "100"], None).await?;
    ensure!(!future.status.success(), "future revision must fail");
    assert!(
        future
            .stderr
            .contains("etcdserver: mvcc: required revision is a future revision"),
        "stderr: {}",
        future.stderr
    );
    Ok(())
}

async fn delete(backend: Backend) -> TestResult {
    let s = Server::start(backend).await?;
    for k in ["d/1", "d/2", "d/3", "e"] {
        ok(&s, &["put", k, &format!("v-{k}")]).await?;
    }
    assert_eq!(ok(&s, &["del", "nothing"]).await?, "0\n");
    assert_eq!(
        ok(&s, &["del", "e", "--prev-kv"]).await?,
        lines(&["1", "e", "v-e"])
    );
    assert_eq!(ok(&s, &["del", "d/2", "--from-key"]).await?, "2\n");
    assert_eq!(
        ok(&s, &["get", "", "--prefix"]).await?,
        lines(&["d/1", "v-d/1"])
    );
    assert_eq!(ok(&s, &["del", "d/", "--prefix"]).await?, "1\n");
    assert_eq!(ok(&s, &["get", "", "--prefix"]).await?, "");
    Ok(())
}

async fn txn_from_stdin(backend: Backend) -> TestResult {
    let s = Server::start(backend).await?;
    ok(&s, &["put", "t/k", "1"]).await?;
    // compares, blank line, success ops, blank line, failure ops, blank line.
    let success =
        "value(\"t/k\") = \"1\"\nmod(\"t/k\") > \"0\"\n\nput t/a A\nget t/k\n\nput t/b B\n\n";
    let out = etcdctl(&s.endpoint(), &["txn"], Some(success)).await?;
    assert_eq!(out.ok()?, lines(&["SUCCESS", "", "OK", "", "t/k", "1"]));

    let failure = "version(\"t/k\") > \"5\"\n\nput t/a X\n\nput t/b B\ndel t/a\n\n";
    let out = etcdctl(&s.endpoint(), &["txn", "-w", "json"], Some(failure)).await?;
    let v: Value = serde_json::from_str(out.ok()?)?;
    assert!(
        v.get("succeeded")
            .is_none_or(|b| b.as_bool() == Some(false)),
        "{v}"
    );
    assert_eq!(v["header"]["revision"], 4);
    assert_eq!(
        v["responses"][1]["Response"]["ResponseDeleteRange"]["deleted"],
        1
    );
    assert_eq!(
        ok(&s, &["get", "t/", "--prefix"]).await?,
        lines(&["t/b", "B", "t/k", "1"])
    );
    Ok(())
}

async fn watch_with_rev_and_prev_kv(backend: Backend) -> TestResult {
    let s = Server::start(backend).await?;
    ok(&s, &["put", "w/a", "1"]).await?; // 2
    ok(&s, &["put", "w/a", "2"]).await?; // 3
    let mut child = spawn_etcdctl(
        &s.endpoint(),
        &["watch", "w/", "--prefix", "--rev", "3", "--prev-kv"],
    )?;
    let stdout = child.stdout.take().context("watch stdout")?;
    let mut reader = BufReader::new(stdout).lines();
    ok(&s, &["put", "w/b", "3"]).await?; // 4
    ok(&s, &["del", "w/a"]).await?; // 5
    ok(&s, &["put", "other", "x"]).await?; // 6, not watched
    ok(&s, &["put", "w/b", "4"]).await?; // 7
    // PUT events print (prev key, prev value,) key, value; DELETE prints prev, then key
    // and an empty value.
    let want = [
        "PUT", "w/a", "1", "w/a", "2", // rev 3 replayed, prev from rev 2
        "PUT", "w/b", "3", // rev 4, no prev
        "DELETE", "w/a", "2", "w/a", "", // rev 5
        "PUT", "w/b", "3", "w/b", "4", // rev 7
    ];
    let mut got = Vec::new();
    while got.len() < want.len() {
        let line = tokio::time::timeout(Duration::from_secs(20), reader.next_line())
            .await
            .with_context(|| format!("watch output stalled after {got:?}"))??
            .with_context(|| format!("watch exited after {got:?}"))?;
        got.push(line);
    }
    child.kill().await?;
    assert_eq!(got, want);
    Ok(())
}

/// `lease grant` prints `lease <hex id> granted with TTL(<n>s)`.
fn lease_id(out: &str) -> Result<String> {
    let id = out
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("unexpected grant output {out:?}"))?;
    ensure!(
        out.starts_with("lease ") && out.contains("granted with TTL(300s)"),
        "{out:?}"
    );
    Ok(id.to_owned())
}

async fn lease_lifecycle(backend: Backend) -> TestResult {
    let s = Server::start(backend).await?;
    let id = lease_id(&ok(&s, &["lease", "grant", "300"]).await?)?;
    let other = lease_id(&ok(&s, &["lease", "grant", "300"]).await?)?;
    ensure!(id != other, "two grants gave the same id {id}");
    ok(&s, &["put", "l/1", "v", "--lease", &id]).await?;
    ok(&s, &["put", "l/2", "v", "--lease", &id]).await?;

    let ttl = ok(&s, &["lease", "timetolive", &id, "--keys"]).await?;
    ensure!(
        ttl.starts_with(&format!("lease {id} granted with TTL(300s), remaining(")),
        "{ttl:?}"
    );
    // The attached keys come in no particular order.
    let keys = ttl
        .trim_end()
        .split_once("attached keys([")
        .and_then(|(_, rest)| rest.strip_suffix("])"))
        .with_context(|| format!("no attached keys in {ttl:?}"))?;
    let mut keys: Vec<&str> = keys.split(' ').collect();
    keys.sort();
    assert_eq!(keys, ["l/1", "l/2"], "{ttl:?}");

    let kept = ok(&s, &["lease", "keep-alive", "--once", &id]).await?;
    assert_eq!(kept, format!("lease {id} keepalived with TTL(300)\n"));

    let list = ok(&s, &["lease", "list"]).await?;
    let mut listed: Vec<&str> = list.lines().skip(1).collect();
    listed.sort();
    let mut want = vec![id.as_str(), other.as_str()];
    want.sort();
    assert!(list.starts_with("found 2 leases\n"), "{list:?}");
    assert_eq!(listed, want);

    assert_eq!(
        ok(&s, &["lease", "revoke", &id]).await?,
        format!("lease {id} revoked\n")
    );
    assert_eq!(
        ok(&s, &["get", "l/", "--prefix"]).await?,
        "",
        "keys die with the lease"
    );
    assert_eq!(
        ok(&s, &["lease", "timetolive", &id]).await?,
        format!("lease {id} already expired\n")
    );
    let again = etcdctl(&s.endpoint(), &["lease", "revoke", &id], None).await?;
    ensure!(!again.status.success(), "revoking twice must fail");
    assert!(
        again
            .stderr
            .contains("etcdserver: requested lease not found"),
        "{}",
        again.stderr
    );
    let list = ok(&s, &["lease", "list"]).await?;
    assert!(list.starts_with("found 1 leases\n"), "{list:?}");
    Ok(())
}

async fn compaction(backend: Backend) -> TestResult {
    let s = Server::start(backend).await?;
    for i in 0..5 {
        ok(&s, &["put", "k", &i.to_string()]).await?; // revisions 2..=6
    }
    assert_eq!(
        ok(&s, &["compaction", "4"]).await?,
        "compacted revision 4\n"
    );
    assert_eq!(
        ok(&s, &["get", "k", "--rev", "4"]).await?,
        lines(&["k", "2"])
    );
    let old = etcdctl(&s.endpoint(), &["get", "k", "--rev", "3"], None).await?;
    ensure!(!old.status.success(), "read below the compaction must fail");
    assert!(
        old.stderr
            .contains("etcdserver: mvcc: required revision has been compacted"),
        "{}",
        old.stderr
    );
    let again = etcdctl(&s.endpoint(), &["compaction", "3"], None).await?;
    ensure!(
        !again.status.success(),
        "compacting an older revision must fail"
    );
    assert!(
        again
            .stderr
            .contains("etcdserver: mvcc: required revision has been compacted"),
        "{}",
        again.stderr
    );
    assert_eq!(ok(&s, &["get", "k"]).await?, lines(&["k", "4"]));
    Ok(())
}

async fn endpoint_status_json(backend: Backend) -> TestResult {
    let s = Server::start(backend).await?;
    ok(&s, &["put", "a", "1"]).await?;
    let rev = json_revision(&ok(&s, &["put", "b", "2", "-w", "json"]).await?)?;
    let out = ok(&s, &["endpoint", "status", "-w", "json"]).await?;
    let v: Value = serde_json::from_str(&out).with_context(|| out.clone())?;
    let entry = &v[0];
    assert_eq!(entry["Endpoint"], s.endpoint());
    let status = &entry["Status"];
    assert_eq!(status["header"]["revision"], rev, "{out}");
    assert!(
        status["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{out}"
    );
    assert!(status["dbSize"].as_i64().is_some_and(|n| n > 0), "{out}");
    let member = status["header"]["member_id"].as_u64();
    assert!(member.is_some_and(|m| m != 0), "{out}");
    assert_eq!(
        status["leader"].as_u64(),
        member,
        "a single member leads: {out}"
    );
    assert!(status["raftIndex"].as_u64().is_some_and(|n| n > 0), "{out}");
    // The table form prints the same endpoint.
    let table = ok(&s, &["endpoint", "status"]).await?;
    assert!(table.starts_with(&format!("{}, ", s.endpoint())), "{table}");
    Ok(())
}
