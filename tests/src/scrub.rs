//! Normalising responses so two members' answers compare equal when they agree on what
//! a client may rely on.
//!
//! Removed: the header's `cluster_id`, `member_id` and `raft_term` (member identity),
//! everywhere including nested Txn responses; the header `revision` is kept. Lease lists
//! are sorted (they are sets), the keys of a lease are sorted, and a remaining TTL that
//! lies within `1..=granted` is replaced by 0 (it depends on the clock); a remaining TTL
//! outside that range is kept, so it shows up as a difference.

use etcd_client::proto::{
    PbCompactionResponse, PbDeleteResponse, PbLeaseGrantResponse, PbLeaseLeasesResponse,
    PbLeaseRevokeResponse, PbLeaseTimeToLiveResponse, PbPutResponse, PbRangeResponse,
    PbResponseHeader, PbTxnOpResponse, PbTxnResponse,
};

use crate::RpcResult;

/// Removes what legitimately differs between members from a response.
pub trait Scrub {
    /// Normalises `self` in place.
    fn scrub(&mut self);
}

fn header(h: &mut Option<PbResponseHeader>) {
    if let Some(h) = h {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
}

impl<T: Scrub> Scrub for RpcResult<T> {
    fn scrub(&mut self) {
        if let Ok(resp) = self {
            resp.scrub();
        }
    }
}

macro_rules! header_only {
    ($($ty:ty),*) => {
        $(impl Scrub for $ty {
            fn scrub(&mut self) {
                header(&mut self.header);
            }
        })*
    };
}

header_only!(
    PbRangeResponse,
    PbPutResponse,
    PbDeleteResponse,
    PbCompactionResponse,
    PbLeaseGrantResponse,
    PbLeaseRevokeResponse
);

impl Scrub for PbTxnResponse {
    fn scrub(&mut self) {
        header(&mut self.header);
        for op in &mut self.responses {
            match &mut op.response {
                Some(PbTxnOpResponse::ResponseRange(r)) => r.scrub(),
                Some(PbTxnOpResponse::ResponsePut(r)) => r.scrub(),
                Some(PbTxnOpResponse::ResponseDeleteRange(r)) => r.scrub(),
                Some(PbTxnOpResponse::ResponseTxn(r)) => r.scrub(),
                None => {}
            }
        }
    }
}

impl Scrub for PbLeaseTimeToLiveResponse {
    fn scrub(&mut self) {
        header(&mut self.header);
        self.keys.sort();
        if self.ttl >= 1 && self.ttl <= self.granted_ttl {
            self.ttl = 0;
        }
    }
}

impl Scrub for PbLeaseLeasesResponse {
    fn scrub(&mut self) {
        header(&mut self.header);
        self.leases.sort_by_key(|l| l.id);
    }
}
