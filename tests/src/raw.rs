//! A raw gRPC client for the etcd v3 API: sends etcd's own protobuf request messages
//! (as re-exported by `etcd_client::proto`) and returns the protobuf responses, so a
//! test controls every request field and sees every response field.
//!
//! Errors come back as [`RpcError`] (gRPC code and message), the part of an error a
//! client can observe and compare.

use std::fmt;

use anyhow::{Context, Result};
use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse,
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseLeasesRequest, PbLeaseLeasesResponse,
    PbLeaseRevokeRequest, PbLeaseRevokeResponse, PbLeaseTimeToLiveRequest,
    PbLeaseTimeToLiveResponse, PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse,
    PbStatusRequest, PbStatusResponse, PbTxnRequest, PbTxnResponse,
};
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Large enough for the biggest response the tests provoke (a few MiB of values).
const MAX_DECODING: usize = 64 * 1024 * 1024;

/// A gRPC error as the client sees it.
#[derive(Clone, PartialEq, Eq)]
pub struct RpcError {
    /// The gRPC status code.
    pub code: tonic::Code,
    /// The status message, e.g. `etcdserver: key is not provided`.
    pub message: String,
}

impl fmt::Debug for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RpcError({:?}, {:?})", self.code, self.message)
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for RpcError {}

impl From<tonic::Status> for RpcError {
    fn from(status: tonic::Status) -> Self {
        RpcError {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// The outcome of one RPC.
pub type RpcResult<T> = std::result::Result<T, RpcError>;

/// A client over one channel; cheap to clone.
#[derive(Clone)]
pub struct RawClient {
    grpc: Grpc<Channel>,
}

macro_rules! rpc {
    ($(#[$doc:meta])* $fn_name:ident, $path:literal, $req:ty, $resp:ty) => {
        $(#[$doc])*
        pub async fn $fn_name(&mut self, request: $req) -> RpcResult<$resp> {
            self.unary($path, request).await
        }
    };
}

impl RawClient {
    /// Connects to `http://host:port`.
    pub async fn connect(endpoint: &str) -> Result<Self> {
        let channel = Channel::from_shared(endpoint.to_owned())
            .context("endpoint URL")?
            .connect()
            .await
            .with_context(|| format!("connect {endpoint}"))?;
        Ok(RawClient {
            grpc: Grpc::new(channel).max_decoding_message_size(MAX_DECODING),
        })
    }

    async fn unary<Req, Resp>(&mut self, path: &'static str, request: Req) -> RpcResult<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.grpc.ready().await.map_err(|e| RpcError {
            code: tonic::Code::Unavailable,
            message: format!("channel not ready: {e}"),
        })?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let response = self
            .grpc
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await?;
        Ok(response.into_inner())
    }

    rpc!(/// KV.Range
        range, "/etcdserverpb.KV/Range", PbRangeRequest, PbRangeResponse);
    rpc!(/// KV.Put
        put, "/etcdserverpb.KV/Put", PbPutRequest, PbPutResponse);
    rpc!(/// KV.DeleteRange
        delete_range, "/etcdserverpb.KV/DeleteRange", PbDeleteRequest, PbDeleteResponse);
    rpc!(/// KV.Txn
        txn, "/etcdserverpb.KV/Txn", PbTxnRequest, PbTxnResponse);
    rpc!(/// KV.Compact
        compact, "/etcdserverpb.KV/Compact", PbCompactionRequest, PbCompactionResponse);
    rpc!(/// Lease.LeaseGrant
        lease_grant, "/etcdserverpb.Lease/LeaseGrant", PbLeaseGrantRequest, PbLeaseGrantResponse);
    rpc!(/// Lease.LeaseRevoke
        lease_revoke, "/etcdserverpb.Lease/LeaseRevoke", PbLeaseRevokeRequest, PbLeaseRevokeResponse);
    rpc!(/// Lease.LeaseTimeToLive
        lease_time_to_live, "/etcdserverpb.Lease/LeaseTimeToLive", PbLeaseTimeToLiveRequest,
        PbLeaseTimeToLiveResponse);
    rpc!(/// Lease.LeaseLeases
        lease_leases, "/etcdserverpb.Lease/LeaseLeases", PbLeaseLeasesRequest, PbLeaseLeasesResponse);
    rpc!(/// Maintenance.Status
        status, "/etcdserverpb.Maintenance/Status", PbStatusRequest, PbStatusResponse);
}
