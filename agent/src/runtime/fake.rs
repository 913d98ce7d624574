//! `FakeRuntime`: an in-memory container runtime for simulated nodes and for tests of the
//! agent's own logic (backoff, restart policy, probes) under paused time. Containers "run"
//! the moment they start; tests make them exit, fail exec probes, or lose their image.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::k8s_openapi::jiff::Timestamp;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, ExecOutput, ListFilter,
    LogOptions, RuntimeEvent,
};
use crate::error::{AgentError, Result};

/// Bound on the event fan-out; a slow listener loses events and relies on the relist.
const EVENT_BUFFER: usize = 1024;

#[derive(Debug)]
struct FakeContainer {
    spec: ContainerSpec,
    info: ContainerInfo,
    log: Vec<u8>,
}

#[derive(Debug, Default)]
struct FakeState {
    containers: BTreeMap<String, FakeContainer>,
    /// Images that "exist"; `None` means every image does.
    images: Option<HashSet<String>>,
    /// Exit code of exec commands per (pod uid, container name); 0 when unset.
    exec_exit_codes: HashMap<(String, String), i64>,
    next_id: u64,
    /// How many containers were ever created (lets tests see a restart happened).
    created_total: u64,
}

/// The in-memory runtime. Cloning shares the same containers.
#[derive(Clone, Debug)]
pub struct FakeRuntime {
    state: Arc<Mutex<FakeState>>,
    events: broadcast::Sender<RuntimeEvent>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRuntime {
    /// A runtime where every image exists.
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    /// From now on only these images exist (others fail with `ImageNotFound`).
    pub fn set_images(&self, images: &[&str]) {
        self.lock().images = Some(images.iter().map(|s| s.to_string()).collect());
    }

    /// Makes the running container of `pod_uid`/`container_name` exit with `exit_code`,
    /// as a crash (non-zero) or a completion (zero) would. Returns false if none runs.
    pub fn exit_container(&self, pod_uid: &str, container_name: &str, exit_code: i64) -> bool {
        let event = {
            let mut state = self.lock();
            let Some(c) = state.containers.values_mut().find(|c| {
                c.info.labels.pod_uid == pod_uid
                    && c.info.labels.container_name == container_name
                    && c.info.state.is_running()
            }) else {
                return false;
            };
            c.info.state = exited(&c.info.state, exit_code);
            event(&c.info, "die")
        };
        let _ = self.events.send(event);
        true
    }

    /// Exec commands (exec probes) in that container now exit with `exit_code`.
    pub fn set_exec_exit_code(&self, pod_uid: &str, container_name: &str, exit_code: i64) {
        self.lock()
            .exec_exit_codes
            .insert((pod_uid.to_string(), container_name.to_string()), exit_code);
    }

    /// Appends output to a container's log.
    pub fn write_log(&self, id: &str, text: &str) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.log.extend_from_slice(text.as_bytes());
        }
    }

    /// How many containers were ever created.
    pub fn created_total(&self) -> u64 {
        self.lock().created_total
    }

    /// The spec a container was created from.
    pub fn spec_of(&self, id: &str) -> Option<ContainerSpec> {
        self.lock().containers.get(id).map(|c| c.spec.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A panic while holding the lock is a bug in a test; keep going with the data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn not_found(id: &str) -> AgentError {
        AgentError::ContainerNotFound { id: id.into() }
    }
}

fn exited(state: &ContainerState, exit_code: i64) -> ContainerState {
    let started_at = match state {
        ContainerState::Running { started_at } => Some(*started_at),
        _ => None,
    };
    ContainerState::Exited {
        exit_code,
        started_at,
        finished_at: Some(Timestamp::now()),
        oom_killed: false,
        error: None,
    }
}

fn event(info: &ContainerInfo, action: &str) -> RuntimeEvent {
    let exit_code = match &info.state {
        ContainerState::Exited { exit_code, .. } if action == "die" => Some(*exit_code),
        _ => None,
    };
    RuntimeEvent {
        container_id: info.id.clone(),
        pod_uid: Some(info.labels.pod_uid.clone()),
        action: action.into(),
        exit_code,
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let mut state = self.lock();
        if let Some(images) = &state.images
            && !images.contains(&spec.image)
        {
            return Err(AgentError::ImageNotFound {
                image: spec.image.clone(),
                message: format!("No such image: {}", spec.image),
            });
        }
        if state.containers.values().any(|c| c.spec.name == spec.name) {
            return Err(AgentError::Runtime {
                op: "create container",
                message: format!("name {} already in use", spec.name),
            });
        }
        state.next_id += 1;
        state.created_total += 1;
        let n = state.next_id;
        let id = format!("fake{n:08}");
        let ip = IpAddr::V4(Ipv4Addr::new(10, 250, (n >> 8) as u8, n as u8));
        let info = ContainerInfo {
            id: id.clone(),
            labels: spec.labels.clone(),
            image: spec.image.clone(),
            image_id: format!("sha256:fake-{}", spec.image),
            state: ContainerState::Created { error: None },
            ip: Some(ip),
        };
        state.containers.insert(
            id.clone(),
            FakeContainer {
                spec: spec.clone(),
                info,
                log: Vec::new(),
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        let event = {
            let mut state = self.lock();
            let c = state
                .containers
                .get_mut(id)
                .ok_or_else(|| Self::not_found(id))?;
            c.info.state = ContainerState::Running {
                started_at: Timestamp::now(),
            };
            event(&c.info, "start")
        };
        let _ = self.events.send(event);
        Ok(())
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<()> {
        let event = {
            let mut state = self.lock();
            let c = state
                .containers
                .get_mut(id)
                .ok_or_else(|| Self::not_found(id))?;
            if !c.info.state.is_running() {
                return Ok(());
            }
            // A fake process honours SIGTERM at once: exit code 128 + 15.
            c.info.state = exited(&c.info.state, 143);
            event(&c.info, "die")
        };
        let _ = self.events.send(event);
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let removed = self.lock().containers.remove(id);
        if let Some(c) = removed {
            let _ = self.events.send(event(&c.info, "destroy"));
        }
        Ok(())
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ContainerInfo>> {
        Ok(self
            .lock()
            .containers
            .values()
            .filter(|c| c.info.labels.node_name == filter.node_name)
            .filter(|c| {
                filter
                    .pod_uid
                    .as_ref()
                    .is_none_or(|u| *u == c.info.labels.pod_uid)
            })
            .map(|c| c.info.clone())
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo> {
        self.lock()
            .containers
            .get(id)
            .map(|c| c.info.clone())
            .ok_or_else(|| Self::not_found(id))
    }

    async fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        // The fake log is a snapshot: `follow` ends with what was written so far.
        let log = self
            .lock()
            .containers
            .get(id)
            .map(|c| c.log.clone())
            .ok_or_else(|| Self::not_found(id))?;
        let text = match options.tail_lines {
            None => log,
            Some(n) => tail_lines(&log, n),
        };
        Ok(futures::stream::iter([Ok(Bytes::from(text))]).boxed())
    }

    async fn exec(&self, id: &str, _cmd: &[String], _timeout: Duration) -> Result<ExecOutput> {
        let state = self.lock();
        let c = state
            .containers
            .get(id)
            .ok_or_else(|| Self::not_found(id))?;
        if !c.info.state.is_running() {
            return Err(AgentError::Runtime {
                op: "exec",
                message: format!("container {id} is not running"),
            });
        }
        let key = (
            c.info.labels.pod_uid.clone(),
            c.info.labels.container_name.clone(),
        );
        Ok(ExecOutput {
            exit_code: state.exec_exit_codes.get(&key).copied().unwrap_or(0),
            output: Bytes::new(),
        })
    }

    async fn image_present(&self, image: &str) -> Result<bool> {
        Ok(self
            .lock()
            .images
            .as_ref()
            .is_none_or(|i| i.contains(image)))
    }

    async fn events(&self, node_name: &str) -> Result<BoxStream<'static, RuntimeEvent>> {
        let node = node_name.to_string();
        let state = self.state.clone();
        let stream = BroadcastStream::new(self.events.subscribe())
            .filter_map(|e| async move { e.ok() })
            .filter(move |e| {
                // Events of containers already removed are still delivered (destroy).
                let ours = state
                    .lock()
                    .map(|s| {
                        s.containers
                            .get(&e.container_id)
                            .is_none_or(|c| c.info.labels.node_name == node)
                    })
                    .unwrap_or(true);
                async move { ours }
            });
        Ok(stream.boxed())
    }
}

/// The last `n` lines of `log` (a trailing partial line counts as a line).
pub(crate) fn tail_lines(log: &[u8], n: u64) -> Vec<u8> {
    if n == 0 {
        return Vec::new();
    }
    let body = log.strip_suffix(b"\n").unwrap_or(log);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return log[i + 1..].to_vec();
            }
        }
    }
    log.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_counts_from_the_end() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", 1), b"c");
        assert_eq!(tail_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail_lines(b"a\n", 0), b"");
    }
}
