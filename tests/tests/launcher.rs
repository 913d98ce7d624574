//! The one-command control plane, end to end: `cluster up` in a temporary directory on a
//! free block of ports (3 kvstore members with TLS, 3 apiservers with the scheduler and
//! controllers, 2 agents — Docker when a daemon answers, simulated nodes otherwise), then
//! the README's story through the real `kubectl`: a Deployment and a Service, pods placed
//! on both nodes and Running, scale, a rollout and its undo, a killed agent whose pods
//! move, a killed store leader and a killed apiserver while kubectl keeps working, a
//! store snapshot restored into a fresh store after `cluster down`, and finally no
//! process of the cluster left running.
//!
//! Needs the workspace's binaries built (`cargo build --workspace --bins`) and `kubectl`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tests::cluster::{self, State, proc};
use tests::kubectl::wait_for;

fn bin_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .join("target")
        });
    // The test binary itself is in target/debug/deps; the programs are in target/debug.
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(Path::to_path_buf))
        .filter(|d| d.join("cluster").is_file())
        .unwrap_or_else(|| target.join("debug"))
}

/// Runs `cluster ARGS` and returns stdout; fails with stdout and stderr.
fn cluster_cmd(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin_dir().join("cluster"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .context("run cluster")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "cluster {args:?} failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// Stops the cluster if the test ends early, so no process outlives a failed test.
struct Guard {
    dir: PathBuf,
    armed: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.armed {
            let _ = cluster_cmd(&self.dir, &["down"]);
        }
    }
}

struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        tests::kubectl::kubectl(&self.kubeconfig, args, stdin, Duration::from_secs(30))
    }

    /// The sorted names of the objects of `resource` in the default namespace.
    fn names(&self, resource: &str) -> Result<Vec<String>> {
        let list = self.json(&["get", resource])?;
        let mut names: Vec<String> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
            .map(String::from)
            .collect();
        names.sort();
        Ok(names)
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.run(&a, None)?)?)
    }
}

/// Polls `check` (every 500 ms) until it returns `Ok(true)`; fails after `timeout` with
/// the last error.
/// One pod of the Deployment as the test looks at it.
struct PodRow {
    node: String,
    phase: String,
    ready: bool,
    image: String,
}

/// The Deployment's pods that are not being deleted.
fn pods(k: &Kubectl) -> Result<Vec<PodRow>> {
    let list = k.json(&["get", "pods", "-l", "app=web"])?;
    let mut out = Vec::new();
    for p in list["items"].as_array().cloned().unwrap_or_default() {
        if p.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let s = |ptr: &str| {
            p.pointer(ptr)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let ready = p
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .is_some_and(|c| c["status"] == "True");
        out.push(PodRow {
            node: s("/spec/nodeName"),
            phase: s("/status/phase"),
            ready,
            image: s("/spec/containers/0/image"),
        });
    }
    Ok(out)
}

/// `n` pods of the Deployment Running and Ready, all with `image`; returns their nodes.
fn running(k: &Kubectl, n: usize, image: &str) -> Result<Option<Vec<String>>> {
    let ps = pods(k)?;
    let ok: Vec<_> = ps
        .iter()
        .filter(|p| p.phase == "Running" && p.ready && p.image == image && !p.node.is_empty())
        .collect();
    if ok.len() == n && ps.len() == n {
        Ok(Some(ok.iter().map(|p| p.node.clone()).collect()))
    } else {
        Ok(None)
    }
}

fn deployment(image: &str, service_port: u16) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: httpd
        image: {image}
        command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
        ports:
        - containerPort: 8080
        resources:
          requests: {{cpu: 50m, memory: 16Mi}}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - port: {service_port}
    targetPort: 8080
"#
    )
}

/// Runs a kubectl write until it succeeds (at most 60 s), keeping each failure.
fn retry_write(
    k: &Kubectl,
    args: &[&str],
    stdin: Option<&str>,
    failures: &mut Vec<String>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match k.run(args, stdin) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                failures.push(format!("{args:?}: {e:#}"));
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e.context(format!("kubectl {args:?} kept failing"))),
        }
    }
}

