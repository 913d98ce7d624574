//! The MVCC state machine on RocksDB: one global revision, per-key history with
//! create/mod revisions and versions, tombstones, historical reads, compaction and the
//! lease table. Writes come only through [`MvccStore::apply_batch`] (see `apply.rs`), one
//! command at a time in log order; reads take a shared lock and never block each other.

mod apply;
pub mod encoding;
mod index;
mod read;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use etcd_client::proto::{PbKeyValue, PbLeaseGrantRequest};
use prost::Message;
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options};

pub use apply::ApplyOutput;
pub use encoding::Revision;
use encoding::*;
pub use index::KeyHistory;
pub use read::{EVENT_DELETE, EVENT_PUT, in_range};
pub use snapshot::dump_meta;

use crate::auth::{AuthState, META_AUTH};
use crate::error::{Error, Result};

/// A lease as the state machine knows it: its granted TTL and the keys attached to it.
/// When it expires is not state-machine state (it depends on clocks); see `lease.rs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseState {
    pub ttl_s: i64,
    pub keys: BTreeSet<Vec<u8>>,
}

/// Everything apply reads and changes, guarded by one lock.
#[derive(Debug, Default)]
pub struct State {
    pub index: BTreeMap<Vec<u8>, KeyHistory>,
    pub current_rev: i64,
    pub compact_rev: i64,
    pub applied_index: u64,
    pub leases: BTreeMap<i64, LeaseState>,
    /// Active alarms: (member ID, alarm type as in etcd's AlarmType).
    pub alarms: BTreeSet<(u64, i32)>,
}

impl State {
    /// Detaches `key` from `lease` (no-op for lease 0 or an unknown lease).
    fn detach(&mut self, lease: i64, key: &[u8]) {
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.remove(key);
        }
    }

    /// Attaches `key` to `lease` (no-op for lease 0 or an unknown lease).
    fn attach(&mut self, lease: i64, key: &[u8]) {
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.to_vec());
        }
    }
}

/// The store: RocksDB plus the in-memory index and lease table rebuilt from it.
pub struct MvccStore {
    db: Arc<DB>,
    path: PathBuf,
    state: RwLock<State>,
    /// Users, roles and the auth switch (see `crate::auth`); its own lock, so permission
    /// checks never wait for the key index.
    auth: RwLock<AuthState>,
    /// `auth.enabled`, readable without a lock: with auth off (the default) the request
    /// path pays one atomic load.
    auth_enabled: AtomicBool,
}

