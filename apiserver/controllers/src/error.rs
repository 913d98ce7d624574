//! The crate's one error type: what a controller's sync or the scheduler's bind can end with.

/// Why a sync of one key failed (the key is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the apiserver failed.
    #[error(transparent)]
    Api(#[from] api::Error),
    /// An object we read is not usable as it is (bad selector, bad quantity, ...).
    #[error("{kind} {key}: {message}")]
    Invalid {
        kind: &'static str,
        key: String,
        message: String,
    },
    /// The work queue is full; the key is dropped until its next event or resync.
    #[error(transparent)]
    QueueFull(#[from] api::QueueFull),
}

impl Error {
    pub(crate) fn invalid(kind: &'static str, key: &str, message: impl Into<String>) -> Self {
        Error::Invalid {
            kind,
            key: key.to_string(),
            message: message.into(),
        }
    }
}
