//! The Cluster service: MemberList, MemberAdd (as learner or voter), MemberPromote (only
//! once the learner has caught up), MemberRemove and MemberUpdate, mapped onto openraft's
//! learners and joint-consensus membership changes. Changes run on the leader; followers
//! forward them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use etcd_client::proto::*;
use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::Node;
use crate::raft::Member;

pub struct ClusterService(pub Arc<Node>);

/// A membership change, as forwarded to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipOp {
    Add {
        peer_url: String,
        is_learner: bool,
    },
    Promote {
        id: u64,
    },
    Remove {
        id: u64,
    },
    Update {
        id: u64,
        peer_url: String,
    },
    /// A member records its name and client URLs (sent by each member after it starts).
    Publish {
        id: u64,
        member: Member,
    },
}

/// etcd's errors for membership changes (gRPC code, message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MembershipError {
    #[error("etcdserver: member not found")]
    NotFound,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    #[error("{0}")]
    Other(String),
}

impl From<MembershipError> for Status {
    fn from(e: MembershipError) -> Status {
        let code = match e {
            MembershipError::NotFound => tonic::Code::NotFound,
            MembershipError::PeerUrlExists
            | MembershipError::NotLearner
            | MembershipError::LearnerNotReady
            | MembershipError::NotEnoughStarted => tonic::Code::FailedPrecondition,
            MembershipError::Other(_) => tonic::Code::Unavailable,
        };
        Status::new(code, e.to_string())
    }
}

/// A member as a change reports it: ID, record, whether it is a learner.
pub type MemberEntry = (u64, Member, bool);

/// What a change answers: the member it concerned (if any) and the members after it.
pub type MembershipResult = Result<(Option<u64>, Vec<MemberEntry>), MembershipError>;

fn to_pb(entries: &[MemberEntry]) -> Vec<PbMember> {
    entries
        .iter()
        .map(|(id, member, is_learner)| PbMember {
            id: *id,
            name: member.name.clone(),
            peer_ur_ls: vec![member.peer_url.clone()],
            client_ur_ls: member.client_urls.clone(),
            is_learner: *is_learner,
        })
        .collect()
}

/// A learner counts as caught up when it has matched at least this share of the
/// leader's log (etcd uses 90%).
const PROMOTE_READY_RATIO: f64 = 0.9;

