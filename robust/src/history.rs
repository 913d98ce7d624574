//! The recorded history: what each client asked, when (monotonic nanoseconds since the
//! run began), and what it got back. An operation that ended in an error or a timeout is
//! *indeterminate*: a write may or may not have taken effect, and the checkers must allow
//! both; it never counts as a failure of the store.

use std::time::Instant;

/// The run's clock: monotonic nanoseconds since its start, shared by every recorder.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// A request on one key of the register keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Put {
        value: String,
    },
    /// A linearizable read unless `serializable`.
    Get {
        serializable: bool,
    },
    Delete,
    /// Txn: if the value is `expected` (`None`: the key is absent) then put `value`.
    Cas {
        expected: Option<String>,
        value: String,
    },
}

impl Request {
    pub fn is_write(&self) -> bool {
        !matches!(self, Request::Get { .. })
    }
}

/// What the store answered; `revision` is the header revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Put {
        revision: i64,
    },
    Get {
        value: Option<String>,
        mod_revision: i64,
        revision: i64,
    },
    Delete {
        deleted: i64,
        revision: i64,
    },
    Cas {
        succeeded: bool,
        revision: i64,
    },
}

impl Response {
    pub fn revision(&self) -> i64 {
        match self {
            Response::Put { revision }
            | Response::Get { revision, .. }
            | Response::Delete { revision, .. }
            | Response::Cas { revision, .. } => *revision,
        }
    }
}

/// One operation of one client on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub request: Request,
    pub invoke_ns: u64,
    /// `None` when indeterminate (error or timeout).
    pub response: Option<Response>,
    pub complete_ns: u64,
    /// The error text of an indeterminate operation, for reports.
    pub error: Option<String>,
}

impl Op {
    pub fn is_indeterminate(&self) -> bool {
        self.response.is_none()
    }
}

/// One event a watcher received, with when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub revision: i64,
    pub key: String,
    /// `None` for a delete.
    pub value: Option<String>,
    pub received_ns: u64,
}

/// Everything one watcher saw, in arrival order, over all its reconnects.
#[derive(Debug, Clone, Default)]
pub struct WatchLog {
    pub watcher: usize,
    /// The revision the first watch started from.
    pub start_revision: i64,
    pub events: Vec<WatchEvent>,
    pub reconnects: usize,
}

/// What one lease went through, as the lease client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub lease_id: i64,
    pub key: String,
    /// The value written to `key` under the lease.
    pub value: String,
    /// Kept alive by the client (as opposed to left to expire).
    pub kept_alive: bool,
    pub ttl_s: i64,
    pub grant_invoke_ns: u64,
    /// The key was written under the lease and acknowledged (at this revision).
    pub put_revision: Option<i64>,
    /// The latest time until which the store promised to keep the lease: the invocation
    /// of the grant or of a successful keep-alive plus the TTL it answered.
    pub alive_until_ns: u64,
    pub keep_alives_ok: usize,
}
