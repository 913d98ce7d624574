//! Applying commands: the only code that changes the store. Deterministic: the outcome
//! depends on the command and the state alone. Every request is validated before it
//! changes anything, so a failed command leaves no trace; all effects of a batch, with the
//! log position of its last command, go to RocksDB in one atomic write.

use std::collections::{BTreeSet, HashMap};

use etcd_client::proto::{
    PbAlarmMember, PbAlarmRequest, PbAlarmResponse, PbCompactionRequest, PbCompactionResponse,
    PbCompare, PbDeleteRequest, PbDeleteResponse, PbEvent, PbKeyValue, PbLeaseGrantRequest,
    PbLeaseGrantResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse, PbPutRequest, PbPutResponse,
    PbRangeRequest, PbResponseHeader, PbResponseOp, PbTargetUnion, PbTxnOpRequest, PbTxnOpResponse,
    PbTxnRequest, PbTxnResponse,
};
use prost::Message;
use rocksdb::WriteBatch;

use super::encoding::*;
use super::read::{EVENT_DELETE, EVENT_PUT, range_with, resolve_revision, visible_revisions};
use super::{LeaseState, MvccStore, State};
use crate::command::{Command, CommandResult};
use crate::error::{Error, Result};

/// What applying one command produced: the answer for the client and the events for the
/// watch hub (all of one revision).
#[derive(Debug)]
pub struct ApplyOutput {
    pub result: Result<CommandResult>,
    pub events: Vec<PbEvent>,
    /// Revision after the command (equal to the one before if it changed nothing).
    pub revision: i64,
}

// rpc.proto Compare.CompareResult / CompareTarget.
const CMP_EQUAL: i32 = 0;
const CMP_GREATER: i32 = 1;
const CMP_LESS: i32 = 2;
const CMP_NOT_EQUAL: i32 = 3;
const TARGET_VERSION: i32 = 0;
const TARGET_CREATE: i32 = 1;
const TARGET_MOD: i32 = 2;
const TARGET_VALUE: i32 = 3;
const TARGET_LEASE: i32 = 4;
// rpc.proto AlarmRequest.AlarmAction / AlarmType.
const ALARM_ACTIVATE: i32 = 1;
const ALARM_DEACTIVATE: i32 = 2;
pub const ALARM_NOSPACE: i32 = 1;

impl MvccStore {
    /// Applies `cmds` in order and writes their effects, `applied_index` and `extra_meta`
    /// (the Raft layer's applied log id and membership) in one atomic RocksDB write
    /// (fsynced when `sync`). An `Err` means storage failed and the member must stop; a
    /// command's own failure is in its [`ApplyOutput::result`].
    pub fn apply_batch(
        &self,
        cmds: &[Command],
        applied_index: u64,
        extra_meta: &[(&[u8], Vec<u8>)],
        want_prev_kv: bool,
        sync: bool,
    ) -> Result<Vec<ApplyOutput>> {
        let mut state = self.write_state();
        let mut batch = WriteBatch::default();
        let mut pending = HashMap::new();
        let mut outs = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            let mut ctx = Ctx {
                store: self,
                state: &mut state,
                batch: &mut batch,
                pending: &mut pending,
                want_prev_kv,
                main: 0,
                sub: 0,
                events: Vec::new(),
            };
            ctx.main = ctx.state.current_rev + 1;
            let result = ctx.apply(cmd);
            let events = std::mem::take(&mut ctx.events);
            if ctx.sub > 0 {
                ctx.state.current_rev = ctx.main;
            }
            outs.push(ApplyOutput {
                result,
                events,
                revision: state.current_rev,
            });
        }
        state.applied_index = applied_index;
        let meta = self.cf(CF_META)?;
        batch.put_cf(meta, META_CURRENT_REV, encode_i64(state.current_rev));
        for (key, value) in extra_meta {
            batch.put_cf(meta, key, value);
        }
        batch.put_cf(
            meta,
            META_APPLIED_INDEX,
            encode_i64(state.applied_index as i64),
        );
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(sync);
        if crate::failpoint::enabled(crate::failpoint::NO_DURABILITY) {
            wo.disable_wal(true);
        }
        self.db.write_opt(batch, &wo)?;
        Ok(outs)
    }
}