impl Node {
    /// The members as this member knows them.
    pub fn member_list(&self) -> Vec<MemberEntry> {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, member)| (*id, member.clone(), !voters.contains(id)))
            .collect()
    }

    /// Runs a membership change on the leader (forwarding it there if needed).
    pub async fn change_members(&self, op: MembershipOp) -> MembershipResult {
        let remote = crate::raft::network::PeerRequest::Membership(op.clone());
        self.on_leader(
            false,
            || async { Some(Ok(self.change_members_local(op.clone()).await)) },
            remote,
            |r| match r {
                crate::raft::network::PeerResponse::Membership(r) => Some(Ok(r)),
                _ => None,
            },
        )
        .await
        .map_err(|e| MembershipError::Other(e.to_string()))?
    }

    /// Runs a membership change on this member, which must lead.
    pub async fn change_members_local(&self, op: MembershipOp) -> MembershipResult {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership().clone();
        let token = &self.config.initial_cluster_token;
        let concerned = match op {
            MembershipOp::Add {
                peer_url,
                is_learner,
            } => {
                crate::config::parse_url_addr(&peer_url)
                    .map_err(|e| MembershipError::Other(e.to_string()))?;
                if membership.nodes().any(|(_, n)| n.peer_url == peer_url) {
                    return Err(MembershipError::PeerUrlExists);
                }
                let id = crate::raft::member_id(&peer_url, token);
                let member = Member {
                    name: String::new(),
                    peer_url,
                    client_urls: Vec::new(),
                };
                self.raft
                    .add_learner(id, member, false)
                    .await
                    .map_err(|e| MembershipError::Other(e.to_string()))?;
                if !is_learner {
                    self.commit_change(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                        .await?;
                }
                Some(id)
            }
            MembershipOp::Promote { id } => {
                if membership.get_node(&id).is_none() {
                    return Err(MembershipError::NotFound);
                }
                if membership.voter_ids().any(|v| v == id) {
                    return Err(MembershipError::NotLearner);
                }
                let leader_index = m.last_log_index.unwrap_or(0) as f64;
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index as f64)
                    .unwrap_or(0.0);
                if matched < leader_index * PROMOTE_READY_RATIO {
                    return Err(MembershipError::LearnerNotReady);
                }
                self.commit_change(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                    .await?;
                Some(id)
            }
            MembershipOp::Remove { id } => {
                if membership.get_node(&id).is_none() {
                    return Err(MembershipError::NotFound);
                }
                let change = if membership.voter_ids().any(|v| v == id) {
                    if membership.voter_ids().count() == 1 {
                        return Err(MembershipError::NotEnoughStarted);
                    }
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                self.commit_change(change).await?;
                Some(id)
            }
            MembershipOp::Update { id, peer_url } => {
                let mut member = membership
                    .get_node(&id)
                    .cloned()
                    .ok_or(MembershipError::NotFound)?;
                member.peer_url = peer_url;
                self.commit_change(ChangeMembers::SetNodes(BTreeMap::from([(id, member)])))
                    .await?;
                Some(id)
            }
            MembershipOp::Publish { id, member } => {
                if membership.get_node(&id).is_none() {
                    return Err(MembershipError::NotFound);
                }
                self.commit_change(ChangeMembers::SetNodes(BTreeMap::from([(id, member)])))
                    .await?;
                Some(id)
            }
        };
        Ok((concerned, self.member_list()))
    }

    /// Commits one membership change (joint consensus; learners are not kept as such).
    async fn commit_change(
        &self,
        change: ChangeMembers<u64, Member>,
    ) -> Result<(), MembershipError> {
        self.raft
            .change_membership(change, false)
            .await
            .map(|_| ())
            .map_err(|e| MembershipError::Other(e.to_string()))
    }

    /// Records this member's name and client URLs in the membership once a leader is
    /// known (etcd's "publish"), so MemberList shows every member's client URLs.
    pub async fn publish_self(&self) {
        let id = self.identity.member_id;
        let wanted = Member {
            name: self.config.name.clone(),
            peer_url: self.config.advertised_peer_url(),
            client_urls: self.config.advertised_client_urls(),
        };
        for _ in 0..600 {
            // Only a committed membership counts: an uncommitted one may still be replaced.
            let current = {
                let m = self.raft.metrics().borrow_watched().clone();
                m.committed_membership_config
                    .membership()
                    .get_node(&id)
                    .cloned()
            };
            match current {
                Some(m) if m == wanted => return,
                Some(_)
                    if self
                        .change_members(MembershipOp::Publish {
                            id,
                            member: wanted.clone(),
                        })
                        .await
                        .is_ok() =>
                {
                    return;
                }
                Some(_) => {}
                // Not (yet) a member: a member added by MemberAdd learns of itself from
                // the leader's log.
                None => {}
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

fn header(node: &Node) -> Option<PbResponseHeader> {
    Some(node.header(node.store.current_revision()))
}

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        req: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        self.0.check_admin(&self.0.caller(&req)?)?;
        let req = req.into_inner();
        let peer_url = match req.peer_ur_ls.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(Status::invalid_argument(
                    "etcdserver: member peer URLs are not provided",
                ));
            }
            _ => {
                return Err(Status::invalid_argument(
                    "kvstore: a member has exactly one peer URL",
                ));
            }
        };
        let (id, members) = self
            .0
            .change_members(MembershipOp::Add {
                peer_url,
                is_learner: req.is_learner,
            })
            .await?;
        let members = to_pb(&members);
        let member = members.iter().find(|m| Some(m.id) == id).cloned();
        Ok(Response::new(PbMemberAddResponse {
            header: header(&self.0),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        self.0.check_admin(&self.0.caller(&req)?)?;
        let id = req.into_inner().id;
        let (_, members) = self.0.change_members(MembershipOp::Remove { id }).await?;
        Ok(Response::new(PbMemberRemoveResponse {
            header: header(&self.0),
            members: to_pb(&members),
        }))
    }

    async fn member_update(
        &self,
        req: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        self.0.check_admin(&self.0.caller(&req)?)?;
        let req = req.into_inner();
        let peer_url = req.peer_ur_ls.first().cloned().ok_or_else(|| {
            Status::invalid_argument("etcdserver: member peer URLs are not provided")
        })?;
        let (_, members) = self
            .0
            .change_members(MembershipOp::Update {
                id: req.id,
                peer_url,
            })
            .await?;
        Ok(Response::new(PbMemberUpdateResponse {
            header: header(&self.0),
            members: to_pb(&members),
        }))
    }

    async fn member_list(
        &self,
        _req: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        Ok(Response::new(PbMemberListResponse {
            header: header(&self.0),
            members: to_pb(&self.0.member_list()),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        self.0.check_admin(&self.0.caller(&req)?)?;
        let id = req.into_inner().id;
        let (_, members) = self.0.change_members(MembershipOp::Promote { id }).await?;
        Ok(Response::new(PbMemberPromoteResponse {
            header: header(&self.0),
            members: to_pb(&members),
        }))
    }
}
