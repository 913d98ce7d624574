//! Background housekeeping on the leader: scheduled backup snapshots with retention, and
//! auto-compaction (`revision` and `periodic` modes, as etcd's). Also the quota check
//! that raises the NOSPACE alarm before a write that would grow a full store.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etcd_client::proto::{PbAlarmRequest, PbCompactionRequest};

use super::Node;
use crate::command::Command;
use crate::error::{Error, Result};

/// How long a read of the backend size is reused.
const SIZE_REFRESH: Duration = Duration::from_millis(20);
const ALARM_ACTIVATE: i32 = 1;
const ALARM_NOSPACE: i32 = 1;

impl Node {
    /// The backend's data size from RocksDB's counters, re-read at most every
    /// [`SIZE_REFRESH`] (ten property reads per write were measurable on the put path;
    /// the quota may be overshot by at most that much time's writes).
    pub fn backend_size(&self) -> u64 {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.size_read_at_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= SIZE_REFRESH.as_millis() as u64 || last == 0 {
            self.size_read_at_ms.store(now.max(1), Ordering::Relaxed);
            self.size_bytes
                .store(self.store.live_size_bytes(), Ordering::Relaxed);
        }
        self.size_bytes.load(Ordering::Relaxed)
    }

    /// Before a write that grows the store: past the quota, raise NOSPACE (through Raft, so
    /// every member refuses growing writes) and refuse with etcd's error.
    pub async fn check_quota(&self) -> Result<()> {
        if self.backend_size() <= self.config.quota_backend_bytes {
            return Ok(());
        }
        let raised = self.store.alarms().iter().any(|(_, a)| *a == ALARM_NOSPACE);
        if !raised {
            let req = PbAlarmRequest {
                action: ALARM_ACTIVATE,
                member_id: self.identity.member_id,
                alarm: ALARM_NOSPACE,
            };
            if let Err(e) = self.propose(Command::Alarm(req)).await {
                tracing::warn!(error = %e, "raising the NOSPACE alarm failed");
            } else {
                tracing::warn!(
                    size = self.backend_size(),
                    quota = self.config.quota_backend_bytes,
                    "backend quota exceeded; NOSPACE alarm raised"
                );
            }
        }
        Err(Error::NoSpace)
    }
}

/// Takes a snapshot into `--snapshot-dir` every `--snapshot-interval` on the leader (one
/// member at a time), keeping the newest `--snapshot-retention`.
pub async fn scheduled_snapshots(
    node: Arc<Node>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Some(period) = node.config.snapshot_interval else {
        return;
    };
    let dir = node
        .config
        .snapshot_dir
        .clone()
        .unwrap_or_else(|| node.config.data_dir.join("snapshots"));
    let keep = node.config.snapshot_retention.max(1);
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !node.is_leader() {
            continue;
        }
        let (store, dir) = (node.store.clone(), dir.clone());
        let taken = tokio::task::spawn_blocking(move || {
            let path = crate::backup::save_local(&store, &dir)?;
            let pruned = crate::backup::prune(&dir, keep)?;
            Ok::<_, crate::backup::BackupError>((path, pruned))
        })
        .await;
        match taken {
            Ok(Ok((path, pruned))) => {
                tracing::info!(path = %path.display(), pruned = pruned.len(), "scheduled snapshot taken")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "scheduled snapshot failed"),
            Err(e) => tracing::warn!(error = %e, "scheduled snapshot task failed"),
        }
    }
}

/// Auto-compaction on the leader. `revision`: every interval, compact to current minus
/// the retention. `periodic`: sample the revision every tenth of the window and compact to
/// the newest sample at least one window old.
pub async fn auto_compaction(node: Arc<Node>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mode = match node.config.auto_compaction_mode.as_deref() {
        Some("revision") => match node.config.auto_compaction_revisions() {
            Ok(keep) if keep > 0 => Mode::Revision(keep),
            _ => return,
        },
        Some("periodic") => match node.config.auto_compaction_period() {
            Ok(window) if !window.is_zero() => Mode::Periodic(window),
            _ => return,
        },
        _ => return,
    };
    let period = match mode {
        Mode::Revision(_) => node.config.auto_compaction_interval,
        Mode::Periodic(window) => {
            (window / 10).clamp(Duration::from_millis(100), Duration::from_secs(3600))
        }
    };
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let current = node.store.current_revision();
        let target = match mode {
            Mode::Revision(keep) => current - keep,
            Mode::Periodic(window) => {
                samples.push_back((Instant::now(), current));
                let mut target = 0;
                while let Some((at, rev)) = samples.front().copied() {
                    if at.elapsed() < window {
                        break;
                    }
                    target = rev;
                    samples.pop_front();
                }
                target
            }
        };
        if !node.is_leader() || target <= node.store.compact_revision() || target <= 0 {
            continue;
        }
        let req = PbCompactionRequest {
            revision: target,
            physical: true,
        };
        match node.propose(Command::Compact(req)).await {
            Ok(_) => {
                node.auto_compacted.store(target, Ordering::Relaxed);
                tracing::info!(revision = target, "auto-compacted");
            }
            Err(Error::Compacted) => {}
            Err(e) => tracing::warn!(revision = target, error = %e, "auto-compaction failed"),
        }
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Revision(i64),
    Periodic(Duration),
}
