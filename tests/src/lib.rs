//! Test harness for end-to-end tests over real processes.
//!
//! It starts real etcd 3.4 members and `kvstore serve` members on free loopback
//! ports with their data in temporary directories ([`Server`]), talks to them through
//! `etcd-client` and through a raw gRPC client that sends and returns etcd's own
//! protobuf messages ([`RawClient`]), runs the real `etcdctl` ([`etcdctl`]), and
//! normalises responses so the two backends can be compared ([`scrub`]).
//!
//! Every test body takes a [`Backend`], so the same body runs against real etcd (which
//! validates the test) and against kvstore (which is what the test is for); the
//! [`both_backends!`] macro generates the two `#[tokio::test]` functions.

pub mod cluster;
pub mod differential;
pub mod etcdctl;
pub mod kubectl;
pub mod macros;
pub mod ports;
pub mod process;
pub mod raw;
pub mod report;
pub mod scrub;
pub mod server;

pub use raw::{RawClient, RpcError, RpcResult};
pub use server::{Backend, ClientTls, Server};

/// Shorthand for the `Result` every test body returns.
pub type TestResult = anyhow::Result<()>;
