//! The peer service: answers Raft RPCs from other members, and client requests that
//! followers forward to this member while it leads.

use std::io::Cursor;
use std::sync::Arc;

use openraft::errors::RaftError;
use tonic::{Request, Response, Status};

use super::Node;
use crate::error::Error;
use crate::raft::Snapshot;
use crate::raft::network::{PeerRequest, PeerResponse, decode, encode, pb};

pub struct PeerService(pub Arc<Node>);

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn call(&self, req: Request<pb::PeerFrame>) -> Result<Response<pb::PeerFrame>, Status> {
        let node = &self.0;
        let req: PeerRequest = decode(&req.into_inner().payload)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let resp = match req {
            PeerRequest::Append(r) => PeerResponse::Append(node.raft.append_entries(r).await),
            PeerRequest::Vote(r) => PeerResponse::Vote(node.raft.vote(r).await),
            PeerRequest::PreVote(r) => PeerResponse::Vote(node.raft.pre_vote(r).await),
            PeerRequest::Snapshot { vote, meta, data } => {
                let snapshot = Snapshot {
                    meta,
                    snapshot: Cursor::new(data),
                };
                PeerResponse::Snapshot(
                    node.raft
                        .install_full_snapshot(vote, snapshot)
                        .await
                        .map_err(RaftError::Fatal),
                )
            }
            PeerRequest::TransferLeader(r) => PeerResponse::TransferLeader(
                node.raft
                    .handle_transfer_leader(r)
                    .await
                    .map_err(RaftError::Fatal),
            ),
            // Forwarded requests are served only by the leader itself: no forwarding chains.
            // "no leader" only when the write was not submitted: the sender may retry it.
            PeerRequest::Propose(bytes) => PeerResponse::Propose(if node.is_leader() {
                node.propose_local(bytes).await
            } else {
                Err(Error::NoLeader)
            }),
            PeerRequest::ReadIndex => PeerResponse::ReadIndex(node.read_index_local().await),
            PeerRequest::LeaseKeepAlive(id) => PeerResponse::LeaseKeepAlive(
                node.lease_keepalive_as_leader(id)
                    .await
                    .ok_or(Error::NoLeader),
            ),
            PeerRequest::Membership(op) => PeerResponse::Membership(if node.is_leader() {
                node.change_members_local(op).await
            } else {
                Err(super::cluster::MembershipError::Other(
                    Error::NoLeader.to_string(),
                ))
            }),
            PeerRequest::LeaseTimeToLive(id) => {
                PeerResponse::LeaseTimeToLive(if node.is_leader() {
                    Ok(node.lessor.remaining(id).map(|d| d.as_millis() as u64))
                } else {
                    Err(Error::NoLeader)
                })
            }
        };
        let payload = encode(&resp).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::PeerFrame { payload }))
    }
}
