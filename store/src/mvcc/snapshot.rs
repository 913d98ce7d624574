//! Whole-state snapshots of the state machine: a consistent dump of the `kv`, `lease`
//! and `meta` families (taken from a RocksDB snapshot, so apply never waits for it), and
//! restore, which checks the whole dump before replacing anything.
//!
//! Format: `KVSNAP01`, then records `family (u8) ‖ key length (u32 BE) ‖ key ‖ value
//! length (u32 BE) ‖ value`, then the end marker `0xFF`, then zero padding to a multiple
//! of 512 bytes. (etcdctl's `snapshot save` decides whether a file carries a SHA-256
//! trailer from `(size - 32) % 512 == 0`, as bbolt files are page-aligned; the padding
//! lets it accept ours.)

use super::MvccStore;
use super::encoding::STATE_MACHINE_CFS;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"KVSNAP01";
const END: u8 = 0xFF;
/// Dumps are padded to a multiple of this many bytes.
const ALIGN: u64 = 512;

/// One record of a dump: (family index in `STATE_MACHINE_CFS`, key, value).
pub type Record<'a> = (usize, &'a [u8], &'a [u8]);

/// Checks and splits a dump into its records.
pub fn parse(bytes: &[u8]) -> Result<Vec<Record<'_>>> {
    let corrupt = |what: &str| Error::Corrupt(format!("snapshot: {what}"));
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| corrupt("not a kvstore state snapshot"))?;
    let mut at = 0usize;
    let mut records = Vec::new();
    let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
        let end = at
            .checked_add(n)
            .filter(|e| *e <= rest.len())
            .ok_or_else(|| corrupt("truncated"))?;
        let out = &rest[*at..end];
        *at = end;
        Ok(out)
    };
    loop {
        let cf = take(&mut at, 1)?[0];
        if cf == END {
            if rest[at..].iter().any(|b| *b != 0) {
                return Err(corrupt("bytes after the end marker"));
            }
            return Ok(records);
        }
        let cf = cf as usize;
        if cf >= STATE_MACHINE_CFS.len() {
            return Err(corrupt("unknown column family"));
        }
        let klen = u32::from_be_bytes(take(&mut at, 4)?.try_into().unwrap_or_default()) as usize;
        let key = take(&mut at, klen)?;
        let vlen = u32::from_be_bytes(take(&mut at, 4)?.try_into().unwrap_or_default()) as usize;
        let value = take(&mut at, vlen)?;
        records.push((cf, key, value));
    }
}

/// A value of the `meta` family inside a dump (checks the whole dump first).
pub fn dump_meta(dump: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
    let meta_cf = STATE_MACHINE_CFS
        .iter()
        .position(|n| *n == super::encoding::CF_META)
        .unwrap_or(usize::MAX);
    Ok(parse(dump)?
        .into_iter()
        .find(|(cf, k, _)| *cf == meta_cf && *k == key)
        .map(|(_, _, v)| v.to_vec()))
}

impl MvccStore {
    /// A consistent dump of the state machine, as of the last applied batch.
    pub fn dump(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.dump_streaming(1 << 20, &mut |chunk, _| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    }

    /// Streams a consistent dump in chunks of about `chunk_bytes`, telling `sink` how many
    /// bytes remain after each chunk. Reads from one RocksDB snapshot (twice: once to size
    /// the dump, once to send it), so writers are never blocked.
    pub fn dump_streaming(
        &self,
        chunk_bytes: usize,
        sink: &mut dyn FnMut(&[u8], u64) -> Result<()>,
    ) -> Result<()> {
        let snap = self.db.snapshot();
        let mut total = MAGIC.len() as u64 + 1;
        let padding = |len: u64| (ALIGN - len % ALIGN) % ALIGN;
        for name in STATE_MACHINE_CFS {
            for item in snap.iterator_cf(self.cf(name)?, rocksdb::IteratorMode::Start) {
                let (k, v) = item?;
                total += 9 + k.len() as u64 + v.len() as u64;
            }
        }
        total += padding(total);
        let mut sent = 0u64;
        let mut buf = Vec::with_capacity(chunk_bytes + 1024);
        buf.extend_from_slice(MAGIC);
        for (i, name) in STATE_MACHINE_CFS.iter().enumerate() {
            for item in snap.iterator_cf(self.cf(name)?, rocksdb::IteratorMode::Start) {
                let (k, v) = item?;
                buf.push(i as u8);
                buf.extend_from_slice(&(k.len() as u32).to_be_bytes());
                buf.extend_from_slice(&k);
                buf.extend_from_slice(&(v.len() as u32).to_be_bytes());
                buf.extend_from_slice(&v);
                if buf.len() >= chunk_bytes {
                    sent += buf.len() as u64;
                    sink(&buf, total.saturating_sub(sent))?;
                    buf.clear();
                }
            }
        }
        buf.push(END);
        let unpadded = sent + buf.len() as u64;
        buf.resize(buf.len() + padding(unpadded) as usize, 0);
        sent += buf.len() as u64;
        debug_assert_eq!(sent, total);
        sink(&buf, total.saturating_sub(sent))
    }

    /// etcd's HashKV: a hash of the retained history up to `revision` (0: current), with
    /// the compacted revision and the revision hashed. Members with the same history at
    /// the same revision agree.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64)> {
        let snap = self.db.snapshot();
        let (current, compact) = {
            let state = self.read_state();
            (state.current_rev, state.compact_rev)
        };
        let rev = if revision <= 0 { current } else { revision };
        if rev > current {
            return Err(Error::FutureRevision);
        }
        if rev < compact {
            return Err(Error::Compacted);
        }
        // FNV-1a over every (revision key, entry) up to `rev`, folded to 32 bits.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        mix(&compact.to_be_bytes());
        for item in snap.iterator_cf(
            self.cf(super::encoding::CF_KV)?,
            rocksdb::IteratorMode::Start,
        ) {
            let (k, v) = item?;
            if super::encoding::Revision::from_key(&k)?.main > rev {
                break;
            }
            mix(&k);
            mix(&v);
        }
        Ok(((h ^ (h >> 32)) as u32, compact, rev))
    }

