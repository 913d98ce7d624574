//! Liveness, readiness and startup probes: running one check (exec, httpGet, tcpSocket)
//! and the per-container prober tasks that run them on their period, apply the success
//! and failure thresholds, and publish the result for the pod worker. Liveness and
//! readiness wait until the startup probe (if any) has succeeded, as in Kubernetes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use api::k8s_openapi::api::core::v1::{Container, Probe};
use api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::runtime::ContainerRuntime;

/// What the probes of one running container say, as the pod worker reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeStatus {
    /// The startup probe has succeeded (true at once without one).
    pub started: bool,
    /// The readiness probe passes (true without one).
    pub ready: bool,
    /// The liveness probe reached its failure threshold: the container must be killed.
    pub liveness_failed: bool,
    /// The startup probe reached its failure threshold: the container must be killed.
    pub startup_failed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Liveness,
    Readiness,
    Startup,
}

/// The outcome of one check; the failure text explains it in the logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    Failure(String),
}

/// Where a check of one container goes.
#[derive(Clone)]
pub struct ProbeTarget {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub http: reqwest::Client,
    pub container_id: String,
    pub pod_ip: Option<IpAddr>,
    /// The container spec, for named ports.
    pub container: Container,
}

/// The prober tasks of one running container; dropping it stops them.
pub struct ProbeSet {
    pub container_id: String,
    status: watch::Receiver<ProbeStatus>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ProbeSet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ProbeSet {
    /// Starts the prober tasks of `target.container`; each result change wakes `wake`.
    pub fn start(target: ProbeTarget, wake: Arc<Notify>) -> Self {
        let c = &target.container;
        let initial = ProbeStatus {
            started: c.startup_probe.is_none(),
            ready: c.readiness_probe.is_none(),
            liveness_failed: false,
            startup_failed: false,
        };
        let (tx, rx) = watch::channel(initial);
        let tx = Arc::new(tx);
        let mut tasks = Vec::new();
        for (kind, probe) in [
            (Kind::Startup, &c.startup_probe),
            (Kind::Liveness, &c.liveness_probe),
            (Kind::Readiness, &c.readiness_probe),
        ] {
            if let Some(probe) = probe.clone() {
                let (target, tx, wake) = (target.clone(), tx.clone(), wake.clone());
                tasks.push(tokio::spawn(probe_loop(kind, probe, target, tx, wake)));
            }
        }
        Self {
            container_id: target.container_id,
            status: rx,
            tasks,
        }
    }

    pub fn status(&self) -> ProbeStatus {
        *self.status.borrow()
    }
}

fn secs(value: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(value.unwrap_or(default).max(0) as u64)
}

async fn probe_loop(
    kind: Kind,
    probe: Probe,
    target: ProbeTarget,
    tx: Arc<watch::Sender<ProbeStatus>>,
    wake: Arc<Notify>,
) {
    let period = secs(probe.period_seconds, 10).max(Duration::from_secs(1));
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1) as u32;
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1) as u32;
    let mut rx = tx.subscribe();
    if kind != Kind::Startup {
        // Liveness and readiness only start once the container has started.
        if rx.wait_for(|s| s.started).await.is_err() {
            return;
        }
    }
    tokio::time::sleep(secs(probe.initial_delay_seconds, 0)).await;
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        let outcome = match tokio::time::timeout(timeout, check(&probe, &target, timeout)).await {
            Ok(outcome) => outcome,
            Err(_) => ProbeOutcome::Failure(format!("timed out after {timeout:?}")),
        };
        match &outcome {
            ProbeOutcome::Success => {
                successes = successes.saturating_add(1);
                failures = 0;
            }
            ProbeOutcome::Failure(why) => {
                tracing::debug!(container = %target.container.name, ?kind, %why, "probe failed");
                failures = failures.saturating_add(1);
                successes = 0;
            }
        }
        let changed = tx.send_if_modified(|s| {
            let before = *s;
            match kind {
                Kind::Startup if successes >= 1 => s.started = true,
                Kind::Startup if failures >= failure_threshold => s.startup_failed = true,
                Kind::Liveness if failures >= failure_threshold => s.liveness_failed = true,
                Kind::Readiness if successes >= success_threshold => s.ready = true,
                Kind::Readiness if failures >= failure_threshold => s.ready = false,
                _ => {}
            }
            *s != before
        });
        if changed {
            wake.notify_one();
        }
        let status = *tx.borrow();
        // A started container needs no more startup checks; a failed one is being killed.
        if (kind == Kind::Startup && (status.started || status.startup_failed))
            || (kind == Kind::Liveness && status.liveness_failed)
        {
            return;
        }
        tokio::time::sleep(period).await;
    }
}

