//! The MVCC store as openraft's state machine. Committed entries are applied in log order,
//! all entries of one `apply` call in one RocksDB batch, with the applied log id and the
//! membership written in that same batch; their events go to this member's watch hub
//! before the proposers are answered. State-machine writes are not fsynced: the Raft log
//! is, and a restart replays the log after the last applied id.
//!
//! Snapshots are whole-state dumps (`MvccStore::dump`) taken from a RocksDB snapshot, so
//! the applied log id and membership inside them match the data exactly.

use std::io::{self, Cursor};
use std::sync::{Arc, Mutex};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, entry::RaftEntry};
use tokio::sync::watch;

use super::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::command::{Command, CommandResult};
use crate::lease::Lessor;
use crate::mvcc::MvccStore;
use crate::mvcc::encoding::{META_RAFT_APPLIED, META_RAFT_MEMBERSHIP};
use crate::watch::{Published, WatchHub};

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The last snapshot built or installed, kept to send to members that need it.
type StoredSnapshot = (SnapshotMeta, Vec<u8>);

/// The state machine handle (cheap to clone; openraft takes one for snapshot building).
#[derive(Clone)]
pub struct StateMachine {
    pub store: Arc<MvccStore>,
    pub hub: Arc<WatchHub>,
    pub lessor: Arc<Lessor>,
    /// The last applied log index, for readers waiting on a read index.
    pub applied: Arc<watch::Sender<u64>>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl StateMachine {
    pub fn new(store: Arc<MvccStore>, hub: Arc<WatchHub>, lessor: Arc<Lessor>) -> StateMachine {
        let (applied, _) = watch::channel(store.applied_index());
        StateMachine {
            store,
            hub,
            lessor,
            applied: Arc::new(applied),
            current: Arc::new(Mutex::new(None)),
        }
    }

    fn read_applied(&self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let applied = match self.store.meta_bytes(META_RAFT_APPLIED).map_err(io_err)? {
            Some(b) => postcard::from_bytes(&b).map_err(io_err)?,
            None => None,
        };
        let membership = match self
            .store
            .meta_bytes(META_RAFT_MEMBERSHIP)
            .map_err(io_err)?
        {
            Some(b) => postcard::from_bytes(&b).map_err(io_err)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        self.read_applied()
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut cmds = Vec::new();
        // For every entry: its responder and, for normal entries, its slot in `cmds` (or
        // the error it decoded to).
        let mut pending = Vec::new();
        let mut last: Option<LogId> = None;
        let mut membership: Option<StoredMembership> = None;
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let slot = match &entry.payload {
                EntryPayload::Normal(req) => match Command::decode(&req.0) {
                    Ok(cmd) => {
                        cmds.push(cmd);
                        Some(Ok(cmds.len() - 1))
                    }
                    Err(e) => Some(Err(e)),
                },
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(log_id), m.clone()));
                    None
                }
                EntryPayload::Blank => None,
            };
            pending.push((responder, slot));
            last = Some(log_id);
        }
        let Some(last) = last else {
            return Ok(());
        };
        let mut meta = vec![(
            META_RAFT_APPLIED,
            postcard::to_stdvec(&Some(last)).map_err(io_err)?,
        )];
        if let Some(m) = &membership {
            meta.push((
                META_RAFT_MEMBERSHIP,
                postcard::to_stdvec(m).map_err(io_err)?,
            ));
        }
        let outs = self
            .store
            .apply_batch(&cmds, last.index(), &meta, self.hub.wants_prev_kv(), false)
            .map_err(io_err)?;
        for (cmd, out) in cmds.iter().zip(&outs) {
            match (cmd, &out.result) {
                (Command::LeaseGrant(g), Ok(_)) => self.lessor.renew(g.id, g.ttl),
                (Command::LeaseRevoke(r), Ok(_)) => self.lessor.forget(r.id),
                _ => {}
            }
        }
        let mut outs = outs;
        let published: Vec<Published> = outs
            .iter_mut()
            .filter(|o| !o.events.is_empty())
            .map(|o| Published {
                revision: o.revision,
                events: std::mem::take(&mut o.events),
            })
            .collect();
        self.hub.enqueue(published).await;
        self.applied.send_replace(last.index());
        let mut results: Vec<Option<Result<CommandResult, crate::error::Error>>> =
            outs.into_iter().map(|o| Some(o.result)).collect();
        for (responder, slot) in pending {
            let Some(responder) = responder else { continue };
            let response = match slot {
                Some(Ok(i)) => results[i]
                    .take()
                    .unwrap_or(Err(crate::error::Error::Stopped)),
                Some(Err(e)) => Err(e),
                // Blank and membership entries answer with an empty success.
                None => Ok(CommandResult::Compact(Default::default())),
            };
            responder.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Cursor<Vec<u8>>,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let store = self.store.clone();
        let bytes = data.clone();
        tokio::task::spawn_blocking(move || store.restore(&bytes))
            .await
            .map_err(io_err)?
            .map_err(io_err)?;
        let (applied, _) = self.read_applied()?;
        if applied != meta.last_log_id {
            return Err(io_err(format!(
                "snapshot data is at {applied:?} but its meta says {:?}",
                meta.last_log_id
            )));
        }
        // Watchers continue from the restored history; lease clocks start over.
        self.hub.reset_after_restore();
        for (id, ttl) in self.store.leases() {
            self.lessor.renew(id, ttl);
        }
        self.applied.send_replace(self.store.applied_index());
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(meta, data)| Snapshot {
                meta: meta.clone(),
                snapshot: Cursor::new(data.clone()),
            }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let store = self.store.clone();
        let data = tokio::task::spawn_blocking(move || store.dump())
            .await
            .map_err(io_err)?
            .map_err(io_err)?;
        // Read the applied id and membership from the dump itself, so they match its data.
        let probe = SnapshotProbe::parse(&data)?;
        let meta = SnapshotMeta {
            last_log_id: probe.applied,
            last_membership: probe.membership,
        };
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

/// The Raft fields found inside a state dump.
struct SnapshotProbe {
    applied: Option<LogId>,
    membership: StoredMembership,
}

impl SnapshotProbe {
    fn parse(dump: &[u8]) -> io::Result<SnapshotProbe> {
        let applied = crate::mvcc::dump_meta(dump, META_RAFT_APPLIED)
            .map_err(io_err)?
            .map(|b| postcard::from_bytes::<Option<LogId>>(&b))
            .transpose()
            .map_err(io_err)?
            .flatten();
        let membership = crate::mvcc::dump_meta(dump, META_RAFT_MEMBERSHIP)
            .map_err(io_err)?
            .map(|b| postcard::from_bytes::<StoredMembership>(&b))
            .transpose()
            .map_err(io_err)?
            .unwrap_or_default();
        Ok(SnapshotProbe {
            applied,
            membership,
        })
    }
}
