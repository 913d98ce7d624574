//! The KV service: Range is served from the local store, after a read barrier unless it
//! is serializable; Put, DeleteRange, Txn and Compact are validated and proposed. With
//! auth on, each request first passes the caller's permission check (`authz.rs`).

use std::sync::Arc;

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvService,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbRangeStreamResponse,
    PbTxnRequest, PbTxnResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};

use super::{Node, validate};
use crate::command::{Command, CommandResult};
use crate::error::Error;

pub struct KvService(pub Arc<Node>);

impl KvService {
    fn check_size(&self, len: usize) -> Result<(), Status> {
        if len > self.0.config.max_request_bytes {
            return Err(Error::RequestTooLarge.into());
        }
        Ok(())
    }
}

fn unexpected(r: CommandResult) -> Status {
    Status::internal(format!("unexpected apply result {r:?}"))
}

#[tonic::async_trait]
impl PbKvService for KvService {
    async fn range(
        &self,
        req: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        let caller = self.0.caller(&req)?;
        let req = req.into_inner();
        validate::check_range(&req)?;
        self.0.check_range(&caller, &req)?;
        if !req.serializable {
            self.0.read_barrier().await?;
        }
        let mut resp = self.0.store.range(&req)?;
        self.0.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    type RangeStreamStream = futures::stream::Empty<Result<PbRangeStreamResponse, Status>>;

    async fn range_stream(
        &self,
        _req: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(Status::unimplemented(
            "RangeStream is not supported (etcd 3.4/3.5 API); use Range",
        ))
    }

    async fn put(&self, req: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        let caller = self.0.caller(&req)?;
        let req = req.into_inner();
        validate::check_put(&req)?;
        self.0.check_put(&caller, &req)?;
        self.check_size(req.encoded_len())?;
        self.0.check_quota().await?;
        match self.0.propose(Command::Put(req)).await? {
            CommandResult::Put(mut resp) => {
                self.0.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        req: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        let caller = self.0.caller(&req)?;
        let req = req.into_inner();
        validate::check_delete(&req)?;
        self.0.check_delete(&caller, &req)?;
        self.check_size(req.encoded_len())?;
        match self.0.propose(Command::DeleteRange(req)).await? {
            CommandResult::DeleteRange(mut resp) => {
                self.0.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn txn(&self, req: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let caller = self.0.caller(&req)?;
        let req = req.into_inner();
        validate::check_txn(&req, self.0.config.max_txn_ops)?;
        self.0.check_txn(&caller, &req)?;
        self.check_size(req.encoded_len())?;
        if crate::command::txn_puts(&req) {
            self.0.check_quota().await?;
        }
        match self.0.propose(Command::Txn(req)).await? {
            CommandResult::Txn(mut resp) => {
                self.0.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn compact(
        &self,
        req: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        let caller = self.0.caller(&req)?;
        self.0.check_authenticated(&caller)?;
        let req = req.into_inner();
        match self.0.propose(Command::Compact(req)).await? {
            CommandResult::Compact(mut resp) => {
                self.0.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }
}
