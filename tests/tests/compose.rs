//! `docker-compose.yml` end to end: the control-plane image is built from the
//! workspace's binaries (`docker/build-image.sh`, no registry), `docker-compose up -d`
//! starts 3 kvstore members, 3 apiservers, the load balancer and 2 simulated nodes under
//! a unique project name on a free host port and network, the real `kubectl` reaches
//! the cluster through the published port, sees both nodes Ready, applies a
//! Deployment and sees its pods Running on the nodes; `down -v` removes everything.
//!
//! Needs Docker, docker-compose and `cargo build --workspace --bins` first.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tests::kubectl::wait_for;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(Path::to_path_buf))
        .filter(|d| d.join("cluster").is_file())
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root().join("target"))
                .join("debug")
        })
}

struct Compose {
    project: String,
    env: Vec<(String, String)>,
    up: bool,
}

impl Compose {
    fn cmd(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("docker-compose")
            .current_dir(root())
            .args(["-f", "docker-compose.yml", "-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .context("run docker-compose")?;
        if !out.status.success() {
            bail!(
                "docker-compose {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if self.up {
            if let Ok(logs) = self.cmd(&["logs", "--tail", "30"]) {
                eprintln!("{logs}");
            }
            let _ = self.cmd(&["down", "-v", "--timeout", "5"]);
        }
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    tests::kubectl::kubectl(kubeconfig, args, stdin, Duration::from_secs(20))
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: httpd
        image: kvstore-busybox:latest
        command: ["httpd", "-f", "-p", "8080"]
        resources:
          requests: {cpu: 100m, memory: 32Mi}
"#;

#[test]
fn docker_compose_runs_the_control_plane() -> Result<()> {
    let bins = bin_dir();
    for b in ["cluster", "kvstore", "apiserver", "agent"] {
        ensure!(
            bins.join(b).is_file(),
            "{} is missing: run `cargo build --workspace --bins` first",
            bins.join(b).display()
        );
    }
    let st = Command::new(root().join("docker/build-image.sh"))
        .env("BIN_DIR", &bins)
        .status()
        .context("run docker/build-image.sh (is Docker running?)")?;
    ensure!(st.success(), "docker/build-image.sh failed");

    let tmp = tempfile::tempdir()?;
    let port = tests::ports::free_port();
    let mut compose = None;
    // A /24 no other network uses: docker-compose refuses an overlapping subnet, and
    // another is tried.
    let mut last_err = String::new();
    for attempt in 0..8u32 {
        let seed = std::process::id()
            .wrapping_mul(31)
            .wrapping_add(attempt * 7919);
        let net = format!("10.{}.{}", 100 + seed % 150, (seed / 150) % 250);
        let mut c = Compose {
            project: format!("kvcompose{}x{attempt}", std::process::id()),
            env: vec![
                ("KVSTORE_API_PORT".into(), port.to_string()),
                ("KVSTORE_NET".into(), net.clone()),
            ],
            up: true,
        };
        match c.cmd(&["up", "-d"]) {
            Ok(_) => {
                compose = Some(c);
                break;
            }
            Err(e) => {
                last_err = format!("{e:#}");
                let _ = c.cmd(&["down", "-v", "--timeout", "5"]);
                c.up = false;
                if !last_err.contains("overlap") && !last_err.contains("Pool") {
                    bail!("docker-compose up: {last_err}");
                }
            }
        }
    }
    let compose = compose.with_context(|| format!("no free network for compose: {last_err}"))?;

    // The kubeconfig `init` wrote for the host (server: the published port).
    let kubeconfig = tmp.path().join("kubeconfig");
    wait_for(
        "the init container's kubeconfig",
        Duration::from_secs(60),
        || {
            let id = compose.cmd(&["ps", "-q", "init"])?;
            let st = Command::new("docker")
                .args(["cp", &format!("{}:/seed/kubeconfig", id.trim())])
                .arg(&kubeconfig)
                .stderr(Stdio::null())
                .status()?;
            Ok(st.success())
        },
    )?;
    let text = std::fs::read_to_string(&kubeconfig)?;
    ensure!(
        text.contains(&format!("server: https://127.0.0.1:{port}")),
        "kubeconfig does not point at the published port:\n{text}"
    );

    wait_for(
        "both nodes Ready through the published port",
        Duration::from_secs(180),
        || {
            let nodes: Value = serde_json::from_str(&kubectl(
                &kubeconfig,
                &["get", "nodes", "-o", "json"],
                None,
            )?)?;
            let ready = nodes["items"]
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
                .count();
            Ok(ready == 2)
        },
    )?;

    kubectl(&kubeconfig, &["apply", "-f", "-"], Some(DEPLOYMENT))?;
    let mut nodes = Vec::new();
    wait_for("3 pods Running", Duration::from_secs(180), || {
        let pods: Value = serde_json::from_str(&kubectl(
            &kubeconfig,
            &["get", "pods", "-l", "app=web", "-o", "json"],
            None,
        )?)?;
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        nodes = items
            .iter()
            .filter(|p| p.pointer("/status/phase") == Some(&Value::from("Running")))
            .filter_map(|p| {
                p.pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .collect();
        Ok(items.len() == 3 && nodes.len() == 3)
    })?;
    nodes.sort();
    nodes.dedup();
    ensure!(
        nodes.iter().all(|n| n == "node-1" || n == "node-2"),
        "pods on unknown nodes: {nodes:?}"
    );

    // Leader election runs across the three apiservers: both leases have a holder.
    for lease in ["kube-scheduler", "kube-controller-manager"] {
        let holder = kubectl(
            &kubeconfig,
            &[
                "get",
                "lease",
                lease,
                "-n",
                "kube-system",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        )?;
        ensure!(!holder.trim().is_empty(), "{lease} has no holder");
    }

    // Losing an apiserver and a store member does not matter to kubectl: the load
    // balancer skips the dead apiserver, the others use the two live members.
    compose.cmd(&["kill", "apiserver-1", "store-1"])?;
    kubectl(
        &kubeconfig,
        &["scale", "deploy/web", "--replicas", "4"],
        None,
    )
    .or_else(|e| {
        eprintln!("compose: first write after the kills failed ({e:#}); once more");
        kubectl(
            &kubeconfig,
            &["scale", "deploy/web", "--replicas", "4"],
            None,
        )
    })?;
    wait_for(
        "4 pods Running with one of each down",
        Duration::from_secs(180),
        || {
            let pods: Value = serde_json::from_str(&kubectl(
                &kubeconfig,
                &["get", "pods", "-l", "app=web", "-o", "json"],
                None,
            )?)?;
            let items = pods["items"].as_array().cloned().unwrap_or_default();
            let running = items
                .iter()
                .filter(|p| p.pointer("/status/phase") == Some(&Value::from("Running")))
                .count();
            Ok(items.len() == 4 && running == 4)
        },
    )?;

    let mut compose = compose;
    compose.cmd(&["down", "-v", "--timeout", "5"])?;
    compose.up = false;
    let left = compose.cmd(&["ps", "-q"])?;
    ensure!(left.trim().is_empty(), "containers left after down: {left}");
    Ok(())
}
