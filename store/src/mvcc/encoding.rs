//! On-disk layout of the MVCC store (RocksDB column families) and its key encodings.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `kv` | revision: main (8 bytes BE) ‖ sub (8 bytes BE) | kind byte (`0` put, `1` tombstone) ‖ protobuf `mvccpb.KeyValue` |
//! | `lease` | lease ID (8 bytes BE, two's complement) | protobuf `LeaseGrantRequest` {ID, TTL} |
//! | `meta` | ASCII name | big-endian integer, or bytes owned by the Raft layer |
//! | `raft_log`, `raft_meta` | see `raft::log_store` | |
//!
//! Revision keys sort in revision order, so a watch catching up reads history with one
//! forward scan. The key → revisions index is not stored: it is rebuilt in memory at start
//! from the `kv` family (as etcd rebuilds its tree index from bbolt).

use etcd_client::proto::PbKeyValue;
use prost::Message;

use crate::error::{Error, Result};

pub const CF_KV: &str = "kv";
pub const CF_LEASE: &str = "lease";
pub const CF_META: &str = "meta";
/// Raft's log (index → entry) and Raft's own metadata (vote, purge point); written by
/// `raft::log_store`, which shares this RocksDB instance so one WAL orders everything.
pub const CF_RAFT_LOG: &str = "raft_log";
pub const CF_RAFT_META: &str = "raft_meta";
/// The families that make up the state machine (what a snapshot carries).
pub const STATE_MACHINE_CFS: [&str; 3] = [CF_KV, CF_LEASE, CF_META];

/// Revision of the last applied write request.
pub const META_CURRENT_REV: &[u8] = b"current_rev";
/// Revision below which history is gone.
pub const META_COMPACT_REV: &[u8] = b"compact_rev";
/// Log index of the last applied entry, written in the same batch as its effects.
pub const META_APPLIED_INDEX: &[u8] = b"applied_index";
/// Opaque to this module: the Raft layer stores its applied log id and membership here,
/// in the same batch as the effects (see `MvccStore::apply_batch`'s `extra_meta`).
pub const META_RAFT_APPLIED: &[u8] = b"raft_applied";
/// Active alarms: 12-byte entries, member ID (u64 BE) ‖ alarm type (i32 BE).
pub const META_ALARMS: &[u8] = b"alarms";
pub const META_RAFT_MEMBERSHIP: &[u8] = b"raft_membership";

/// A point in the store's history: `main` is the write request's revision, `sub` orders
/// the changes made by one request (a Txn with three puts has subs 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub fn to_key(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.main.to_be_bytes());
        out[8..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    pub fn from_key(key: &[u8]) -> Result<Revision> {
        let bytes: [u8; 16] = key
            .try_into()
            .map_err(|_| Error::Corrupt(format!("revision key of {} bytes", key.len())))?;
        let (main, sub) = bytes.split_at(8);
        Ok(Revision {
            main: i64::from_be_bytes(main.try_into().unwrap_or_default()),
            sub: i64::from_be_bytes(sub.try_into().unwrap_or_default()),
        })
    }
}

const KIND_PUT: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;

/// Encodes one history entry of the `kv` family.
pub fn encode_entry(kv: &PbKeyValue, tombstone: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(kv.encoded_len() + 1);
    out.push(if tombstone { KIND_TOMBSTONE } else { KIND_PUT });
    // Encoding into a Vec cannot fail: it grows as needed.
    kv.encode(&mut out).unwrap_or_default();
    out
}

/// Decodes one history entry: the key-value and whether it is a tombstone.
pub fn decode_entry(bytes: &[u8]) -> Result<(PbKeyValue, bool)> {
    let (&kind, body) = bytes
        .split_first()
        .ok_or_else(|| Error::Corrupt("empty history entry".into()))?;
    let tombstone = match kind {
        KIND_PUT => false,
        KIND_TOMBSTONE => true,
        other => return Err(Error::Corrupt(format!("unknown entry kind {other}"))),
    };
    Ok((PbKeyValue::decode(body)?, tombstone))
}

pub fn encode_i64(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

pub fn decode_i64(bytes: &[u8]) -> Result<i64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt(format!("integer of {} bytes", bytes.len())))?;
    Ok(i64::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys_sort_in_revision_order() {
        let a = Revision { main: 2, sub: 9 }.to_key();
        let b = Revision { main: 10, sub: 0 }.to_key();
        assert!(a < b);
        assert_eq!(
            Revision::from_key(&b).unwrap(),
            Revision { main: 10, sub: 0 }
        );
        assert!(Revision::from_key(b"short").is_err());
    }

    #[test]
    fn entries_round_trip_and_reject_garbage() {
        let kv = PbKeyValue {
            key: b"a".to_vec(),
            value: b"b".to_vec(),
            create_revision: 3,
            mod_revision: 4,
            version: 2,
            lease: 0,
        };
        let (back, tomb) = decode_entry(&encode_entry(&kv, true)).unwrap();
        assert_eq!(back, kv);
        assert!(tomb);
        assert!(decode_entry(&[]).is_err());
        assert!(decode_entry(&[7]).is_err());
    }
}
