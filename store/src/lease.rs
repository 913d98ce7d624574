//! Lease expiry clocks. Which leases exist, their TTLs and keys are state-machine state
//! (`mvcc`); *when* a lease expires depends on wall clocks, so it lives here, on the member
//! that decides expiry. An expired lease is revoked by proposing a `LeaseRevoke` command,
//! never by changing state directly, so every member deletes the same keys at the same
//! revision. After a restart or a leader change every lease starts over at its full TTL
//! (plus the election timeout on a new leader, see `server::follow_leadership`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an expired lease waits before its revoke is proposed again, if the first
/// proposal did not remove it.
const REVOKE_RETRY: Duration = Duration::from_secs(2);

/// The largest TTL a lease may have (etcd's MaxLeaseTTL), in seconds.
pub const MAX_LEASE_TTL_S: i64 = 9_000_000_000;

/// Expiry deadlines of the leases this member knows.
#[derive(Debug, Default)]
pub struct Lessor {
    deadlines: Mutex<HashMap<i64, Instant>>,
}

impl Lessor {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Instant>> {
        self.deadlines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts (or restarts) a lease's clock at its full TTL.
    pub fn renew(&self, id: i64, ttl_s: i64) {
        self.renew_extended(id, ttl_s, Duration::ZERO);
    }

    /// Starts a lease's clock at its full TTL plus `extra` (what a new leader grants, see
    /// `server::follow_leadership`).
    pub fn renew_extended(&self, id: i64, ttl_s: i64, extra: Duration) {
        let ttl = Duration::from_secs(ttl_s.max(0) as u64) + extra;
        self.lock().insert(id, Instant::now() + ttl);
    }

    /// Forgets a revoked lease.
    pub fn forget(&self, id: i64) {
        self.lock().remove(&id);
    }

    /// Time left before the lease expires (zero once expired), if its clock runs here.
    pub fn remaining(&self, id: i64) -> Option<Duration> {
        self.lock()
            .get(&id)
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Leases whose deadline has passed. Each is returned once per retry period, so a
    /// slow revoke is not proposed over and over.
    pub fn take_expired(&self) -> Vec<i64> {
        let now = Instant::now();
        let mut map = self.lock();
        let mut expired = Vec::new();
        for (id, deadline) in map.iter_mut() {
            if *deadline <= now {
                expired.push(*id);
                *deadline = now + REVOKE_RETRY;
            }
        }
        expired.sort_unstable();
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_reported_once_per_retry_period() {
        let lessor = Lessor::default();
        lessor.renew(1, 0);
        lessor.renew(2, 60);
        assert_eq!(lessor.take_expired(), vec![1]);
        assert!(lessor.take_expired().is_empty());
        assert!(lessor.remaining(2).unwrap() > Duration::from_secs(59));
        lessor.forget(1);
        assert_eq!(lessor.remaining(1), None);
    }
}
