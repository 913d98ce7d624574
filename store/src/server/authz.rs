//! Who is calling, and may they do this: the permission checks every KV, Watch and
//! Lease request passes (with auth on) before it is served or proposed. They run on the
//! member that received the request, against its replicated auth store, as etcd's do;
//! a follower forwards a write to the leader only after it passed here, so the caller's
//! identity never has to travel. With auth off (the default) a check is one atomic load.

use etcd_client::proto::{
    PbDeleteRequest, PbPutRequest, PbRangeRequest, PbTxnOpRequest, PbTxnRequest,
};
use tonic::Request;

use super::Node;
use crate::auth::{Access, Caller, KeyRange};
use crate::error::{Error, Result};

/// gRPC metadata key etcd clients send their token in.
const TOKEN_METADATA: &str = "token";

impl Node {
    /// The caller of `req`: `Unrestricted` with auth off; otherwise the user its token
    /// names (an invalid token is refused); without a token, and when client
    /// certificates are required, the common name of the client's certificate (as
    /// etcd); else `Anonymous`.
    pub fn caller<T>(&self, req: &Request<T>) -> Result<Caller> {
        if !self.store.auth_enabled() {
            return Ok(Caller::Unrestricted);
        }
        if let Some(token) = req.metadata().get(TOKEN_METADATA) {
            let token = token.to_str().map_err(|_| Error::InvalidAuthToken)?;
            let auth = self.store.auth();
            return crate::auth::token::verify(&auth, token).map(Caller::User);
        }
        if self.config.client_cert_auth
            && let Some(info) = req.extensions().get::<crate::tls::TlsConnectInfo>()
            && let Some(name) = info.common_name()
        {
            return Ok(Caller::User(name));
        }
        Ok(Caller::Anonymous)
    }

    fn check_keys(
        &self,
        caller: &Caller,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<()> {
        if *caller == Caller::Unrestricted {
            return Ok(());
        }
        self.store
            .auth()
            .check(caller, KeyRange::new(key, range_end), access)
    }

    /// Admin-only operations (auth management, member changes, defrag, snapshots).
    pub fn check_admin(&self, caller: &Caller) -> Result<()> {
        if *caller == Caller::Unrestricted {
            return Ok(());
        }
        self.store.auth().check_admin(caller)
    }

    /// Any authenticated user (lease grants and keep-alives, compaction).
    pub fn check_authenticated(&self, caller: &Caller) -> Result<()> {
        match caller {
            Caller::Anonymous => Err(Error::UserEmpty),
            _ => Ok(()),
        }
    }

    pub fn check_range(&self, caller: &Caller, r: &PbRangeRequest) -> Result<()> {
        self.check_keys(caller, &r.key, &r.range_end, Access::Read)
    }

    pub fn check_watch(&self, caller: &Caller, key: &[u8], range_end: &[u8]) -> Result<()> {
        self.check_keys(caller, key, range_end, Access::Read)
    }

    /// Write on the key; read too when the previous value is returned; and write on
    /// every key of the lease it attaches to (etcd's checkLeasePuts).
    pub fn check_put(&self, caller: &Caller, r: &PbPutRequest) -> Result<()> {
        self.check_keys(caller, &r.key, &[], Access::Write)?;
        if r.prev_kv {
            self.check_keys(caller, &r.key, &[], Access::Read)?;
        }
        if r.lease != 0 {
            self.check_lease_keys(caller, r.lease)?;
        }
        Ok(())
    }

    pub fn check_delete(&self, caller: &Caller, r: &PbDeleteRequest) -> Result<()> {
        self.check_keys(caller, &r.key, &r.range_end, Access::Write)?;
        if r.prev_kv {
            self.check_keys(caller, &r.key, &r.range_end, Access::Read)?;
        }
        Ok(())
    }

    /// Every compare needs read, every operation of both branches its own permission.
    pub fn check_txn(&self, caller: &Caller, t: &PbTxnRequest) -> Result<()> {
        if *caller == Caller::Unrestricted {
            return Ok(());
        }
        for c in &t.compare {
            self.check_keys(caller, &c.key, &c.range_end, Access::Read)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => self.check_range(caller, r)?,
                Some(PbTxnOpRequest::RequestPut(r)) => self.check_put(caller, r)?,
                Some(PbTxnOpRequest::RequestDeleteRange(r)) => self.check_delete(caller, r)?,
                Some(PbTxnOpRequest::RequestTxn(n)) => self.check_txn(caller, n)?,
                None => {}
            }
        }
        Ok(())
    }

    /// Write permission on every key attached to `lease` (revoking or attaching to a
    /// lease may delete those keys).
    pub fn check_lease_keys(&self, caller: &Caller, lease: i64) -> Result<()> {
        if *caller == Caller::Unrestricted {
            return Ok(());
        }
        self.check_authenticated(caller)?;
        if let Some(l) = self.store.lease(lease) {
            for key in &l.keys {
                self.check_keys(caller, key, &[], Access::Write)?;
            }
        }
        Ok(())
    }
}
