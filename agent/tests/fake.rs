//! The agent's own logic on the in-memory runtime, with tokio's clock paused (it jumps to
//! the next timer whenever every task waits): crash-loop backoff doubling to its cap and
//! resetting after a long run, the restart policies, exec probes, image backoff, orphan
//! removal and adoption. Durations measured here are virtual, hence exact.

mod common;

use std::sync::Arc;
use std::time::Duration;

use agent::runtime::{ContainerRuntime, FakeRuntime, ListFilter};
use agent::{Agent, AgentConfig, BackoffConfig, StatusBoard};
use api::k8s_openapi::api::core::v1::Pod;
use common::*;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(3600);
const RESYNC: Duration = Duration::from_secs(1);

fn config() -> AgentConfig {
    let mut config = AgentConfig::new("sim-1");
    config.resync_period = RESYNC;
    config.backoff = BackoffConfig {
        base: Duration::from_secs(10),
        max: Duration::from_secs(40),
        reset_after: Duration::from_secs(600),
    };
    config
}

fn start(fake: &FakeRuntime) -> (Agent, Arc<StatusBoard>) {
    let board = Arc::new(StatusBoard::new());
    let agent = Agent::start(Arc::new(fake.clone()), config(), board.clone());
    (agent, board)
}

fn with_policy(mut pod: Pod, policy: &str) -> Pod {
    pod.spec.as_mut().unwrap().restart_policy = Some(policy.into());
    pod
}

async fn wait_restarts(board: &StatusBoard, n: i32) {
    board
        .wait_for("default", "p", WAIT, |s| {
            restart_count(s, "c") == n && is_running(s, "c")
        })
        .await
        .unwrap_or_else(|last| panic!("restart {n} never came: {last:#?}"));
}

