//! Helpers shared by the agent's integration tests: pod builders, status accessors, and
//! (for the Docker tests) the local test image and a per-test cleanup guard.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use api::k8s_openapi::api::core::v1::{
    Container, ContainerStatus, ExecAction, Pod, PodSpec, PodStatus, Probe,
};
use api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub const IMAGE: &str = "kvstore-busybox:latest";

/// A name no other test (or earlier run) uses: test name, process id, counter.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn container(name: &str, command: &[&str]) -> Container {
    Container {
        name: name.into(),
        image: Some(IMAGE.into()),
        command: Some(command.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

pub fn pod(name: &str, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            termination_grace_period_seconds: Some(2),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn exec_probe(command: &[&str], period_s: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(command.iter().map(|s| s.to_string()).collect()),
        }),
        period_seconds: Some(period_s),
        timeout_seconds: Some(5),
        failure_threshold: Some(1),
        ..Default::default()
    }
}

pub fn container_status<'a>(status: &'a PodStatus, name: &str) -> Option<&'a ContainerStatus> {
    status
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

pub fn restart_count(status: &PodStatus, name: &str) -> i32 {
    container_status(status, name)
        .map(|c| c.restart_count)
        .unwrap_or(-1)
}

pub fn is_ready(status: &PodStatus) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

pub fn is_running(status: &PodStatus, name: &str) -> bool {
    container_status(status, name)
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

pub fn waiting_reason(status: &PodStatus, name: &str) -> Option<String> {
    container_status(status, name)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

/// Builds the local busybox image (scripts/images.sh) unless Docker already has it.
pub fn ensure_image() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/images.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("running scripts/images.sh");
    assert!(
        out.status.success(),
        "scripts/images.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `docker args...` and returns its stdout; panics on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("running docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The ids of all containers (any state) of `node`.
pub fn node_containers(node: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.kvstore.node={node}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// Removes every container labelled with this node when dropped, even if the test failed.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=io.kvstore.node={}", self.0),
            ])
            .output();
        if let Ok(out) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .arg("rm")
                    .arg("-f")
                    .args(&ids)
                    .output();
            }
        }
    }
}
