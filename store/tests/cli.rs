//! End-to-end tests of the `kvstore` client commands against a real server process.
//!
//! Each test starts its own single-member server on free ports in a temporary data
//! directory (so tests run in parallel) and drives the built `kvstore` binary with
//! `--endpoints`. Every test runs twice: against real etcd 3.4 (which proves the test's
//! expectations are etcd's) and against `kvstore serve`, started with the same etcd flags.

mod common;
use common::free_port;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kvstore");

/// A single-member server, killed (by its own pid) when dropped.
struct Server {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(which: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = if which == "kvstore" {
            let mut c = Command::new(BIN);
            c.arg("serve");
            c
        } else {
            Command::new("etcd")
        };
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        cmd.arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--name", "default"])
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd
            .spawn()
            .expect("cannot start the server (is etcd on PATH?)");
        let server = Server {
            child,
            endpoint: format!("127.0.0.1:{client}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = server.run(&["get", "ready-probe"], None);
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "server did not become ready: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(["--endpoints", &self.endpoint, "--command-timeout", "10s"])
            .args(args)
            .env_remove("KVSTORE_ENDPOINTS");
        c
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            let mut input = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                input.write_all(s.as_bytes()).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, None)
    }

    fn ok_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail and returns its stderr.
    fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            !out.status.success(),
            "{args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8(out.stderr).unwrap();
        // Our errors read `Error: ...`; clap's usage errors `error: ...`.
        assert!(err.to_lowercase().contains("error: "), "{args:?}: {err}");
        err
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-w", "json"];
        full.extend_from_slice(args);
        serde_json::from_str(&self.ok(&full)).unwrap()
    }

    fn revision(&self) -> i64 {
        self.json(&["get", "any"])["header"]["revision"]
            .as_i64()
            .unwrap()
    }
}

