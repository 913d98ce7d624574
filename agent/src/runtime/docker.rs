//! `DockerRuntime`: the `ContainerRuntime` over the local Docker daemon, through bollard.
//! Every request is bounded by `call_timeout` (a stop by the grace period plus that), the
//! restart policy stays "no" (the agent restarts containers itself, with its backoff), and
//! containers sit on Docker's default bridge, whose address is the pod IP.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use api::k8s_openapi::jiff::Timestamp;
use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
    PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::labels::{LABEL_NODE, LABEL_POD_UID};
use super::{
    ContainerInfo, ContainerLabels, ContainerRuntime, ContainerSpec, ContainerState,
    EXEC_OUTPUT_MAX_BYTES, ExecOutput, ListFilter, LogOptions, RuntimeEvent,
};
use crate::error::{AgentError, Result};

/// Default bound on one Docker call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Bollard's own request timeout; ours (`call_timeout`, grace + call_timeout for stops)
/// always fire first, so this one only backs them up.
const BOLLARD_TIMEOUT_S: u64 = 3600;

/// The Docker implementation of the container runtime.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
    call_timeout: Duration,
}

impl DockerRuntime {
    /// The daemon's version ("27.3.1"), for the node's containerRuntimeVersion.
    pub async fn server_version(&self) -> Option<String> {
        bounded("version", self.call_timeout, self.docker.version())
            .await
            .ok()?
            .ok()?
            .version
    }

    /// Connects to the local daemon (DOCKER_HOST or /var/run/docker.sock) and agrees on
    /// an API version the daemon speaks.
    pub async fn connect(call_timeout: Duration) -> Result<Self> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| runtime_error("connect", e))?
            .with_timeout(Duration::from_secs(BOLLARD_TIMEOUT_S));
        let docker = bounded(
            "negotiate version",
            call_timeout,
            docker.negotiate_version(),
        )
        .await?
        .map_err(|e| runtime_error("negotiate version", e))?;
        let runtime = Self {
            docker,
            call_timeout,
        };
        bounded("ping", call_timeout, runtime.docker.ping())
            .await?
            .map_err(|e| runtime_error("ping", e))?;
        Ok(runtime)
    }

    async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, DockerError>>,
    ) -> Result<T> {
        bounded(op, self.call_timeout, fut)
            .await?
            .map_err(|e| runtime_error(op, e))
    }
}

async fn bounded<T>(op: &'static str, after: Duration, fut: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(after, fut)
        .await
        .map_err(|_| AgentError::Timeout { op, after })
}

