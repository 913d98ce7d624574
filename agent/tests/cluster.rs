//! The agent against a real control plane: real etcd, the real `apiserver` binary, the
//! scheduler and controllers (in the test process, over HTTPS), the real `agent` binary
//! and real Docker with the local `kvstore-busybox` image (scripts/images.sh), kubectl.
//!
//! Run: `cargo build -p apiserver -p agent && cargo test -p agent --test cluster`.

mod cluster_common;
mod common;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use api::{Endpoints, ListParams, Node, Pod};
use cluster_common::*;
use common::{Cleanup, docker, ensure_image, node_containers};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `path` from `addr` over plain HTTP/1.0; the whole answer, or the error.
async fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .context("read timed out")??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn status_of(pod: &Pod) -> (&str, bool) {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    (phase, ready)
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .map(|c| c.restart_count)
        .unwrap_or(-1)
}

fn container_id(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .container_id
        .as_ref()
        .map(|id| id.trim_start_matches("docker://").to_string())
}

async fn wait_pod(
    client: &api::Client,
    name: &str,
    what: &str,
    done: impl Fn(&Pod) -> bool,
) -> Result<Pod> {
    eventually(what, || async {
        let pod = client.get_opt::<Pod>(Some("default"), name).await?;
        Ok(pod.filter(|p| done(p)))
    })
    .await
}

fn web_yaml(node: &str, service_port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  labels: {{app: web}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: kvstore-busybox:latest
    command: ["sh", "-c", "echo line-1; echo line-2; echo line-3; echo ok > /www/ready.html; exec httpd -f -p 8080 -h /www"]
    ports: [{{containerPort: 8080, name: http}}]
    resources: {{requests: {{cpu: 100m, memory: 32Mi}}, limits: {{cpu: 500m, memory: 64Mi}}}}
    readinessProbe:
      httpGet: {{path: /ready.html, port: 8080}}
      periodSeconds: 1
      timeoutSeconds: 10
      failureThreshold: 1
    livenessProbe:
      exec: {{command: ["sh", "-c", "! test -e /tmp/kill-me"]}}
      periodSeconds: 1
      # Generous: a slow exec on a loaded machine must not count as a failure.
      timeoutSeconds: 10
      failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: {service_port}, targetPort: 8080}}]
"#
    )
}

