//! Computes a pod's `PodStatus` from what the worker saw of its containers: phase,
//! conditions (PodScheduled, Initialized, ContainersReady, Ready), container statuses with
//! state, last state, restart count, ready and started, and the pod and host IPs.
//! Pure: no runtime calls, so it is tested on plain values.

use std::net::IpAddr;

use api::k8s_openapi::api::core::v1::{
    ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use api::k8s_openapi::jiff::Timestamp;

use crate::runtime::{ContainerInfo, ContainerState};

/// The worker's view of one spec container.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    /// The latest attempt, if one exists.
    pub current: Option<ContainerInfo>,
    /// The attempt before it (kept for `lastState`).
    pub previous: Option<ContainerInfo>,
    /// Why the container is not running and not simply terminated: ContainerCreating,
    /// CrashLoopBackOff, ErrImagePull, ImagePullBackOff, CreateContainerError, ...
    pub waiting: Option<(String, String)>,
    pub ready: bool,
    pub started: bool,
    /// Whether the restart policy will run this container again after it exits.
    pub will_restart: bool,
}

/// Everything `compute` needs besides the container views.
pub struct StatusInputs<'a> {
    pub previous: Option<&'a PodStatus>,
    pub host_ip: Option<IpAddr>,
    pub start_time: Timestamp,
    pub now: Timestamp,
}

fn terminated(info: &ContainerInfo) -> Option<ContainerStateTerminated> {
    let ContainerState::Exited {
        exit_code,
        started_at,
        finished_at,
        oom_killed,
        error,
    } = &info.state
    else {
        return None;
    };
    let reason = if *oom_killed {
        "OOMKilled"
    } else if error.is_some() {
        "StartError"
    } else if *exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    Some(ContainerStateTerminated {
        container_id: Some(format!("docker://{}", info.id)),
        exit_code: i32::try_from(*exit_code).unwrap_or(-1),
        reason: Some(reason.into()),
        message: error.clone(),
        started_at: started_at.map(Time),
        finished_at: finished_at.map(Time),
        signal: None,
    })
}

fn waiting(reason: &str, message: &str) -> K8sState {
    K8sState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: (!message.is_empty()).then(|| message.into()),
        }),
        ..Default::default()
    }
}

