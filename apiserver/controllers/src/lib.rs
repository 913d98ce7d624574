//! The control loops that make declared state real, as clients of the apiserver (they
//! use only the `api` crate: the same typed client, informer, work queue and leader
//! election any outside program uses; never the store).
//!
//! - [`scheduler`]: binds unbound pods to nodes (filters, LeastAllocated/MostAllocated
//!   scoring, binding with a precondition, unschedulable pods with reasons and backoff).
//! - [`replicaset`]: keeps `spec.replicas` pods per ReplicaSet (slow-start batches,
//!   ownerReferences, expectations so no pod is created twice).
//! - [`deployment`] (+ [`rollout`]): ReplicaSets per pod template, RollingUpdate and
//!   Recreate, revisions, rollback by template, status for `kubectl rollout status`.
//! - [`node_lifecycle`], [`endpoints`], [`gc`], [`namespace`]: node heartbeats and
//!   eviction, Service endpoints, dependents of deleted owners, namespace contents.
//! - [`run`]: all of them under leader election.

pub mod controller;
pub mod deployment;
pub mod discovery;
pub mod endpoints;
pub mod error;
pub mod expectations;
pub mod gc;
pub mod meta;
pub mod namespace;
pub mod node_lifecycle;
pub mod replicaset;
pub mod rollout;
pub mod run;
pub mod scheduler;

pub use error::Error;
pub use run::{RunConfig, run};
