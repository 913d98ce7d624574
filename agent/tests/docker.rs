//! The agent against real Docker: pods run from the local busybox image, are probed,
//! restarted, adopted by a new agent, deleted with their grace period, and their logs are
//! served over HTTP. Docker must be there: these tests fail, not skip, without it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use agent::runtime::{ContainerRuntime, DockerRuntime};
use agent::{Agent, AgentConfig, BackoffConfig, StatusBoard};
use api::k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, Pod, ResourceRequirements};
use api::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use common::*;

/// Generous bound on any one wait: the machine is shared and has two cores.
const WAIT: Duration = Duration::from_secs(60);

struct Node {
    name: String,
    runtime: Arc<dyn ContainerRuntime>,
    board: Arc<StatusBoard>,
    agent: Agent,
    _cleanup: Cleanup,
}

fn config(node: &str) -> AgentConfig {
    let mut config = AgentConfig::new(node);
    config.host_ip = Some("127.0.0.1".parse().unwrap());
    config.resync_period = Duration::from_millis(500);
    config.backoff = BackoffConfig {
        base: Duration::from_secs(1),
        max: Duration::from_secs(4),
        reset_after: Duration::from_secs(600),
    };
    config
}

async fn node(prefix: &str) -> Node {
    ensure_image();
    let name = unique(prefix);
    let cleanup = Cleanup(name.clone());
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(
        DockerRuntime::connect(Duration::from_secs(30))
            .await
            .expect("Docker must be available for these tests"),
    );
    let board = Arc::new(StatusBoard::new());
    let agent = Agent::start(runtime.clone(), config(&name), board.clone());
    Node {
        name,
        runtime,
        board,
        agent,
        _cleanup: cleanup,
    }
}