fn put_get_del(backend: &str) {
    let s = Server::start(backend);
    assert_eq!(s.ok(&["put", "foo", "bar"]), "OK\n");
    assert_eq!(s.ok(&["get", "foo"]), "foo\nbar\n");
    let rev_bar = s.revision();
    assert_eq!(s.ok(&["put", "foo", "baz", "--prev-kv"]), "OK\nfoo\nbar\n");
    assert_eq!(
        s.ok(&["get", "foo", "--rev", &rev_bar.to_string()]),
        "foo\nbar\n"
    );
    assert_eq!(s.ok(&["get", "foo", "--print-value-only"]), "baz\n");
    assert_eq!(s.ok(&["get", "missing"]), "");

    // Value from stdin, kept byte for byte.
    assert_eq!(
        s.ok_stdin(&["put", "stdin-key"], Some("line1\nline2\n")),
        "OK\n"
    );
    assert_eq!(
        s.ok(&["get", "stdin-key", "--print-value-only"]),
        "line1\nline2\n\n"
    );

    for (k, v) in [("p/a", "3"), ("p/b", "1"), ("p/c", "2")] {
        s.ok(&["put", k, v]);
    }
    assert_eq!(s.ok(&["get", "p/", "--prefix"]), "p/a\n3\np/b\n1\np/c\n2\n");
    assert_eq!(s.ok(&["get", "p/a", "p/c"]), "p/a\n3\np/b\n1\n");
    assert_eq!(
        s.ok(&["get", "p/", "--prefix", "--keys-only"]),
        "p/a\n\np/b\n\np/c\n\n"
    );
    assert_eq!(
        s.ok(&["get", "p/", "--prefix", "--limit", "2"]),
        "p/a\n3\np/b\n1\n"
    );
    assert_eq!(s.ok(&["get", "p/", "--prefix", "--count-only"]), "3\n");
    assert_eq!(
        s.ok(&[
            "get",
            "p/",
            "--prefix",
            "--sort-by",
            "VALUE",
            "--order",
            "DESCEND"
        ]),
        "p/a\n3\np/c\n2\np/b\n1\n"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "p/",
            "--prefix",
            "--order",
            "DESCEND",
            "--print-value-only"
        ]),
        "2\n1\n3\n"
    );
    assert_eq!(
        s.ok(&["get", "p/b", "--from-key", "--keys-only", "--limit", "1"]),
        "p/b\n\n"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "p/",
            "--prefix",
            "--consistency",
            "s",
            "--count-only"
        ]),
        "3\n"
    );

    let j = s.json(&["get", "p/", "--prefix", "--limit", "1"]);
    assert_eq!(j["kvs"][0]["key"], "cC9h");
    assert_eq!(j["kvs"][0]["value"], "Mw==");
    assert_eq!(j["kvs"][0]["version"], 1);
    assert_eq!(j["count"], 3);
    assert_eq!(j["more"], true);
    assert!(j["header"]["cluster_id"].as_u64().unwrap() > 0);
    assert!(j["header"]["member_id"].as_u64().unwrap() > 0);
    assert!(j["header"]["raft_term"].as_u64().unwrap() > 0);
    assert!(j["kvs"][0]["mod_revision"].as_i64().unwrap() > 0);
    let j = s.json(&["put", "foo", "qux"]);
    assert!(j["header"]["revision"].as_i64().unwrap() > rev_bar);

    assert_eq!(s.ok(&["del", "p/a"]), "1\n");
    assert_eq!(s.ok(&["del", "p/a"]), "0\n");
    assert_eq!(
        s.ok(&["del", "p/", "--prefix", "--prev-kv"]),
        "2\np/b\n1\np/c\n2\n"
    );
    assert_eq!(s.ok(&["get", "p/", "--prefix", "--count-only"]), "0\n");

    // Bad input: clear errors, no panic, non-zero exit.
    let e = s.fails(&["get", "foo", "--sort-by", "SIZE"], None);
    assert!(e.contains("SIZE"), "{e}");
    let e = s.fails(&["get", "a", "b", "--prefix"], None);
    assert!(e.contains("only accept one argument"), "{e}");
    let e = s.fails(&["put", "k", "v", "--lease", "xyz"], None);
    assert!(e.contains("expecting ID in Hex"), "{e}");
    let e = s.fails(
        &["get", "foo", "--rev", &(s.revision() + 100).to_string()],
        None,
    );
    assert!(e.contains("required revision is a future revision"), "{e}");
    let e = s.fails(&["-w", "table", "get", "foo"], None);
    assert!(e.contains("table not supported"), "{e}");
}

fn txn_both_branches(backend: &str) {
    let s = Server::start(backend);
    s.ok(&["put", "k1", "v1"]);
    let success =
        "mod(\"k1\") > \"0\"\nvalue(\"k1\") = \"v1\"\n\nput k2 v2\nget k1\n\nput k3 v3\n\n";
    assert_eq!(
        s.ok_stdin(&["txn"], Some(success)),
        "SUCCESS\n\nOK\n\nk1\nv1\n"
    );
    assert_eq!(s.ok(&["get", "k2", "--print-value-only"]), "v2\n");
    assert_eq!(s.ok(&["get", "k3"]), "");

    let failure =
        "value(\"k1\") = \"nope\"\n\nput k2 bad\n\nput \"k 3\" \"v 3\"\ndel k2 --prev-kv\n";
    assert_eq!(
        s.ok_stdin(&["txn"], Some(failure)),
        "FAILURE\n\nOK\n\n1\nk2\nv2\n"
    );
    assert_eq!(s.ok(&["get", "k 3", "--print-value-only"]), "v 3\n");

    let version =
        "version(\"k1\") = \"1\"\ncreate(\"k1\") < \"1000\"\n\nget k --prefix --keys-only\n\n";
    assert_eq!(
        s.ok_stdin(&["txn"], Some(version)),
        "SUCCESS\n\nk 3\n\nk1\n\n"
    );

    let out = s.ok_stdin(
        &["-w", "json", "txn"],
        Some("value(\"k1\") = \"v1\"\n\nget k1\n\n"),
    );
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["succeeded"], true);
    assert_eq!(
        j["responses"][0]["Response"]["ResponseRange"]["kvs"][0]["value"],
        "djE="
    );

    let interactive = s.ok_stdin(&["txn", "-i"], Some("\nget k1\n\n"));
    assert!(interactive.starts_with("compares:\n"), "{interactive}");
    assert!(
        interactive.ends_with("SUCCESS\n\nk1\nv1\n"),
        "{interactive}"
    );

    let e = s.fails(&["txn"], Some("bogus\n\n\n"));
    assert!(e.contains("malformed comparison: bogus"), "{e}");
    let e = s.fails(&["txn"], Some("version(\"k1\") = \"x\"\n\n\n"));
    assert!(e.contains("invalid txn compare request"), "{e}");
    let e = s.fails(&["txn"], Some("\n\nfrob k6 x\n\n"));
    assert!(e.contains("invalid txn request: frob k6 x"), "{e}");
    // The server's own validation error is passed through.
    let e = s.fails(&["txn"], Some("\nput d 1\ndel d\n\n"));
    assert!(e.contains("duplicate key"), "{e}");
}