/// A plain HTTP/1.0 GET of `/` (the body, headers included).
fn http_get(ip: &str, port: u16) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((ip, port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn all_pids_gone(dir: &Path) -> Result<Vec<String>> {
    let state = State::load(dir)?.context("state.json")?;
    Ok(state
        .components
        .iter()
        .filter(|(_, c)| proc::alive(c.pid, &c.program))
        .map(|(n, c)| format!("{n} (pid {})", c.pid))
        .collect())
}

/// Runs `cluster ARGS` expecting failure; returns stderr.
fn cluster_fails(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin_dir().join("cluster"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()?;
    ensure!(!out.status.success(), "cluster {args:?} succeeded");
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_input_gets_a_clear_error() -> Result<()> {
    ensure!(
        bin_dir().join("cluster").is_file(),
        "build the workspace first"
    );
    let tmp = tempfile::tempdir()?;
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty)?;
    for cmd in [&["status"][..], &["down"], &["kill", "store-1"]] {
        let e = cluster_fails(&empty, cmd)?;
        ensure!(e.contains("no cluster in"), "{cmd:?}: {e}");
    }
    let e = cluster_fails(&empty, &["up", "--base-port", "80"])?;
    ensure!(e.contains("--base-port must be in 1024..=65000"), "{e}");
    let e = cluster_fails(&empty, &["up", "--agents", "100"])?;
    ensure!(e.contains("--agents must be at most 64"), "{e}");
    let e = cluster_fails(&empty, &["up", "--bin-dir", tmp.path().to_str().unwrap()])?;
    ensure!(e.contains("is missing: build the workspace first"), "{e}");
    // A state file from elsewhere is refused, not overwritten.
    std::fs::write(empty.join("state.json"), "{}")?;
    let e = cluster_fails(&empty, &["status"])?;
    ensure!(e.contains("is not a cluster state file"), "{e}");
    Ok(())
}

#[test]
fn cluster_up_then_the_readme_story() -> Result<()> {
    let bins = bin_dir();
    for b in ["cluster", "kvstore", "apiserver", "agent"] {
        ensure!(
            bins.join(b).is_file(),
            "{} is missing: run `cargo build --workspace --bins` first",
            bins.join(b).display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    let base = cluster::ports::free_base_port(2);
    let prefix = format!("l{}", std::process::id());
    let docker = cluster::docker_available();
    let mut up_args = vec![
        "up".to_string(),
        "--base-port".into(),
        base.to_string(),
        "--node-prefix".into(),
        prefix.clone(),
    ];
    let (image, image_v2) = if docker {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let st = Command::new(root.join("scripts/images.sh")).status()?;
        ensure!(st.success(), "scripts/images.sh failed");
        let st = Command::new("docker")
            .args(["tag", "kvstore-busybox:latest", "kvstore-busybox:v2"])
            .status()?;
        ensure!(st.success(), "docker tag failed");
        ("kvstore-busybox:latest", "kvstore-busybox:v2")
    } else {
        eprintln!("launcher test: no Docker daemon, so the nodes are simulated");
        up_args.push("--simulate".into());
        ("kvstore-busybox:latest", "kvstore-busybox:v2")
    };
    let mut guard = Guard {
        dir: dir.clone(),
        armed: true,
    };
    let up_refs: Vec<&str> = up_args.iter().map(String::as_str).collect();
    let out = cluster_cmd(&dir, &up_refs)?;
    eprintln!("{out}");
    let kubeconfig = dir.join("kubeconfig");
    ensure!(
        out.contains(&format!("export KUBECONFIG={}", kubeconfig.display())),
        "up did not print how to use kubectl:\n{out}"
    );
    let k = Kubectl { kubeconfig };

    // Both nodes registered and Ready, as kubectl sees them.
    let nodes = k.json(&["get", "nodes"])?;
    let mut ready_nodes: Vec<String> = nodes["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|n| {
            n.pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .filter_map(|n| {
            n.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect();
    ready_nodes.sort();
    ensure!(
        ready_nodes == vec![format!("{prefix}-1"), format!("{prefix}-2")],
        "nodes: {ready_nodes:?}"
    );

    // A second `up` is a no-op for what runs.
    let again = cluster_cmd(&dir, &["up"])?;
    ensure!(
        again.matches("already running").count() == 9,
        "second up restarted something:\n{again}"
    );

    // status names the leader and the lease holders.
    let st = cluster_cmd(&dir, &["status"])?;
    ensure!(
        st.contains("leader"),
        "status without a store leader:\n{st}"
    );
    ensure!(
        !st.contains("held by (none)"),
        "leases without holders:\n{st}"
    );

    // The Deployment and the Service; pods placed on both nodes and Running.
    // The Service's port is inside the cluster's free port block: each agent's proxy
    // listens on it at its node IP.
    let service_port = base + 39;
    k.run(
        &["apply", "-f", "-"],
        Some(&deployment(image, service_port)),
    )?;
    let mut nodes_used = Vec::new();
    wait_for("3 web pods Running", Duration::from_secs(180), || {
        Ok(match running(&k, 3, image)? {
            Some(n) => {
                nodes_used = n;
                true
            }
            None => false,
        })
    })?;
    nodes_used.sort();
    nodes_used.dedup();
    ensure!(
        nodes_used.len() == 2,
        "pods not spread over both nodes: {nodes_used:?}"
    );
    wait_for("the Service's endpoints", Duration::from_secs(60), || {
        let ep = k.json(&["get", "endpoints", "web"])?;
        let n = ep["subsets"]
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|s| s["addresses"].as_array().map_or(0, Vec::len))
                    .sum::<usize>()
            })
            .unwrap_or(0);
        Ok(n == 3)
    })?;

    if docker {
        // An HTTP request through the Service's port on either node answers with the
        // page the busybox httpd pods serve.
        for ip in ["127.0.0.2", "127.0.0.3"] {
            wait_for(
                "the Service to answer over HTTP",
                Duration::from_secs(60),
                || {
                    let body = http_get(ip, service_port)?;
                    Ok(body.contains("kvstore-busybox"))
                },
            )?;
        }
    }

    // Scale up and back down.
    k.run(&["scale", "deploy/web", "--replicas", "5"], None)?;
    wait_for("5 web pods Running", Duration::from_secs(180), || {
        Ok(running(&k, 5, image)?.is_some())
    })?;
    k.run(&["scale", "deploy/web", "--replicas", "3"], None)?;
    wait_for(
        "3 web pods after scaling down",
        Duration::from_secs(180),
        || Ok(running(&k, 3, image)?.is_some()),
    )?;

    // Roll out a new version, then roll it back.
    k.run(
        &["set", "image", "deploy/web", &format!("httpd={image_v2}")],
        None,
    )?;
    k.run(&["rollout", "status", "deploy/web", "--timeout=180s"], None)?;
    wait_for(
        "3 pods of the new version",
        Duration::from_secs(180),
        || Ok(running(&k, 3, image_v2)?.is_some()),
    )?;
    k.run(&["rollout", "undo", "deploy/web"], None)?;
    k.run(&["rollout", "status", "deploy/web", "--timeout=180s"], None)?;
    wait_for(
        "3 pods of the old version again",
        Duration::from_secs(180),
        || Ok(running(&k, 3, image)?.is_some()),
    )?;

    // Kill the store leader, then the apiserver holding the controller lease, then an
    // agent: kubectl keeps working (through the load balancer), the controllers move to
    // another apiserver, the dead node's pods are recreated on the other node, and every
    // acknowledged write survives.
    let killed = cluster_cmd(&dir, &["kill", "store-leader"])?;
    eprintln!("{killed}");
    // Writes are retried while they fail (each failure is kept and printed): a member
    // or apiserver that just died may answer one request with 503 before the clients
    // move on. The point is that every write is accepted soon and none is lost.
    let mut transient: Vec<String> = Vec::new();
    let mut acked = Vec::new();
    for i in 0..5 {
        let name = format!("after-store-kill-{i}");
        let sa = format!("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n");
        retry_write(&k, &["apply", "-f", "-"], Some(&sa), &mut transient)?;
        acked.push(name);
    }
    let which = match cluster_cmd(&dir, &["kill", "apiserver-leader"]) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("no lease holder mapped to an apiserver ({e:#}); killing apiserver-1");
            cluster_cmd(&dir, &["kill", "apiserver-1"])?
        }
    };
    eprintln!("{which}");
    for i in 0..5 {
        let name = format!("after-apiserver-kill-{i}");
        let sa = format!("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n");
        retry_write(&k, &["apply", "-f", "-"], Some(&sa), &mut transient)?;
        acked.push(name);
    }
    let killed_api: usize = which
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.strip_prefix("apiserver-"))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("which apiserver was killed? {which}"))?;
    let killed_port = base as usize + killed_api;
    wait_for(
        "another apiserver to take the controller lease",
        Duration::from_secs(120),
        || {
            let holder = k.run(
                &[
                    "get",
                    "lease",
                    "kube-controller-manager",
                    "-n",
                    "kube-system",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ],
                None,
            )?;
            Ok(!holder.trim().is_empty() && !holder.contains(&format!(":{killed_port}_")))
        },
    )?;
    let node1 = format!("{prefix}-1");
    let node2 = format!("{prefix}-2");
    cluster_cmd(&dir, &["kill", "agent-1"])?;
    wait_for(
        "3 ready web pods, all on the surviving node",
        Duration::from_secs(300),
        || {
            let ps = pods(&k)?;
            Ok(ps.len() == 3
                && ps
                    .iter()
                    .all(|p| p.node == node2 && p.phase == "Running" && p.ready))
        },
    )?;
    if docker {
        // The Service still answers through the surviving node's proxy.
        wait_for(
            "the Service to answer on the surviving node",
            Duration::from_secs(60),
            || Ok(http_get("127.0.0.3", service_port)?.contains("kvstore-busybox")),
        )?;
    }
    retry_write(
        &k,
        &["scale", "deploy/web", "--replicas", "4"],
        None,
        &mut transient,
    )?;
    eprintln!(
        "launcher: {} transient failure(s) of kubectl writes after the kills: {transient:#?}",
        transient.len()
    );
    // A store client that keeps sending to the killed member fails about one request in
    // three for as long as it is down (20 of 11 writes' attempts before the apiserver
    // retried connect errors); a handful right at the kill is an election.
    ensure!(
        transient.len() <= 5,
        "{} kubectl writes failed after the kills",
        transient.len()
    );
    wait_for(
        "4 web pods with a store member, an apiserver and a node down",
        Duration::from_secs(240),
        || Ok(running(&k, 4, image)?.is_some()),
    )?;
    // `up` brings the killed ones back.
    let again = cluster_cmd(&dir, &["up"])?;
    ensure!(
        again.matches("started (pid").count() == 3,
        "up did not restart the three killed:\n{again}"
    );
    wait_for("node 1 Ready again", Duration::from_secs(120), || {
        let n = k.json(&["get", "node", &node1])?;
        Ok(n.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            }))
    })?;
    for name in &acked {
        k.run(&["get", "serviceaccount", name], None)?;
    }

    // Snapshot, destroy, restore into a fresh store: every object is back.
    let snap = tmp.path().join("backup.db");
    cluster_cmd(&dir, &["snapshot", snap.to_str().unwrap()])?;
    let before = k.names("serviceaccounts")?;
    cluster_cmd(&dir, &["down"])?;
    let left = all_pids_gone(&dir)?;
    ensure!(left.is_empty(), "still running after down: {left:?}");
    cluster_cmd(&dir, &["restore", snap.to_str().unwrap()])?;
    cluster_cmd(&dir, &["up"])?;
    let after = k.names("serviceaccounts")?;
    ensure!(
        before == after,
        "service accounts before {before:?}, after restore {after:?}"
    );
    for name in &acked {
        ensure!(after.contains(name), "{name} lost");
    }
    let d = k.json(&["get", "deploy", "web"])?;
    ensure!(
        d.pointer("/spec/replicas") == Some(&Value::from(4)),
        "deployment after restore: {d}"
    );
    k.run(&["get", "service", "web"], None)?;
    wait_for(
        "4 web pods after the restore",
        Duration::from_secs(240),
        || Ok(running(&k, 4, image)?.is_some()),
    )?;

    // `down` leaves no process behind.
    cluster_cmd(&dir, &["down"])?;
    guard.armed = false;
    let left = all_pids_gone(&dir)?;
    ensure!(left.is_empty(), "still running after down: {left:?}");
    Ok(())
}
