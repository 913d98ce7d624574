//! `kvstore serve`: one member of a Raft cluster. Wires the store, Raft, the lease clocks,
//! the watch hub, the client gRPC services and the peer service together, and shuts them
//! down on SIGINT/SIGTERM.
//!
//! Write path: gRPC handler → validation (`validate.rs`) → [`Node::propose`] → Raft on the
//! leader (a follower forwards the encoded command to the leader over the peer port) →
//! committed on a quorum → every member applies it to its MVCC store and watch hub
//! (`raft::state_machine`) → the proposer is answered with the apply result.
//!
//! Reads: linearizable by default (ReadIndex: the leader confirms its leadership with a
//! quorum; the serving member waits until it has applied up to that index), local when
//! `serializable`.

mod auth;
mod authority;
mod authz;
mod cluster;
mod housekeeping;
pub use cluster::{MembershipOp, MembershipResult};
mod kv;
mod lease;
mod maintenance;
mod peer;
pub mod validate;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::proto::{
    PbClusterServer, PbKvServer, PbLeaseRevokeRequest, PbLeaseServer, PbMaintenanceServer,
    PbResponseHeader,
};
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use openraft::raft::ReadPolicy;

use crate::command::{Command, CommandResult};
use crate::config::ServeArgs;
use crate::error::{Error, Result};
use crate::lease::Lessor;
use crate::mvcc::MvccStore;
use crate::raft::log_store::LogStore;
use crate::raft::network::{
    ForwardError, MAX_PEER_MESSAGE_BYTES, PeerRequest, PeerResponse, Peers, pb,
};
use crate::raft::state_machine::StateMachine;
use crate::raft::{Member, Raft, Request};
use crate::watch::{HeaderSource, WatchHub};

/// How often lease deadlines are checked (on the leader).
const LEASE_CHECK_PERIOD: Duration = Duration::from_millis(100);
/// How long a request waits for a leader before failing with "no leader".
const LEADER_WAIT: Duration = Duration::from_secs(7);
/// How long a linearizable read waits for the local member to catch up.
const APPLY_WAIT: Duration = Duration::from_secs(5);
/// Key in `raft_meta` holding the cluster ID fixed when the member was first created.
const META_CLUSTER_ID: &[u8] = b"cluster_id";

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
    pub raft: Raft,
    pub peers: Peers,
    applied: tokio::sync::watch::Receiver<u64>,
    /// Read-index rounds started, and the last finished round's number and result (see
    /// `read_index_coalesced`).
    read_rounds_started: AtomicU64,
    read_round: tokio::sync::Mutex<(u64, Option<Result<u64>>)>,
    /// The last revision auto-compaction compacted to (0: none).
    pub auto_compacted: std::sync::atomic::AtomicI64,
    /// Backend size cache (see `housekeeping.rs`): bytes, and when read (ms since start).
    size_bytes: AtomicU64,
    size_read_at_ms: AtomicU64,
    started: Instant,
}

impl Node {
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

