//! Leader election on a coordination.k8s.io/v1 Lease (client-go's algorithm).
//!
//! A candidate takes the lease when it is free (no holder) or expired, and the leader
//! renews it every `retry_period`; both writes are compare-and-swap on the lease's
//! resourceVersion, so two candidates never both win. Expiry is judged on the local
//! monotonic clock: a lease is expired when its record (resourceVersion) has not changed
//! for `lease_duration` since this process first saw it, which needs no clock agreement
//! between machines. A leader that cannot renew within `renew_deadline` (< lease
//! duration) steps down: it cancels its term's token before any other candidate can see
//! the lease expire. Leadership changes are published on a `watch` channel.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::error::Error;
use crate::params::PostParams;
use crate::types::{Lease, LeaseSpec, MicroTime, ObjectMeta};

/// Where the lease lives: the apiserver ([`ApiLeaseStore`]) or, in unit tests, memory.
pub trait LeaseStore: Send + Sync + 'static {
    /// The lease, `None` if it does not exist.
    fn get(&self) -> impl Future<Output = Result<Option<Lease>, Error>> + Send;
    /// Creates the lease (AlreadyExists if another candidate was first).
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, Error>> + Send;
    /// Replaces the lease if its resourceVersion is still current (else Conflict).
    fn update(&self, lease: &Lease) -> impl Future<Output = Result<Lease, Error>> + Send;
}

/// A Lease object on the apiserver.
#[derive(Clone)]
pub struct ApiLeaseStore {
    pub client: Client,
    pub namespace: String,
    pub name: String,
}

impl LeaseStore for ApiLeaseStore {
    async fn get(&self) -> Result<Option<Lease>, Error> {
        self.client
            .get_opt::<Lease>(Some(&self.namespace), &self.name)
            .await
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, Error> {
        self.client.create(lease, &PostParams::default()).await
    }

    async fn update(&self, lease: &Lease) -> Result<Lease, Error> {
        self.client.update(lease, &PostParams::default()).await
    }
}

/// Timings and names of an election.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub namespace: String,
    /// The Lease's name (one per elected component, e.g. "kube-scheduler").
    pub name: String,
    /// This candidate's `holderIdentity` (unique per process).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down (< lease_duration).
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// Kubernetes' defaults: lease 15 s, renew deadline 10 s, retry 2 s.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        ElectionConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What this candidate is now.
#[derive(Debug, Clone)]
pub enum Leadership {
    /// Not leading; `holder` is the leader last seen, if any.
    Follower { holder: Option<String> },
    /// Leading; the token is cancelled when this term ends (lost lease or shutdown).
    Leader { term: CancellationToken },
}

impl Leadership {
    /// Whether this candidate leads.
    pub fn is_leader(&self) -> bool {
        matches!(self, Leadership::Leader { .. })
    }
}

/// The last lease record seen and when it was first seen (monotonic).
struct Observed {
    resource_version: String,
    at: Instant,
}

/// One candidate. [`LeaderElector::run`] campaigns until shutdown.
pub struct LeaderElector<S> {
    store: S,
    config: ElectionConfig,
    observed: Option<Observed>,
    state: watch::Sender<Leadership>,
}

impl LeaderElector<ApiLeaseStore> {
    /// A candidate for a Lease on the apiserver.
    pub fn for_client(
        client: Client,
        config: ElectionConfig,
    ) -> (Self, watch::Receiver<Leadership>) {
        let store = ApiLeaseStore {
            client,
            namespace: config.namespace.clone(),
            name: config.name.clone(),
        };
        Self::new(store, config)
    }
}

impl<S: LeaseStore> LeaderElector<S> {
    /// A candidate and the receiver of its leadership changes.
    pub fn new(store: S, config: ElectionConfig) -> (Self, watch::Receiver<Leadership>) {
        let (state, rx) = watch::channel(Leadership::Follower { holder: None });
        (
            LeaderElector {
                store,
                config,
                observed: None,
                state,
            },
            rx,
        )
    }

