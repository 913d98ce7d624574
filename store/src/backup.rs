//! Backups: the snapshot file format, `snapshot status`, `snapshot restore`, and the
//! scheduled snapshots a member takes of itself.
//!
//! A snapshot file is a state dump (`mvcc::snapshot`: magic `KVSNAP01`, the `kv`, `lease`
//! and `meta` families) followed by the SHA-256 of the dump, as etcd appends one to its
//! snapshots. Files are written to `NAME.part`, fsynced and renamed, so a file with the
//! final name is always complete. Restore checks the hash and parses the whole dump before
//! it creates anything, so a bad file changes nothing on disk.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::mvcc::MvccStore;
use crate::mvcc::encoding::{
    CF_KV, CF_META, META_COMPACT_REV, META_CURRENT_REV, META_RAFT_APPLIED, META_RAFT_MEMBERSHIP,
    Revision, STATE_MACHINE_CFS, decode_entry, decode_i64, encode_i64,
};

/// Bytes of the SHA-256 trailer.
pub const HASH_LEN: usize = 32;
/// The dump format this version writes and reads.
pub const FORMAT_VERSION: &str = "KVSNAP01";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("snapshot file {0} is empty")]
    Empty(String),
    #[error("snapshot file {0} is too short to be a snapshot ({1} bytes)")]
    TooShort(String, usize),
    #[error(
        "snapshot file {path} failed its integrity check: SHA-256 of the content is {actual}, the file says {expected} (truncated or corrupted)"
    )]
    HashMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error(
        "snapshot file {0} is not a kvstore snapshot (format {FORMAT_VERSION} expected; an etcd bbolt snapshot cannot be restored here)"
    )]
    Foreign(String),
    #[error("snapshot file {0} is damaged: {1}")]
    Damaged(String, String),
    #[error("data-dir {0} is not empty; restore needs a new, empty directory")]
    DataDirNotEmpty(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Store(#[from] crate::error::Error),
}

impl From<std::io::Error> for BackupError {
    fn from(e: std::io::Error) -> Self {
        BackupError::Io(e.to_string())
    }
}

/// What `snapshot status` reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotInfo {
    /// A short hash of the content (first 8 bytes of the SHA-256, hex).
    pub hash: String,
    pub revision: i64,
    pub compact_revision: i64,
    pub total_keys: u64,
    pub total_size: u64,
    pub leases: u64,
    pub version: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the trailer and the format; returns the dump (the file minus its hash).
pub fn verify<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8], BackupError> {
    let name = path.display().to_string();
    if bytes.is_empty() {
        return Err(BackupError::Empty(name));
    }
    if bytes.len() < HASH_LEN + FORMAT_VERSION.len() + 1 {
        return Err(BackupError::TooShort(name, bytes.len()));
    }
    if !bytes.starts_with(FORMAT_VERSION.as_bytes()) {
        return Err(BackupError::Foreign(name));
    }
    let (content, trailer) = bytes.split_at(bytes.len() - HASH_LEN);
    let actual = Sha256::digest(content);
    if actual.as_slice() != trailer {
        return Err(BackupError::HashMismatch {
            path: name,
            expected: hex(trailer),
            actual: hex(&actual),
        });
    }
    crate::mvcc::snapshot::parse(content).map_err(|e| BackupError::Damaged(name, e.to_string()))?;
    Ok(content)
}

/// Reads the facts `snapshot status` prints from a verified dump.
pub fn info(file: &[u8], dump: &[u8]) -> Result<SnapshotInfo, BackupError> {
    let records = crate::mvcc::snapshot::parse(dump)?;
    let cf_index = |name: &str| {
        STATE_MACHINE_CFS
            .iter()
            .position(|n| *n == name)
            .unwrap_or(usize::MAX)
    };
    let (kv_cf, meta_cf) = (cf_index(CF_KV), cf_index(CF_META));
    let mut latest: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    let (mut revision, mut compact_revision, mut leases) = (0, 0, 0u64);
    for (cf, key, value) in &records {
        if *cf == kv_cf {
            Revision::from_key(key)?;
            let (kv, tombstone) = decode_entry(value)?;
            latest.insert(kv.key, !tombstone);
        } else if *cf == meta_cf && *key == META_CURRENT_REV {
            revision = decode_i64(value)?;
        } else if *cf == meta_cf && *key == META_COMPACT_REV {
            compact_revision = decode_i64(value)?;
        } else if *cf != meta_cf {
            leases += 1;
        }
    }
    Ok(SnapshotInfo {
        hash: hex(&file[file.len() - HASH_LEN..][..8]),
        revision,
        compact_revision,
        total_keys: latest.values().filter(|live| **live).count() as u64,
        total_size: file.len() as u64,
        leases,
        version: FORMAT_VERSION.to_string(),
    })
}

/// `snapshot status FILE`.
pub fn status(path: &Path) -> Result<SnapshotInfo, BackupError> {
    let bytes = std::fs::read(path)
        .map_err(|e| BackupError::Io(format!("cannot read {}: {e}", path.display())))?;
    let dump = verify(path, &bytes)?;
    info(&bytes, dump)
}

/// Options of `snapshot restore`.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Added to the snapshot's revision, so revisions never go backwards for watchers
    /// that saw revisions after the snapshot was taken.
    pub bump_revision: i64,
    /// Marks every revision up to the (bumped) current one as compacted, so old
    /// revisions read as compacted rather than as missing history.
    pub mark_compacted: bool,
}