/// The apply context of one command within a batch.
struct Ctx<'a> {
    store: &'a MvccStore,
    state: &'a mut State,
    batch: &'a mut WriteBatch,
    /// Entries written earlier in this batch, not yet readable from RocksDB.
    pending: &'a mut HashMap<Revision, PbKeyValue>,
    want_prev_kv: bool,
    /// The revision this command writes at (current + 1).
    main: i64,
    /// Changes made so far by this command; > 0 means the revision is consumed.
    sub: i64,
    events: Vec<PbEvent>,
}

fn header(revision: i64) -> Option<PbResponseHeader> {
    Some(PbResponseHeader {
        revision,
        ..Default::default()
    })
}

impl<'a> Ctx<'a> {
    fn apply(&mut self, cmd: &Command) -> Result<CommandResult> {
        // With NOSPACE raised, only what frees space or reads goes through (etcd's capped
        // applier): puts, Txns that put, and lease grants are refused.
        let capped = self.state.alarms.iter().any(|(_, a)| *a == ALARM_NOSPACE);
        if capped {
            let grows = match cmd {
                Command::Put(_) | Command::LeaseGrant(_) => true,
                Command::Txn(t) => crate::command::txn_puts(t),
                _ => false,
            };
            if grows {
                return Err(Error::NoSpace);
            }
        }
        match cmd {
            Command::Alarm(req) => Ok(CommandResult::Alarm(self.alarm(req)?)),
            Command::Put(req) => {
                self.check_put(req, false)?;
                let resp = self.put(req)?;
                Ok(CommandResult::Put(resp))
            }
            Command::DeleteRange(req) => Ok(CommandResult::DeleteRange(self.delete_range(req)?)),
            Command::Txn(req) => Ok(CommandResult::Txn(self.txn(req)?)),
            Command::Compact(req) => Ok(CommandResult::Compact(self.compact(req)?)),
            Command::LeaseGrant(req) => Ok(CommandResult::LeaseGrant(self.lease_grant(req)?)),
            Command::LeaseRevoke(req) => Ok(CommandResult::LeaseRevoke(self.lease_revoke(req)?)),
            Command::Auth(c) => {
                self.auth(c)?;
                Ok(CommandResult::Auth)
            }
        }
    }

    /// Applies an auth change and writes the whole (small) auth state into the batch.
    fn auth(&mut self, cmd: &crate::auth::AuthCommand) -> Result<()> {
        let mut auth = self.store.auth_write();
        auth.apply(cmd)?;
        self.batch
            .put_cf(self.cf(CF_META)?, crate::auth::META_AUTH, auth.encode()?);
        self.store.set_auth_enabled(auth.enabled);
        Ok(())
    }

    fn fetch(&self, rev: Revision) -> Result<PbKeyValue> {
        match self.pending.get(&rev) {
            Some(kv) => Ok(kv.clone()),
            None => self.store.fetch(rev),
        }
    }