fn container_status(view: &ContainerView) -> ContainerStatus {
    let current = view.current.as_ref();
    let state = match (&view.waiting, current.map(|c| &c.state)) {
        (Some((reason, message)), _) => waiting(reason, message),
        (None, Some(ContainerState::Running { started_at })) => K8sState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..Default::default()
        },
        (None, Some(ContainerState::Exited { .. })) => K8sState {
            terminated: current.and_then(terminated),
            ..Default::default()
        },
        (None, Some(ContainerState::Created { .. }) | None) => waiting("ContainerCreating", ""),
    };
    // While waiting to run again, the last run is the current (exited) attempt.
    let last = if view.waiting.is_some() && current.is_some_and(|c| terminated(c).is_some()) {
        current.and_then(terminated)
    } else {
        view.previous.as_ref().and_then(terminated)
    };
    ContainerStatus {
        name: view.name.clone(),
        image: current
            .map(|c| c.image.clone())
            .unwrap_or_else(|| view.image.clone()),
        image_id: current.map(|c| c.image_id.clone()).unwrap_or_default(),
        container_id: current.map(|c| format!("docker://{}", c.id)),
        ready: view.ready,
        started: Some(view.started),
        restart_count: current.map(|c| c.labels.attempt as i32).unwrap_or(0),
        state: Some(state),
        last_state: last.map(|t| K8sState {
            terminated: Some(t),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod phase, by the kubelet's rules: Pending until every container has run; Running
/// while one runs or will run again; Succeeded or Failed once all have stopped for good.
pub fn phase(views: &[ContainerView]) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded, mut restarting) = (0, 0, 0, 0, 0);
    for v in views {
        match v.current.as_ref().map(|c| &c.state) {
            Some(ContainerState::Running { .. }) if v.waiting.is_none() => running += 1,
            Some(ContainerState::Exited { exit_code, .. }) => {
                stopped += 1;
                if v.will_restart {
                    restarting += 1;
                } else if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            // Created, never run, or waiting for an image: it has not started yet.
            _ => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 || restarting > 0 {
        "Running"
    } else if stopped == succeeded && stopped > 0 {
        "Succeeded"
    } else if stopped > 0 {
        "Failed"
    } else {
        "Pending"
    }
}

fn condition(kind: &str, ok: bool, previous: Option<&PodStatus>, now: Timestamp) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // The transition time moves only when the condition's value changes.
    let since = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    PodCondition {
        type_: kind.into(),
        status: status.into(),
        last_transition_time: Some(since),
        reason: (!ok && kind != "PodScheduled" && kind != "Initialized")
            .then(|| "ContainersNotReady".into()),
        ..Default::default()
    }
}

/// The pod's status from its container views.
pub fn compute(inputs: &StatusInputs<'_>, views: &[ContainerView]) -> PodStatus {
    let phase = phase(views);
    let all_ready = !views.is_empty() && views.iter().all(|v| v.ready);
    let pod_ip = views
        .iter()
        .filter_map(|v| v.current.as_ref())
        .filter(|c| c.state.is_running())
        .find_map(|c| c.ip)
        .map(|ip| ip.to_string())
        // Between two attempts the address is gone; keep reporting the last one.
        .or_else(|| {
            (phase == "Running")
                .then(|| inputs.previous.and_then(|p| p.pod_ip.clone()))
                .flatten()
        });
    let host_ip = inputs.host_ip.map(|ip| ip.to_string());
    let now = inputs.now;
    let previous = inputs.previous;
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![
            condition("PodScheduled", true, previous, now),
            condition("Initialized", true, previous, now),
            condition("ContainersReady", all_ready, previous, now),
            condition("Ready", all_ready, previous, now),
        ]),
        container_statuses: Some(views.iter().map(container_status).collect()),
        pod_ips: pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        pod_ip,
        host_ips: host_ip.clone().map(|ip| vec![HostIP { ip }]),
        host_ip,
        start_time: Some(Time(inputs.start_time)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ContainerLabels;

    fn info(attempt: u32, state: ContainerState) -> ContainerInfo {
        ContainerInfo {
            id: format!("id{attempt}"),
            labels: ContainerLabels {
                attempt,
                ..Default::default()
            },
            image: "img".into(),
            image_id: "sha256:1".into(),
            state,
            ip: Some("172.17.0.9".parse().unwrap()),
        }
    }

    fn exited(code: i64) -> ContainerState {
        ContainerState::Exited {
            exit_code: code,
            started_at: None,
            finished_at: None,
            oom_killed: false,
            error: None,
        }
    }

    fn running() -> ContainerState {
        ContainerState::Running {
            started_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn view(current: Option<ContainerInfo>, will_restart: bool) -> ContainerView {
        ContainerView {
            name: "c".into(),
            image: "img".into(),
            current,
            will_restart,
            ..Default::default()
        }
    }

    #[test]
    fn phases_follow_the_kubelet_rules() {
        assert_eq!(phase(&[view(None, true)]), "Pending");
        assert_eq!(phase(&[view(Some(info(0, running())), true)]), "Running");
        assert_eq!(phase(&[view(Some(info(0, exited(1))), true)]), "Running");
        assert_eq!(phase(&[view(Some(info(0, exited(0))), false)]), "Succeeded");
        assert_eq!(phase(&[view(Some(info(0, exited(2))), false)]), "Failed");
        assert_eq!(
            phase(&[view(Some(info(0, running())), true), view(None, true)]),
            "Pending"
        );
        let mut image_missing = view(None, true);
        image_missing.waiting = Some(("ErrImagePull".into(), "No such image".into()));
        assert_eq!(phase(&[image_missing]), "Pending");
    }

    #[test]
    fn crash_loop_shows_waiting_with_the_last_termination() {
        let mut v = view(Some(info(3, exited(7))), true);
        v.previous = Some(info(2, exited(5)));
        v.waiting = Some(("CrashLoopBackOff".into(), "back-off 20s".into()));
        let inputs = StatusInputs {
            previous: None,
            host_ip: Some("10.0.0.1".parse().unwrap()),
            start_time: Timestamp::UNIX_EPOCH,
            now: Timestamp::UNIX_EPOCH,
        };
        let status = compute(&inputs, &[v]);
        let cs = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 3);
        let state = cs.state.as_ref().unwrap();
        assert_eq!(
            state.waiting.as_ref().unwrap().reason.as_deref(),
            Some("CrashLoopBackOff")
        );
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.exit_code, 7);
        assert_eq!(last.reason.as_deref(), Some("Error"));
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.host_ip.as_deref(), Some("10.0.0.1"));
        let ready = status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
    }

    #[test]
    fn ready_pod_reports_ip_and_keeps_transition_times() {
        let mut v = view(Some(info(0, running())), true);
        v.ready = true;
        v.started = true;
        let t0 = Timestamp::from_second(1000).unwrap();
        let t1 = Timestamp::from_second(2000).unwrap();
        let first = compute(
            &StatusInputs {
                previous: None,
                host_ip: None,
                start_time: t0,
                now: t0,
            },
            std::slice::from_ref(&v),
        );
        assert_eq!(first.pod_ip.as_deref(), Some("172.17.0.9"));
        let second = compute(
            &StatusInputs {
                previous: Some(&first),
                host_ip: None,
                start_time: t0,
                now: t1,
            },
            &[v],
        );
        assert_eq!(
            first, second,
            "nothing changed, so the status must not either"
        );
    }
}
