//! The node agent (the kubelet's role): runs the pods bound to its node as containers,
//! probes them, restarts them with crash-loop backoff, computes their status, and serves
//! their logs. The container engine sits behind `runtime::ContainerRuntime` (Docker or an
//! in-memory fake); pod status leaves through a `StatusSink`. Against the apiserver
//! (`node_agent`): registration and the node Lease (`node`), the pod watch, status writes
//! (`apisink`) and the service proxy (`proxy`); `simulate` runs many fake nodes at once.

pub mod agent;
pub mod apisink;
pub mod backoff;
pub mod error;
pub mod logs;
pub mod node;
pub mod node_agent;
pub mod probe;
pub mod proxy;
pub mod quantity;
pub mod runtime;
pub mod simulate;
pub mod sink;
pub mod spec;
pub mod status;
mod worker;

pub use agent::{Agent, AgentConfig};
pub use backoff::BackoffConfig;
pub use error::{AgentError, Result};
pub use sink::{StatusBoard, StatusSink};
pub use spec::PodKey;
