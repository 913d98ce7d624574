//! End-to-end tests of the cluster commands of the `kvstore` client (`member ...`,
//! `endpoint ... --cluster`, `endpoint hashkv`, `move-leader`) against a real
//! three-member cluster.
//!
//! Every test body runs twice: against real etcd 3.4 (which proves the expectations are
//! etcd's) and against `kvstore serve`, both started with the same etcd flags on free
//! ports in a temporary directory, and killed by their own pids when the test ends.

mod common;
use common::free_port;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kvstore");

struct Member {
    name: String,
    client_port: u16,
    child: Child,
}

/// A three-member cluster of etcd or kvstore processes.
struct Cluster {
    backend: &'static str,
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
    }
}

impl Cluster {
    fn start(backend: &'static str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(String, u16, u16)> = (1..=3)
            .map(|i| (format!("m{i}"), free_port(), free_port()))
            .collect();
        let initial_cluster = ports
            .iter()
            .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let members = ports
            .into_iter()
            .map(|(name, client_port, peer_port)| Member {
                child: spawn(
                    backend,
                    dir.path(),
                    &name,
                    client_port,
                    peer_port,
                    &initial_cluster,
                ),
                name,
                client_port,
            })
            .collect();
        let cluster = Cluster {
            backend,
            members,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = cluster.run(&["endpoint", "health"]);
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cluster did not become healthy: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // Each member publishes its name and client URLs to the cluster after it starts
        // (etcd before it serves clients; kvstore may answer a little earlier), so wait
        // until every member is listed with both.
        loop {
            let out = cluster.run(&["member", "list"]);
            let text = String::from_utf8_lossy(&out.stdout);
            let published = text
                .lines()
                .filter(|l| {
                    let f: Vec<&str> = l.split(", ").collect();
                    f.len() == 6 && !f[2].is_empty() && !f[4].is_empty()
                })
                .count();
            if out.status.success() && published == 3 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "members did not publish their client URLs: {text}{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster
    }

    fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} ({}) ---\n{}", m.name, self.backend, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(["--endpoints", &self.endpoints(), "--command-timeout", "10s"])
            .args(args)
            .env_remove("KVSTORE_ENDPOINTS")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}",
            self.backend,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail cleanly (`Error: ...`, no panic) and returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            !out.status.success(),
            "{} {args:?} unexpectedly succeeded: {}",
            self.backend,
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(err.starts_with("Error: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        err
    }

    /// `member list` rows split into their six fields.
    fn member_rows(&self) -> Vec<Vec<String>> {
        rows(&self.ok(&["member", "list"]), 6)
    }

    /// `endpoint status --cluster` rows: (endpoint, member ID, is leader).
    fn cluster_status(&self) -> Vec<(String, String, bool)> {
        rows(&self.ok(&["endpoint", "status", "--cluster"]), 10)
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone(), r[4] == "true"))
            .collect()
    }
}

fn spawn(
    backend: &str,
    dir: &Path,
    name: &str,
    client_port: u16,
    peer_port: u16,
    initial_cluster: &str,
) -> Child {
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = if backend == "kvstore" {
        let mut c = Command::new(BIN);
        c.arg("serve")
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"]);
        c
    } else {
        Command::new("etcd")
    };
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    cmd.args(["--name", name])
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", initial_cluster])
        .args(["--initial-cluster-token", "cli-cluster-test"])
        .args(["--initial-cluster-state", "new"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {backend} (is it on PATH?): {e}"))
}

/// Splits `a, b, c` lines into fields, checking each has `n` of them.
fn rows(out: &str, n: usize) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| {
            let r: Vec<String> = l.split(", ").map(str::to_string).collect();
            assert_eq!(r.len(), n, "unexpected line {l:?}");
            r
        })
        .collect()
}

/// A client URL as a member lists it: with `http://` (etcd) or without (kvstore).
fn host_port(url: &str) -> &str {
    url.strip_prefix("http://").unwrap_or(url)
}