fn ready_endpoint_ips(eps: &Endpoints) -> Vec<String> {
    eps.subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pod_runs_answers_through_its_service_and_recovers() -> Result<()> {
    ensure_image();
    let cluster = Cluster::start(Duration::from_secs(40)).await?;
    let client = cluster.client()?;
    let ip = loopback_ip();
    let name = format!("agent-web-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let agent = AgentProc::start(&cluster, &name, &ip, &["--labels", "tier=test"]).await?;

    // Registered with what the flags and the host say.
    let node: Node = client.get(None, &name).await?;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("kubernetes.io/hostname"), Some(&name));
    assert_eq!(labels.get("tier").map(String::as_str), Some("test"));
    let status = node.status.clone().context("node status")?;
    assert!(
        status
            .addresses
            .iter()
            .flatten()
            .any(|a| a.type_ == "InternalIP" && a.address == ip)
    );
    assert!(
        status
            .allocatable
            .as_ref()
            .is_some_and(|a| a.contains_key("cpu"))
    );
    let runtime = status
        .node_info
        .clone()
        .unwrap_or_default()
        .container_runtime_version;
    assert!(
        runtime.starts_with("docker://") && runtime.len() > "docker://".len(),
        "{runtime}"
    );
    let lease: api::Lease = eventually("the node lease", || async {
        Ok(client
            .get_opt::<api::Lease>(Some("kube-node-lease"), &name)
            .await?)
    })
    .await?;
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(name.as_str())
    );

    let service_port = free_port_on(&ip);
    cluster.apply("web", &web_yaml(&name, service_port))?;
    let pod = wait_pod(&client, "web", "web Running and Ready", |p| {
        status_of(p) == ("Running", true)
    })
    .await?;
    let st = pod.status.clone().unwrap();
    assert_eq!(st.host_ip.as_deref(), Some(ip.as_str()));
    assert!(st.pod_ip.is_some() && st.start_time.is_some());
    assert_eq!(restarts(&pod), 0);
    let first_id = container_id(&pod).context("container id")?;

    // Through the service proxy on the node IP.
    let addr = format!("{ip}:{service_port}");
    let body = eventually("the service answering", || async {
        Ok(http_get(&addr, "/index.html")
            .await
            .ok()
            .filter(|b| b.contains("kvstore-busybox")))
    })
    .await?;
    assert!(body.starts_with("HTTP/1."), "{body}");

    // What kubectl shows of the node and the pod.
    let nodes = cluster.kubectl(&["get", "nodes"])?;
    let row = nodes.lines().find(|l| l.starts_with(&name)).unwrap_or("");
    assert!(row.split_whitespace().nth(1) == Some("Ready"), "{nodes}");
    let wide = cluster.kubectl(&["get", "pod", "web", "-o", "wide"])?;
    assert!(
        wide.contains(st.pod_ip.as_deref().unwrap())
            && wide.contains(&name)
            && wide.contains("1/1"),
        "{wide}"
    );

    // kubectl logs (through the apiserver's pods/log to the agent), --tail.
    let logs = cluster.kubectl(&["logs", "web"])?;
    assert_eq!(
        logs.lines().collect::<Vec<_>>(),
        ["line-1", "line-2", "line-3"]
    );
    let tail = cluster.kubectl(&["logs", "web", "--tail=1"])?;
    assert_eq!(tail.trim(), "line-3");
    // -f keeps the stream open after the existing lines.
    let mut follow = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.admin_kubeconfig())
        .args(["logs", "-f", "web"])
        .env("HOME", cluster.dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = follow.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(3)
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    assert_eq!(lines, ["line-1", "line-2", "line-3"]);
    assert!(follow.try_wait()?.is_none(), "kubectl logs -f ended early");
    let _ = follow.kill();
    let _ = follow.wait();

    // docker kill → the agent restarts it: restartCount 1, lastState terminated.
    docker(&["kill", &first_id]);
    let pod = wait_pod(&client, "web", "restart after docker kill", |p| {
        restarts(p) == 1 && status_of(p) == ("Running", true)
    })
    .await?;
    let cs = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .clone();
    assert!(cs.last_state.and_then(|s| s.terminated).is_some());
    assert_ne!(container_id(&pod).as_deref(), Some(first_id.as_str()));

    // Readiness fails → out of the endpoints and of the proxy's rotation.
    let id = container_id(&pod).unwrap();
    let pod_ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    eventually("the pod in the endpoints", || async {
        let eps = client.get_opt::<Endpoints>(Some("default"), "web").await?;
        Ok(eps.filter(|e| ready_endpoint_ips(e) == [pod_ip.clone()]))
    })
    .await?;
    docker(&["exec", &id, "rm", "/www/ready.html"]);
    wait_pod(&client, "web", "web not Ready", |p| {
        status_of(p) == ("Running", false)
    })
    .await?;
    eventually("the pod out of the endpoints", || async {
        let eps = client.get_opt::<Endpoints>(Some("default"), "web").await?;
        Ok(eps.filter(|e| ready_endpoint_ips(e).is_empty()))
    })
    .await?;
    eventually("the proxy with no backend", || async {
        // No backend: the proxy closes the connection without an answer.
        Ok(http_get(&addr, "/index.html")
            .await
            .ok()
            .filter(|b| b.is_empty()))
    })
    .await?;
    docker(&["exec", &id, "sh", "-c", "echo ok > /www/ready.html"]);
    wait_pod(&client, "web", "web Ready again", |p| {
        status_of(p) == ("Running", true)
    })
    .await?;
    eventually("the service answering again", || async {
        Ok(http_get(&addr, "/index.html")
            .await
            .ok()
            .filter(|b| b.contains("kvstore-busybox")))
    })
    .await?;

    // Liveness fails → killed and restarted (restartCount 2).
    docker(&["exec", &id, "touch", "/tmp/kill-me"]);
    wait_pod(&client, "web", "restart after failed liveness", |p| {
        restarts(p) == 2 && status_of(p) == ("Running", true)
    })
    .await?;

    // The agent's Events on the pod, as `kubectl describe` shows them.
    let events = eventually("Started and Killing events", || async {
        let list = client
            .list_all::<api::Event>(Some("default"), &ListParams::default())
            .await?
            .0;
        let mine: Vec<(String, String)> = list
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("web"))
            .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect();
        let has = |r: &str| mine.iter().any(|(reason, _)| reason == r);
        Ok((has("Started") && has("Killing")).then_some(mine))
    })
    .await?;
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Killing" && m.contains("failed liveness probe")),
        "{events:?}"
    );
    let describe = cluster.kubectl(&["describe", "pod", "web"])?;
    assert!(describe.contains("Started container web"), "{describe}");

    // A missing image: ErrImagePull / ImagePullBackOff with Docker's message.
    cluster.apply(
        "missing",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: missing, namespace: default}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: {name}}}\n  containers:\n  - {{name: c, image: kvstore-no-such-image:latest}}\n"
        ),
    )?;
    let pod = wait_pod(&client, "missing", "ErrImagePull", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .is_some_and(|w| {
                matches!(
                    w.reason.as_deref(),
                    Some("ErrImagePull" | "ImagePullBackOff")
                )
            })
    })
    .await?;
    let waiting = pod.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert!(
        waiting
            .message
            .unwrap_or_default()
            .contains("No such image"),
        "Docker's message in the status"
    );

    // Deleting the pod stops and removes its containers; the service closes its port
    // when the Service goes.
    let web: Pod = client.get(Some("default"), "web").await?;
    let uid = web.metadata.uid.clone().context("uid")?;
    assert!(container_count(&name_filter(&uid)) >= 1);
    cluster.kubectl(&["delete", "pod", "web", "--wait=false"])?;
    eventually("web's containers removed", || {
        let uid = uid.clone();
        async move { Ok(container_count(&name_filter(&uid)).eq(&0).then_some(())) }
    })
    .await?;
    cluster.kubectl(&["delete", "service", "web"])?;
    eventually("the service port closed", || async {
        Ok(tokio::net::TcpStream::connect(&addr)
            .await
            .is_err()
            .then_some(()))
    })
    .await?;
    // Everything the agent did was allowed to system:node:agent.
    let log = agent.log_text().to_lowercase();
    assert!(
        !log.contains("forbidden") && !log.contains("unauthorized"),
        "the agent hit RBAC or authentication errors:\n{log}"
    );
    Ok(())
}

