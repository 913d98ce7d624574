//! `kvstore serve`: wires the store, the apply loop, the lease clocks, the watch hub and
//! the etcd v3 gRPC services together, and shuts them down on SIGINT/SIGTERM.
//!
//! Write path: gRPC handler → validation (`validate.rs`) → [`Node::propose`] → the apply
//! thread batches proposals, applies them in order to the MVCC store with one fsynced
//! RocksDB write, publishes the events to the watch hub, then answers each proposer. Until
//! Raft lands (issue "Raft replication") the apply thread's own counter is the log.

mod kv;
mod lease;
mod maintenance;
pub mod validate;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::proto::{
    PbClusterServer, PbKvServer, PbLeaseRevokeRequest, PbLeaseServer, PbMaintenanceServer,
    PbResponseHeader, PbWatchServer,
};
use tokio::sync::{mpsc, oneshot};

use crate::command::{Command, CommandResult};
use crate::config::ServeArgs;
use crate::error::{Error, Result};
use crate::lease::Lessor;
use crate::mvcc::MvccStore;
use crate::watch::{HeaderSource, WatchHub};

/// Most proposals applied in one batch (one RocksDB write, one fsync).
const MAX_APPLY_BATCH: usize = 512;
/// Proposals waiting for the apply thread before proposers wait.
const PROPOSAL_QUEUE: usize = 4096;
/// How often lease deadlines are checked.
const LEASE_CHECK_PERIOD: Duration = Duration::from_millis(100);

struct Proposal {
    cmd: Command,
    done: oneshot::Sender<Result<CommandResult>>,
}

/// The identity put in every response header.
pub struct Identity {
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_term: AtomicU64,
}

impl HeaderSource for Identity {
    fn header(&self, revision: i64) -> PbResponseHeader {
        PbResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term.load(Ordering::Relaxed),
        }
    }
}

/// Everything the services share.
pub struct Node {
    pub store: Arc<MvccStore>,
    pub hub: Arc<WatchHub>,
    pub lessor: Arc<Lessor>,
    pub identity: Arc<Identity>,
    pub config: ServeArgs,
    proposals: mpsc::Sender<Proposal>,
}

impl Node {
    /// Proposes a write and waits for its result.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult> {
        let (done, wait) = oneshot::channel();
        self.proposals
            .send(Proposal { cmd, done })
            .await
            .map_err(|_| Error::Stopped)?;
        wait.await.map_err(|_| Error::Stopped)?
    }

    /// A header at `revision` with this member's identity.
    pub fn header(&self, revision: i64) -> PbResponseHeader {
        self.identity.header(revision)
    }

    /// Fills in identity fields of a header produced by apply (which carries the revision).
    pub fn fill(&self, header: &mut Option<PbResponseHeader>) {
        let revision = header
            .as_ref()
            .map(|h| h.revision)
            .unwrap_or_else(|| self.store.current_revision());
        *header = Some(self.header(revision));
    }
}