/// `snapshot restore FILE --data-dir DIR`: a new member's data directory holding the
/// snapshot's keys and leases, with no Raft state (the member forms a new cluster from
/// `--initial-cluster` when it starts). Refuses a non-empty directory.
pub fn restore(
    path: &Path,
    data_dir: &Path,
    opts: &RestoreOptions,
) -> Result<SnapshotInfo, BackupError> {
    if let Ok(mut entries) = std::fs::read_dir(data_dir)
        && entries.next().is_some()
    {
        return Err(BackupError::DataDirNotEmpty(data_dir.display().to_string()));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| BackupError::Io(format!("cannot read {}: {e}", path.display())))?;
    let dump = verify(path, &bytes)?;
    let mut info = info(&bytes, dump)?;
    let records = crate::mvcc::snapshot::parse(dump)?;
    let meta_cf = STATE_MACHINE_CFS
        .iter()
        .position(|n| *n == CF_META)
        .unwrap_or(usize::MAX);
    // The old cluster's Raft position and membership do not carry over.
    let kept: Vec<_> = records
        .into_iter()
        .filter(|(cf, key, _)| {
            !(*cf == meta_cf && (*key == META_RAFT_APPLIED || *key == META_RAFT_MEMBERSHIP))
        })
        .collect();
    let revision = info.revision + opts.bump_revision.max(0);
    let compact = if opts.mark_compacted {
        revision
    } else {
        info.compact_revision
    };
    let extra = [
        (meta_cf, META_CURRENT_REV, encode_i64(revision).to_vec()),
        (meta_cf, META_COMPACT_REV, encode_i64(compact).to_vec()),
    ];
    let store = MvccStore::open(data_dir)?;
    store.load_records(
        kept.iter()
            .map(|(cf, k, v)| (*cf, *k, *v))
            .chain(extra.iter().map(|(cf, k, v)| (*cf, *k, v.as_slice()))),
    )?;
    info.revision = revision;
    info.compact_revision = compact;
    Ok(info)
}

/// Writes `content` followed by its SHA-256 to `path`, through `path.part` + fsync +
/// rename, so a file under the final name is always complete.
pub struct SnapshotWriter {
    part: PathBuf,
    path: PathBuf,
    file: std::fs::File,
    hasher: Sha256,
    pub bytes: u64,
}

impl SnapshotWriter {
    pub fn create(path: &Path) -> Result<SnapshotWriter, BackupError> {
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let file = std::fs::File::create(&part)
            .map_err(|e| BackupError::Io(format!("cannot create {}: {e}", part.display())))?;
        Ok(SnapshotWriter {
            part,
            path: path.to_path_buf(),
            file,
            hasher: Sha256::new(),
            bytes: 0,
        })
    }

    /// Appends content bytes (not the trailer).
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), BackupError> {
        self.hasher.update(chunk);
        self.file.write_all(chunk)?;
        self.bytes += chunk.len() as u64;
        Ok(())
    }

    /// Appends the hash, fsyncs, and renames into place. `expected_hash`, when given (the
    /// server's trailer), must match what was received.
    pub fn finish(mut self, expected_hash: Option<&[u8]>) -> Result<u64, BackupError> {
        let hash = self.hasher.finalize_reset();
        if let Some(expected) = expected_hash
            && expected != hash.as_slice()
        {
            let _ = std::fs::remove_file(&self.part);
            return Err(BackupError::HashMismatch {
                path: self.path.display().to_string(),
                expected: hex(expected),
                actual: hex(&hash),
            });
        }
        self.file.write_all(&hash)?;
        self.file.sync_all()?;
        std::fs::rename(&self.part, &self.path)?;
        // Make the rename itself durable.
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(self.bytes + HASH_LEN as u64)
    }

    /// Removes the partial file (on failure).
    pub fn abort(self) {
        let _ = std::fs::remove_file(&self.part);
    }
}

/// Takes a snapshot of the local store into `dir` (scheduled snapshots), named after its
/// revision and time so names sort by age.
pub fn save_local(store: &MvccStore, dir: &Path) -> Result<PathBuf, BackupError> {
    std::fs::create_dir_all(dir)?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = dir.join(format!(
        "snapshot-{secs:012}-rev{:012}.db",
        store.current_revision()
    ));
    let mut w = SnapshotWriter::create(&path)?;
    let mut result = Ok(());
    store.dump_streaming(1 << 20, &mut |chunk, _| {
        if let Err(e) = w.write(chunk) {
            result = Err(e);
        }
        Ok(())
    })?;
    match result {
        Ok(()) => {
            w.finish(None)?;
            Ok(path)
        }
        Err(e) => {
            w.abort();
            Err(e)
        }
    }
}

/// The complete snapshot files in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| BackupError::Io(format!("cannot read {}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("snapshot-") && n.ends_with(".db"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Deletes all but the newest `keep` snapshots in `dir`; returns what was deleted.
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, BackupError> {
    let files = list(dir)?;
    let excess = files.len().saturating_sub(keep);
    let doomed: Vec<PathBuf> = files.into_iter().take(excess).collect();
    for f in &doomed {
        std::fs::remove_file(f)?;
    }
    Ok(doomed)
}