impl MvccStore {
    /// Opens (or creates) the store in `dir` and rebuilds the index from disk.
    pub fn open(dir: &Path) -> Result<MvccStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Storage(format!("{}: {e}", dir.display())))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [CF_KV, CF_LEASE, CF_META, CF_RAFT_LOG, CF_RAFT_META]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?);
        let store = MvccStore {
            db,
            path: dir.to_path_buf(),
            state: RwLock::new(State::default()),
            auth: RwLock::new(AuthState::default()),
            auth_enabled: AtomicBool::new(false),
        };
        store.load()?;
        Ok(store)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::Storage(format!("column family {name} missing")))
    }

    fn meta_i64(&self, key: &[u8]) -> Result<Option<i64>> {
        match self.db.get_cf(self.cf(CF_META)?, key)? {
            Some(v) => Ok(Some(decode_i64(&v)?)),
            None => Ok(None),
        }
    }

    /// The RocksDB instance, shared with the Raft log store (one WAL for both).
    pub fn db(&self) -> Arc<DB> {
        self.db.clone()
    }

    /// A value of the `meta` family, as written through `apply_batch`'s `extra_meta`.
    pub fn meta_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_META)?, key)?)
    }

    /// Reads meta, the history and the leases back into memory.
    fn load(&self) -> Result<()> {
        let mut state = State {
            current_rev: self.meta_i64(META_CURRENT_REV)?.unwrap_or(1),
            compact_rev: self.meta_i64(META_COMPACT_REV)?.unwrap_or(0),
            applied_index: self.meta_i64(META_APPLIED_INDEX)?.unwrap_or(0) as u64,
            ..Default::default()
        };
        if let Some(bytes) = self.db.get_cf(self.cf(CF_META)?, META_ALARMS)? {
            for entry in bytes.chunks(12) {
                let (member, alarm) = entry.split_at(8.min(entry.len()));
                let member = u64::from_be_bytes(
                    member
                        .try_into()
                        .map_err(|_| Error::Corrupt("alarm entry".into()))?,
                );
                let alarm = i32::from_be_bytes(
                    alarm
                        .try_into()
                        .map_err(|_| Error::Corrupt("alarm entry".into()))?,
                );
                state.alarms.insert((member, alarm));
            }
        }
        for item in self.db.iterator_cf(self.cf(CF_KV)?, IteratorMode::Start) {
            let (k, v) = item?;
            let rev = Revision::from_key(&k)?;
            let (kv, tombstone) = decode_entry(&v)?;
            let hist = state.index.entry(kv.key).or_default();
            hist.revs.push((rev, tombstone));
            if !tombstone {
                hist.create_revision = kv.create_revision;
                hist.version = kv.version;
                hist.lease = kv.lease;
            }
        }
        for item in self.db.iterator_cf(self.cf(CF_LEASE)?, IteratorMode::Start) {
            let (_, v) = item?;
            let grant = PbLeaseGrantRequest::decode(&*v)?;
            state.leases.insert(
                grant.id,
                LeaseState {
                    ttl_s: grant.ttl,
                    keys: BTreeSet::new(),
                },
            );
        }
        for (key, hist) in &state.index {
            if hist.live().is_some()
                && let Some(lease) = state.leases.get_mut(&hist.lease)
            {
                lease.keys.insert(key.clone());
            }
        }
        let auth = match self.db.get_cf(self.cf(CF_META)?, META_AUTH)? {
            Some(bytes) => AuthState::decode(&bytes)?,
            None => AuthState::default(),
        };
        let mut guard = self.write_state();
        self.auth_enabled.store(auth.enabled, Ordering::Release);
        *self.auth_write() = auth;
        *guard = state;
        Ok(())
    }

    /// The auth store, for permission checks and the Auth service (read only: it
    /// changes only through apply).
    pub fn auth(&self) -> RwLockReadGuard<'_, AuthState> {
        self.auth.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn auth_write(&self) -> RwLockWriteGuard<'_, AuthState> {
        self.auth.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether auth is enabled (one atomic load).
    pub fn auth_enabled(&self) -> bool {
        self.auth_enabled.load(Ordering::Acquire)
    }

    pub(crate) fn set_auth_enabled(&self, enabled: bool) {
        self.auth_enabled.store(enabled, Ordering::Release);
    }

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock is a bug that already stopped the apply loop;
        // readers can still read the last consistent state.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetches the history entry stored at `rev`.
    fn fetch(&self, rev: Revision) -> Result<PbKeyValue> {
        match self.db.get_cf(self.cf(CF_KV)?, rev.to_key())? {
            Some(bytes) => Ok(decode_entry(&bytes)?.0),
            None => Err(Error::Corrupt(format!(
                "revision {rev:?} is indexed but missing"
            ))),
        }
    }

    pub fn current_revision(&self) -> i64 {
        self.read_state().current_rev
    }

    pub fn compact_revision(&self) -> i64 {
        self.read_state().compact_rev
    }

    pub fn applied_index(&self) -> u64 {
        self.read_state().applied_index
    }

    /// The granted TTL and attached keys of a lease, if it exists.
    pub fn lease(&self, id: i64) -> Option<LeaseState> {
        self.read_state().leases.get(&id).cloned()
    }

    /// The active alarms (member ID, alarm type).
    pub fn alarms(&self) -> Vec<(u64, i32)> {
        self.read_state().alarms.iter().copied().collect()
    }

    /// Every lease with its granted TTL.
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.read_state()
            .leases
            .iter()
            .map(|(id, l)| (*id, l.ttl_s))
            .collect()
    }

    /// Bytes of data the database holds (RocksDB's table files plus memtables, every
    /// column family); cheap, read from RocksDB's own counters. The quota is on this.
    pub fn live_size_bytes(&self) -> u64 {
        [CF_KV, CF_LEASE, CF_META, CF_RAFT_LOG, CF_RAFT_META]
            .iter()
            .filter_map(|name| self.db.cf_handle(name))
            .map(|cf| {
                let sst = self
                    .db
                    .property_int_value_cf(cf, "rocksdb.total-sst-files-size")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                let mem = self
                    .db
                    .property_int_value_cf(cf, "rocksdb.size-all-mem-tables")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                sst + mem
            })
            .sum()
    }

    /// Bytes the database takes on disk: RocksDB's tables, WAL and manifest (not its
    /// informational LOG files, nor anything else kept in the data directory).
    pub fn db_size_bytes(&self) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".sst") || name.ends_with(".log") || name.starts_with("MANIFEST")
            })
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }
}

#[cfg(test)]
mod tests;