    /// The current leader's ID and member record, if one is known.
    pub fn leader(&self) -> Option<(u64, Member)> {
        // Borrow, not clone: this runs on every forwarded request.
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let id = m.current_leader?;
        let member = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, member))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// Waits for a leader to be known, then runs `local` on it (this member) or sends
    /// `remote` to it, retrying while no leader answers; fails with "no leader" after
    /// [`LEADER_WAIT`]. A request that is not `idempotent` is not resent once it may have
    /// reached a leader: that failure is "request timed out" (the outcome is unknown).
    pub(crate) async fn on_leader<T, L, F>(
        &self,
        idempotent: bool,
        local: L,
        remote: PeerRequest,
        pick: fn(PeerResponse) -> Option<Result<T>>,
    ) -> Result<T>
    where
        L: Fn() -> F,
        F: std::future::Future<Output = Option<Result<T>>>,
    {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            match self.leader() {
                Some((id, _)) if id == self.identity.member_id => {
                    if let Some(r) = local().await {
                        return r;
                    }
                }
                Some((_, member)) => match self.peers.forward(&member.peer_url, &remote).await {
                    // The leader answered, but it may have lost leadership meanwhile.
                    Ok(resp) => match pick(resp) {
                        Some(Err(Error::NoLeader)) => {}
                        Some(r) => return r,
                        None => return Err(Error::Corrupt("unexpected peer response".into())),
                    },
                    Err(ForwardError::Unknown) if !idempotent => return Err(Error::Timeout),
                    Err(_) => {}
                },
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(Error::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Proposes a write through Raft and waits for its apply result.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult> {
        let bytes = cmd.encode();
        let remote = PeerRequest::Propose(bytes.clone());
        self.on_leader(
            false,
            || async { Some(self.propose_local(bytes.clone()).await) },
            remote,
            |r| match r {
                PeerResponse::Propose(r) => Some(r),
                _ => None,
            },
        )
        .await
    }

    /// Proposes on this member, which believes it leads. If leadership moves meanwhile the
    /// write may still be committed by the next leader, so it is not retried: the answer
    /// is "leader changed", as etcd gives.
    pub async fn propose_local(&self, bytes: Vec<u8>) -> Result<CommandResult> {
        match self.raft.client_write(Request(bytes)).await {
            Ok(resp) => resp.data,
            Err(e) if e.forward_to_leader().is_some() => Err(Error::LeaderChanged),
            Err(e) => {
                tracing::error!(error = %e, "raft refused a write");
                Err(Error::Stopped)
            }
        }
    }

    /// The leader's read index, confirmed with a quorum.
    ///
    /// First a lease read: while the leader's lease holds (a quorum acknowledged it within
    /// the last `election_timeout_max`, during which no other member can be elected) its
    /// commit index is safe to read without another round trip. If the lease has lapsed,
    /// a full ReadIndex round confirms leadership with a quorum.
    pub async fn read_index_local(&self) -> Result<u64> {
        if let Ok((read, _)) = self.raft.get_read_log_id(ReadPolicy::LeaseRead).await {
            return Ok(read.index());
        }
        match self.raft.get_read_log_id(ReadPolicy::ReadIndex).await {
            Ok((read, _)) => Ok(read.index()),
            Err(e) if e.forward_to_leader().is_some() => Err(Error::NoLeader),
            Err(e) => {
                tracing::warn!(error = %e, "read index failed");
                Err(Error::NoLeader)
            }
        }
    }

    /// Makes the next local read linearizable: learns the leader's read index and waits
    /// until this member has applied up to it.
    pub async fn read_barrier(&self) -> Result<()> {
        if crate::failpoint::enabled(crate::failpoint::STALE_READS) {
            // Deliberately weakened (robustness tests only): serve whatever is local.
            return Ok(());
        }
        let index = self.read_index_coalesced().await?;
        let mut applied = self.applied.clone();
        match tokio::time::timeout(APPLY_WAIT, applied.wait_for(|a| *a >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// A read index for a read that arrived now, sharing rounds with concurrent readers:
    /// one round runs at a time; a reader reuses the result of a round that *started
    /// after it arrived* (so the index is at least as new as its request), otherwise it
    /// runs the next round itself. Many concurrent reads cost one quorum round trip.
    async fn read_index_coalesced(&self) -> Result<u64> {
        let arrival = self.read_rounds_started.load(Ordering::Acquire);
        let mut last = self.read_round.lock().await;
        if last.0 > arrival
            && let Some(result) = &last.1
        {
            return result.clone();
        }
        let round = self.read_rounds_started.fetch_add(1, Ordering::AcqRel) + 1;
        let result = self.read_index().await;
        *last = (round, Some(result.clone()));
        result
    }

    /// One read-index round: on the leader, or through it.
    async fn read_index(&self) -> Result<u64> {
        self.on_leader(
            true,
            || async {
                match self.read_index_local().await {
                    Ok(i) => Some(Ok(i)),
                    Err(Error::NoLeader) => None,
                    Err(e) => Some(Err(e)),
                }
            },
            PeerRequest::ReadIndex,
            |r| match r {
                PeerResponse::ReadIndex(r) => Some(r),
                _ => None,
            },
        )
        .await
    }

    /// Renews a lease on the leader (whose clocks decide expiry); the TTL, 0 if unknown.
    pub async fn lease_keepalive(&self, id: i64) -> Result<i64> {
        self.on_leader(
            true,
            || async { self.lease_keepalive_as_leader(id).await.map(Ok) },
            PeerRequest::LeaseKeepAlive(id),
            |r| match r {
                PeerResponse::LeaseKeepAlive(r) => Some(r),
                _ => None,
            },
        )
        .await
    }

    /// Renews on this member if it still leads with a fresh quorum acknowledgement (its
    /// leader lease). A deposed leader that has not noticed yet must not promise TTLs: the
    /// new leader's clocks would expire the lease earlier than promised (found by the
    /// robustness soak, seed 20261125). `None`: not (surely) the leader.
    pub async fn lease_keepalive_as_leader(&self, id: i64) -> Option<i64> {
        if self
            .raft
            .get_read_log_id(ReadPolicy::LeaseRead)
            .await
            .is_err()
        {
            return None;
        }
        Some(self.lease_keepalive_local(id))
    }

    pub fn lease_keepalive_local(&self, id: i64) -> i64 {
        match self.store.lease(id) {
            Some(l) => {
                self.lessor.renew(id, l.ttl_s);
                l.ttl_s
            }
            None => 0,
        }
    }

    /// Time left on a lease, from the leader's clock.
    pub async fn lease_remaining(&self, id: i64) -> Result<Option<Duration>> {
        let ms = self
            .on_leader(
                true,
                || async { Some(Ok(self.lessor.remaining(id).map(|d| d.as_millis() as u64))) },
                PeerRequest::LeaseTimeToLive(id),
                |r| match r {
                    PeerResponse::LeaseTimeToLive(r) => Some(r),
                    _ => None,
                },
            )
            .await?;
        Ok(ms.map(Duration::from_millis))
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
    crate::tls::install_crypto_provider();
    // Certificates are read before anything listens: a bad file fails the start.
    let client_tls = match args.client_tls() {
        Some(files) => Some(crate::tls::server_config(&files, "client listener")?),
        None => None,
    };
    let peer_tls = match args.peer_tls() {
        Some(files) => Some(crate::tls::server_config(&files, "peer listener")?),
        None => None,
    };
    let client_addr = args.client_addr()?;
    let client_listener = tokio::net::TcpListener::bind(client_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for clients on {client_addr}: {e}"))?;
    let peer_listener = match args.peer_addr()? {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for peers on {addr}: {e}"))?,
        ),
        None => None,
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let node = start(args, shutdown_rx.clone()).await?;
    tracing::info!(
        name = %node.config.name,
        %client_addr,
        revision = node.store.current_revision(),
        member_id = format_args!("{:x}", node.identity.member_id),
        "serving clients"
    );

    let mut servers = Vec::new();
    if let Some(listener) = peer_listener {
        let peer = pb::peer_server::PeerServer::new(peer::PeerService(node.clone()))
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        let mut stop = shutdown_rx.clone();
        let stopped = async move {
            let _ = stop.changed().await;
        };
        let server = tonic::transport::Server::builder().add_service(peer);
        servers.push(match peer_tls {
            Some(config) => tokio::spawn(server.serve_with_incoming_shutdown(
                crate::tls::incoming(listener, config, "peer"),
                stopped,
            )),
            None => tokio::spawn(server.serve_with_incoming_shutdown(
                // Raft messages are small and latency-bound: no Nagle delay on replies.
                tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    |s| {
                        s.inspect(|s| {
                            let _ = s.set_nodelay(true);
                        })
                    },
                ),
                stopped,
            )),
        });
    }
    let max_msg = node.config.max_request_bytes + 512 * 1024;
    let router = tonic::transport::Server::builder()
        .add_service(
            PbKvServer::new(kv::KvService(node.clone())).max_decoding_message_size(max_msg),
        )
        .add_service(watch::WatchService::new(node.clone(), max_msg))
        .add_service(PbLeaseServer::new(lease::LeaseService(node.clone())))
        .add_service(PbMaintenanceServer::new(maintenance::MaintenanceService(
            node.clone(),
        )))
        .add_service(PbClusterServer::new(cluster::ClusterService(node.clone())))
        .add_service(auth::pb::auth_server::AuthServer::new(auth::AuthService(
            node.clone(),
        )));
    let mut stop = shutdown_rx.clone();
    let stopped = async move {
        let _ = stop.changed().await;
    };
    servers.push(match client_tls {
        // The `:authority` shim works on HTTP/2 bytes: it wraps the decrypted stream.
        Some(config) => tokio::spawn(router.serve_with_incoming_shutdown(
            tokio_stream::StreamExt::map(
                crate::tls::incoming(client_listener, config, "client"),
                |conn| conn.map(authority::AuthorityFix::new),
            ),
            stopped,
        )),
        None => tokio::spawn(
            router.serve_with_incoming_shutdown(authority::incoming(client_listener), stopped),
        ),
    });
    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    for server in servers {
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server failed"),
            Ok(_) => {}
            Err(_) => tracing::warn!("gRPC server did not stop within 5s"),
        }
    }
    let _ = node.raft.shutdown().await;
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

/// The members of the initial cluster and this member's ID.
fn initial_members(config: &ServeArgs) -> anyhow::Result<(u64, BTreeMap<u64, Member>)> {
    let token = &config.initial_cluster_token;
    let own_peer = config.advertised_peer_url();
    let spec = config
        .initial_cluster
        .clone()
        .unwrap_or_else(|| format!("{}={own_peer}", config.name));
    let members = crate::raft::parse_initial_cluster(&spec, token)?;
    let id = crate::raft::member_id(&own_peer, token);
    // Client URLs are not part of the initial membership: every member publishes its own
    // through Raft once a leader exists (`Node::publish_self`). Each member initializes a
    // new cluster with its own copy of the membership and only the elected leader's copy
    // survives, so anything only in a member's own copy would be lost.
    if members.get(&id).is_none_or(|m| m.name != config.name) {
        anyhow::bail!(
            "couldn't find local name {:?} with peer URL {own_peer} in the initial cluster configuration",
            config.name
        );
    }
    Ok((id, members))
}

/// Opens the store, starts Raft and the background tasks.
pub async fn start(
    config: ServeArgs,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Arc<Node>> {
    let (member_id, members) = initial_members(&config)?;
    let store =
        Arc::new(MvccStore::open(&config.data_dir).map_err(|e| {
            anyhow::anyhow!("cannot open data dir {}: {e}", config.data_dir.display())
        })?);
    let log_store = LogStore::new(store.db());
    let cluster_id = match log_store.raw_meta(META_CLUSTER_ID)? {
        Some(b) if b.len() == 8 => u64::from_be_bytes(b.as_slice().try_into().unwrap_or_default()),
        _ => {
            let id = crate::raft::cluster_id(&config.initial_cluster_token, &members);
            log_store.put_raw_meta(META_CLUSTER_ID, &id.to_be_bytes())?;
            id
        }
    };
    let identity = Arc::new(Identity {
        cluster_id,
        member_id,
        raft_term: AtomicU64::new(0),
    });
    let hub = WatchHub::new(store.clone(), identity.clone(), config.max_request_bytes);
    let lessor = Arc::new(Lessor::default());
    for (id, ttl_s) in store.leases() {
        lessor.renew(id, ttl_s);
    }
    let sm = StateMachine::new(store.clone(), hub.clone(), lessor.clone());
    let applied = sm.applied.subscribe();
    let raft_config = openraft::Config {
        cluster_name: config.initial_cluster_token.clone(),
        heartbeat_interval: config.heartbeat_interval,
        election_timeout_min: config.election_timeout,
        // openraft's followers refuse votes for election_timeout_max after hearing from
        // a leader (its leader lease), so a wide [min, max) range makes the first
        // candidate after a leader dies lose to the lease and wait another round.
        election_timeout_max: config.election_timeout_max_ms(),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_count),
        max_in_snapshot_log_to_keep: 1000,
        install_snapshot_timeout: 30_000,
        ..Default::default()
    }
    .validate()?;
    let peer_client_tls = match &config.peer_trusted_ca_file {
        Some(ca) => Some(crate::raft::network::peer_client_tls(
            ca,
            config.peer_cert_file.as_deref(),
            config.peer_key_file.as_deref(),
        )?),
        None => None,
    };
    let peers = Peers::new(
        config.peer_dial_map.as_deref(),
        Duration::from_millis(config.election_timeout),
        peer_client_tls,
    )?;
    let raft = Raft::new(
        member_id,
        Arc::new(raft_config),
        peers.clone(),
        log_store,
        sm,
    )
    .await?;
    if config.initial_cluster_state == "new" && !raft.is_initialized().await? {
        // Every member of a new cluster initializes with the same membership; Raft's
        // election picks one leader (openraft documents this as safe).
        if let Err(e) = raft.initialize(members.clone()).await {
            tracing::info!(error = %e, "cluster already initialized");
        }
    }
    let node = Arc::new(Node {
        store,
        hub,
        lessor,
        identity,
        config,
        raft,
        peers,
        applied,
        read_rounds_started: AtomicU64::new(0),
        read_round: tokio::sync::Mutex::new((0, None)),
        auto_compacted: std::sync::atomic::AtomicI64::new(0),
        size_bytes: AtomicU64::new(0),
        size_read_at_ms: AtomicU64::new(0),
        started: Instant::now(),
    });
    tokio::spawn(node.hub.clone().run_catch_up(shutdown.clone()));
    tokio::spawn(node.hub.clone().run_publisher());
    let publisher = node.clone();
    tokio::spawn(async move { publisher.publish_self().await });
    tokio::spawn(follow_leadership(node.clone(), shutdown.clone()));
    tokio::spawn(expire_leases(node.clone(), shutdown.clone()));
    tokio::spawn(housekeeping::scheduled_snapshots(
        node.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(housekeeping::auto_compaction(
        node.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(progress_notifications(node.clone(), shutdown));
    Ok(node)
}

/// Tracks the Raft term for response headers, and restarts every lease clock at its full
/// TTL when this member becomes leader (the old leader's clocks are not known here; etcd
/// does the same).
async fn follow_leadership(node: Arc<Node>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut metrics = node.raft.metrics();
    let mut was_leader = false;
    loop {
        let (term, leader) = {
            let m = metrics.borrow_and_update();
            (m.current_term, m.state == ServerState::Leader)
        };
        node.identity.raft_term.store(term, Ordering::Relaxed);
        if leader && !was_leader {
            tracing::info!(term, "became leader");
            // Keep-alives answered by the previous leader promised TTLs from its clock,
            // up to its leader lease (election_timeout_max) before this election: extend
            // every lease by that much, as etcd's lessor Promote extends by the election
            // timeout, so no lease expires before a promise made to a client.
            let extra = Duration::from_millis(node.config.election_timeout_max_ms());
            for (id, ttl) in node.store.leases() {
                node.lessor.renew_extended(id, ttl, extra);
            }
        }
        was_leader = leader;
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// On the leader: proposes a revoke for every lease whose clock ran out.
async fn expire_leases(node: Arc<Node>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(LEASE_CHECK_PERIOD);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !node.is_leader() {
            continue;
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
