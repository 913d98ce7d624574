//! `kvstore`: an etcd v3 compatible key-value store. MVCC on RocksDB (`mvcc`), leases
//! (`lease`), a watch hub (`watch`), deterministic write commands (`command`), the gRPC
//! services (`server`) and the etcdctl-style client (`cli`).

pub mod auth;
pub mod backup;
pub mod certs;
pub mod cli;
pub mod command;
pub mod config;
pub mod error;
pub mod failpoint;
pub mod lease;
pub mod mvcc;
pub mod raft;
pub mod server;
pub mod tls;
pub mod watch;