    /// Campaigns, leads, steps down when renewal fails and campaigns again, until
    /// `shutdown`; a leader then releases the lease so another takes over at once.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            // Candidate: try every retry period until the lease is ours.
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                // Bounded like a renewal; an abandoned attempt that did write makes the
                // next one find itself the holder and simply renew.
                let attempt = tokio::time::timeout(
                    self.config.renew_deadline.max(Duration::from_millis(100)),
                    self.try_acquire_or_renew(),
                );
                match attempt.await {
                    Ok(Ok(true)) => break,
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(lease = %self.config.name, error = %e, "acquiring the lease failed")
                    }
                    Err(_) => {
                        tracing::debug!(lease = %self.config.name, "acquiring the lease timed out")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.config.retry_period) => {}
                }
            }
            let term = CancellationToken::new();
            tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
            self.state
                .send_replace(Leadership::Leader { term: term.clone() });

            // Leader: renew every retry period; step down past the renew deadline.
            let mut renewed_at = Instant::now();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        term.cancel();
                        self.release().await;
                        self.state.send_replace(Leadership::Follower { holder: None });
                        return;
                    }
                    _ = tokio::time::sleep(self.config.retry_period) => {}
                }
                let left = self
                    .config
                    .renew_deadline
                    .saturating_sub(renewed_at.elapsed());
                match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                    Ok(Ok(true)) => renewed_at = Instant::now(),
                    Ok(Ok(false)) => {
                        // Someone else holds it (our record was replaced): stop now.
                        tracing::warn!(lease = %self.config.name, "lease taken over; stepping down");
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(lease = %self.config.name, error = %e, "renewing the lease failed")
                    }
                    Err(_) => {}
                }
                if renewed_at.elapsed() >= self.config.renew_deadline {
                    tracing::warn!(lease = %self.config.name, "could not renew within the renew deadline; stepping down");
                    break;
                }
            }
            term.cancel();
            self.state
                .send_replace(Leadership::Follower { holder: None });
        }
    }

    /// One attempt: Ok(true) if we hold the lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let now = MicroTime(crate::types::now());
        let duration_s = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(current) = self.store.get().await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_s),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.store.create(&lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(e) if e.is_already_exists() => Ok(false),
                Err(e) => Err(e),
            };
        };
        self.observe(&current);
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.config.identity.as_str());
        if !ours && holder.is_some() && !self.expired(&spec) {
            self.publish_follower(holder);
            return Ok(false);
        }
        if !ours && self.state.borrow().is_leader() {
            // We lead but the record names another holder: never take it back silently.
            return Ok(false);
        }
        let mut lease = current;
        let mut new_spec = spec.clone();
        new_spec.holder_identity = Some(self.config.identity.clone());
        new_spec.lease_duration_seconds = Some(duration_s);
        new_spec.renew_time = Some(now.clone());
        if !ours {
            new_spec.acquire_time = Some(now);
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(new_spec);
        match self.store.update(&lease).await {
            Ok(updated) => {
                self.observe(&updated);
                Ok(true)
            }
            Err(e) if e.is_conflict() || e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Notes the record; a changed one restarts its expiry clock.
    fn observe(&mut self, lease: &Lease) {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        if self
            .observed
            .as_ref()
            .is_none_or(|o| o.resource_version != rv)
        {
            self.observed = Some(Observed {
                resource_version: rv,
                at: Instant::now(),
            });
        }
    }

    /// Whether the holder has not renewed for its lease duration (as we observed it).
    fn expired(&self, spec: &LeaseSpec) -> bool {
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        self.observed
            .as_ref()
            .is_some_and(|o| o.at.elapsed() >= duration)
    }

    fn publish_follower(&self, holder: Option<String>) {
        self.state.send_if_modified(|s| match s {
            Leadership::Follower { holder: h } if *h == holder => false,
            _ => {
                *s = Leadership::Follower { holder };
                true
            }
        });
    }

    /// Gives the lease up (holder cleared, 1 s duration) so a follower need not wait
    /// for it to expire. Best effort, bounded by one retry period.
    async fn release(&self) {
        let attempt = async {
            let Some(mut lease) = self.store.get().await? else {
                return Ok::<(), Error>(());
            };
            let Some(spec) = lease.spec.as_mut() else {
                return Ok(());
            };
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(crate::types::now()));
            self.store.update(&lease).await?;
            Ok(())
        };
        match tokio::time::timeout(self.config.retry_period, attempt).await {
            Ok(Ok(())) => tracing::info!(lease = %self.config.name, "released the lease"),
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.config.name, error = %e, "releasing the lease failed")
            }
            Err(_) => tracing::warn!(lease = %self.config.name, "releasing the lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests;
