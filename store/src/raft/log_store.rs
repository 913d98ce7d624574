//! The Raft log and vote in RocksDB (families `raft_log` and `raft_meta`, sharing the
//! state machine's database and WAL).
//!
//! Durability, as openraft requires: `save_vote` returns only after an fsync; `append`
//! writes the entries (readable at once) and acknowledges them through the callback only
//! after the WAL is fsynced. Appends are fsynced in batches by one flusher thread: every
//! callback waiting when a flush starts is completed by that one fsync, so under load many
//! appends share one disk sync and none is acknowledged before it is durable.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, entry::RaftEntry};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch};

use super::{Entry, LogId, TypeConfig, Vote};
use crate::mvcc::encoding::{CF_RAFT_LOG, CF_RAFT_META};

const META_VOTE: &[u8] = b"vote";
const META_LAST_PURGED: &[u8] = b"last_purged";
const META_COMMITTED: &[u8] = b"committed";

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn encode<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The log store handle; cheap to clone (openraft asks for a separate reader).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: std_mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> LogStore {
        let (flusher, rx) = std_mpsc::channel::<IOFlushed<TypeConfig>>();
        let flush_db = db.clone();
        // Failpoint for robustness tests: a slow disk, every fsync delayed this long.
        let fsync_delay = std::env::var("KVSTORE_FAILPOINT_FSYNC_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_millis);
        let spawned = std::thread::Builder::new()
            .name("raft-log-fsync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    if let Some(delay) = fsync_delay {
                        std::thread::sleep(delay);
                    }
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let result = flush_db.flush_wal(true).map_err(|e| e.into_string());
                    for cb in waiting {
                        cb.io_completed(result.clone().map_err(io::Error::other));
                    }
                }
            });
        if let Err(e) = spawned {
            // Without the flusher no append could ever be acknowledged.
            panic!("cannot start the raft log fsync thread: {e}");
        }
        LogStore { db, flusher }
    }

    fn cf(&self, name: &str) -> io::Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| io_err(format!("column family {name} missing")))
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self
            .db
            .get_cf(self.cf(CF_RAFT_META)?, key)
            .map_err(io_err)?
        {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> io::Result<()> {
        self.db
            .put_cf(self.cf(CF_RAFT_META)?, key, encode(value)?)
            .map_err(io_err)
    }

    /// A value of the `raft_meta` family written by someone else (the member's identity).
    pub fn raw_meta(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(CF_RAFT_META)?, key).map_err(io_err)
    }

    pub fn put_raw_meta(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.db
            .put_cf(self.cf(CF_RAFT_META)?, key, value)
            .map_err(io_err)?;
        self.db.flush_wal(true).map_err(io_err)
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let from = index_key(start);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_RAFT_LOG)?,
            IteratorMode::From(&from, Direction::Forward),
        ) {
            let (k, v) = item.map_err(io_err)?;
            let index = u64::from_be_bytes(k.as_ref().try_into().map_err(io_err)?);
            if !range.contains(&index) {
                break;
            }
            out.push(decode::<Entry>(&v)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(META_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self.get_meta(META_LAST_PURGED)?;
        let last = match self
            .db
            .iterator_cf(self.cf(CF_RAFT_LOG)?, IteratorMode::End)
            .next()
        {
            Some(item) => {
                let (_, v) = item.map_err(io_err)?;
                Some(decode::<Entry>(&v)?.log_id())
            }
            None => None,
        };
        Ok(LogState {
            last_log_id: last.or(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(META_VOTE, vote)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush_wal(true).map_err(io_err))
            .await
            .map_err(io_err)??;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.put_meta(META_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(META_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.cf(CF_RAFT_LOG)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(cf, index_key(entry.index()), encode(&entry)?);
        }
        if crate::failpoint::enabled(crate::failpoint::NO_DURABILITY) {
            // Deliberately weakened (robustness tests only): no WAL, acknowledged at once,
            // so a kill -9 loses acknowledged entries.
            let mut wo = rocksdb::WriteOptions::default();
            wo.disable_wal(true);
            self.db.write_opt(batch, &wo).map_err(io_err)?;
            callback.io_completed(Ok(()));
            return Ok(());
        }
        // Written now (readable when this returns), acknowledged after the batched fsync.
        self.db.write(batch).map_err(io_err)?;
        self.flusher
            .send(callback)
            .map_err(|_| io_err("raft log fsync thread stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        let cf = self.cf(CF_RAFT_LOG)?;
        // Truncated entries may reappear after a crash before the next fsync; openraft
        // truncates them again, as its storage rules allow.
        self.db
            .delete_range_cf(cf, index_key(from), index_key(u64::MAX))
            .map_err(io_err)?;
        // delete_range's end is exclusive: remove the entry at u64::MAX too, if any.
        self.db.delete_cf(cf, index_key(u64::MAX)).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: entries at or below it are ignored from then on.
        self.put_meta(META_LAST_PURGED, &log_id)?;
        let cf = self.cf(CF_RAFT_LOG)?;
        self.db
            .delete_range_cf(cf, index_key(0), index_key(log_id.index() + 1))
            .map_err(io_err)
    }
}
