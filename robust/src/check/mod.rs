//! The checkers: each takes recorded histories and returns the anomalies it found. They
//! never talk to a cluster, so each is unit-tested with small hand-made histories.

pub mod durability;
pub mod lease;
pub mod linearizability;
pub mod reads;
pub mod watch;

use std::collections::BTreeMap;

use crate::history::Op;
use linearizability::KeyVerdict;

/// One violated guarantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// A short stable name (`linearizability`, `watch-gap`, `lost-write`, ...).
    pub kind: &'static str,
    pub detail: String,
}

impl Anomaly {
    pub fn new(kind: &'static str, detail: String) -> Anomaly {
        Anomaly { kind, detail }
    }
}

impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.kind, self.detail)
    }
}

/// Search steps allowed per key before the linearizability check gives up.
pub const STEP_BUDGET_PER_KEY: u64 = 20_000_000;

/// Linearizability of every key; returns the anomalies and the keys left undecided.
pub fn linearizable(ops: &[Op]) -> (Vec<Anomaly>, Vec<String>) {
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    let mut anomalies = Vec::new();
    let mut unknown = Vec::new();
    for (key, ops) in by_key {
        match linearizability::check_key(&ops, STEP_BUDGET_PER_KEY) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::Unknown => unknown.push(key.to_string()),
            KeyVerdict::Violation { detail } => anomalies.push(Anomaly::new(
                "linearizability",
                format!("key {key}: {detail}"),
            )),
        }
    }
    (anomalies, unknown)
}