/// Retries `f` until it returns `Some`, for at most `secs` seconds.
fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn membership(backend: &'static str) {
    let c = Cluster::start(backend);

    // Three started voters, named as started, each with its own client URL.
    let list = c.member_rows();
    assert_eq!(list.len(), 3, "{list:?}");
    let mut names: Vec<&str> = list.iter().map(|r| r[2].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["m1", "m2", "m3"]);
    for r in &list {
        assert_eq!(r[1], "started", "{r:?}");
        assert_eq!(r[5], "false", "{r:?}");
        let m = c.members.iter().find(|m| m.name == r[2]).unwrap();
        assert_eq!(
            host_port(&r[4]),
            format!("127.0.0.1:{}", m.client_port),
            "{r:?}"
        );
        assert_eq!(r[0], r[0].to_lowercase());
        u64::from_str_radix(&r[0], 16).unwrap();
    }
    let json: Value = serde_json::from_str(&c.ok(&["-w", "json", "member", "list"])).unwrap();
    let members = json["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{json}");
    assert!(
        json["header"]["cluster_id"].as_u64().unwrap() != 0,
        "{json}"
    );
    let table = c.ok(&["-w", "table", "member", "list"]);
    assert!(table.contains("| STATUS  | NAME |"), "{table}");
    assert_eq!(table.matches(" started |").count(), 3, "{table}");

    // Add a learner that never starts.
    let new_peer = format!("http://127.0.0.1:{}", free_port());
    // etcd refuses membership changes until every member has been connected for 5s
    // ("unhealthy cluster"), so a young cluster is given time.
    let added = eventually(30, "member add to be accepted", || {
        let out = c.run(&["member", "add", "m4", "--peer-urls", &new_peer, "--learner"]);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            Some(String::from_utf8(out.stdout).unwrap())
        } else {
            assert!(err.contains("unhealthy cluster"), "{err}");
            None
        }
    });
    let first = added.lines().next().unwrap();
    assert!(
        first.starts_with("Member ") && first.contains(" added to cluster "),
        "{added}"
    );
    assert!(added.contains("\nETCD_NAME=\"m4\"\n"), "{added}");
    let initial = added
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
        .unwrap_or_else(|| panic!("{added}"));
    assert!(initial.contains(&format!("m4={new_peer}")), "{added}");
    for name in ["m1", "m2", "m3"] {
        assert!(
            initial.contains(&format!("{name}=http://127.0.0.1:")),
            "{added}"
        );
    }
    assert!(
        added.contains(&format!(
            "\nETCD_INITIAL_ADVERTISE_PEER_URLS=\"{new_peer}\"\n"
        )),
        "{added}"
    );
    assert!(
        added.ends_with("\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n"),
        "{added}"
    );

    let list = c.member_rows();
    assert_eq!(list.len(), 4, "{list:?}");
    let learner = list
        .iter()
        .find(|r| r[3] == new_peer)
        .unwrap_or_else(|| panic!("{list:?}"))
        .clone();
    assert_eq!(&learner[1..], ["unstarted", "", &new_peer, "", "true"]);
    let id = learner[0].clone();
    assert_eq!(
        first.split_whitespace().nth(1),
        Some(id.as_str()),
        "{added}"
    );

    // A learner that is not in sync cannot be promoted.
    c.fails(&["member", "promote", &id]);

    // Its peer URL can be changed.
    let moved_peer = format!("http://127.0.0.1:{}", free_port());
    let updated = c.ok(&["member", "update", &id, "--peer-urls", &moved_peer]);
    assert!(
        updated.starts_with(&format!("Member {id:>16} updated in cluster ")),
        "{updated}"
    );
    let list = c.member_rows();
    assert!(
        list.iter().any(|r| r[0] == id && r[3] == moved_peer),
        "{list:?}"
    );

    let removed = c.ok(&["member", "remove", &id]);
    assert!(
        removed.starts_with(&format!("Member {id:>16} removed from cluster ")),
        "{removed}"
    );
    assert_eq!(c.member_rows().len(), 3);
    let e = c.fails(&["member", "remove", &id]);
    assert!(e.contains("member not found"), "{e}");

    // Bad input is an error, never a panic, and changes nothing.
    let e = c.fails(&["member", "remove", "zz"]);
    assert!(e.contains("expecting ID in Hex"), "{e}");
    let e = c.fails(&["member", "add", "m5"]);
    assert!(e.contains("member peer urls not provided"), "{e}");
    let e = c.fails(&["member", "update", "1"]);
    assert!(e.contains("member peer urls not provided"), "{e}");
    let e = c.fails(&["member", "promote"]);
    assert!(e.contains("member ID is not provided"), "{e}");
    c.fails(&[
        "-w",
        "table",
        "member",
        "add",
        "m5",
        "--peer-urls",
        &new_peer,
    ]);
    assert_eq!(c.member_rows().len(), 3);
}