/// Runs one check of `probe` against `target`.
pub async fn check(probe: &Probe, target: &ProbeTarget, timeout: Duration) -> ProbeOutcome {
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        if cmd.is_empty() {
            return ProbeOutcome::Failure("exec probe without a command".into());
        }
        return match target
            .runtime
            .exec(&target.container_id, &cmd, timeout)
            .await
        {
            Ok(out) if out.exit_code == 0 => ProbeOutcome::Success,
            Ok(out) => ProbeOutcome::Failure(format!(
                "exit code {}: {}",
                out.exit_code,
                String::from_utf8_lossy(&out.output).trim()
            )),
            Err(e) => ProbeOutcome::Failure(e.to_string()),
        };
    }
    if let Some(http) = &probe.http_get {
        let Some(port) = resolve_port(&http.port, &target.container) else {
            return ProbeOutcome::Failure(format!("unknown port {:?}", http.port));
        };
        let Some(host) = http.host.clone().or(target.pod_ip.map(|ip| ip.to_string())) else {
            return ProbeOutcome::Failure("no pod IP yet".into());
        };
        if http
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        {
            return ProbeOutcome::Failure("https probes are not supported".into());
        }
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let path = http.path.as_deref().unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let mut request = target
            .http
            .get(format!("http://{host}:{port}{path}"))
            .timeout(timeout);
        for header in http.http_headers.iter().flatten() {
            request = request.header(&header.name, &header.value);
        }
        return match request.send().await {
            Ok(resp) if (200..400).contains(&resp.status().as_u16()) => ProbeOutcome::Success,
            Ok(resp) => ProbeOutcome::Failure(format!("HTTP status {}", resp.status())),
            Err(e) => ProbeOutcome::Failure(e.to_string()),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = resolve_port(&tcp.port, &target.container) else {
            return ProbeOutcome::Failure(format!("unknown port {:?}", tcp.port));
        };
        let Some(host) = tcp.host.clone().or(target.pod_ip.map(|ip| ip.to_string())) else {
            return ProbeOutcome::Failure("no pod IP yet".into());
        };
        return match tokio::net::TcpStream::connect((host.as_str(), port)).await {
            Ok(_) => ProbeOutcome::Success,
            Err(e) => ProbeOutcome::Failure(e.to_string()),
        };
    }
    ProbeOutcome::Failure("probe has no handler (exec, httpGet or tcpSocket)".into())
}

/// A probe port: a number, or the name of one of the container's ports.
fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|p| *p != 0),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Some(n);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, TCPSocketAction};

    fn target(container: Container) -> ProbeTarget {
        ProbeTarget {
            runtime: Arc::new(crate::runtime::FakeRuntime::new()),
            http: reqwest::Client::new(),
            container_id: "none".into(),
            pod_ip: Some("127.0.0.1".parse().unwrap()),
            container,
        }
    }

    #[test]
    fn named_ports_resolve_through_the_container() {
        let container = Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &container),
            Some(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("81".into()), &container),
            Some(81)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("nope".into()), &container),
            None
        );
        assert_eq!(resolve_port(&IntOrString::Int(70000), &container), None);
    }

    #[tokio::test]
    async fn tcp_and_http_checks_against_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // A minimal HTTP responder: 200 for /ok, 500 for anything else.
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /ok ");
                let status = if ok { "200 OK" } else { "500 Oops" };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let t = target(Container::default());
        let timeout = Duration::from_secs(5);
        let tcp = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(port.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(check(&tcp, &t, timeout).await, ProbeOutcome::Success);
        let http = |path: &str| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(port.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            check(&http("/ok"), &t, timeout).await,
            ProbeOutcome::Success
        );
        assert!(
            matches!(check(&http("/bad"), &t, timeout).await, ProbeOutcome::Failure(m) if m.contains("500"))
        );
        // A closed port fails the TCP check.
        let closed = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(1),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            check(&closed, &t, timeout).await,
            ProbeOutcome::Failure(_)
        ));
        assert!(matches!(
            check(&Probe::default(), &t, timeout).await,
            ProbeOutcome::Failure(_)
        ));
    }
}