    /// The current revision as this command sees it (its own, once it has written).
    fn view_rev(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.state.current_rev
        }
    }

    fn live_kv(&self, key: &[u8]) -> Result<Option<PbKeyValue>> {
        match self.state.index.get(key).and_then(|h| h.live()) {
            Some(r) => Ok(Some(self.fetch(r)?)),
            None => Ok(None),
        }
    }

    fn next_revision(&mut self) -> Revision {
        let rev = Revision {
            main: self.main,
            sub: self.sub,
        };
        self.sub += 1;
        rev
    }

    fn cf(&self, name: &str) -> Result<&'a rocksdb::ColumnFamily> {
        let store: &'a MvccStore = self.store;
        store.cf(name)
    }

    /// The checks etcd makes before a put changes anything. A top-level put checks its
    /// lease first; a put inside a Txn checks ignore_value/ignore_lease first (etcd's
    /// `checkRequestPut`), so the order differs and clients see the same error as etcd.
    fn check_put(&self, req: &PbPutRequest, in_txn: bool) -> Result<()> {
        let lease_missing = req.lease != 0 && !self.state.leases.contains_key(&req.lease);
        let key_missing = (req.ignore_value || req.ignore_lease)
            && self
                .state
                .index
                .get(&req.key)
                .and_then(|h| h.live())
                .is_none();
        match (in_txn, lease_missing, key_missing) {
            (false, true, _) | (true, true, false) => Err(Error::LeaseNotFound),
            (_, _, true) => Err(Error::KeyNotFound),
            _ => Ok(()),
        }
    }

    fn put(&mut self, req: &PbPutRequest) -> Result<PbPutResponse> {
        let prev = if req.prev_kv || req.ignore_value || req.ignore_lease || self.want_prev_kv {
            self.live_kv(&req.key)?
        } else {
            None
        };
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let rev = self.next_revision();
        let hist = self.state.index.entry(req.key.clone()).or_default();
        let old_lease = hist.live().map(|_| hist.lease).unwrap_or(0);
        let (create_revision, version) = match hist.live() {
            Some(_) => (hist.create_revision, hist.version + 1),
            None => (rev.main, 1),
        };
        hist.revs.push((rev, false));
        hist.create_revision = create_revision;
        hist.version = version;
        hist.lease = lease;
        let kv = PbKeyValue {
            key: req.key.clone(),
            create_revision,
            mod_revision: rev.main,
            version,
            value,
            lease,
        };
        self.state.detach(old_lease, &req.key);
        self.state.attach(lease, &req.key);
        self.batch
            .put_cf(self.cf(CF_KV)?, rev.to_key(), encode_entry(&kv, false));
        self.pending.insert(rev, kv.clone());
        self.events.push(PbEvent {
            r#type: EVENT_PUT,
            kv: Some(kv),
            prev_kv: prev.clone(),
        });
        Ok(PbPutResponse {
            header: header(rev.main),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn delete_range(&mut self, req: &PbDeleteRequest) -> Result<PbDeleteResponse> {
        let revs = visible_revisions(self.state, &req.key, &req.range_end, self.view_rev());
        let mut prev_kvs = Vec::new();
        for r in revs.iter().copied() {
            let old = self.fetch(r)?;
            let rev = self.next_revision();
            let key = old.key.clone();
            if let Some(hist) = self.state.index.get_mut(&key) {
                hist.revs.push((rev, true));
                let lease = std::mem::take(&mut hist.lease);
                self.state.detach(lease, &key);
            }
            let tomb = PbKeyValue {
                key,
                mod_revision: rev.main,
                ..Default::default()
            };
            self.batch
                .put_cf(self.cf(CF_KV)?, rev.to_key(), encode_entry(&tomb, true));
            self.pending.insert(rev, tomb.clone());
            self.events.push(PbEvent {
                r#type: EVENT_DELETE,
                kv: Some(tomb),
                prev_kv: if self.want_prev_kv {
                    Some(old.clone())
                } else {
                    None
                },
            });
            if req.prev_kv {
                prev_kvs.push(old);
            }
        }
        Ok(PbDeleteResponse {
            header: header(self.view_rev()),
            deleted: revs.len() as i64,
            prev_kvs,
        })
    }

    fn range(&self, req: &PbRangeRequest) -> Result<etcd_client::proto::PbRangeResponse> {
        range_with(self.state, &|r| self.fetch(r), req, self.view_rev())
    }

    fn compare(&self, cmp: &PbCompare) -> Result<bool> {
        let revs = visible_revisions(self.state, &cmp.key, &cmp.range_end, self.state.current_rev);
        if revs.is_empty() {
            if cmp.target == TARGET_VALUE {
                // etcd: a value compare on a missing key always fails.
                return Ok(false);
            }
            return Ok(compare_kv(cmp, &PbKeyValue::default()));
        }
        for r in revs {
            if !compare_kv(cmp, &self.fetch(r)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Evaluates every compare on the path the Txn will take, before anything is written
    /// (etcd evaluates nested Txn compares against the state at the start of the Txn).
    fn txn_path(&self, req: &PbTxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let mut ok = true;
        for c in &req.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        let ops = if ok { &req.success } else { &req.failure };
        for op in ops {
            if let Some(PbTxnOpRequest::RequestTxn(nested)) = &op.request {
                self.txn_path(nested, path)?;
            }
        }
        Ok(())
    }

    /// Checks every request on the chosen path so that a Txn fails before it writes
    /// anything: all puts first (lease and ignore_* rules), then all ranges (revision
    /// bounds), as etcd orders them.
    fn check_path(
        &self,
        req: &PbTxnRequest,
        path: &[bool],
        at: &mut usize,
        puts: bool,
    ) -> Result<()> {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        let ops = if ok { &req.success } else { &req.failure };
        for op in ops {
            match &op.request {
                Some(PbTxnOpRequest::RequestPut(p)) if puts => self.check_put(p, true)?,
                Some(PbTxnOpRequest::RequestRange(r)) if !puts && r.revision != 0 => {
                    resolve_revision(self.state, r.revision, self.state.current_rev)?;
                }
                Some(PbTxnOpRequest::RequestTxn(nested)) => {
                    self.check_path(nested, path, at, puts)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn exec_txn(
        &mut self,
        req: &PbTxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> Result<PbTxnResponse> {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        let ops = if ok { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => {
                    Some(PbTxnOpResponse::ResponseRange(self.range(r)?))
                }
                Some(PbTxnOpRequest::RequestPut(p)) => {
                    Some(PbTxnOpResponse::ResponsePut(self.put(p)?))
                }
                Some(PbTxnOpRequest::RequestDeleteRange(d)) => {
                    Some(PbTxnOpResponse::ResponseDeleteRange(self.delete_range(d)?))
                }
                Some(PbTxnOpRequest::RequestTxn(t)) => {
                    let mut nested = self.exec_txn(t, path, at)?;
                    nested.header = Some(PbResponseHeader::default());
                    Some(PbTxnOpResponse::ResponseTxn(nested))
                }
                None => None,
            };
            responses.push(PbResponseOp { response });
        }
        Ok(PbTxnResponse {
            header: header(self.view_rev()),
            succeeded: ok,
            responses,
        })
    }

    fn txn(&mut self, req: &PbTxnRequest) -> Result<PbTxnResponse> {
        let mut path = Vec::new();
        self.txn_path(req, &mut path)?;
        self.check_path(req, &path, &mut 0, true)?;
        self.check_path(req, &path, &mut 0, false)?;
        self.exec_txn(req, &path, &mut 0)
    }

    fn compact(&mut self, req: &PbCompactionRequest) -> Result<PbCompactionResponse> {
        if req.revision <= self.state.compact_rev {
            return Err(Error::Compacted);
        }
        if req.revision > self.state.current_rev {
            return Err(Error::FutureRevision);
        }
        let cf_kv = self.cf(CF_KV)?;
        let mut emptied = Vec::new();
        for (key, hist) in self.state.index.iter_mut() {
            for r in hist.compact(req.revision) {
                self.batch.delete_cf(cf_kv, r.to_key());
                self.pending.remove(&r);
            }
            if hist.revs.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.state.index.remove(&key);
        }
        self.state.compact_rev = req.revision;
        self.batch.put_cf(
            self.cf(CF_META)?,
            META_COMPACT_REV,
            encode_i64(req.revision),
        );
        Ok(PbCompactionResponse {
            header: header(self.state.current_rev),
        })
    }

    fn alarm(&mut self, req: &PbAlarmRequest) -> Result<PbAlarmResponse> {
        let mut changed = Vec::new();
        match req.action {
            ALARM_ACTIVATE
                if req.alarm != 0 && self.state.alarms.insert((req.member_id, req.alarm)) =>
            {
                changed.push((req.member_id, req.alarm));
            }
            ALARM_DEACTIVATE => {
                // Alarm type NONE (0) clears every alarm of the member, or of all members
                // when the member ID is 0 too.
                let doomed: Vec<(u64, i32)> = self
                    .state
                    .alarms
                    .iter()
                    .copied()
                    .filter(|(m, a)| {
                        (req.member_id == 0 || *m == req.member_id)
                            && (req.alarm == 0 || *a == req.alarm)
                    })
                    .collect();
                for a in doomed {
                    self.state.alarms.remove(&a);
                    changed.push(a);
                }
            }
            _ => {}
        }
        let encoded: Vec<u8> = self
            .state
            .alarms
            .iter()
            .flat_map(|(m, a)| m.to_be_bytes().into_iter().chain(a.to_be_bytes()))
            .collect();
        self.batch.put_cf(self.cf(CF_META)?, META_ALARMS, encoded);
        Ok(PbAlarmResponse {
            header: header(self.state.current_rev),
            alarms: changed
                .into_iter()
                .map(|(member_id, alarm)| PbAlarmMember { member_id, alarm })
                .collect(),
        })
    }

    fn lease_grant(&mut self, req: &PbLeaseGrantRequest) -> Result<PbLeaseGrantResponse> {
        if self.state.leases.contains_key(&req.id) {
            return Err(Error::LeaseExists);
        }
        self.state.leases.insert(
            req.id,
            LeaseState {
                ttl_s: req.ttl,
                keys: BTreeSet::new(),
            },
        );
        self.batch.put_cf(
            self.cf(CF_LEASE)?,
            encode_i64(req.id),
            PbLeaseGrantRequest {
                ttl: req.ttl,
                id: req.id,
            }
            .encode_to_vec(),
        );
        Ok(PbLeaseGrantResponse {
            header: header(self.state.current_rev),
            id: req.id,
            ttl: req.ttl,
            error: String::new(),
        })
    }

    fn lease_revoke(&mut self, req: &PbLeaseRevokeRequest) -> Result<PbLeaseRevokeResponse> {
        let lease = self
            .state
            .leases
            .get(&req.id)
            .cloned()
            .ok_or(Error::LeaseNotFound)?;
        // Keys go in key order, all in this command's one revision.
        for key in &lease.keys {
            self.delete_range(&PbDeleteRequest {
                key: key.clone(),
                ..Default::default()
            })?;
        }
        self.state.leases.remove(&req.id);
        self.batch.delete_cf(self.cf(CF_LEASE)?, encode_i64(req.id));
        Ok(PbLeaseRevokeResponse {
            header: header(self.view_rev()),
        })
    }
}

/// etcd's compareKV: the chosen field of `kv` against the compare's operand.
fn compare_kv(cmp: &PbCompare, kv: &PbKeyValue) -> bool {
    use std::cmp::Ordering;
    let ord = match (cmp.target, &cmp.target_union) {
        (TARGET_VALUE, Some(PbTargetUnion::Value(v))) => kv.value.as_slice().cmp(v.as_slice()),
        (TARGET_VALUE, _) => kv.value.as_slice().cmp(&[][..]),
        (TARGET_VERSION, u) => kv.version.cmp(&int_operand(u)),
        (TARGET_CREATE, u) => kv.create_revision.cmp(&int_operand(u)),
        (TARGET_MOD, u) => kv.mod_revision.cmp(&int_operand(u)),
        (TARGET_LEASE, u) => kv.lease.cmp(&int_operand(u)),
        _ => return false,
    };
    match cmp.result {
        CMP_EQUAL => ord == Ordering::Equal,
        CMP_NOT_EQUAL => ord != Ordering::Equal,
        CMP_GREATER => ord == Ordering::Greater,
        CMP_LESS => ord == Ordering::Less,
        _ => false,
    }
}

fn int_operand(u: &Option<PbTargetUnion>) -> i64 {
    match u {
        Some(PbTargetUnion::Version(v))
        | Some(PbTargetUnion::CreateRevision(v))
        | Some(PbTargetUnion::ModRevision(v))
        | Some(PbTargetUnion::Lease(v)) => *v,
        _ => 0,
    }
}
