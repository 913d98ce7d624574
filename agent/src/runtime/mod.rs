//! The container runtime boundary: the `ContainerRuntime` trait the pod workers drive,
//! the plain types that cross it, and the labels that tie a container to its pod. Two
//! implementations: `DockerRuntime` (real containers, through bollard) and `FakeRuntime`
//! (in memory, for simulated nodes and tests of the agent's own logic).

mod docker;
mod fake;
mod labels;

pub use docker::{DEFAULT_CALL_TIMEOUT, DockerRuntime};
pub use fake::FakeRuntime;
pub use labels::{ContainerLabels, LABEL_NODE, LABEL_POD_UID};

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use api::k8s_openapi::jiff::Timestamp;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;

/// What the agent asks the runtime to create: one attempt of one container of one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerSpec {
    /// The runtime's container name; unique per pod, container and attempt.
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint when set (Kubernetes `command`).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's default arguments when set (Kubernetes `args`).
    pub cmd: Option<Vec<String>>,
    /// `NAME=value` pairs.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// Exposed container ports, with the host port to publish when one is asked for.
    pub ports: Vec<PortSpec>,
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub labels: ContainerLabels,
}

/// One container port (`protocol` lower case: tcp, udp or sctp).
#[derive(Clone, Debug, PartialEq)]
pub struct PortSpec {
    pub container_port: u16,
    pub protocol: String,
    pub host_port: Option<u16>,
}

/// A container as the runtime reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub labels: ContainerLabels,
    pub image: String,
    pub image_id: String,
    pub state: ContainerState,
    /// The container's address on its network (the pod IP for now).
    pub ip: Option<IpAddr>,
}

/// The lifecycle state of a container.
#[derive(Clone, Debug, PartialEq)]
pub enum ContainerState {
    /// Created and never started (or its start failed; then `error` says why).
    Created {
        error: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Exited {
        exit_code: i64,
        started_at: Option<Timestamp>,
        finished_at: Option<Timestamp>,
        oom_killed: bool,
        /// The runtime's error text when the process could not run at all.
        error: Option<String>,
    },
}

impl ContainerState {
    pub fn is_running(&self) -> bool {
        matches!(self, ContainerState::Running { .. })
    }
}

/// Options of a log read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LogOptions {
    /// Keep the stream open and deliver new output as it is written.
    pub follow: bool,
    /// Only the last `tail_lines` lines of what was written so far.
    pub tail_lines: Option<u64>,
}

/// The outcome of a command run inside a container.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecOutput {
    pub exit_code: i64,
    /// stdout and stderr, interleaved, capped at `EXEC_OUTPUT_MAX_BYTES`.
    pub output: Bytes,
}

/// Exec output beyond this is dropped: a probe only needs the exit code and a hint.
pub const EXEC_OUTPUT_MAX_BYTES: usize = 64 * 1024;

/// A change the runtime saw in one of our containers.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeEvent {
    pub container_id: String,
    /// The pod the container belongs to, from its labels.
    pub pod_uid: Option<String>,
    /// The runtime's word for what happened (start, die, oom, destroy, ...).
    pub action: String,
    /// The process's exit code, on `die`.
    pub exit_code: Option<i64>,
}

/// Which containers a `list` returns: always only this node's, optionally one pod's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListFilter {
    pub node_name: String,
    pub pod_uid: Option<String>,
}

/// Everything the agent needs from a container engine. Every call is bounded in time by
/// the implementation; a call that runs out of time returns `AgentError::Timeout`.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Creates (does not start) a container; returns its id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String>;
    async fn start(&self, id: &str) -> Result<()>;
    /// SIGTERM, then SIGKILL once `grace` has passed. Stopping a stopped container is fine.
    async fn stop(&self, id: &str, grace: Duration) -> Result<()>;
    /// Removes a stopped container; removing a missing one is fine.
    async fn remove(&self, id: &str) -> Result<()>;
    /// The containers that carry our labels and match `filter`, all states.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<ContainerInfo>>;
    async fn inspect(&self, id: &str) -> Result<ContainerInfo>;
    /// The container's output (stdout and stderr interleaved, as written).
    async fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<Bytes>>>;
    /// Runs `cmd` inside the running container and waits at most `timeout` for it.
    async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecOutput>;
    async fn image_present(&self, image: &str) -> Result<bool>;
    /// Changes to this node's containers, as they happen. The stream ends when the
    /// runtime connection breaks; the caller reopens it (and relists meanwhile).
    async fn events(&self, node_name: &str) -> Result<BoxStream<'static, RuntimeEvent>>;
}

/// Labels as a sorted map, for runtimes that store them as strings.
pub(crate) type LabelMap = BTreeMap<String, String>;
