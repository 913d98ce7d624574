//! Failpoints: deliberate weakenings and delays that only robustness tests turn on,
//! through environment variables read once at start. They exist so the checkers can be
//! shown to catch real violations (TiKV's `fail_point!` habit); nothing sets them in
//! normal operation.
//!
//! | variable | effect |
//! |---|---|
//! | `KVSTORE_FAILPOINT_STALE_READS=1` | linearizable reads skip the read barrier (serve local, possibly stale, state) |
//! | `KVSTORE_FAILPOINT_NO_DURABILITY=1` | Raft log and state writes bypass the WAL and appends are acknowledged at once: a kill -9 loses acknowledged writes |
//! | `KVSTORE_FAILPOINT_FSYNC_DELAY_MS=N` | every Raft log fsync sleeps N ms first (a slow disk; see `raft::log_store`) |

use std::sync::OnceLock;

pub const STALE_READS: &str = "KVSTORE_FAILPOINT_STALE_READS";
pub const NO_DURABILITY: &str = "KVSTORE_FAILPOINT_NO_DURABILITY";

/// Whether the failpoint named by environment variable `name` is on (value `1`).
pub fn enabled(name: &'static str) -> bool {
    static STALE: OnceLock<bool> = OnceLock::new();
    static DURABILITY: OnceLock<bool> = OnceLock::new();
    let read = || std::env::var(name).is_ok_and(|v| v == "1");
    match name {
        STALE_READS => *STALE.get_or_init(read),
        NO_DURABILITY => *DURABILITY.get_or_init(read),
        _ => read(),
    }
}