/// The `label=` filter of one pod's containers.
fn name_filter(pod_uid: &str) -> String {
    format!("label={}={pod_uid}", agent::runtime::LABEL_POD_UID)
}

fn container_count(filter: &str) -> usize {
    docker(&["ps", "-aq", "--filter", filter]).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_adopts_running_containers() -> Result<()> {
    ensure_image();
    let cluster = Cluster::start(Duration::from_secs(40)).await?;
    let client = cluster.client()?;
    let ip = loopback_ip();
    let name = format!("agent-adopt-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let mut agent = AgentProc::start(&cluster, &name, &ip, &[]).await?;
    let pod_yaml = |pod: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: default}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: {name}}}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: 'kvstore-busybox:latest', command: [sleep, '3600']}}\n"
        )
    };
    cluster.apply("kept", &pod_yaml("kept"))?;
    let before = wait_pod(&client, "kept", "kept Running", |p| {
        status_of(p) == ("Running", true)
    })
    .await?;
    let id = container_id(&before).context("container id")?;
    let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]);

    agent.restart().await?;
    // The new agent is at work once it runs a new pod on the node.
    cluster.apply("after", &pod_yaml("after"))?;
    wait_pod(&client, "after", "a pod started by the new agent", |p| {
        status_of(p) == ("Running", true)
    })
    .await?;
    let after: Pod = client.get(Some("default"), "kept").await?;
    assert_eq!(
        container_id(&after).as_deref(),
        Some(id.as_str()),
        "same container"
    );
    assert_eq!(restarts(&after), 0);
    assert_eq!(status_of(&after), ("Running", true));
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]),
        started
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &id]),
        "true"
    );
    let uid = after.metadata.uid.clone().unwrap();
    assert_eq!(container_count(&name_filter(&uid)), 1, "no second attempt");

    // A pod held by a finalizer is only marked on delete (deletionTimestamp): the agent
    // stops and removes its containers while the object stays, as the kubelet does.
    client
        .patch::<Pod>(
            Some("default"),
            "kept",
            &api::Patch::Merge(
                serde_json::json!({"metadata": {"finalizers": ["example.com/hold"]}}),
            ),
            &api::PostParams::default(),
        )
        .await?;
    cluster.kubectl(&["delete", "pod", "kept", "--wait=false"])?;
    eventually("kept's containers removed while the pod is marked", || {
        let uid = uid.clone();
        async move { Ok((container_count(&name_filter(&uid)) == 0).then_some(())) }
    })
    .await?;
    let marked: Pod = client.get(Some("default"), "kept").await?;
    assert!(marked.metadata.deletion_timestamp.is_some());
    client
        .patch::<Pod>(
            Some("default"),
            "kept",
            &api::Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
            &api::PostParams::default(),
        )
        .await?;
    eventually("kept gone", || async {
        Ok(client
            .get_opt::<Pod>(Some("default"), "kept")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_agent_goes_unknown_and_its_pods_move() -> Result<()> {
    ensure_image();
    let cluster = Cluster::start(Duration::from_secs(4)).await?;
    let client = cluster.client()?;
    let pid = std::process::id();
    let (a, b) = (format!("agent-a-{pid}"), format!("agent-b-{pid}"));
    let (_ca, _cb) = (Cleanup(a.clone()), Cleanup(b.clone()));
    // Lease of 4 s, renewed every second: within the controllers' 4 s grace period.
    let fast = ["--node-lease-duration-s", "4"];
    let mut agent_a = AgentProc::start(&cluster, &a, &loopback_ip(), &fast).await?;
    let _agent_b = AgentProc::start(&cluster, &b, &loopback_ip(), &fast).await?;
    cluster.apply(
        "sleepers",
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: sleepers, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: sleepers}}
  template:
    metadata: {labels: {app: sleepers}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: kvstore-busybox:latest
        command: [sleep, "3600"]
        resources: {requests: {cpu: 100m}}
"#,
    )?;
    let params = ListParams::default().labels("app=sleepers");
    let on = |pods: &[Pod], node: &str| {
        pods.iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .filter(|p| status_of(p) == ("Running", true))
            .count()
    };
    let pods = eventually("one running pod on each node", || async {
        let pods = client.list_all::<Pod>(Some("default"), &params).await?.0;
        Ok((on(&pods, &a) == 1 && on(&pods, &b) == 1).then_some(pods))
    })
    .await?;
    let uid_on_b = pods
        .iter()
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(b.as_str()))
        .and_then(|p| p.metadata.uid.clone());

    agent_a.kill();
    eventually("node a Unknown", || async {
        let n: Node = client.get(None, &a).await?;
        let unknown = n.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Ready" && c.status == "Unknown")
        });
        Ok(unknown.then_some(()))
    })
    .await?;
    eventually("both pods running on node b", || async {
        let pods = client.list_all::<Pod>(Some("default"), &params).await?.0;
        Ok((on(&pods, &b) == 2 && pods.len() == 2).then_some(()))
    })
    .await?;
    // The live node's pod was never evicted (its heartbeats kept it Ready).
    let pods = client.list_all::<Pod>(Some("default"), &params).await?.0;
    assert!(pods.iter().any(|p| p.metadata.uid == uid_on_b));
    let b_node: Node = client.get(None, &b).await?;
    assert_eq!(
        b_node.status.as_ref().and_then(|s| {
            s.conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.status.clone())
        }),
        Some("True".into())
    );
    if node_containers(&b).len() < 2 {
        bail!("node b should run both pods' containers");
    }

    // Node a comes back: Ready again, and the containers of its evicted pod (left
    // running while it was away) are swept as orphans.
    assert!(!node_containers(&a).is_empty());
    agent_a.restart().await?;
    eventually("node a Ready again", || async {
        let n: Node = client.get(None, &a).await?;
        let ready = n
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        Ok(ready.then_some(()))
    })
    .await?;
    eventually("node a's orphaned containers removed", || async {
        Ok(node_containers(&a).is_empty().then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_proxy_round_robins_over_ready_pods() -> Result<()> {
    ensure_image();
    let cluster = Cluster::start(Duration::from_secs(40)).await?;
    let client = cluster.client()?;
    let ip = loopback_ip();
    let name = format!("agent-rr-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let _agent = AgentProc::start(&cluster, &name, &ip, &[]).await?;
    let port = free_port_on(&ip);
    cluster.apply(
        "rr",
        &format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: rr, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: rr}}}}
  template:
    metadata: {{labels: {{app: rr}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: kvstore-busybox:latest
        command: ["sh", "-c", "hostname > /www/index.html; exec httpd -f -p 8080 -h /www"]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: rr, namespace: default}}
spec:
  selector: {{app: rr}}
  ports: [{{port: {port}, targetPort: 8080}}]
"#
        ),
    )?;
    eventually("two ready endpoints", || async {
        let eps = client.get_opt::<Endpoints>(Some("default"), "rr").await?;
        Ok(eps.filter(|e| ready_endpoint_ips(e).len() == 2))
    })
    .await?;
    let addr = format!("{ip}:{port}");
    // The proxy may still be taking in the second endpoint: wait until both answer.
    eventually("both pods answering through the proxy", || async {
        let a = http_get(&addr, "/index.html").await?;
        let b = http_get(&addr, "/index.html").await?;
        let (a, b) = (body(&a), body(&b));
        Ok((!a.is_empty() && !b.is_empty() && a != b).then_some(()))
    })
    .await?;
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(body(&http_get(&addr, "/index.html").await?));
    }
    // Strict alternation: each connection goes to the next backend.
    assert!(answers.iter().all(|a| !a.is_empty()), "{answers:?}");
    assert_ne!(answers[0], answers[1], "{answers:?}");
    for i in 2..answers.len() {
        assert_eq!(answers[i], answers[i - 2], "{answers:?}");
    }
    Ok(())
}

