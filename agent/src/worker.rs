//! The pod worker: one task per pod on the node, owning that pod's containers. Each sync
//! lists the pod's containers (by label), creates and starts missing ones, restarts exited
//! ones as the restart policy says after the crash-loop backoff, kills containers whose
//! liveness or startup probe failed, and publishes the computed status when it changed.
//! A pod that is deleted is stopped (SIGTERM, grace period, SIGKILL) and removed.
//! The worker wakes on its period, on runtime events of its containers, on probe result
//! changes and on pod updates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use api::k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use api::k8s_openapi::jiff::Timestamp;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::error::{AgentError, Result};
use crate::probe::{ProbeSet, ProbeTarget};
use crate::runtime::{ContainerInfo, ContainerRuntime, ContainerState, ListFilter};
use crate::spec::{self, PodKey};
use crate::status::{self, ContainerView, StatusInputs};
use crate::{AgentConfig, StatusSink};

/// What the agent tells a worker.
#[derive(Debug)]
pub(crate) enum WorkerMsg {
    /// The pod's newest version (a deletionTimestamp in it terminates the pod).
    Update(Box<Pod>),
    /// The pod is gone from the node: stop and remove its containers.
    Terminate,
}

/// Shared by all workers of one agent.
pub(crate) struct WorkerContext {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub config: AgentConfig,
    pub sink: Arc<dyn StatusSink>,
    pub http: reqwest::Client,
}

/// The worker's memory of one spec container across syncs.
#[derive(Default)]
struct Track {
    crash_backoff: Backoff,
    /// The exited attempt the worker last saw, and when it first saw it exited.
    exit_seen: Option<(String, Instant)>,
    /// The running attempt, and when the worker first saw it running.
    running_seen: Option<(String, Instant)>,
    image_backoff: Backoff,
    /// When the last image lookup failed, and the runtime's message.
    image_failed: Option<(Instant, String)>,
    probes: Option<ProbeSet>,
    /// The exited attempt a BackOff event was already sent for.
    backoff_reported: Option<String>,
}

pub(crate) struct PodWorker {
    key: PodKey,
    pod: Pod,
    ctx: Arc<WorkerContext>,
    tracks: HashMap<String, Track>,
    start_time: Timestamp,
    last_status: Option<PodStatus>,
    wake: Arc<Notify>,
    /// The earliest end of a backoff seen in the last sync: the worker syncs again then,
    /// even when that comes before the resync period.
    next_wake: Option<Instant>,
}

