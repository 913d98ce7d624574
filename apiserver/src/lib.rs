//! The Kubernetes-style apiserver: REST over the etcd v3 store.

pub mod resources;
pub mod table;
pub mod kubeconfig;
pub mod tls;
pub mod auth;
pub mod patch;
pub mod selectors;
pub mod validation;
