//! Maintenance (Status, Alarm, MoveLeader) and Cluster (MemberList). The RPCs whose
//! issues have not landed yet (membership changes, backups, defrag, hashes) answer
//! Unimplemented with a message saying so.

use std::sync::Arc;

use etcd_client::proto::*;
use openraft::async_runtime::WatchReceiver;
use tonic::{Request, Response, Status};

use super::Node;

/// The etcd API version this store speaks.
pub const API_VERSION: &str = "3.5.0";

pub struct MaintenanceService(pub Arc<Node>);
pub struct ClusterService(pub Arc<Node>);

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not supported by this kvstore version yet"
    ))
}

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(
        &self,
        _req: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        Ok(Response::new(PbAlarmResponse {
            header: Some(self.0.header(self.0.store.current_revision())),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _req: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        let node = &self.0;
        let size = node.store.db_size_bytes() as i64;
        let m = node.raft.metrics().borrow_watched().clone();
        let is_learner = !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == node.identity.member_id);
        Ok(Response::new(PbStatusResponse {
            header: Some(node.header(node.store.current_revision())),
            version: API_VERSION.into(),
            db_size: size,
            leader: m.current_leader.unwrap_or(0),
            raft_index: m.last_log_index.unwrap_or(0),
            raft_term: m.current_term,
            raft_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _req: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        Err(not_yet("Defragment"))
    }

    async fn hash(&self, _req: Request<PbHashRequest>) -> Result<Response<PbHashResponse>, Status> {
        Err(not_yet("Hash"))
    }

    async fn hash_kv(
        &self,
        _req: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        Err(not_yet("HashKV"))
    }

    type SnapshotStream = futures::stream::Empty<Result<PbSnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        _req: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(not_yet("Snapshot"))
    }

    async fn move_leader(
        &self,
        req: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        let node = &self.0;
        let target = req.into_inner().target_id;
        if !node.is_leader() {
            return Err(Status::failed_precondition("etcdserver: not leader"));
        }
        let m = node.raft.metrics().borrow_watched().clone();
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == target)
        {
            return Err(Status::failed_precondition(
                "etcdserver: bad leader transferee",
            ));
        }
        node.raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        // Wait (bounded) until the transfer is visible, as etcd answers after it completes.
        let mut metrics = node.raft.metrics();
        let moved = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                if metrics.borrow_and_update().current_leader == Some(target) {
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if moved.is_err() {
            return Err(Status::deadline_exceeded(
                "etcdserver: request timed out, leader transfer took too long",
            ));
        }
        Ok(Response::new(PbMoveLeaderResponse {
            header: Some(node.header(node.store.current_revision())),
        }))
    }

    async fn downgrade(
        &self,
        _req: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(not_yet("Downgrade"))
    }
}

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        _req: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        Err(not_yet("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _req: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        Err(not_yet("MemberRemove"))
    }

    async fn member_update(
        &self,
        _req: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        Err(not_yet("MemberUpdate"))
    }

    async fn member_list(
        &self,
        _req: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        let node = &self.0;
        let m = node.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, member)| PbMember {
                id: *id,
                name: member.name.clone(),
                peer_ur_ls: vec![member.peer_url.clone()],
                client_ur_ls: if *id == node.identity.member_id {
                    node.config.advertised_client_urls()
                } else {
                    member.client_urls.clone()
                },
                is_learner: !voters.contains(id),
            })
            .collect();
        Ok(Response::new(PbMemberListResponse {
            header: Some(node.header(node.store.current_revision())),
            members,
        }))
    }

    async fn member_promote(
        &self,
        _req: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        Err(not_yet("MemberPromote"))
    }
}