impl PodWorker {
    pub fn new(key: PodKey, pod: Pod, ctx: Arc<WorkerContext>, wake: Arc<Notify>) -> Self {
        // A restarted agent keeps the start time the pod already reports.
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now);
        let last_status = pod.status.clone();
        Self {
            key,
            pod,
            ctx,
            tracks: HashMap::new(),
            start_time,
            last_status,
            wake,
            next_wake: None,
        }
    }

    /// Runs until the pod is terminated or the agent drops the channel (agent shutdown:
    /// then the containers are left running for the next agent to adopt).
    pub async fn run(mut self, mut rx: mpsc::Receiver<WorkerMsg>) {
        loop {
            if self.pod.metadata.deletion_timestamp.is_some() {
                self.terminate().await;
                return;
            }
            self.next_wake = None;
            if let Err(e) = self.sync().await {
                tracing::warn!(pod = %self.key, error = %e, "pod sync failed; retrying on the next period");
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(WorkerMsg::Update(pod)) => self.pod = *pod,
                    Some(WorkerMsg::Terminate) => {
                        self.terminate().await;
                        return;
                    }
                    None => return,
                },
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(self.wake_deadline()) => {}
            }
        }
    }

    fn grace(&self) -> Duration {
        let grace_s = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .map(|g| g.clamp(0, i64::from(u32::MAX)) as u32)
            .unwrap_or_else(|| spec::grace_s(&self.pod));
        Duration::from_secs(grace_s.into())
    }

    fn containers(&self) -> Vec<Container> {
        self.pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default()
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    /// Stops every container of the pod with the grace period (all at once), removes them,
    /// and tells the sink. Leftovers after an error are caught by the agent's orphan sweep.
    async fn terminate(&mut self) {
        self.tracks.clear();
        let grace = self.grace();
        let filter = ListFilter {
            node_name: self.ctx.config.node_name.clone(),
            pod_uid: Some(self.key.uid.clone()),
        };
        match self.ctx.runtime.list(&filter).await {
            Ok(containers) => {
                let runtime = &self.ctx.runtime;
                let stops = containers.iter().map(|c| async move {
                    if c.state.is_running()
                        && let Err(e) = runtime.stop(&c.id, grace).await
                    {
                        tracing::warn!(container = %c.id, error = %e, "stop failed");
                    }
                    if let Err(e) = runtime.remove(&c.id).await {
                        tracing::warn!(container = %c.id, error = %e, "remove failed");
                    }
                });
                futures::future::join_all(stops).await;
            }
            Err(e) => tracing::warn!(pod = %self.key, error = %e, "list for termination failed"),
        }
        tracing::info!(pod = %self.key, "pod terminated");
        self.ctx.sink.pod_terminated(&self.key);
    }

    /// One reconciliation of the pod's containers with its spec.
    async fn sync(&mut self) -> Result<()> {
        let filter = ListFilter {
            node_name: self.ctx.config.node_name.clone(),
            pod_uid: Some(self.key.uid.clone()),
        };
        let mut by_name: HashMap<String, Vec<ContainerInfo>> = HashMap::new();
        for c in self.ctx.runtime.list(&filter).await? {
            by_name
                .entry(c.labels.container_name.clone())
                .or_default()
                .push(c);
        }
        let containers = self.containers();
        // Containers no longer in the spec (or of another name) are not ours to keep.
        for (name, stale) in by_name
            .iter()
            .filter(|(n, _)| !containers.iter().any(|c| &c.name == *n))
        {
            tracing::info!(pod = %self.key, container = %name, "removing container not in the spec");
            for c in stale {
                self.ctx.runtime.stop(&c.id, self.grace()).await.ok();
                self.ctx.runtime.remove(&c.id).await?;
            }
        }
        let mut views = Vec::with_capacity(containers.len());
        for container in &containers {
            let mut instances = by_name.remove(&container.name).unwrap_or_default();
            instances.sort_by_key(|c| std::cmp::Reverse(c.labels.attempt));
            views.push(self.sync_container(container, instances).await);
        }
        let status = status::compute(
            &StatusInputs {
                previous: self.last_status.as_ref(),
                host_ip: self.ctx.config.host_ip,
                start_time: self.start_time,
                now: Timestamp::now(),
            },
            &views,
        );
        if self.last_status.as_ref() != Some(&status) {
            self.ctx.sink.pod_status(&self.key, &status);
            self.last_status = Some(status);
        }
        Ok(())
    }

    /// Reconciles one spec container given its attempts (newest first); returns its view.
    async fn sync_container(
        &mut self,
        container: &Container,
        mut instances: Vec<ContainerInfo>,
    ) -> ContainerView {
        let mut view = ContainerView {
            name: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            will_restart: true,
            ..Default::default()
        };
        // Keep the newest two attempts (current and last state); older ones go.
        for old in instances.drain(2.min(instances.len())..) {
            if old.state.is_running() {
                self.ctx.runtime.stop(&old.id, self.grace()).await.ok();
            }
            if let Err(e) = self.ctx.runtime.remove(&old.id).await {
                tracing::warn!(container = %old.id, error = %e, "removing an old attempt failed");
            }
        }
        let mut current = instances.first().cloned();
        view.previous = instances.get(1).cloned();

        if let Some(c) = current.as_ref().filter(|c| c.state.is_running()) {
            let probe_status = self.ensure_probes(container, c);
            if probe_status.liveness_failed || probe_status.startup_failed {
                let which = if probe_status.startup_failed {
                    "startup"
                } else {
                    "liveness"
                };
                tracing::info!(pod = %self.key, container = %container.name, "{which} probe failed; killing the container");
                self.ctx.sink.pod_event(
                    &self.key,
                    false,
                    "Killing",
                    &format!(
                        "Container {} failed {which} probe, will be restarted",
                        container.name
                    ),
                );
                let track = self.tracks.entry(container.name.clone()).or_default();
                track.probes = None;
                if let Err(e) = self.ctx.runtime.stop(&c.id, self.grace()).await {
                    tracing::warn!(container = %c.id, error = %e, "stop after failed probe failed");
                }
                current = self.ctx.runtime.inspect(&c.id).await.ok();
            } else {
                let track = self.tracks.entry(container.name.clone()).or_default();
                if track
                    .running_seen
                    .as_ref()
                    .is_none_or(|(id, _)| *id != c.id)
                {
                    track.running_seen = Some((c.id.clone(), Instant::now()));
                }
                view.current = current;
                view.ready = probe_status.started && probe_status.ready;
                view.started = probe_status.started;
                return view;
            }
        }

        let restart_policy = self.restart_policy().to_owned();
        let track = self.tracks.entry(container.name.clone()).or_default();
        track.probes = None;
        match current {
            None => {
                self.start_attempt(container, 0, &mut view).await;
            }
            Some(c) if matches!(c.state, ContainerState::Created { error: None }) => {
                // Created but never started: an earlier agent stopped between the two steps.
                if let Err(e) = self.ctx.runtime.start(&c.id).await {
                    view.waiting = Some(("RunContainerError".into(), e.to_string()));
                }
                view.current = Some(c);
            }
            Some(c) => {
                let exit_code = match &c.state {
                    ContainerState::Exited { exit_code, .. } => *exit_code,
                    _ => -1,
                };
                let will_restart = match restart_policy.as_str() {
                    "Never" => false,
                    "OnFailure" => exit_code != 0,
                    _ => true,
                };
                view.will_restart = will_restart;
                let config = &self.ctx.config.backoff;
                if track.exit_seen.as_ref().is_none_or(|(id, _)| *id != c.id) {
                    let ran_for = track
                        .running_seen
                        .as_ref()
                        .filter(|(id, _)| *id == c.id)
                        .map(|(_, since)| since.elapsed())
                        .unwrap_or_default();
                    if ran_for >= config.reset_after {
                        track.crash_backoff.reset();
                    }
                    track.exit_seen = Some((c.id.clone(), Instant::now()));
                }
                let delay = track.crash_backoff.delay(config);
                let ready_at = track.exit_seen.as_ref().map(|(_, at)| *at + delay);
                let attempt = c.labels.attempt + 1;
                let exited_id = c.id.clone();
                view.current = Some(c);
                if !will_restart {
                    return view;
                }
                if ready_at.is_some_and(|at| Instant::now() < at) {
                    if track.backoff_reported.as_deref() != Some(exited_id.as_str()) {
                        track.backoff_reported = Some(exited_id);
                        self.ctx.sink.pod_event(
                            &self.key,
                            true,
                            "BackOff",
                            &format!("Back-off restarting failed container {}", container.name),
                        );
                    }
                    view.waiting = Some((
                        "CrashLoopBackOff".into(),
                        format!(
                            "back-off {}s restarting failed container={} pod={}",
                            delay.as_secs(),
                            container.name,
                            self.key
                        ),
                    ));
                    self.schedule_wake(ready_at);
                    return view;
                }
                // The previous attempt moves to lastState; the one before it goes.
                if let Some(prev) = view.previous.take()
                    && let Err(e) = self.ctx.runtime.remove(&prev.id).await
                {
                    tracing::warn!(container = %prev.id, error = %e, "removing an old attempt failed");
                }
                let last = view.current.take();
                if self.start_attempt(container, attempt, &mut view).await {
                    self.tracks
                        .entry(container.name.clone())
                        .or_default()
                        .crash_backoff
                        .record_failure();
                    view.previous = last;
                } else {
                    // Not started (image gone, runtime error): keep showing the last run.
                    view.current = last;
                }
            }
        }
        // A container started just now gets its probes at once.
        if let Some(c) = view.current.clone().filter(|c| c.state.is_running())
            && view.waiting.is_none()
        {
            let probe_status = self.ensure_probes(container, &c);
            view.ready = probe_status.started && probe_status.ready;
            view.started = probe_status.started;
        }
        view
    }

    /// Starts the probes of the running container `c` if they are not already running for
    /// it, and returns what they say so far.
    fn ensure_probes(
        &mut self,
        container: &Container,
        c: &ContainerInfo,
    ) -> crate::probe::ProbeStatus {
        let track = self.tracks.entry(container.name.clone()).or_default();
        if track.probes.as_ref().is_none_or(|p| p.container_id != c.id) {
            let target = ProbeTarget {
                runtime: self.ctx.runtime.clone(),
                http: self.ctx.http.clone(),
                container_id: c.id.clone(),
                pod_ip: c.ip,
                container: container.clone(),
            };
            track.probes = Some(ProbeSet::start(target, self.wake.clone()));
        }
        track
            .probes
            .as_ref()
            .map(|p| p.status())
            .unwrap_or(crate::probe::ProbeStatus {
                started: true,
                ready: true,
                liveness_failed: false,
                startup_failed: false,
            })
    }

    /// Makes the worker sync again at `at` (the end of a backoff) if that comes before
    /// its next planned sync.
    fn schedule_wake(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            self.next_wake = Some(self.next_wake.map_or(at, |w| w.min(at)));
        }
    }

    fn wake_deadline(&self) -> Instant {
        let resync = Instant::now() + self.ctx.config.resync_period;
        self.next_wake.map_or(resync, |w| w.min(resync))
    }

    /// Creates and starts attempt `attempt` of `container`; returns whether a container
    /// was created (a failed start still leaves one, which then counts as exited).
    async fn start_attempt(
        &mut self,
        container: &Container,
        attempt: u32,
        view: &mut ContainerView,
    ) -> bool {
        let image = view.image.clone();
        let config = self.ctx.config.backoff;
        let track = self.tracks.entry(container.name.clone()).or_default();
        if let Some((failed_at, message)) = &track.image_failed {
            let ready_at = *failed_at + track.image_backoff.delay(&config);
            if Instant::now() < ready_at {
                view.waiting = Some((
                    "ImagePullBackOff".into(),
                    format!("Back-off pulling image \"{image}\": {message}"),
                ));
                self.schedule_wake(Some(ready_at));
                return false;
            }
        }
        let spec = match spec::container_spec(
            &self.ctx.config.node_name,
            &self.pod,
            &self.key,
            container,
            attempt,
        ) {
            Ok(spec) => spec,
            Err(e) => {
                view.waiting = Some(("CreateContainerConfigError".into(), e.to_string()));
                return false;
            }
        };
        let id = match self.ctx.runtime.create(&spec).await {
            Ok(id) => id,
            Err(AgentError::ImageNotFound { message, .. }) => {
                // Nothing can be pulled here: a missing local image is reported with the
                // runtime's own message and retried with backoff (it may be built later).
                let track = self.tracks.entry(container.name.clone()).or_default();
                track.image_backoff.record_failure();
                track.image_failed = Some((Instant::now(), message.clone()));
                self.ctx.sink.pod_event(
                    &self.key,
                    true,
                    "Failed",
                    &format!("Failed to pull image \"{image}\": {message}"),
                );
                view.waiting = Some(("ErrImagePull".into(), message));
                let ready_at = Instant::now() + track.image_backoff.delay(&config);
                self.schedule_wake(Some(ready_at));
                return false;
            }
            Err(e) => {
                view.waiting = Some(("CreateContainerError".into(), e.to_string()));
                return false;
            }
        };
        let track = self.tracks.entry(container.name.clone()).or_default();
        track.image_failed = None;
        track.image_backoff.reset();
        tracing::info!(pod = %self.key, container = %container.name, attempt, "starting container");
        if let Err(e) = self.ctx.runtime.start(&id).await {
            tracing::warn!(pod = %self.key, container = %container.name, error = %e, "start failed");
        }
        match self.ctx.runtime.inspect(&id).await {
            Ok(info) => {
                if info.state.is_running() {
                    track.running_seen = Some((id, Instant::now()));
                    self.ctx.sink.pod_event(
                        &self.key,
                        false,
                        "Started",
                        &format!("Started container {}", container.name),
                    );
                }
                view.current = Some(info);
            }
            Err(e) => view.waiting = Some(("RunContainerError".into(), e.to_string())),
        }
        true
    }
}
