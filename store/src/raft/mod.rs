//! Raft replication with openraft: the type configuration, member identities, and the
//! three pieces openraft needs from us — the log store (`log_store.rs`), the state machine
//! (`state_machine.rs`, the MVCC store) and the peer transport (`network.rs`).

pub mod log_store;
pub mod network;
pub mod state_machine;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::CommandResult;
use crate::error::Error;

/// A write as it travels through the Raft log: an encoded [`crate::command::Command`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request(pub Vec<u8>);

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "command({} bytes)", self.0.len())
    }
}

/// What applying a log entry answered.
pub type Response = Result<CommandResult, Error>;

/// A member as the cluster knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub peer_url: String,
    pub client_urls: Vec<String>,
}

openraft::declare_raft_types!(
    /// The store's Raft types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = Member,
);

pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, std::io::Cursor<Vec<u8>>>;

/// FNV-1a: a stable 64-bit hash (std's hasher may change between Rust versions, and IDs
/// must not).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // Keep IDs positive when read as i64 and never zero.
    (h >> 1).max(1)
}

/// A member's ID, derived from its peer URL and the cluster token (as etcd derives it),
/// so every member computes the same IDs from `--initial-cluster`, and a member added with
/// MemberAdd (which names only the peer URL) gets the ID it will compute for itself.
pub fn member_id(peer_url: &str, token: &str) -> u64 {
    fnv1a(&["member", peer_url.trim_end_matches('/'), token])
}

/// The cluster's ID: the token and the initial members' IDs.
pub fn cluster_id(token: &str, members: &BTreeMap<u64, Member>) -> u64 {
    let ids: Vec<String> = members.keys().map(|id| id.to_string()).collect();
    let mut parts = vec!["cluster", token];
    parts.extend(ids.iter().map(String::as_str));
    fnv1a(&parts)
}

/// Parses `--initial-cluster name=http://host:port,...` into members keyed by ID.
pub fn parse_initial_cluster(spec: &str, token: &str) -> anyhow::Result<BTreeMap<u64, Member>> {
    let mut members = BTreeMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, url) = item.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("--initial-cluster entry {item:?} is not name=peerURL")
        })?;
        crate::config::parse_url_addr(url)?;
        let id = member_id(url, token);
        let member = Member {
            name: name.to_string(),
            peer_url: url.to_string(),
            client_urls: Vec::new(),
        };
        if members.values().any(|m: &Member| m.name == name) || members.insert(id, member).is_some()
        {
            anyhow::bail!("--initial-cluster names member {name:?} or its peer URL twice");
        }
    }
    if members.is_empty() {
        anyhow::bail!("--initial-cluster lists no members");
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = "http://127.0.0.1:1";
        assert_eq!(member_id(a, "t"), member_id("http://127.0.0.1:1/", "t"));
        assert_ne!(member_id(a, "t"), member_id("http://127.0.0.1:2", "t"));
        assert_ne!(member_id(a, "t"), member_id(a, "u"));
        assert!(member_id(a, "t") as i64 > 0);
    }

    #[test]
    fn initial_cluster_parses_and_rejects_bad_specs() {
        let m = parse_initial_cluster("a=http://127.0.0.1:1,b=http://127.0.0.1:2", "t").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[&member_id("http://127.0.0.1:2", "t")].name, "b");
        assert!(parse_initial_cluster("a=http://127.0.0.1:1,b=http://127.0.0.1:1", "t").is_err());
        assert!(parse_initial_cluster("a", "t").is_err());
        assert!(parse_initial_cluster("a=http://x:1", "t").is_err());
        assert!(parse_initial_cluster("a=http://127.0.0.1:1,a=http://127.0.0.1:2", "t").is_err());
        assert!(parse_initial_cluster("", "t").is_err());
    }
}
