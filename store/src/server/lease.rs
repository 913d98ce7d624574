//! The Lease service: grants and revokes go through Raft; keep-alives and time-to-live
//! go to the leader, whose clocks (`crate::lease::Lessor`) decide expiry.

use std::sync::Arc;

use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseStatus, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Node;
use crate::command::{Command, CommandResult};
use crate::error::Error;
use crate::lease::MAX_LEASE_TTL_S;

/// Keep-alive responses buffered per stream before the stream reader waits.
const KEEPALIVE_BUFFER: usize = 64;

pub struct LeaseService(pub Arc<Node>);

impl LeaseService {
    /// A random positive lease ID not in use (etcd picks IDs on the proposing member too).
    fn new_lease_id(&self) -> i64 {
        loop {
            let id = (rand::random::<u64>() >> 1) as i64;
            if id != 0 && self.0.store.lease(id).is_none() {
                return id;
            }
        }
    }
}

/// Renews on the leader. etcd answers a keep-alive for an unknown lease with TTL 0
/// rather than an error.
async fn keepalive(node: &Node, id: i64) -> Result<PbLeaseKeepAliveResponse, Status> {
    let ttl = node.lease_keepalive(id).await?;
    Ok(PbLeaseKeepAliveResponse {
        header: Some(node.header(node.store.current_revision())),
        id,
        ttl,
    })
}

#[tonic::async_trait]
impl PbLeaseService for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        let caller = self.0.caller(&req)?;
        self.0.check_authenticated(&caller)?;
        let mut req = req.into_inner();
        if req.ttl > MAX_LEASE_TTL_S {
            return Err(Error::LeaseTtlTooLarge.into());
        }
        self.0.check_quota().await?;
        if req.id == 0 {
            req.id = self.new_lease_id();
        }
        req.ttl = req.ttl.max(self.0.config.min_lease_ttl_s());
        match self.0.propose(Command::LeaseGrant(req)).await? {
            CommandResult::LeaseGrant(mut resp) => {
                self.0.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(Status::internal(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        let caller = self.0.caller(&req)?;
        let req = req.into_inner();
        self.0.check_lease_keys(&caller, req.id)?;
        match self.0.propose(Command::LeaseRevoke(req)).await? {
            CommandResult::LeaseRevoke(mut resp) => {
                self.0.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(Status::internal(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<PbLeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let caller = self.0.caller(&req)?;
        self.0.check_authenticated(&caller)?;
        let mut input = req.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVE_BUFFER);
        let node = self.0.clone();
        tokio::spawn(async move {
            while let Some(msg) = input.next().await {
                let Ok(msg) = msg else { break };
                if tx.send(keepalive(&node, msg.id).await).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let caller = self.0.caller(&req)?;
        self.0.check_authenticated(&caller)?;
        let req = req.into_inner();
        let header = Some(self.0.header(self.0.store.current_revision()));
        let Some(lease) = self.0.store.lease(req.id) else {
            // etcd answers an unknown (expired or revoked) lease with TTL -1, not an error.
            return Ok(Response::new(PbLeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                ..Default::default()
            }));
        };
        // The leader's clock decides; a new leader's extension (see follow_leadership)
        // is not shown: a client is never told more than the granted TTL.
        let remaining = self
            .0
            .lease_remaining(req.id)
            .await?
            .map(|d| d.as_secs() as i64)
            .unwrap_or(lease.ttl_s)
            .min(lease.ttl_s);
        Ok(Response::new(PbLeaseTimeToLiveResponse {
            header,
            id: req.id,
            ttl: remaining,
            granted_ttl: lease.ttl_s,
            keys: if req.keys {
                lease.keys.into_iter().collect()
            } else {
                Vec::new()
            },
        }))
    }

    async fn lease_leases(
        &self,
        req: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        let caller = self.0.caller(&req)?;
        self.0.check_authenticated(&caller)?;
        Ok(Response::new(PbLeaseLeasesResponse {
            header: Some(self.0.header(self.0.store.current_revision())),
            leases: self
                .0
                .store
                .leases()
                .into_iter()
                .map(|(id, _)| PbLeaseStatus { id })
                .collect(),
        }))
    }
}
