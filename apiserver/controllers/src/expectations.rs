//! Expectations: how many pod creations and deletions a controller has sent for a key
//! that its informer has not yet shown. Until they are seen (or `ttl` passes, in case
//! an event was lost), the key's pods in the cache are known to be stale, so the sync
//! must not count them and act again — that is what keeps a ReplicaSet from creating a
//! pod twice when a sync runs before the watch catches up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Pending {
    adds: i64,
    deletes: i64,
    set_at: Instant,
}

/// Outstanding creations/deletions per controller key.
pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
    ttl: Duration,
}

impl Expectations {
    pub fn new(ttl: Duration) -> Self {
        Expectations {
            pending: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `adds` creations and `deletes` deletions are about to be sent.
    pub fn expect(&self, key: &str, adds: i64, deletes: i64) {
        self.lock().insert(
            key.to_string(),
            Pending {
                adds,
                deletes,
                set_at: Instant::now(),
            },
        );
    }

    /// A creation was seen in the watch (or was never sent).
    pub fn creation_observed(&self, key: &str) {
        if let Some(p) = self.lock().get_mut(key) {
            p.adds -= 1;
        }
    }

    /// A deletion was seen in the watch (or was never sent).
    pub fn deletion_observed(&self, key: &str) {
        if let Some(p) = self.lock().get_mut(key) {
            p.deletes -= 1;
        }
    }

    /// Whether the cache can be trusted for `key`: nothing outstanding, or it expired.
    pub fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(p) => (p.adds <= 0 && p.deletes <= 0) || p.set_at.elapsed() > self.ttl,
        }
    }

    /// Forgets a key (its object was deleted).
    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn satisfied_when_observed_or_expired() {
        let e = Expectations::new(Duration::from_secs(60));
        assert!(e.satisfied("ns/rs"));
        e.expect("ns/rs", 2, 1);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"), "a deletion is still outstanding");
        e.deletion_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        e.expect("ns/rs", 1, 0);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            e.satisfied("ns/rs"),
            "lost events do not block the key forever"
        );
    }
}