/// The body of an HTTP answer.
fn body(answer: &str) -> String {
    answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default()
}

/// A stand-in for the Docker socket: forwards to the real one until `down`, which
/// closes the listener and every forwarded connection (the daemon "dies" for whoever
/// uses this socket).
struct SocketProxy {
    path: std::path::PathBuf,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl SocketProxy {
    fn up(path: &std::path::Path) -> Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let t = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let forward = tokio::spawn(async move {
                    if let Ok(mut daemon) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut daemon).await;
                    }
                });
                t.lock().unwrap().push(forward);
            }
        });
        tasks.lock().unwrap().push(accept);
        Ok(Self {
            path: path.to_path_buf(),
            tasks,
        })
    }

    fn down(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.down();
    }
}

fn ready_of(n: &Node) -> Option<(String, String)> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.message.clone().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_is_not_ready_while_docker_does_not_answer() -> Result<()> {
    let cluster = Cluster::start(Duration::from_secs(40)).await?;
    let client = cluster.client()?;
    let socket = cluster.dir.path().join("docker.sock");
    let proxy = SocketProxy::up(&socket)?;
    let name = format!("agent-nodocker-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let docker_host = format!("unix://{}", socket.display());
    let _agent = AgentProc::start_with_env(
        &cluster,
        &name,
        &loopback_ip(),
        &["--node-lease-duration-s", "4"],
        &[("DOCKER_HOST", docker_host.as_str())],
    )
    .await?;
    eventually("node Ready", || async {
        let n: Node = client.get(None, &name).await?;
        Ok(ready_of(&n).filter(|(s, _)| s == "True"))
    })
    .await?;
    proxy.down();
    let (_, message) = eventually("node not Ready without Docker", || async {
        let n: Node = client.get(None, &name).await?;
        Ok(ready_of(&n).filter(|(s, _)| s == "False"))
    })
    .await?;
    assert!(message.contains("container runtime is down"), "{message}");
    let _proxy = SocketProxy::up(&socket)?;
    eventually("node Ready again with Docker back", || async {
        let n: Node = client.get(None, &name).await?;
        Ok(ready_of(&n).filter(|(s, _)| s == "True"))
    })
    .await?;
    Ok(())
}
