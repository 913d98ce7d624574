//! Maintenance (Status, Alarm) and Cluster (MemberList) for a one-member cluster. The
//! RPCs that need Raft or backups answer Unimplemented with a message saying so, until the
//! issues that build them land.

use std::sync::Arc;

use etcd_client::proto::*;
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
        let applied = node.store.applied_index();
        Ok(Response::new(PbStatusResponse {
            header: Some(node.header(node.store.current_revision())),
            version: API_VERSION.into(),
            db_size: size,
            leader: node.identity.member_id,
            raft_index: applied,
            raft_term: node.header(0).raft_term,
            raft_applied_index: applied,
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner: false,
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
        _req: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        Err(not_yet("MoveLeader"))
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
        let client_url = node
            .config
            .advertise_client_urls
            .clone()
            .unwrap_or_else(|| node.config.listen_client_urls.clone());
        Ok(Response::new(PbMemberListResponse {
            header: Some(node.header(node.store.current_revision())),
            members: vec![PbMember {
                id: node.identity.member_id,
                name: node.config.name.clone(),
                peer_ur_ls: Vec::new(),
                client_ur_ls: client_url.split(',').map(str::to_owned).collect(),
                is_learner: false,
            }],
        }))
    }

    async fn member_promote(
        &self,
        _req: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        Err(not_yet("MemberPromote"))
    }
}