fn watch_prints_events(backend: &str) {
    let s = Server::start(backend);
    let start = s.revision() + 1;
    let mut child = s
        .command(&[
            "watch",
            "w",
            "--prefix",
            "--prev-kv",
            "--rev",
            &start.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    s.ok(&["put", "w1", "a"]);
    s.ok(&["put", "w1", "b"]);
    s.ok(&["del", "w1"]);
    s.ok(&["put", "other", "x"]);
    let expected = [
        "PUT", "w1", "a", "PUT", "w1", "a", "w1", "b", "DELETE", "w1", "b", "w1", "",
    ];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while got.len() < expected.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => got.push(line),
            Err(_) => break,
        }
    }
    assert_eq!(got, expected);
    // Still running (it only stops on Ctrl-C or cancellation); kill it by pid.
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
}

fn leases(backend: &str) {
    let s = Server::start(backend);
    let out = s.ok(&["lease", "grant", "100"]);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words[0], "lease");
    assert_eq!(words[2..], ["granted", "with", "TTL(100s)"]);
    let id = words[1].to_string();
    assert!(u64::from_str_radix(&id, 16).is_ok(), "{out}");

    s.ok(&["put", "lk", "v", "--lease", &id]);
    s.ok(&["put", "lk2", "v", &format!("--lease={id}")]);
    let ttl = s.ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(100s), remaining(")),
        "{ttl}"
    );
    // The server lists attached keys in no particular order.
    assert!(
        ttl.ends_with("s), attached keys([lk lk2])\n")
            || ttl.ends_with("s), attached keys([lk2 lk])\n"),
        "{ttl}"
    );
    let j = s.json(&["lease", "timetolive", &id, "--keys"]);
    assert_eq!(j["granted-ttl"], 100);
    let mut keys: Vec<&str> = j["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, ["bGs=", "bGsy"]);
    let j = s.json(&["get", "lk"]);
    assert_eq!(
        j["kvs"][0]["lease"].as_i64().unwrap() as u64,
        u64::from_str_radix(&id, 16).unwrap()
    );

    let list = s.ok(&["lease", "list"]);
    assert!(list.starts_with("found 1 leases\n"), "{list}");
    assert!(list.lines().any(|l| l == id), "{list}");
    let table = s.ok(&["-w", "table", "lease", "list"]);
    assert!(table.contains(&format!("| {id} |")), "{table}");

    assert_eq!(
        s.ok(&["lease", "keep-alive", &id, "--once"]),
        format!("lease {id} keepalived with TTL(100)\n")
    );

    assert_eq!(
        s.ok(&["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(s.ok(&["get", "lk", "--count-only"]), "0\n");
    assert_eq!(
        s.ok(&["lease", "timetolive", &id]),
        format!("lease {id} already expired\n")
    );
    assert_eq!(s.ok(&["lease", "list"]), "found 0 leases\n");

    let e = s.fails(&["lease", "revoke", &id], None);
    assert!(
        e.contains("failed to revoke lease (etcdserver: requested lease not found)"),
        "{e}"
    );
    let e = s.fails(&["lease", "keep-alive", &id, "--once"], None);
    assert!(e.contains("requested lease not found"), "{e}");
    let e = s.fails(&["lease", "revoke", "zz"], None);
    assert!(e.contains("expecting ID in Hex"), "{e}");
    let e = s.fails(&["put", "k", "v", "--lease", &id], None);
    assert!(e.contains("requested lease not found"), "{e}");
}

fn endpoint_status_health_and_compaction(backend: &str) {
    let s = Server::start(backend);
    let status = s.ok(&["endpoint", "status"]);
    let fields: Vec<&str> = status.trim_end().split(", ").collect();
    assert_eq!(fields[0], s.endpoint, "{status}");
    assert!(u64::from_str_radix(fields[1], 16).is_ok(), "{status}");
    assert!(fields[3].ends_with('B'), "{status}");
    assert_eq!(fields[4], "true", "{status}");
    assert_eq!(fields[5], "false", "{status}");
    let j = s.json(&["endpoint", "status"]);
    assert_eq!(j[0]["Endpoint"], s.endpoint.as_str());
    assert!(j[0]["Status"]["dbSize"].as_i64().unwrap() > 0);
    assert_eq!(
        j[0]["Status"]["leader"],
        j[0]["Status"]["header"]["member_id"]
    );
    let table = s.ok(&["-w", "table", "endpoint", "status"]);
    assert!(
        table.contains("| IS LEADER |") && table.contains("| REVISION |"),
        "{table}"
    );
    assert!(table.contains(&format!("| {} |", s.endpoint)), "{table}");

    let health = s.ok(&["endpoint", "health"]);
    assert!(
        health.starts_with(&format!(
            "{} is healthy: successfully committed proposal: took = ",
            s.endpoint
        )),
        "{health}"
    );
    let j = s.json(&["endpoint", "health"]);
    assert_eq!(j[0]["health"], true);

    for v in ["1", "2", "3", "4"] {
        s.ok(&["put", "c", v]);
    }
    let rev = s.revision();
    let old = (rev - 2).to_string();
    assert_eq!(
        s.ok(&["get", "c", "--rev", &old, "--print-value-only"]),
        "2\n"
    );
    assert_eq!(
        s.ok(&["compaction", &rev.to_string(), "--physical"]),
        format!("compacted revision {rev}\n")
    );
    let e = s.fails(&["get", "c", "--rev", &old], None);
    assert!(
        e.contains("Error: etcdserver: mvcc: required revision has been compacted"),
        "{e}"
    );
    assert_eq!(s.ok(&["get", "c", "--print-value-only"]), "4\n");
    let e = s.fails(&["compaction", &old], None);
    assert!(e.contains("required revision has been compacted"), "{e}");

    // A watch from a compacted revision exits with the compact revision named.
    let out = s.run(&["watch", "c", "--rev", "1"], None);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains(&format!("compact revision is {rev}")), "{e}");
}

#[test]
fn unreachable_endpoint_fails_cleanly() {
    let port = free_port();
    let out = Command::new(BIN)
        .args(["--endpoints", &format!("127.0.0.1:{port}")])
        .args([
            "--dial-timeout",
            "500ms",
            "--command-timeout",
            "1s",
            "get",
            "k",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.starts_with("Error: "), "{e}");
    let out = Command::new(BIN)
        .args([
            "--endpoints",
            &format!("127.0.0.1:{port}"),
            "--command-timeout",
            "1s",
        ])
        .args(["endpoint", "health"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("is unhealthy") && e.contains("unhealthy cluster"),
        "{e}"
    );
}

/// Every test body runs against real etcd (which validates the test) and against kvstore.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn etcd() {
                super::$name("etcd")
            }
            #[test]
            fn kvstore() {
                super::$name("kvstore")
            }
        }
    )*};
}

on_both_backends!(
    put_get_del,
    txn_both_branches,
    watch_prints_events,
    leases,
    endpoint_status_health_and_compaction
);