fn httpd_pod(name: &str) -> Pod {
    let mut c = container("web", &["httpd", "-f", "-p", "80", "-h", "/www"]);
    c.ports = Some(vec![ContainerPort {
        name: Some("http".into()),
        container_port: 80,
        ..Default::default()
    }]);
    c.readiness_probe = Some(api::k8s_openapi::api::core::v1::Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/index.html".into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(1),
        ..Default::default()
    });
    c.resources = Some(ResourceRequirements {
        limits: Some(
            [
                ("cpu".to_string(), Quantity("500m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ]
            .into(),
        ),
        ..Default::default()
    });
    pod(name, vec![c])
}

/// The id of the running container of `pod`'s container `name`.
fn container_id(board: &StatusBoard, pod: &str, name: &str) -> String {
    let status = board.get("default", pod).expect("pod has a status");
    let id = container_status(&status, name)
        .and_then(|c| c.container_id.clone())
        .expect("container id");
    id.trim_start_matches("docker://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpd_pod_becomes_ready_and_answers_on_its_pod_ip() {
    let n = node("ready").await;
    n.agent.set_pods(vec![httpd_pod("web")]).await.unwrap();
    let status = n
        .board
        .wait_for("default", "web", WAIT, |s| {
            is_ready(s) && s.phase.as_deref() == Some("Running")
        })
        .await
        .unwrap_or_else(|last| panic!("never Ready: {last:#?}"));
    assert_eq!(restart_count(&status, "web"), 0);
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    let pod_ip = status.pod_ip.clone().expect("pod IP");
    let body = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{pod_ip}/index.html"))
        .send()
        .await
        .expect("the pod answers on its IP")
        .text()
        .await
        .unwrap();
    assert_eq!(body.trim(), "kvstore-busybox");
    // Limits and the restart policy reached Docker as asked.
    let id = container_id(&n.board, "web", "web");
    assert_eq!(
        docker(&["inspect", "-f", "{{.HostConfig.NanoCpus}}", &id]),
        "500000000"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.HostConfig.Memory}}", &id]),
        (64 << 20).to_string()
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", &id]),
        "no"
    );
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"io.kvstore.pod.uid\"}}",
            &id
        ]),
        "uid-web"
    );
    n.agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_container_is_restarted_with_restart_count_plus_one() {
    let n = node("kill").await;
    n.agent.set_pods(vec![httpd_pod("victim")]).await.unwrap();
    n.board
        .wait_for("default", "victim", WAIT, is_ready)
        .await
        .unwrap_or_else(|last| panic!("never Ready: {last:#?}"));
    let first = container_id(&n.board, "victim", "web");
    docker(&["kill", &first]);
    let status = n
        .board
        .wait_for("default", "victim", WAIT, |s| {
            restart_count(s, "web") == 1 && is_ready(s)
        })
        .await
        .unwrap_or_else(|last| panic!("not restarted: {last:#?}"));
    let cs = container_status(&status, "web").unwrap();
    let last = cs
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .expect("last state");
    assert_eq!(last.exit_code, 137, "killed by SIGKILL");
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert_ne!(
        container_id(&n.board, "victim", "web"),
        first,
        "a new container runs"
    );
    n.agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_liveness_probe_restarts_the_container() {
    let n = node("liveness").await;
    let mut c = container("app", &["sh", "-c", "touch /tmp/alive; exec sleep 100000"]);
    c.liveness_probe = Some(exec_probe(&["test", "-f", "/tmp/alive"], 1));
    n.agent.set_pods(vec![pod("live", vec![c])]).await.unwrap();
    n.board
        .wait_for("default", "live", WAIT, |s| is_running(s, "app"))
        .await
        .unwrap_or_else(|last| panic!("never running: {last:#?}"));
    let id = container_id(&n.board, "live", "app");
    docker(&["exec", &id, "rm", "/tmp/alive"]);
    // The new attempt creates the file again, so it stays alive after one restart.
    let status = n
        .board
        .wait_for("default", "live", WAIT, |s| {
            restart_count(s, "app") == 1 && is_running(s, "app")
        })
        .await
        .unwrap_or_else(|last| panic!("not restarted by liveness: {last:#?}"));
    assert!(
        container_status(&status, "app")
            .unwrap()
            .last_state
            .is_some()
    );
    n.agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probe_takes_the_pod_out_and_back() {
    let n = node("readiness").await;
    let mut c = container("app", &["sleep", "100000"]);
    c.readiness_probe = Some(exec_probe(&["test", "-f", "/tmp/ready"], 1));
    n.agent.set_pods(vec![pod("flip", vec![c])]).await.unwrap();
    let status = n
        .board
        .wait_for("default", "flip", WAIT, |s| is_running(s, "app"))
        .await
        .unwrap_or_else(|last| panic!("never running: {last:#?}"));
    assert!(!is_ready(&status), "not ready before the probe passes");
    let id = container_id(&n.board, "flip", "app");
    docker(&["exec", &id, "touch", "/tmp/ready"]);
    n.board
        .wait_for("default", "flip", WAIT, is_ready)
        .await
        .expect("Ready once the probe passes");
    docker(&["exec", &id, "rm", "/tmp/ready"]);
    let status = n
        .board
        .wait_for("default", "flip", WAIT, |s| !is_ready(s))
        .await
        .expect("not Ready once the probe fails");
    assert_eq!(restart_count(&status, "app"), 0, "readiness never restarts");
    docker(&["exec", &id, "touch", "/tmp/ready"]);
    n.board
        .wait_for("default", "flip", WAIT, is_ready)
        .await
        .expect("Ready again");
    n.agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_reports_err_image_pull_then_back_off() {
    let n = node("image").await;
    let mut c = container("app", &["sleep", "1"]);
    c.image = Some("kvstore-no-such-image:v0".into());
    n.agent
        .set_pods(vec![pod("noimage", vec![c])])
        .await
        .unwrap();
    let status = n
        .board
        .wait_for("default", "noimage", WAIT, |s| {
            waiting_reason(s, "app").as_deref() == Some("ErrImagePull")
        })
        .await
        .unwrap_or_else(|last| panic!("no ErrImagePull: {last:#?}"));
    let waiting = container_status(&status, "app")
        .unwrap()
        .state
        .as_ref()
        .unwrap()
        .waiting
        .clone()
        .unwrap();
    let message = waiting.message.unwrap_or_default();
    assert!(
        message.contains("No such image: kvstore-no-such-image:v0"),
        "Docker's message: {message}"
    );
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    n.board
        .wait_for("default", "noimage", WAIT, |s| {
            waiting_reason(s, "app").as_deref() == Some("ImagePullBackOff")
        })
        .await
        .unwrap_or_else(|last| panic!("no ImagePullBackOff: {last:#?}"));
    assert!(
        node_containers(&n.name).is_empty(),
        "no container without an image"
    );
    n.agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pod_is_stopped_and_removed() {
    let n = node("delete").await;
    // The process exits cleanly on SIGTERM, well within the grace period.
    let c = container(
        "app",
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.2; done",
        ],
    );
    n.agent
        .set_pods(vec![pod("doomed", vec![c])])
        .await
        .unwrap();
    n.board
        .wait_for("default", "doomed", WAIT, |s| is_running(s, "app"))
        .await
        .unwrap_or_else(|last| panic!("never running: {last:#?}"));
    assert_eq!(node_containers(&n.name).len(), 1);
    let id = container_id(&n.board, "doomed", "app");
    // Collect the container's events; Docker's event stream only starts when first read,
    // so a harmless signal (SIGWINCH is ignored by default) proves it is connected.
    let (event_tx, mut event_rx) = tokio::sync::mpsc::channel(64);
    let mut events = n.runtime.events(&n.name).await.unwrap();
    tokio::spawn(async move {
        while let Some(e) = futures::StreamExt::next(&mut events).await {
            if event_tx.send(e).await.is_err() {
                break;
            }
        }
    });
    loop {
        docker(&["kill", "-s", "WINCH", &id]);
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(1), event_rx.recv()).await {
            assert_eq!(e.action, "kill");
            break;
        }
    }
    n.agent.set_pods(vec![]).await.unwrap();
    assert!(
        n.board.wait_terminated("default", "doomed", WAIT).await,
        "termination reported"
    );
    assert!(node_containers(&n.name).is_empty(), "containers removed");
    let mut actions = Vec::new();
    loop {
        let e = tokio::time::timeout(WAIT, event_rx.recv())
            .await
            .ok()
            .flatten()
            .expect("an event");
        actions.push((e.action.clone(), e.exit_code));
        if e.action == "destroy" {
            break;
        }
    }
    // SIGTERM first, and the process ended by it (exit code 0 from its trap), not SIGKILL.
    assert!(
        actions.contains(&("die".to_string(), Some(0))),
        "{actions:?}"
    );
    n.agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_agent_adopts_running_containers_without_restarting_them() {
    let n = node("adopt").await;
    n.agent.set_pods(vec![httpd_pod("kept")]).await.unwrap();
    n.board
        .wait_for("default", "kept", WAIT, is_ready)
        .await
        .unwrap_or_else(|last| panic!("never Ready: {last:#?}"));
    let id = container_id(&n.board, "kept", "web");
    let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]);
    n.agent.shutdown().await;
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &id]),
        "true",
        "agent stop leaves it running"
    );

    let board = Arc::new(StatusBoard::new());
    let second = Agent::start(n.runtime.clone(), config(&n.name), board.clone());
    second.set_pods(vec![httpd_pod("kept")]).await.unwrap();
    let status = board
        .wait_for("default", "kept", WAIT, is_ready)
        .await
        .unwrap_or_else(|last| panic!("adopted pod never Ready: {last:#?}"));
    assert_eq!(restart_count(&status, "web"), 0);
    assert_eq!(
        container_id(&board, "kept", "web"),
        id,
        "the same container"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]),
        started,
        "never restarted"
    );
    assert_eq!(node_containers(&n.name), vec![id[..12].to_string()]);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_served_over_http_with_tail_and_follow() {
    let n = node("logs").await;
    let c = container(
        "talker",
        &[
            "sh",
            "-c",
            "echo one; echo two; echo three; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done",
        ],
    );
    n.agent
        .set_pods(vec![pod("chatty", vec![c])])
        .await
        .unwrap();
    n.board
        .wait_for("default", "chatty", WAIT, |s| is_running(s, "talker"))
        .await
        .unwrap_or_else(|last| panic!("never running: {last:#?}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(agent::logs::serve(
        listener,
        agent::logs::router(n.runtime.clone(), &n.name),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{addr}/containerLogs/default/chatty/talker");

    // Running is not yet "has written its first lines" on a loaded machine: read until
    // the third line is there.
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let all = http.get(&base).send().await.unwrap();
        assert_eq!(all.status(), 200);
        let text = all.text().await.unwrap();
        if text.contains("three\n") || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(text.starts_with("one\ntwo\nthree\n"), "{text:?}");

    let tail = http
        .get(format!("{base}?tailLines=1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(tail.lines().count(), 1, "{tail:?}");
    assert!(tail.starts_with("tick "), "{tail:?}");

    // Following: lines written after the request arrive on the same response.
    let mut follow = http
        .get(format!("{base}?follow=true&tailLines=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    let mut seen = String::new();
    while seen.matches("tick").count() < 2 {
        let chunk = tokio::time::timeout(WAIT, follow.chunk())
            .await
            .expect("followed output arrives")
            .unwrap()
            .expect("stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(follow);

    let missing = http
        .get(format!("http://{addr}/containerLogs/default/chatty/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let bad = http
        .get(format!("{base}?tailLines=lots"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    n.agent.shutdown().await;
}
