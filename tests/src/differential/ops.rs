//! The operations of a differential run, their outcomes, and how one operation is
//! executed against one member.

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse,
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseLeasesRequest, PbLeaseLeasesResponse,
    PbLeaseRevokeRequest, PbLeaseRevokeResponse, PbLeaseTimeToLiveRequest,
    PbLeaseTimeToLiveResponse, PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse,
    PbTxnRequest, PbTxnResponse,
};

use super::readable::readable;
use crate::RawClient;
use crate::raw::RpcResult;
use crate::scrub::Scrub;

/// One request (or a fixed short sequence) sent to both members.
#[derive(Clone, Debug)]
pub enum Op {
    /// KV.Range
    Range(PbRangeRequest),
    /// KV.Put
    Put(PbPutRequest),
    /// KV.DeleteRange
    Delete(PbDeleteRequest),
    /// KV.Txn
    Txn(PbTxnRequest),
    /// KV.Compact
    Compact(PbCompactionRequest),
    /// Lease.LeaseGrant
    LeaseGrant(PbLeaseGrantRequest),
    /// Lease.LeaseRevoke
    LeaseRevoke(PbLeaseRevokeRequest),
    /// Lease.LeaseTimeToLive
    LeaseTimeToLive(PbLeaseTimeToLiveRequest),
    /// Lease.LeaseLeases
    LeaseLeases,
    /// A grant with a TTL below the minimum, revoked right away (before it can expire),
    /// to compare the TTL the member actually grants.
    ShortLease(PbLeaseGrantRequest),
}

/// What a member answered to an [`Op`], scrubbed of member identity.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// KV.Range
    Range(RpcResult<PbRangeResponse>),
    /// KV.Put
    Put(RpcResult<PbPutResponse>),
    /// KV.DeleteRange
    Delete(RpcResult<PbDeleteResponse>),
    /// KV.Txn
    Txn(RpcResult<PbTxnResponse>),
    /// KV.Compact
    Compact(RpcResult<PbCompactionResponse>),
    /// Lease.LeaseGrant
    LeaseGrant(RpcResult<PbLeaseGrantResponse>),
    /// Lease.LeaseRevoke
    LeaseRevoke(RpcResult<PbLeaseRevokeResponse>),
    /// Lease.LeaseTimeToLive
    LeaseTimeToLive(RpcResult<PbLeaseTimeToLiveResponse>),
    /// Lease.LeaseLeases
    LeaseLeases(RpcResult<PbLeaseLeasesResponse>),
    /// The grant and the revoke of [`Op::ShortLease`].
    ShortLease(
        RpcResult<PbLeaseGrantResponse>,
        RpcResult<PbLeaseRevokeResponse>,
    ),
}

fn scrubbed<T: Scrub>(mut r: RpcResult<T>) -> RpcResult<T> {
    r.scrub();
    r
}

impl Op {
    /// Sends the operation to one member.
    pub async fn execute(&self, client: &mut RawClient) -> Outcome {
        match self {
            Op::Range(r) => Outcome::Range(scrubbed(client.range(r.clone()).await)),
            Op::Put(r) => Outcome::Put(scrubbed(client.put(r.clone()).await)),
            Op::Delete(r) => Outcome::Delete(scrubbed(client.delete_range(r.clone()).await)),
            Op::Txn(r) => Outcome::Txn(scrubbed(client.txn(r.clone()).await)),
            Op::Compact(r) => Outcome::Compact(scrubbed(client.compact(*r).await)),
            Op::LeaseGrant(r) => Outcome::LeaseGrant(scrubbed(client.lease_grant(*r).await)),
            Op::LeaseRevoke(r) => Outcome::LeaseRevoke(scrubbed(client.lease_revoke(*r).await)),
            Op::LeaseTimeToLive(r) => {
                Outcome::LeaseTimeToLive(scrubbed(client.lease_time_to_live(*r).await))
            }
            Op::LeaseLeases => {
                Outcome::LeaseLeases(scrubbed(client.lease_leases(PbLeaseLeasesRequest {}).await))
            }
            Op::ShortLease(r) => {
                let grant = scrubbed(client.lease_grant(*r).await);
                let revoke = scrubbed(client.lease_revoke(PbLeaseRevokeRequest { id: r.id }).await);
                Outcome::ShortLease(grant, revoke)
            }
        }
    }

