//! The seeded generator of a differential run: a random but reproducible sequence of
//! requests over a small key space, covering valid requests and the error cases, steered
//! by what the reference member answered so far (current and compacted revision, live
//! leases).
//!
//! Keys live in four groups `k/a/` … `k/d/` of ten keys each, so a prefix range covers at
//! most ten keys: etcd sorts with Go's unstable sort, which is only stable (and thus
//! deterministic on ties) up to twelve elements, so sorts on a target other than KEY are
//! only generated over a single key or one group.

use std::collections::HashSet;

use etcd_client::proto::{
    PbCompactionRequest, PbCompare, PbCompareTarget, PbDeleteRequest, PbLeaseGrantRequest,
    PbLeaseRevokeRequest, PbLeaseTimeToLiveRequest, PbPutRequest, PbRangeRequest, PbTargetUnion,
    PbTxnOpRequest, PbTxnRequest, PbTxnRequestOp,
};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::ops::{Op, Outcome};

const GROUPS: [&str; 4] = ["a", "b", "c", "d"];
const KEYS_PER_GROUP: usize = 10;
const VALUES: [&str; 8] = ["", "a", "b", "c", "v1", "v2", "zz", "a-longer-value"];
/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes` (1.5 MiB).
const MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// A lease id no request ever grants.
const UNKNOWN_LEASE: i64 = 0x0bad_1ea5e;
/// etcd's maximum lease TTL (`lease.MaxLeaseTTL`).
const MAX_LEASE_TTL: i64 = 9_000_000_000;

// Compare results and sort enums, as on the wire.
const CMP_RESULTS: [i32; 4] = [0, 1, 2, 3]; // EQUAL, GREATER, LESS, NOT_EQUAL
const SORT_ORDERS: [i32; 3] = [0, 1, 2]; // NONE, ASCEND, DESCEND
const SORT_TARGETS: [i32; 5] = [0, 1, 2, 3, 4]; // KEY, VERSION, CREATE, MOD, VALUE

/// Which keys a range-shaped request covers.
#[derive(Clone, Debug)]
enum Span {
    /// One key.
    Key(String),
    /// One group's prefix (at most [`KEYS_PER_GROUP`] keys).
    Group(&'static str),
    /// `[from, to)` between two keys of the key space (possibly reversed: empty).
    Between(String, String),
    /// All keys `>= from`.
    FromKey(String),
    /// Every key (`\0`, `\0`).
    All,
}

impl Span {
    /// Whether at most twelve keys can fall in the span.
    fn is_small(&self) -> bool {
        matches!(self, Span::Key(_) | Span::Group(_))
    }

    fn bounds(&self) -> (Vec<u8>, Vec<u8>) {
        match self {
            Span::Key(k) => (k.clone().into_bytes(), Vec::new()),
            Span::Group(g) => (
                format!("k/{g}/").into_bytes(),
                format!("k/{g}0").into_bytes(),
            ),
            Span::Between(a, b) => (a.clone().into_bytes(), b.clone().into_bytes()),
            Span::FromKey(k) => (k.clone().into_bytes(), vec![0]),
            Span::All => (vec![0], vec![0]),
        }
    }
}

/// Write keys already used in one Txn (so most generated Txns are free of the
/// duplicate-key error; a few are generated without this bookkeeping on purpose).
#[derive(Default)]
struct TxnKeys {
    track: bool,
    puts: HashSet<String>,
    deleted_groups: HashSet<&'static str>,
}

impl TxnKeys {
    fn tracking() -> Self {
        TxnKeys {
            track: true,
            ..Default::default()
        }
    }

    fn may_put(&self, key: &str) -> bool {
        !self.track
            || (!self.puts.contains(key)
                && !self
                    .deleted_groups
                    .iter()
                    .any(|g| key.starts_with(&format!("k/{g}/"))))
    }

    fn may_delete_group(&self, g: &str) -> bool {
        !self.track
            || (!self.deleted_groups.contains(g)
                && !self.puts.iter().any(|k| k.starts_with(&format!("k/{g}/"))))
    }
}

/// The generator state.
pub struct Generator {
    rng: StdRng,
    /// Current revision, as last reported by the reference member.
    revision: i64,
    /// Last successful compaction revision (0 if none).
    compacted: i64,
    /// Leases granted and not revoked.
    leases: Vec<i64>,
    /// Leases revoked.
    revoked: Vec<i64>,
    next_lease: i64,
    /// While set, no deliberately invalid request parts are generated (most Txns are
    /// generated this way, so that most of them apply).
    careful: bool,
}

impl Generator {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            revision: 1,
            compacted: 0,
            leases: Vec::new(),
            revoked: Vec::new(),
            next_lease: 0x1000,
            careful: false,
        }
    }

    /// Last successful compaction revision.
    pub fn compacted(&self) -> i64 {
        self.compacted
    }

    /// The current revision, as last reported by the reference member.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Records what the reference member answered to `op`.
    pub fn observe(&mut self, op: &Op, outcome: &Outcome) {
        if let Some(rev) = outcome.revision() {
            self.revision = rev;
        }
        if outcome.is_err() {
            return;
        }
        match op {
            Op::Compact(c) => self.compacted = c.revision,
            Op::LeaseGrant(g) => self.leases.push(g.id),
            Op::LeaseRevoke(r) => {
                self.leases.retain(|id| *id != r.id);
                self.revoked.push(r.id);
            }
            _ => {}
        }
    }

    /// The next operation; `index` is its position in the run (a few special requests
    /// are placed at fixed positions).
    pub fn next_op(&mut self, index: usize) -> Op {
        match index {
            // An oversize request: above 1.5 MiB (etcd's limit) and below 2 MiB (where
            // gRPC itself would refuse the message).
            100 => return self.big_put(MAX_REQUEST_BYTES + 1024),
            // A large request that is allowed, then removed again.
            200 => return self.big_put(MAX_REQUEST_BYTES - 64 * 1024),
            201 => {
                return Op::Delete(PbDeleteRequest {
                    key: b"j/big".to_vec(),
                    prev_kv: false,
                    ..Default::default()
                });
            }
            _ => {}
        }
        let roll = self.rng.random_range(0..1000);
        match roll {
            0..250 => Op::Range(self.range()),
            250..500 => Op::Put(self.put(&mut TxnKeys::default())),
            500..600 => Op::Delete(self.delete(&mut TxnKeys::default())),
            600..850 => Op::Txn(self.txn(0)),
            850..870 => Op::Compact(self.compact()),
            870..910 => Op::LeaseGrant(self.lease_grant()),
            910..915 => Op::ShortLease(PbLeaseGrantRequest {
                ttl: self.rng.random_range(-1..=1),
                id: self.fresh_lease_id(),
            }),
            915..945 => Op::LeaseRevoke(PbLeaseRevokeRequest {
                id: self.some_lease(),
            }),
            945..975 => Op::LeaseTimeToLive(PbLeaseTimeToLiveRequest {
                id: self.some_lease(),
                keys: self.rng.random_bool(0.5),
            }),
            975..985 => Op::LeaseLeases,
            985..990 => Op::Txn(self.max_ops_txn(false)),
            990..995 => Op::Txn(self.max_ops_txn(true)),
            _ => Op::Txn(self.too_many_compares()),
        }
    }

    /// A Range over every key at `revision`, for the final sweep over history.
    pub fn all_at(revision: i64) -> Op {
        Op::Range(PbRangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        })
    }

    /// `p`, or nothing while generating carefully.
    fn chance(&mut self, p: f64) -> bool {
        !self.careful && self.rng.random_bool(p)
    }

    fn key(&mut self) -> String {
        if self.rng.random_bool(0.02) {
            return "k/e/missing".to_owned();
        }
        let g = GROUPS.choose(&mut self.rng).unwrap();
        format!("k/{g}/{}", self.rng.random_range(0..KEYS_PER_GROUP))
    }

    fn value(&mut self) -> Vec<u8> {
        if self.rng.random_bool(0.2) {
            let len = self.rng.random_range(0..24);
            (0..len)
                .map(|_| self.rng.random_range(b'0'..=b'z'))
                .collect()
        } else {
            VALUES.choose(&mut self.rng).unwrap().as_bytes().to_vec()
        }
    }

    /// A revision around the interesting range: 0 up to a little past the current one.
    fn any_revision(&mut self) -> i64 {
        self.rng.random_range(0..=self.revision + 2)
    }

    fn span(&mut self) -> Span {
        match self.rng.random_range(0..100) {
            0..50 => Span::Key(self.key()),
            50..70 => Span::Group(GROUPS.choose(&mut self.rng).unwrap()),
            70..85 => Span::Between(self.key(), self.key()),
            85..95 => Span::FromKey(self.key()),
            _ => Span::All,
        }
    }

    fn small_span(&mut self) -> Span {
        if self.rng.random_bool(0.5) {
            Span::Key(self.key())
        } else {
            Span::Group(GROUPS.choose(&mut self.rng).unwrap())
        }
    }

    fn range(&mut self) -> PbRangeRequest {
        let mut span = self.span();
        let mut req = PbRangeRequest::default();
        if self.rng.random_bool(0.4) {
            req.sort_order = *SORT_ORDERS.choose(&mut self.rng).unwrap();
            req.sort_target = *SORT_TARGETS.choose(&mut self.rng).unwrap();
            // A non-KEY target sorts (ascending even with order NONE): keep it small.
            if req.sort_target != 0 && !span.is_small() {
                span = self.small_span();
            }
        }
        (req.key, req.range_end) = span.bounds();
        if self.chance(0.01) {
            req.key.clear();
        }
        let compacted_read = self.compacted > 1 && self.chance(0.05);
        let future_read = self.chance(0.05);
        req.revision = if compacted_read {
            self.rng.random_range(1..self.compacted)
        } else if future_read {
            self.revision + self.rng.random_range(1..=3)
        } else if self.rng.random_bool(0.3) {
            self.rng.random_range(self.compacted.max(1)..=self.revision)
        } else {
            0
        };
        if self.rng.random_bool(0.5) {
            req.limit = self.rng.random_range(1..=12);
        }
        req.count_only = self.rng.random_bool(0.1);
        req.keys_only = self.rng.random_bool(0.2);
        req.serializable = self.rng.random_bool(0.2);
        if self.rng.random_bool(0.1) {
            req.min_mod_revision = self.any_revision();
        }
        if self.rng.random_bool(0.1) {
            req.max_mod_revision = self.any_revision();
        }
        if self.rng.random_bool(0.1) {
            req.min_create_revision = self.any_revision();
        }
        if self.rng.random_bool(0.1) {
            req.max_create_revision = self.any_revision();
        }
        req
    }

    fn put(&mut self, keys: &mut TxnKeys) -> PbPutRequest {
        let mut req = PbPutRequest {
            key: self.key().into_bytes(),
            value: self.value(),
            prev_kv: self.rng.random_bool(0.4),
            ..Default::default()
        };
        for _ in 0..20 {
            if keys.may_put(&String::from_utf8_lossy(&req.key)) {
                break;
            }
            req.key = self.key().into_bytes();
        }
        keys.puts
            .insert(String::from_utf8_lossy(&req.key).into_owned());
        let bad_lease = self.chance(0.06);
        req.lease = if bad_lease {
            match self.revoked.choose(&mut self.rng) {
                Some(id) if self.rng.random_bool(0.5) => *id,
                _ => UNKNOWN_LEASE,
            }
        } else if !self.leases.is_empty() && self.rng.random_bool(0.3) {
            *self.leases.choose(&mut self.rng).unwrap()
        } else {
            0
        };
        // ignore_value / ignore_lease fail on a missing key ("key not found") and when
        // a value / lease is given as well.
        if self.chance(0.07) {
            req.ignore_value = true;
            if self.rng.random_bool(0.8) {
                req.value.clear();
            }
        }
        if self.chance(0.07) {
            req.ignore_lease = true;
            if self.rng.random_bool(0.8) {
                req.lease = 0;
            }
        }
        if self.chance(0.01) {
            req.key.clear();
        }
        req
    }

    fn delete(&mut self, keys: &mut TxnKeys) -> PbDeleteRequest {
        let mut span = self.span();
        if keys.track {
            // Inside a Txn: a single unused key, or a group nothing else writes.
            span = match span {
                Span::Group(g) if keys.may_delete_group(g) => Span::Group(g),
                _ => {
                    let mut key = self.key();
                    for _ in 0..20 {
                        if keys.may_put(&key) {
                            break;
                        }
                        key = self.key();
                    }
                    Span::Key(key)
                }
            };
            match &span {
                Span::Key(k) => {
                    keys.puts.insert(k.clone());
                }
                Span::Group(g) => {
                    keys.deleted_groups.insert(*g);
                }
                _ => {}
            }
        }
        if matches!(span, Span::All) && self.rng.random_bool(0.8) {
            // Deleting everything is rare, or little history would be left to compare.
            span = Span::Key(self.key());
        }
        let (mut key, range_end) = span.bounds();
        if self.chance(0.01) {
            key.clear();
        }
        PbDeleteRequest {
            key,
            range_end,
            prev_kv: self.rng.random_bool(0.5),
        }
    }

    fn compare(&mut self) -> PbCompare {
        let target = self.rng.random_range(0..5);
        let union = match target {
            0 => PbTargetUnion::Version(self.rng.random_range(0..4)),
            1 => PbTargetUnion::CreateRevision(self.any_revision()),
            2 => PbTargetUnion::ModRevision(self.any_revision()),
            3 => PbTargetUnion::Value(self.value()),
            _ => PbTargetUnion::Lease(match self.rng.random_range(0..3) {
                0 if !self.leases.is_empty() => *self.leases.choose(&mut self.rng).unwrap(),
                1 => UNKNOWN_LEASE,
                _ => 0,
            }),
        };
        let (key, range_end) = if self.rng.random_bool(0.15) {
            self.span().bounds()
        } else {
            (self.key().into_bytes(), Vec::new())
        };
        let target = [
            PbCompareTarget::Version,
            PbCompareTarget::Create,
            PbCompareTarget::Mod,
            PbCompareTarget::Value,
            PbCompareTarget::Lease,
        ][target as usize] as i32;
        PbCompare {
            result: *CMP_RESULTS.choose(&mut self.rng).unwrap(),
            target,
            key,
            range_end,
            target_union: Some(union),
        }
    }

    fn txn_ops(&mut self, depth: usize, keys: &mut TxnKeys) -> Vec<PbTxnRequestOp> {
        let n = self.rng.random_range(0..=4);
        (0..n)
            .map(|_| {
                let request = match self.rng.random_range(0..100) {
                    0..30 => PbTxnOpRequest::RequestRange(self.range()),
                    30..70 => PbTxnOpRequest::RequestPut(self.put(keys)),
                    70..90 => PbTxnOpRequest::RequestDeleteRange(self.delete(keys)),
                    _ if depth < 2 => PbTxnOpRequest::RequestTxn(self.nested_txn(depth + 1, keys)),
                    _ => PbTxnOpRequest::RequestRange(self.range()),
                };
                PbTxnRequestOp {
                    request: Some(request),
                }
            })
            .collect()
    }

    fn nested_txn(&mut self, depth: usize, keys: &mut TxnKeys) -> PbTxnRequest {
        let n = self.rng.random_range(0..=3);
        PbTxnRequest {
            compare: (0..n).map(|_| self.compare()).collect(),
            success: self.txn_ops(depth, keys),
            failure: self.txn_ops(depth, keys),
        }
    }

    fn txn(&mut self, depth: usize) -> PbTxnRequest {
        // Two Txns in three contain no deliberately invalid part.
        self.careful = self.rng.random_bool(0.67);
        // One Txn in ten skips the bookkeeping and may write a key twice.
        let track = self.rng.random_bool(0.9);
        let fresh = || {
            if track {
                TxnKeys::tracking()
            } else {
                TxnKeys::default()
            }
        };
        let n = self.rng.random_range(0..=3);
        let compare = (0..n).map(|_| self.compare()).collect();
        let success = self.txn_ops(depth, &mut fresh());
        let failure = self.txn_ops(depth, &mut fresh());
        self.careful = false;
        PbTxnRequest {
            compare,
            success,
            failure,
        }
    }

    /// Exactly the maximum number of ops (allowed) or one more (refused).
    fn max_ops_txn(&mut self, too_many: bool) -> PbTxnRequest {
        let n = MAX_TXN_OPS + usize::from(too_many);
        let success = (0..n)
            .map(|i| PbTxnRequestOp {
                request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
                    key: format!("j/{i:03}").into_bytes(),
                    value: self.value(),
                    ..Default::default()
                })),
            })
            .collect();
        let compare = vec![self.compare()];
        PbTxnRequest {
            compare,
            success,
            failure: Vec::new(),
        }
    }

    fn too_many_compares(&mut self) -> PbTxnRequest {
        let n = MAX_TXN_OPS + usize::from(self.rng.random_bool(0.5));
        PbTxnRequest {
            compare: (0..n).map(|_| self.compare()).collect(),
            success: Vec::new(),
            failure: Vec::new(),
        }
    }

    fn compact(&mut self) -> PbCompactionRequest {
        let physical = self.rng.random_bool(0.3);
        let revision = match self.rng.random_range(0..100) {
            0..15 if self.compacted > 0 => self.rng.random_range(1..=self.compacted),
            15..25 => self.revision + self.rng.random_range(1..=3),
            _ if self.revision > self.compacted + 1 => {
                // Keep most of the history readable: compact a little at a time.
                let hi = self
                    .revision
                    .min(self.compacted + 40)
                    .max(self.compacted + 1);
                self.rng.random_range(self.compacted + 1..=hi)
            }
            _ => self.revision + 1,
        };
        PbCompactionRequest { revision, physical }
    }

    fn fresh_lease_id(&mut self) -> i64 {
        self.next_lease += 1;
        self.next_lease
    }

    fn lease_grant(&mut self) -> PbLeaseGrantRequest {
        match self.rng.random_range(0..100) {
            0..5 if !self.leases.is_empty() => PbLeaseGrantRequest {
                ttl: 600,
                id: *self.leases.choose(&mut self.rng).unwrap(),
            },
            5..8 => PbLeaseGrantRequest {
                ttl: MAX_LEASE_TTL + 1,
                id: self.fresh_lease_id(),
            },
            _ => PbLeaseGrantRequest {
                // Long enough never to expire during a run.
                ttl: self.rng.random_range(600..=100_000),
                id: self.fresh_lease_id(),
            },
        }
    }

    fn some_lease(&mut self) -> i64 {
        match self.rng.random_range(0..10) {
            0..7 if !self.leases.is_empty() => *self.leases.choose(&mut self.rng).unwrap(),
            7 if !self.revoked.is_empty() => *self.revoked.choose(&mut self.rng).unwrap(),
            _ => UNKNOWN_LEASE,
        }
    }

    fn big_put(&mut self, size: usize) -> Op {
        Op::Put(PbPutRequest {
            key: b"j/big".to_vec(),
            value: vec![b'x'; size],
            ..Default::default()
        })
    }
}
