//! The agent's one error type. Callers match on the variants that change what they do:
//! a missing image becomes `ErrImagePull`, a missing container is treated as gone, a
//! timeout is retried on the next sync.

use std::time::Duration;

/// Everything that can go wrong in the agent library.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The image is not in the local image store (nothing can be pulled here); `message`
    /// is the container runtime's own text, shown to the user in the pod status.
    #[error("image {image} not found: {message}")]
    ImageNotFound { image: String, message: String },
    /// The container does not exist (any more).
    #[error("container {id} not found")]
    ContainerNotFound { id: String },
    /// A runtime call did not answer within its bound.
    #[error("{op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    /// The runtime answered with an error.
    #[error("{op}: {message}")]
    Runtime { op: &'static str, message: String },
    /// A pod spec the agent cannot carry out (bad quantity, missing name, unknown port).
    #[error("invalid pod spec: {0}")]
    InvalidSpec(String),
    /// The agent's channels are closed: it is shutting down.
    #[error("agent is shutting down")]
    ShuttingDown,
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;
