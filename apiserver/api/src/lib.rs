//! The API object types (Kubernetes' own, from `k8s-openapi`) and the typed HTTP client
//! for our apiserver. Used by the scheduler, the controllers, the agent and the tests;
//! it links neither the server nor the store client.

pub mod quantity;

pub use k8s_openapi;
