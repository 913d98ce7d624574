//! The entry point: the scheduler and the controller manager, each under its own
//! leader election on a coordination.k8s.io Lease in kube-system (`kube-scheduler`,
//! `kube-controller-manager`), so of several apiserver processes exactly one runs each,
//! and another takes over when the holder dies. Each leadership term runs the loops on
//! a child token that is cancelled when the term ends; they then start again (fresh
//! informers, fresh caches) in the next term.

use std::future::Future;
use std::time::Duration;

use api::{Client, ElectionConfig, LeaderElector, Leadership};
use tokio_util::sync::CancellationToken;

use crate::scheduler::SchedulerConfig;

/// What to run and how.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// This process's `holderIdentity` in the leases (unique per process).
    pub identity: String,
    /// Lease timings (Kubernetes' defaults: 15 s, 10 s, 2 s).
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub scheduler: SchedulerConfig,
    pub node_lifecycle: crate::node_lifecycle::NodeLifecycleConfig,
    /// Run without leader election (a single control plane).
    pub leader_elect: bool,
}

impl RunConfig {
    /// Defaults for a process named `identity`.
    pub fn new(identity: &str) -> Self {
        RunConfig {
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            scheduler: SchedulerConfig::default(),
            node_lifecycle: Default::default(),
            leader_elect: true,
        }
    }

    fn election(&self, name: &str) -> ElectionConfig {
        ElectionConfig {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
            ..ElectionConfig::new("kube-system", name, &self.identity)
        }
    }
}

/// Runs the scheduler and the controllers until `shutdown`.
pub async fn run(client: Client, config: RunConfig, shutdown: CancellationToken) {
    run_with_clients(client.clone(), client, config, shutdown).await
}

/// Like [`run`], with one client per component, as the apiserver runs them: the
/// scheduler as system:kube-scheduler, the controller manager as
/// system:kube-controller-manager (each takes its own Lease with its own client).
pub async fn run_with_clients(
    scheduler_client: Client,
    manager_client: Client,
    config: RunConfig,
    shutdown: CancellationToken,
) {
    let scheduler = {
        let client = scheduler_client.clone();
        let config = config.clone();
        move |term: CancellationToken| {
            let client = client.clone();
            let config = config.scheduler.clone();
            async move { crate::scheduler::run(client, config, term).await }
        }
    };
    let managers = {
        let client = manager_client.clone();
        let config = config.clone();
        move |term: CancellationToken| {
            let client = client.clone();
            let node_config = config.node_lifecycle.clone();
            async move { run_controllers(client, node_config, term).await }
        }
    };
    let a = elected(
        &scheduler_client,
        &config,
        "kube-scheduler",
        shutdown.clone(),
        scheduler,
    );
    let b = elected(
        &manager_client,
        &config,
        "kube-controller-manager",
        shutdown,
        managers,
    );
    tokio::join!(a, b);
}

/// Every controller of the controller manager, until `term` ends.
pub async fn run_controllers(
    client: Client,
    node_config: crate::node_lifecycle::NodeLifecycleConfig,
    term: CancellationToken,
) {
    tokio::join!(
        crate::replicaset::run(client.clone(), term.clone()),
        crate::deployment::run(client.clone(), term.clone()),
        crate::node_lifecycle::run(client.clone(), node_config, term.clone()),
        crate::endpoints::run(client.clone(), term.clone()),
        crate::gc::run(client.clone(), term.clone()),
        crate::namespace::run(client, term),
    );
}

/// Runs `work` during each leadership term of lease `name` (or always, without
/// leader election).
async fn elected<F, Fut>(
    client: &Client,
    config: &RunConfig,
    name: &str,
    shutdown: CancellationToken,
    work: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    if !config.leader_elect {
        work(shutdown).await;
        return;
    }
    let (elector, mut leadership) =
        LeaderElector::for_client(client.clone(), config.election(name));
    let campaign = tokio::spawn(elector.run(shutdown.clone()));
    loop {
        let state = leadership.borrow_and_update().clone();
        if let Leadership::Leader { term } = state {
            tracing::info!(lease = name, identity = %config.identity, "leading");
            // The term's token ends with the lease or with shutdown (the elector
            // cancels it in both cases).
            work(term.clone()).await;
            term.cancelled().await;
            tracing::info!(lease = name, "leadership ended");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = leadership.changed() => if changed.is_err() { break },
        }
    }
    let _ = campaign.await;
}
