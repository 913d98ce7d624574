//! The Kubernetes-style apiserver: REST over the etcd v3 store.

pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod kubeconfig;
pub mod metrics;
pub mod object;
pub mod patch;
pub mod resources;
pub mod selectors;
pub mod serve;
pub mod server;
pub mod startup;
pub mod store;
pub mod table;
pub mod tls;
pub mod validation;
pub mod watch_cache;
