//! Crash-loop and image-pull backoff: the delay before the next try grows from `base`,
//! doubling up to `max`, and a container that ran for `reset_after` starts over. As in the
//! kubelet, the first restart after a crash is immediate and the waiting starts with the
//! second; the time is tokio's, so tests drive it with paused time.

use std::time::Duration;

/// The shape of the backoff (Kubernetes: 10 s doubling to 5 min, reset after 10 min).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    pub base: Duration,
    pub max: Duration,
    /// A container that ran at least this long before exiting resets its backoff.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

/// The backoff of one container (or one image pull): how many tries in a row failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait before the next try: nothing after no failure, then `base`, `2·base`, ...
    /// capped at `max`.
    pub fn delay(&self, config: &BackoffConfig) -> Duration {
        if self.failures == 0 {
            return Duration::ZERO;
        }
        // 2^20 · base is far beyond any sane max; stop doubling there to avoid overflow.
        let doublings = (self.failures - 1).min(20);
        config
            .base
            .checked_mul(1 << doublings)
            .unwrap_or(config.max)
            .min(config.max)
    }

    /// One more failed try (a crash followed by a restart, or a failed image pull).
    pub fn record_failure(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_base_to_max_and_resets() {
        let config = BackoffConfig::default();
        let mut backoff = Backoff::default();
        let mut delays = Vec::new();
        for _ in 0..8 {
            delays.push(backoff.delay(&config).as_secs());
            backoff.record_failure();
        }
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        for _ in 0..100 {
            backoff.record_failure();
        }
        assert_eq!(backoff.delay(&config), config.max);
        backoff.reset();
        assert_eq!(backoff.delay(&config), Duration::ZERO);
    }
}