#[tokio::test(start_paused = true)]
async fn crash_loop_backoff_doubles_to_its_cap() {
    let fake = FakeRuntime::new();
    let (agent, board) = start(&fake);
    agent
        .set_pods(vec![pod("p", vec![container("c", &["run"])])])
        .await
        .unwrap();
    wait_restarts(&board, 0).await;
    // The first restart is immediate; then 10 s, 20 s, 40 s, and 40 s again (the cap).
    let expected = [0u64, 10, 20, 40, 40];
    for (i, delay_s) in expected.iter().enumerate() {
        let crashed_at = Instant::now();
        assert!(
            fake.exit_container("uid-p", "c", 1),
            "a running container to crash"
        );
        if *delay_s > 0 {
            let status = board
                .wait_for("default", "p", WAIT, |s| {
                    waiting_reason(s, "c").as_deref() == Some("CrashLoopBackOff")
                })
                .await
                .unwrap_or_else(|last| panic!("no CrashLoopBackOff: {last:#?}"));
            let cs = container_status(&status, "c").unwrap();
            assert_eq!(
                cs.last_state
                    .as_ref()
                    .unwrap()
                    .terminated
                    .as_ref()
                    .unwrap()
                    .exit_code,
                1
            );
            assert_eq!(status.phase.as_deref(), Some("Running"));
        }
        wait_restarts(&board, i as i32 + 1).await;
        let waited = crashed_at.elapsed();
        assert!(
            waited >= Duration::from_secs(*delay_s)
                && waited <= Duration::from_secs(*delay_s) + RESYNC,
            "restart {} after {waited:?}, expected {delay_s} s",
            i + 1
        );
    }
    assert_eq!(fake.created_total(), 6);
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_resets_after_a_long_run() {
    let fake = FakeRuntime::new();
    let (agent, board) = start(&fake);
    agent
        .set_pods(vec![pod("p", vec![container("c", &["run"])])])
        .await
        .unwrap();
    wait_restarts(&board, 0).await;
    fake.exit_container("uid-p", "c", 1);
    wait_restarts(&board, 1).await;
    fake.exit_container("uid-p", "c", 1);
    wait_restarts(&board, 2).await;
    // Ten minutes of running wipe the backoff: the next restart is immediate again.
    tokio::time::sleep(Duration::from_secs(601)).await;
    let crashed_at = Instant::now();
    fake.exit_container("uid-p", "c", 1);
    wait_restarts(&board, 3).await;
    assert!(
        crashed_at.elapsed() <= RESYNC,
        "waited {:?}",
        crashed_at.elapsed()
    );
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn restart_policies_decide_the_phase() {
    let fake = FakeRuntime::new();
    let (agent, board) = start(&fake);
    let on_failure_ok = with_policy(pod("ok", vec![container("c", &["run"])]), "OnFailure");
    let on_failure_bad = with_policy(pod("bad", vec![container("c", &["run"])]), "OnFailure");
    let never = with_policy(pod("never", vec![container("c", &["run"])]), "Never");
    agent
        .set_pods(vec![on_failure_ok, on_failure_bad, never])
        .await
        .unwrap();
    for name in ["ok", "bad", "never"] {
        board
            .wait_for("default", name, WAIT, |s| is_running(s, "c"))
            .await
            .unwrap();
    }
    fake.exit_container("uid-ok", "c", 0);
    fake.exit_container("uid-bad", "c", 3);
    fake.exit_container("uid-never", "c", 3);
    let ok = board
        .wait_for("default", "ok", WAIT, |s| {
            s.phase.as_deref() == Some("Succeeded")
        })
        .await
        .unwrap_or_else(|last| panic!("not Succeeded: {last:#?}"));
    assert_eq!(restart_count(&ok, "c"), 0);
    board
        .wait_for("default", "never", WAIT, |s| {
            s.phase.as_deref() == Some("Failed")
        })
        .await
        .unwrap_or_else(|last| panic!("not Failed: {last:#?}"));
    board
        .wait_for("default", "bad", WAIT, |s| {
            restart_count(s, "c") == 1 && is_running(s, "c")
        })
        .await
        .unwrap_or_else(|last| panic!("OnFailure did not restart a failure: {last:#?}"));
    // Time passes; the finished pods stay finished.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        board.get("default", "ok").unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(
        restart_count(&board.get("default", "never").unwrap(), "c"),
        0
    );
    assert_eq!(fake.created_total(), 4);
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn exec_probes_drive_readiness_and_liveness() {
    let fake = FakeRuntime::new();
    let (agent, board) = start(&fake);
    let mut c = container("c", &["run"]);
    c.readiness_probe = Some(exec_probe(&["ready?"], 2));
    let mut l = container("l", &["run"]);
    l.liveness_probe = Some(exec_probe(&["alive?"], 2));
    agent.set_pods(vec![pod("p", vec![c, l])]).await.unwrap();
    board
        .wait_for("default", "p", WAIT, is_ready)
        .await
        .expect("ready with passing probes");

    fake.set_exec_exit_code("uid-p", "c", 1);
    let status = board
        .wait_for("default", "p", WAIT, |s| !is_ready(s))
        .await
        .expect("not ready");
    assert_eq!(restart_count(&status, "c"), 0);
    fake.set_exec_exit_code("uid-p", "c", 0);
    board
        .wait_for("default", "p", WAIT, is_ready)
        .await
        .expect("ready again");

    fake.set_exec_exit_code("uid-p", "l", 1);
    board
        .wait_for("default", "p", WAIT, |s| restart_count(s, "l") >= 1)
        .await
        .unwrap_or_else(|last| panic!("liveness did not restart: {last:#?}"));
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn missing_image_backs_off_and_recovers_when_it_appears() {
    let fake = FakeRuntime::new();
    fake.set_images(&[]);
    let (agent, board) = start(&fake);
    agent
        .set_pods(vec![pod("p", vec![container("c", &["run"])])])
        .await
        .unwrap();
    let status = board
        .wait_for("default", "p", WAIT, |s| {
            waiting_reason(s, "c").as_deref() == Some("ErrImagePull")
        })
        .await
        .unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    board
        .wait_for("default", "p", WAIT, |s| {
            waiting_reason(s, "c").as_deref() == Some("ImagePullBackOff")
        })
        .await
        .unwrap();
    fake.set_images(&[IMAGE]);
    let status = board
        .wait_for("default", "p", WAIT, |s| is_running(s, "c"))
        .await
        .unwrap();
    assert_eq!(restart_count(&status, "c"), 0);
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn adopts_its_containers_and_removes_orphans() {
    let fake = FakeRuntime::new();
    let (first, board) = start(&fake);
    let keep = pod("keep", vec![container("c", &["run"])]);
    let gone = pod("gone", vec![container("c", &["run"])]);
    first.set_pods(vec![keep.clone(), gone]).await.unwrap();
    board
        .wait_for("default", "keep", WAIT, |s| is_running(s, "c"))
        .await
        .unwrap();
    board
        .wait_for("default", "gone", WAIT, |s| is_running(s, "c"))
        .await
        .unwrap();
    first.shutdown().await;
    assert_eq!(fake.created_total(), 2);

    // A new agent whose node no longer has "gone": "keep" is adopted, "gone" removed.
    let (second, board) = start(&fake);
    second.set_pods(vec![keep]).await.unwrap();
    let status = board
        .wait_for("default", "keep", WAIT, |s| is_running(s, "c"))
        .await
        .unwrap();
    assert_eq!(restart_count(&status, "c"), 0);
    let filter = ListFilter {
        node_name: "sim-1".into(),
        pod_uid: None,
    };
    let deadline = Instant::now() + WAIT;
    while fake.list(&filter).await.unwrap().len() > 1 && Instant::now() < deadline {
        tokio::time::sleep(RESYNC).await;
    }
    let left = fake.list(&filter).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].labels.pod_name, "keep");
    assert_eq!(fake.created_total(), 2, "nothing was recreated");
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn pods_without_uid_or_with_bad_limits_lose_nothing_else() {
    let fake = FakeRuntime::new();
    let (agent, board) = start(&fake);
    let mut nameless = pod("x", vec![container("c", &["run"])]);
    nameless.metadata.uid = None;
    let mut bad = container("c", &["run"]);
    bad.resources = Some(api::k8s_openapi::api::core::v1::ResourceRequirements {
        limits: Some(
            [(
                "memory".to_string(),
                api::k8s_openapi::apimachinery::pkg::api::resource::Quantity("lots".into()),
            )]
            .into(),
        ),
        ..Default::default()
    });
    let good = pod("good", vec![container("c", &["run"])]);
    agent
        .set_pods(vec![nameless, pod("bad", vec![bad]), good])
        .await
        .unwrap();
    board
        .wait_for("default", "good", WAIT, |s| is_running(s, "c"))
        .await
        .unwrap();
    let status = board
        .wait_for("default", "bad", WAIT, |s| {
            waiting_reason(s, "c").as_deref() == Some("CreateContainerConfigError")
        })
        .await
        .unwrap();
    let message = container_status(&status, "c")
        .unwrap()
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone();
    assert!(message.unwrap_or_default().contains("memory quantity"));
    assert!(
        board.get("default", "x").is_none(),
        "a pod without uid is refused"
    );
    agent.shutdown().await;
}
