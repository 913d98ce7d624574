//! Maintenance: Status, Alarm (list, raise, disarm), Defragment, HashKV, Snapshot (the
//! backup stream) and MoveLeader. Hash (a test-only RPC in etcd) and Downgrade answer
//! Unimplemented with a message saying so.

use std::sync::Arc;

use etcd_client::proto::*;
use openraft::async_runtime::WatchReceiver;
use tonic::{Request, Response, Status};

use super::Node;

/// Bytes per Snapshot message (etcd sends 32 KiB; larger chunks cost fewer messages).
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

// rpc.proto AlarmRequest.AlarmAction::GET.
const ALARM_GET: i32 = 0;

fn alarm_name(alarm: i32) -> &'static str {
    match alarm {
        1 => "NOSPACE",
        2 => "CORRUPT",
        _ => "NONE",
    }
}

/// The etcd API version this store speaks.
pub const API_VERSION: &str = "3.5.0";

pub struct MaintenanceService(pub Arc<Node>);

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not supported by this kvstore version yet"
    ))
}

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(
        &self,
        req: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        let req = req.into_inner();
        let node = &self.0;
        if req.action == ALARM_GET {
            return Ok(Response::new(PbAlarmResponse {
                header: Some(node.header(node.store.current_revision())),
                alarms: node
                    .store
                    .alarms()
                    .into_iter()
                    .map(|(member_id, alarm)| PbAlarmMember { member_id, alarm })
                    .collect(),
            }));
        }
        match node.propose(crate::command::Command::Alarm(req)).await? {
            crate::command::CommandResult::Alarm(mut resp) => {
                node.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(Status::internal(format!(
                "unexpected apply result {other:?}"
            ))),
        }
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
            errors: node
                .store
                .alarms()
                .into_iter()
                .map(|(member, alarm)| format!("memberID:{member} alarm:{}", alarm_name(alarm)))
                .collect(),
            db_size_in_use: node.store.live_size_bytes() as i64,
            db_size_quota: node.config.quota_backend_bytes as i64,
            is_learner,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        req: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        self.0.check_admin(&self.0.caller(&req)?)?;
        let store = self.0.store.clone();
        tokio::task::spawn_blocking(move || store.defrag())
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(PbDefragmentResponse {
            header: Some(self.0.header(self.0.store.current_revision())),
        }))
    }

    async fn hash(&self, req: Request<PbHashRequest>) -> Result<Response<PbHashResponse>, Status> {
        self.0.check_admin(&self.0.caller(&req)?)?;
        Err(not_yet("Hash"))
    }

    async fn hash_kv(
        &self,
        req: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        self.0.check_admin(&self.0.caller(&req)?)?;
        let node = &self.0;
        let (hash, compact_revision, hash_revision) =
            node.store.hash_kv(req.into_inner().revision)?;
        Ok(Response::new(PbHashKvResponse {
            header: Some(node.header(node.store.current_revision())),
            hash,
            compact_revision,
            hash_revision,
        }))
    }

    type SnapshotStream =
        tokio_stream::wrappers::ReceiverStream<Result<PbSnapshotResponse, Status>>;

    /// Streams a consistent dump of this member followed by its SHA-256 (the last
    /// message's blob), as etcd does; `etcdctl snapshot save` and `kvstore snapshot save`
    /// both consume it.
    async fn snapshot(
        &self,
        req: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.0.check_admin(&self.0.caller(&req)?)?;
        use sha2::Digest;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let node = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut hasher = sha2::Sha256::new();
            let header = Some(node.header(node.store.current_revision()));
            let result =
                node.store
                    .dump_streaming(SNAPSHOT_CHUNK_BYTES, &mut |chunk, remaining| {
                        hasher.update(chunk);
                        let msg = PbSnapshotResponse {
                            header,
                            remaining_bytes: remaining + crate::backup::HASH_LEN as u64,
                            blob: chunk.to_vec(),
                            ..Default::default()
                        };
                        tx.blocking_send(Ok(msg))
                            .map_err(|_| crate::error::Error::Stopped)
                    });
            let last = match result {
                Ok(()) => Ok(PbSnapshotResponse {
                    header,
                    remaining_bytes: 0,
                    blob: hasher.finalize().to_vec(),
                    ..Default::default()
                }),
                Err(crate::error::Error::Stopped) => return,
                Err(e) => Err(Status::from(e)),
            };
            let _ = tx.blocking_send(last);
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn move_leader(
        &self,
        req: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        self.0.check_admin(&self.0.caller(&req)?)?;
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