    /// Reclaims disk space after compactions and deletes (etcd's defrag): compacts every
    /// column family's files. RocksDB keeps serving reads and writes meanwhile.
    pub fn defrag(&self) -> Result<()> {
        for name in [
            super::encoding::CF_KV,
            super::encoding::CF_LEASE,
            super::encoding::CF_META,
            super::encoding::CF_RAFT_LOG,
            super::encoding::CF_RAFT_META,
        ] {
            self.db
                .compact_range_cf(self.cf(name)?, None::<&[u8]>, None::<&[u8]>);
        }
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// Writes records into an empty store (a restore into a new data dir) in bounded
    /// batches, then rebuilds the in-memory state. Not atomic: the caller owns the
    /// directory and discards it on failure.
    pub fn load_records<'a>(&self, records: impl Iterator<Item = Record<'a>>) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        for (cf, key, value) in records {
            let name = STATE_MACHINE_CFS
                .get(cf)
                .ok_or_else(|| Error::Corrupt("snapshot: unknown column family".into()))?;
            batch.put_cf(self.cf(name)?, key, value);
            if batch.size_in_bytes() > 16 << 20 {
                self.db.write(std::mem::take(&mut batch))?;
            }
        }
        self.db.write(batch)?;
        self.db.flush_wal(true)?;
        self.load()
    }

    /// Replaces the whole state machine with a dump. The dump is parsed completely first:
    /// a corrupt one is refused and the current state stays as it was.
    pub fn restore(&self, bytes: &[u8]) -> Result<()> {
        let records = parse(bytes)?;
        let _guard = self.write_state();
        let mut batch = rocksdb::WriteBatch::default();
        for name in STATE_MACHINE_CFS {
            let cf = self.cf(name)?;
            for item in self.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
                let (k, _) = item?;
                batch.delete_cf(cf, k);
            }
        }
        for (cf, key, value) in records {
            batch.put_cf(self.cf(STATE_MACHINE_CFS[cf])?, key, value);
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        drop(_guard);
        self.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use etcd_client::proto::PbPutRequest;

    #[test]
    fn dump_and_restore_round_trip_and_corrupt_dumps_change_nothing() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let src = MvccStore::open(a.path()).unwrap();
        let put = |k: &str| {
            Command::Put(PbPutRequest {
                key: k.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })
        };
        src.apply_batch(&[put("a"), put("b")], 2, &[], false, false)
            .unwrap();
        let dump = src.dump().unwrap();

        let dst = MvccStore::open(b.path()).unwrap();
        dst.apply_batch(&[put("old")], 1, &[], false, false)
            .unwrap();
        let mut truncated = dump.clone();
        truncated.truncate(MAGIC.len() + 5);
        assert!(matches!(dst.restore(&truncated), Err(Error::Corrupt(_))));
        assert!(matches!(dst.restore(b"garbage"), Err(Error::Corrupt(_))));
        assert_eq!(
            dst.current_revision(),
            2,
            "a refused dump leaves the state alone"
        );

        dst.restore(&dump).unwrap();
        assert_eq!(dst.current_revision(), 3);
        assert_eq!(dst.applied_index(), 2);
        assert!(dst.get_at(b"old", 3).unwrap().is_none());
        assert_eq!(dst.get_at(b"b", 3).unwrap().unwrap().mod_revision, 3);
    }
}