/// Runs a member until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {:?}: {e}", args.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    args.validate()?;
    let addr = args.client_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let node = start(args, shutdown_rx.clone())?;
    tracing::info!(
        name = %node.config.name,
        %addr,
        revision = node.store.current_revision(),
        member_id = format_args!("{:x}", node.identity.member_id),
        "serving clients"
    );

    let max_msg = node.config.max_request_bytes + 512 * 1024;
    let router = tonic::transport::Server::builder()
        .add_service(
            PbKvServer::new(kv::KvService(node.clone())).max_decoding_message_size(max_msg),
        )
        .add_service(
            PbWatchServer::new(watch::WatchService(node.clone()))
                .max_decoding_message_size(max_msg),
        )
        .add_service(PbLeaseServer::new(lease::LeaseService(node.clone())))
        .add_service(PbMaintenanceServer::new(maintenance::MaintenanceService(
            node.clone(),
        )))
        .add_service(PbClusterServer::new(maintenance::ClusterService(
            node.clone(),
        )));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut stop = shutdown_rx.clone();
    let served = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = stop.changed().await;
    }));
    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(5), served).await {
        Ok(Ok(Err(e))) => return Err(anyhow::anyhow!("gRPC server failed: {e}")),
        Ok(_) => {}
        Err(_) => tracing::warn!("gRPC server did not stop within 5s"),
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Opens the store and starts the apply thread and background tasks.
pub fn start(
    config: ServeArgs,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Arc<Node>> {
    let store =
        Arc::new(MvccStore::open(&config.data_dir).map_err(|e| {
            anyhow::anyhow!("cannot open data dir {}: {e}", config.data_dir.display())
        })?);
    let identity = Arc::new(Identity {
        cluster_id: store.cluster_id(),
        member_id: store.member_id(),
        raft_term: AtomicU64::new(1),
    });
    let hub = WatchHub::new(store.clone(), identity.clone(), config.max_request_bytes);
    let lessor = Arc::new(Lessor::default());
    for (id, ttl_s) in store.leases() {
        lessor.renew(id, ttl_s);
    }
    let (proposals, rx) = mpsc::channel(PROPOSAL_QUEUE);
    let node = Arc::new(Node {
        store: store.clone(),
        hub: hub.clone(),
        lessor: lessor.clone(),
        identity,
        config,
        proposals,
    });
    std::thread::Builder::new()
        .name("apply".into())
        .spawn(move || apply_loop(store, hub.clone(), lessor, rx))?;
    tokio::spawn(node.hub.clone().run_catch_up(shutdown.clone()));
    tokio::spawn(expire_leases(node.clone(), shutdown.clone()));
    tokio::spawn(progress_notifications(node.clone(), shutdown));
    Ok(node)
}

/// The single writer: batches proposals, applies them, publishes events, answers.
fn apply_loop(
    store: Arc<MvccStore>,
    hub: Arc<WatchHub>,
    lessor: Arc<Lessor>,
    mut rx: mpsc::Receiver<Proposal>,
) {
    let mut next_index = store.applied_index() + 1;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_APPLY_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let cmds: Vec<(u64, Command)> = batch
            .iter_mut()
            .enumerate()
            .map(|(i, p)| {
                (
                    next_index + i as u64,
                    std::mem::replace(&mut p.cmd, Command::Compact(Default::default())),
                )
            })
            .collect();
        next_index += cmds.len() as u64;
        match store.apply_batch(&cmds, hub.wants_prev_kv(), true) {
            Ok(outs) => {
                for ((_, cmd), out) in cmds.iter().zip(&outs) {
                    match (cmd, &out.result) {
                        (Command::LeaseGrant(g), Ok(_)) => lessor.renew(g.id, g.ttl),
                        (Command::LeaseRevoke(r), Ok(_)) => lessor.forget(r.id),
                        _ => {}
                    }
                }
                hub.publish(&outs);
                for (p, out) in batch.into_iter().zip(outs) {
                    let _ = p.done.send(out.result);
                }
            }
            Err(e) => {
                // The in-memory state may now be ahead of disk: stop rather than serve it.
                tracing::error!(error = %e, "apply failed; stopping the member");
                for p in batch {
                    let _ = p.done.send(Err(e.clone()));
                }
                std::process::exit(2);
            }
        }
    }
}

/// Proposes a revoke for every lease whose clock ran out.
async fn expire_leases(node: Arc<Node>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(LEASE_CHECK_PERIOD);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        for id in node.lessor.take_expired() {
            if node.store.lease(id).is_none() {
                node.lessor.forget(id);
                continue;
            }
            let n = node.clone();
            tokio::spawn(async move {
                match n
                    .propose(Command::LeaseRevoke(PbLeaseRevokeRequest { id }))
                    .await
                {
                    Ok(_) => tracing::debug!(lease = id, "lease expired and revoked"),
                    Err(Error::LeaseNotFound) => n.lessor.forget(id),
                    Err(e) => {
                        tracing::warn!(lease = id, error = %e, "revoking an expired lease failed")
                    }
                }
            });
        }
    }
}

async fn progress_notifications(node: Arc<Node>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let period = node
        .config
        .watch_progress_notify_interval
        .max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => node.hub.notify_progress(),
            _ = shutdown.changed() => return,
        }
    }
}