fn runtime_error(op: &'static str, e: DockerError) -> AgentError {
    match e {
        DockerError::DockerResponseServerError { message, .. } => {
            AgentError::Runtime { op, message }
        }
        other => AgentError::Runtime {
            op,
            message: other.to_string(),
        },
    }
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    for port in &spec.ports {
        let key = format!("{}/{}", port.container_port, port.protocol);
        if let Some(host_port) = port.host_port {
            port_bindings.insert(
                key.clone(),
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(host_port.to_string()),
                }]),
            );
        }
        exposed.push(key);
    }
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.cmd.clone(),
        env: Some(spec.env.clone()),
        working_dir: spec.working_dir.clone(),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        labels: Some(spec.labels.to_map().into_iter().collect()),
        host_config: Some(HostConfig {
            nano_cpus: spec.nano_cpus,
            memory: spec.memory_bytes,
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            // The agent carries out the pod's restartPolicy with its own backoff.
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Docker reports "never" as the zero time; that is no time at all.
fn parse_time(text: Option<&String>) -> Option<Timestamp> {
    let text = text?;
    let ts = Timestamp::from_str(text).ok()?;
    (ts.as_second() > 0).then_some(ts)
}

fn info_from_inspect(resp: ContainerInspectResponse) -> Option<ContainerInfo> {
    let id = resp.id?;
    let config = resp.config.unwrap_or_default();
    let labels = ContainerLabels::from_map(config.labels.as_ref()?)?;
    let state = resp.state.unwrap_or_default();
    let started_at = parse_time(state.started_at.as_ref());
    let error = state.error.filter(|e| !e.is_empty());
    let container_state = match state.status {
        Some(ContainerStateStatusEnum::RUNNING)
        | Some(ContainerStateStatusEnum::PAUSED)
        | Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Running {
            started_at: started_at.unwrap_or_else(Timestamp::now),
        },
        // A start that failed leaves the container "created" with an error and exit code.
        Some(ContainerStateStatusEnum::CREATED) if error.is_none() => {
            ContainerState::Created { error: None }
        }
        _ => ContainerState::Exited {
            exit_code: state.exit_code.unwrap_or(-1),
            started_at,
            finished_at: parse_time(state.finished_at.as_ref()),
            oom_killed: state.oom_killed.unwrap_or(false),
            error,
        },
    };
    let ip = resp
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|nets| {
            nets.values()
                .filter_map(|n| n.ip_address.as_deref())
                .find_map(|ip| IpAddr::from_str(ip).ok())
        });
    Some(ContainerInfo {
        id,
        labels,
        image: config.image.unwrap_or_default(),
        image_id: resp.image.unwrap_or_default(),
        state: container_state,
        ip,
    })
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        let result = bounded(
            "create container",
            self.call_timeout,
            self.docker
                .create_container(Some(options), create_body(spec)),
        )
        .await?;
        match result {
            Ok(resp) => Ok(resp.id),
            // Docker answers 404 "No such image: ..." when the image is not local.
            Err(DockerError::DockerResponseServerError {
                status_code: 404,
                message,
            }) => Err(AgentError::ImageNotFound {
                image: spec.image.clone(),
                message,
            }),
            Err(e) => Err(runtime_error("create container", e)),
        }
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.call("start container", self.docker.start_container(id, None))
            .await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let grace_s = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(grace_s).build();
        let result = bounded(
            "stop container",
            grace + self.call_timeout,
            self.docker.stop_container(id, Some(options)),
        )
        .await?;
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Err(AgentError::ContainerNotFound { id: id.into() }),
            // 304: already stopped.
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(runtime_error("stop container", e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        let result = bounded(
            "remove container",
            self.call_timeout,
            self.docker.remove_container(id, Some(options)),
        )
        .await?;
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(runtime_error("remove container", e)),
        }
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ContainerInfo>> {
        let mut label_filters = vec![format!("{LABEL_NODE}={}", filter.node_name)];
        if let Some(uid) = &filter.pod_uid {
            label_filters.push(format!("{LABEL_POD_UID}={uid}"));
        }
        let filters = HashMap::from([("label".to_string(), label_filters)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .call(
                "list containers",
                self.docker.list_containers(Some(options)),
            )
            .await?;
        let mut infos = Vec::with_capacity(summaries.len());
        for id in summaries.into_iter().filter_map(|s| s.id) {
            match self.inspect(&id).await {
                Ok(info) => infos.push(info),
                // Removed between the list and the inspect: it is gone, skip it.
                Err(AgentError::ContainerNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(infos)
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo> {
        let result = bounded(
            "inspect container",
            self.call_timeout,
            self.docker.inspect_container(id, None),
        )
        .await?;
        match result {
            Ok(resp) => {
                info_from_inspect(resp).ok_or(AgentError::ContainerNotFound { id: id.into() })
            }
            Err(e) if is_not_found(&e) => Err(AgentError::ContainerNotFound { id: id.into() }),
            Err(e) => Err(runtime_error("inspect container", e)),
        }
    }

    async fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        // Ask once first, so a missing container is an error rather than an empty stream.
        self.inspect(id).await?;
        let tail = options
            .tail_lines
            .map(|n| n.to_string())
            .unwrap_or_else(|| "all".into());
        let docker_options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(options.follow)
            .tail(&tail)
            .build();
        let stream = self.docker.logs(id, Some(docker_options)).map(|item| {
            item.map(|out| out.into_bytes())
                .map_err(|e| runtime_error("container logs", e))
        });
        Ok(stream.boxed())
    }

    async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecOutput> {
        let run = async {
            let exec = self
                .docker
                .create_exec(
                    id,
                    CreateExecOptions {
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        cmd: Some(cmd.to_vec()),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| {
                    if is_not_found(&e) {
                        AgentError::ContainerNotFound { id: id.into() }
                    } else {
                        runtime_error("exec", e)
                    }
                })?;
            let mut buf = BytesMut::new();
            if let StartExecResults::Attached { mut output, .. } = self
                .docker
                .start_exec(&exec.id, None)
                .await
                .map_err(|e| runtime_error("exec", e))?
            {
                while let Some(chunk) = output.next().await {
                    let bytes = chunk.map_err(|e| runtime_error("exec", e))?.into_bytes();
                    let room = EXEC_OUTPUT_MAX_BYTES.saturating_sub(buf.len());
                    buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
            }
            let inspect = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| runtime_error("exec", e))?;
            Ok(ExecOutput {
                exit_code: inspect.exit_code.unwrap_or(-1),
                output: buf.freeze(),
            })
        };
        bounded("exec", timeout, run).await?
    }

    async fn image_present(&self, image: &str) -> Result<bool> {
        let result = bounded(
            "inspect image",
            self.call_timeout,
            self.docker.inspect_image(image),
        )
        .await?;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(runtime_error("inspect image", e)),
        }
    }

    async fn events(&self, node_name: &str) -> Result<BoxStream<'static, RuntimeEvent>> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{LABEL_NODE}={node_name}")],
            ),
            // Only lifecycle changes: exec probes would otherwise wake workers on every
            // check (exec_create, exec_start, exec_die are container events too).
            (
                "event".to_string(),
                ["start", "die", "oom", "kill", "stop", "destroy"]
                    .map(String::from)
                    .to_vec(),
            ),
        ]);
        let options = EventsOptionsBuilder::new().filters(&filters).build();
        let stream = self
            .docker
            .events(Some(options))
            // The stream ends at the first error; the caller reopens it and relists.
            .take_while(|item| futures::future::ready(item.is_ok()))
            .filter_map(|item| async move {
                let msg = item.ok()?;
                let actor = msg.actor?;
                let attributes = actor.attributes.unwrap_or_default();
                Some(RuntimeEvent {
                    container_id: actor.id?,
                    pod_uid: attributes.get(LABEL_POD_UID).cloned(),
                    action: msg.action.unwrap_or_default(),
                    exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
                })
            });
        Ok(stream.boxed())
    }
}