fn endpoints_and_leader(backend: &'static str) {
    let c = Cluster::start(backend);
    let own: Vec<String> = c
        .members
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.client_port))
        .collect();

    // --cluster uses every member's client URL, whatever endpoints were given.
    let status = c.cluster_status();
    assert_eq!(status.len(), 3, "{status:?}");
    let mut seen: Vec<&str> = status.iter().map(|s| host_port(&s.0)).collect();
    seen.sort_unstable();
    let mut expected: Vec<&str> = own.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(seen, expected);
    assert_eq!(status.iter().filter(|s| s.2).count(), 1, "{status:?}");

    let health = c.ok(&["endpoint", "health", "--cluster"]);
    assert_eq!(
        health
            .lines()
            .filter(|l| l.contains(" is healthy: successfully committed proposal"))
            .count(),
        3,
        "{health}"
    );
    let json: Value =
        serde_json::from_str(&c.ok(&["-w", "json", "endpoint", "health", "--cluster"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3, "{json}");

    // After a write every member hashes the same history.
    c.ok(&["put", "foo", "bar"]);
    let hashes = eventually(10, "equal hashes", || {
        let out = c.ok(&["endpoint", "hashkv", "--cluster"]);
        let lines: Vec<Vec<String>> = out
            .lines()
            .map(|l| l.split(", ").map(str::to_string).collect())
            .collect();
        (lines.len() == 3 && lines.iter().all(|l| l.len() >= 3 && l[1] == lines[0][1]))
            .then_some(lines)
    });
    for l in &hashes {
        assert!(l.len() == 3 || l.len() == 4, "{hashes:?}");
        l[1].parse::<u32>().unwrap();
        l[2].parse::<i64>().unwrap();
    }
    let json: Value =
        serde_json::from_str(&c.ok(&["-w", "json", "endpoint", "hashkv", "--cluster"])).unwrap();
    let entries = json.as_array().unwrap();
    assert_eq!(entries.len(), 3, "{json}");
    assert!(
        entries
            .iter()
            .all(|e| e["HashKV"]["hash"].as_u64().is_some()),
        "{json}"
    );
    let table = c.ok(&["-w", "table", "endpoint", "hashkv"]);
    assert!(
        table.contains("ENDPOINT") && table.contains("COMPACT REVISION"),
        "{table}"
    );
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("| 127.0.0.1:"))
            .count(),
        3,
        "{table}"
    );

    // Hand leadership to a follower; status then names it as leader.
    let leader = status.iter().find(|s| s.2).unwrap().1.clone();
    let target = status.iter().find(|s| !s.2).unwrap().1.clone();
    let moved = c.ok(&["move-leader", &target]);
    assert_eq!(
        moved,
        format!("Leadership transferred from {leader} to {target}\n")
    );
    eventually(10, "the new leader in status", || {
        let now = c.cluster_status();
        let leaders: Vec<&str> = now.iter().filter(|s| s.2).map(|s| s.1.as_str()).collect();
        (leaders == [target.as_str()]).then_some(())
    });

    // Bad targets fail cleanly.
    let e = c.fails(&["move-leader", "1234"]);
    assert!(e.contains("1234"), "{e}");
    let e = c.fails(&["move-leader", "not-hex"]);
    assert!(e.contains("expecting ID in Hex"), "{e}");
    // Only a follower given: no leader among the endpoints.
    let follower = status
        .iter()
        .find(|s| s.1 != target)
        .map(|s| host_port(&s.0).to_string())
        .unwrap();
    let out = Command::new(BIN)
        .args(["--endpoints", &follower, "move-leader", &target])
        .env_remove("KVSTORE_ENDPOINTS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.starts_with("Error: no leader endpoint given at"), "{e}");
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

on_both_backends!(membership, endpoints_and_leader);
