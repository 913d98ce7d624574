//! Member-to-member transport: one gRPC method (`Peer.Call`, see `proto/peer.proto`)
//! carrying postcard-encoded [`PeerRequest`]s and [`PeerResponse`]s — Raft's own RPCs,
//! and client requests a follower forwards to the leader. Connections are made lazily,
//! kept per peer URL and re-established by tonic after failures; every call has a timeout.

use std::collections::HashMap;
use std::future::Future;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::OptionalSend;
use openraft::errors::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::{Member, Snapshot, SnapshotMeta, TypeConfig, Vote};
use crate::command::CommandResult;
use crate::error::Error;

pub mod pb {
    tonic::include_proto!("kvstore.peer");
}

/// Largest peer message (snapshots travel whole).
pub const MAX_PEER_MESSAGE_BYTES: usize = 1 << 30;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout for forwarded client requests (a write may wait for an election).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything one member asks another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// A client write (an encoded command) forwarded to the leader.
    Propose(Vec<u8>),
    /// A follower asks the leader to confirm its leadership and name a read index.
    ReadIndex,
    /// Lease clocks run on the leader: keep-alives and TTL queries go there.
    LeaseKeepAlive(i64),
    LeaseTimeToLive(i64),
    /// Membership changes run on the leader.
    Membership(crate::server::MembershipOp),
}

/// The answers, one variant per request.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Append(Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>),
    Vote(Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>),
    Snapshot(Result<SnapshotResponse<TypeConfig>, RaftError<TypeConfig>>),
    TransferLeader(Result<TransferLeaderResponse<TypeConfig>, RaftError<TypeConfig>>),
    Propose(Result<CommandResult, Error>),
    ReadIndex(Result<u64, Error>),
    /// The lease's TTL after renewal (0: no such lease).
    LeaseKeepAlive(Result<i64, Error>),
    /// Remaining milliseconds, if the lease exists.
    LeaseTimeToLive(Result<Option<u64>, Error>),
    Membership(crate::server::MembershipResult),
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    postcard::to_stdvec(v).map_err(|e| Error::Corrupt(format!("peer message: {e}")))
}

pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(b).map_err(|e| Error::Corrupt(format!("peer message: {e}")))
}

/// Why forwarding failed: whether the leader may have acted on the request matters for
/// writes, which must not be sent twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// The connection could not be made: the request never left this member.
    NotDelivered,
    /// The request may or may not have been carried out.
    Unknown,
}