    /// A one-line description, with long values shortened.
    pub fn describe(&self) -> String {
        shorten(&readable(&format!("{self:?}")), 3000)
    }
}

impl Outcome {
    /// The store revision in the (top-level) response header, if the request succeeded.
    pub fn revision(&self) -> Option<i64> {
        fn rev<T>(r: &RpcResult<T>, f: impl Fn(&T) -> Option<i64>) -> Option<i64> {
            r.as_ref().ok().and_then(f)
        }
        match self {
            Outcome::Range(r) => rev(r, |x| x.header.map(|h| h.revision)),
            Outcome::Put(r) => rev(r, |x| x.header.map(|h| h.revision)),
            Outcome::Delete(r) => rev(r, |x| x.header.map(|h| h.revision)),
            Outcome::Txn(r) => rev(r, |x| x.header.map(|h| h.revision)),
            Outcome::Compact(r) => rev(r, |x| x.header.map(|h| h.revision)),
            Outcome::LeaseGrant(r) => rev(r, |x| x.header.map(|h| h.revision)),
            Outcome::LeaseRevoke(r) => rev(r, |x| x.header.map(|h| h.revision)),
            Outcome::LeaseTimeToLive(r) => rev(r, |x| x.header.map(|h| h.revision)),
            Outcome::LeaseLeases(r) => rev(r, |x| x.header.map(|h| h.revision)),
            Outcome::ShortLease(_, r) => rev(r, |x| x.header.map(|h| h.revision)),
        }
    }

    /// A short label: the operation kind and either `ok` or the error.
    pub fn label(&self) -> String {
        fn l<T>(kind: &str, r: &RpcResult<T>) -> String {
            match r {
                Ok(_) => format!("{kind}: ok"),
                Err(e) => format!("{kind}: {e}"),
            }
        }
        match self {
            Outcome::Range(r) => l("Range", r),
            Outcome::Put(r) => l("Put", r),
            Outcome::Delete(r) => l("DeleteRange", r),
            Outcome::Txn(r) => match r {
                Ok(t) if t.succeeded => "Txn: ok, succeeded".to_owned(),
                Ok(_) => "Txn: ok, failed compare".to_owned(),
                Err(e) => format!("Txn: {e}"),
            },
            Outcome::Compact(r) => l("Compact", r),
            Outcome::LeaseGrant(r) => l("LeaseGrant", r),
            Outcome::LeaseRevoke(r) => l("LeaseRevoke", r),
            Outcome::LeaseTimeToLive(r) => l("LeaseTimeToLive", r),
            Outcome::LeaseLeases(r) => l("LeaseLeases", r),
            Outcome::ShortLease(g, r) => {
                format!("{} + {}", l("ShortLease grant", g), l("revoke", r))
            }
        }
    }

    /// Whether the request failed.
    pub fn is_err(&self) -> bool {
        match self {
            Outcome::Range(r) => r.is_err(),
            Outcome::Put(r) => r.is_err(),
            Outcome::Delete(r) => r.is_err(),
            Outcome::Txn(r) => r.is_err(),
            Outcome::Compact(r) => r.is_err(),
            Outcome::LeaseGrant(r) => r.is_err(),
            Outcome::LeaseRevoke(r) => r.is_err(),
            Outcome::LeaseTimeToLive(r) => r.is_err(),
            Outcome::LeaseLeases(r) => r.is_err(),
            Outcome::ShortLease(a, b) => a.is_err() || b.is_err(),
        }
    }

    /// A multi-line description, with long values shortened.
    pub fn describe(&self) -> String {
        shorten(&readable(&format!("{self:#?}")), 20_000)
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &s[..end], s.len() - end)
}
