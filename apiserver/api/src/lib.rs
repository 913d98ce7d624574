//! The API object types (Kubernetes' own, from `k8s-openapi`) and the typed HTTP client
//! for our apiserver. Used by the scheduler, the controllers, the agent and the tests;
//! it links neither the server nor the store client.
//!
//! - [`types`]: flat re-exports (`api::Pod`, `api::Lease`, ...); [`resource`]: which
//!   URL each type lives at.
//! - [`Client`] ([`client`], [`calls`]): typed calls over HTTPS with failover between
//!   several apiservers; [`watch`]: watch event decoding; [`Error`]: the one error type.
//! - Shared by controllers: [`informer`] (list+watch cache), [`workqueue`] (rate-limited
//!   keys), [`leader`] (Lease-based leader election).

pub mod calls;
pub mod client;
pub mod config;
pub mod error;
pub mod informer;
pub mod leader;
pub mod params;
pub mod quantity;
pub mod resource;
pub mod types;
pub mod watch;
pub mod workqueue;

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod testserver;

pub use calls::{ByteStream, Deleted, ObjectList, object_reference};
pub use client::Client;
pub use config::Config;
pub use error::{ApiError, Error};
pub use informer::{Informer, InformerConfig, InformerEvent, Store};
pub use k8s_openapi;
pub use leader::{ElectionConfig, LeaderElector, Leadership};
pub use params::{
    DeleteParams, FieldValidation, ListParams, LogParams, Patch, PostParams, PropagationPolicy,
    WatchParams,
};
pub use resource::{Object, key_of, object_key, split_key};
/// The cancellation signal informers and leader election take and give.
pub use tokio_util::sync::CancellationToken;
pub use types::*;
pub use watch::{WatchEvent, WatchStream};
pub use workqueue::{QueueConfig, QueueFull, WorkQueue};