/// The TLS settings for dialing `https://` peers: verify them against the peer CA and
/// present this member's peer certificate.
pub fn peer_client_tls(
    ca: &std::path::Path,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<ClientTlsConfig> {
    use tonic::transport::{Certificate, Identity};
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let (Some(cert), Some(key)) = (cert, key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

/// Cached gRPC channels to peers, by peer URL.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Peer URL → the URL actually dialed (`--experimental-peer-dial-map`, for tests that
    /// put a fault-injecting proxy on each link).
    dial_map: Arc<HashMap<String, String>>,
    /// The shortest time limit of a Raft RPC (the election timeout; see `PeerConnection::rpc`).
    min_rpc_timeout: Duration,
    /// For `https://` peers: the peer CA to verify them against and this member's peer
    /// certificate to present.
    tls: Option<ClientTlsConfig>,
}

impl Peers {
    pub fn new(
        spec: Option<&str>,
        election_timeout: Duration,
        tls: Option<ClientTlsConfig>,
    ) -> anyhow::Result<Peers> {
        let mut map = HashMap::new();
        for item in spec
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.trim().is_empty())
        {
            let (from, to) = item.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "--experimental-peer-dial-map entry {item:?} is not peerURL=dialURL"
                )
            })?;
            map.insert(from.trim().to_string(), to.trim().to_string());
        }
        Ok(Peers {
            dial_map: Arc::new(map),
            min_rpc_timeout: election_timeout,
            tls,
            ..Default::default()
        })
    }

    fn channel(&self, url: &str) -> Result<Channel, Error> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(url) {
            return Ok(c.clone());
        }
        let dial = self.dial_map.get(url).map(String::as_str).unwrap_or(url);
        let mut endpoint = Endpoint::from_shared(dial.to_string())
            .map_err(|e| Error::Storage(format!("bad peer URL {url}: {e}")))?;
        if dial.starts_with("https://") {
            let tls = self.tls.clone().ok_or_else(|| {
                Error::Storage(format!(
                    "peer {url} is https:// but no peer TLS is configured"
                ))
            })?;
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::Storage(format!("peer TLS for {url}: {e}")))?;
        }
        let endpoint = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = endpoint.connect_lazy();
        map.insert(url.to_string(), channel.clone());
        Ok(channel)
    }

    /// Sends one request and waits for its answer, at most `timeout`.
    pub async fn call(
        &self,
        url: &str,
        req: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, tonic::Status> {
        let channel = self
            .channel(url)
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut client = pb::peer_client::PeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        let payload = encode(req).map_err(|e| tonic::Status::internal(e.to_string()))?;
        let mut request = tonic::Request::new(pb::PeerFrame { payload });
        request.set_timeout(timeout);
        let resp = tokio::time::timeout(timeout, client.call(request))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("peer call timed out"))??;
        decode(&resp.into_inner().payload).map_err(|e| tonic::Status::internal(e.to_string()))
    }

    /// Forwards a client request to the leader at `url`.
    pub async fn forward(
        &self,
        url: &str,
        req: &PeerRequest,
    ) -> Result<PeerResponse, ForwardError> {
        self.call(url, req, FORWARD_TIMEOUT).await.map_err(|s| {
            tracing::debug!(%url, status = %s, "forwarding to the leader failed");
            if s.code() == tonic::Code::Unavailable && s.message().contains("connect") {
                ForwardError::NotDelivered
            } else {
                ForwardError::Unknown
            }
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = PeerConnection;

    async fn new_client(&mut self, _target: u64, node: &Member) -> Self::Network {
        PeerConnection {
            peers: self.clone(),
            url: node.peer_url.clone(),
        }
    }
}

/// openraft's view of one peer.
pub struct PeerConnection {
    peers: Peers,
    url: String,
}

impl PeerConnection {
    /// openraft gives every AppendEntries the heartbeat interval as its time limit; a
    /// link slower than that (but far from losing the leader) would then fail every
    /// replication call and stop commits altogether (found by the robustness suite, seed
    /// 202). Calls get at least the election timeout instead.
    async fn rpc(
        &self,
        req: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, RPCError<TypeConfig>> {
        let timeout = option.hard_ttl().max(self.peers.min_rpc_timeout);
        self.peers
            .call(&self.url, &req, timeout)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&s)),
                _ => RPCError::Network(NetworkError::new(&s)),
            })
    }
}

fn unexpected(what: &str) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!(
        "unexpected peer response to {what}"
    )))
}

fn remote(e: RaftError<TypeConfig>) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&e))
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.rpc(PeerRequest::Append(rpc), &option).await? {
            PeerResponse::Append(r) => r.map_err(remote),
            _ => Err(unexpected("append")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.rpc(PeerRequest::Vote(rpc), &option).await? {
            PeerResponse::Vote(r) => r.map_err(remote),
            _ => Err(unexpected("vote")),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.rpc(PeerRequest::PreVote(rpc), &option).await? {
            PeerResponse::Vote(r) => r.map_err(remote),
            _ => Err(unexpected("pre-vote")),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = PeerRequest::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        tokio::pin!(cancel);
        let resp = tokio::select! {
            closed = &mut cancel => return Err(StreamingError::Closed(closed)),
            resp = self.rpc(req, &option) => resp?,
        };
        match resp {
            PeerResponse::Snapshot(r) => r.map_err(|e| StreamingError::from(remote(e))),
            _ => Err(unexpected("snapshot").into()),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.rpc(PeerRequest::TransferLeader(req), &option).await? {
            PeerResponse::TransferLeader(r) => r.map_err(remote),
            _ => Err(unexpected("transfer-leader")),
        }
    }
}
