//! The crate's one error type: what a call to the apiserver can end with.
//!
//! The server's `Status` body becomes [`Error::Api`], so callers match on the HTTP code and
//! reason (`is_conflict()`, `is_gone()`, ...) instead of parsing messages.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;

/// A failure answer of the apiserver (a `Status` object, or what could be read of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code (also in the body's `code`).
    pub code: u16,
    /// Machine-readable reason: `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`,
    /// `Forbidden`, `Unauthorized`, `Expired`, `Gone`, `TooManyRequests`, ...
    pub reason: String,
    /// The human-readable message.
    pub message: String,
}

impl ApiError {
    /// From a decoded `Status`, with `http_code` when the body has none.
    pub fn from_status(status: &Status, http_code: u16) -> Self {
        let code = status
            .code
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| *c >= 400)
            .unwrap_or(http_code);
        ApiError {
            code,
            reason: status.reason.clone().unwrap_or_default(),
            message: status.message.clone().unwrap_or_default(),
        }
    }

    /// From a failure response body: a `Status` if it parses as one, else the body text.
    pub fn from_body(http_code: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<Status>(body) {
            Ok(status) if status.reason.is_some() || status.message.is_some() => {
                Self::from_status(&status, http_code)
            }
            _ => {
                // Not a Status (a proxy's page, plain text): keep a bounded excerpt.
                let text = String::from_utf8_lossy(&body[..body.len().min(1024)]);
                ApiError {
                    code: http_code,
                    reason: reason_for_code(http_code).to_string(),
                    message: text.trim().to_string(),
                }
            }
        }
    }
}

/// The reason Kubernetes uses for a bare HTTP code.
fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Gone",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver answered with a failure `Status`.
    #[error("apiserver: {} {}: {}", .0.code, .0.reason, .0.message)]
    Api(ApiError),
    /// No server could be reached or every one refused (connect errors, 503, 429, resets)
    /// within the bounded number of attempts.
    #[error("no apiserver answered after {attempts} attempts; last error: {last}")]
    Unavailable { attempts: u32, last: String },
    /// A transport error that is not retried (e.g. a broken stream mid-body).
    #[error("http transport: {0}")]
    Http(#[from] reqwest::Error),
    /// The body could not be decoded as the expected type.
    #[error("decoding {what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A watch stream line that is not a watch event, or an event of an unknown type.
    #[error("bad watch event: {0}")]
    BadWatchEvent(String),
    /// The configuration or kubeconfig is unusable.
    #[error("client configuration: {0}")]
    Config(String),
    /// Reading a kubeconfig, CA or token file failed.
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The caller asked for something the object cannot give (no name, no resourceVersion).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl Error {
    /// The API error, if the server answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            _ => None,
        }
    }

    fn has_code(&self, code: u16) -> bool {
        self.api().is_some_and(|e| e.code == code)
    }

    /// 404.
    pub fn is_not_found(&self) -> bool {
        self.has_code(404)
    }

    /// 409 from a stale resourceVersion (not a duplicate create).
    pub fn is_conflict(&self) -> bool {
        self.api()
            .is_some_and(|e| e.code == 409 && e.reason != "AlreadyExists")
    }

    /// 409 `AlreadyExists` from a create of an existing name.
    pub fn is_already_exists(&self) -> bool {
        self.api()
            .is_some_and(|e| e.code == 409 && e.reason == "AlreadyExists")
    }

    /// 410: the resourceVersion was compacted (answer or ERROR event inside a watch);
    /// informers re-list.
    pub fn is_gone(&self) -> bool {
        self.has_code(410)
    }

    /// 403.
    pub fn is_forbidden(&self) -> bool {
        self.has_code(403)
    }

    /// 401.
    pub fn is_unauthorized(&self) -> bool {
        self.has_code(401)
    }

    /// 422.
    pub fn is_invalid(&self) -> bool {
        self.has_code(422)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_becomes_a_typed_error() {
        let body = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"pods \"web\" already exists","reason":"AlreadyExists","code":409}"#;
        let err = Error::Api(ApiError::from_body(409, body));
        assert!(err.is_already_exists());
        assert!(!err.is_conflict());
        assert_eq!(err.api().unwrap().message, "pods \"web\" already exists");

        let body = br#"{"kind":"Status","status":"Failure","message":"the object has been modified","reason":"Conflict","code":409}"#;
        let err = Error::Api(ApiError::from_body(409, body));
        assert!(err.is_conflict() && !err.is_already_exists());
    }

    #[test]
    fn a_body_that_is_not_a_status_keeps_the_http_code() {
        let err = Error::Api(ApiError::from_body(410, b"too old resource version"));
        assert!(err.is_gone());
        assert_eq!(err.api().unwrap().reason, "Gone");
        assert_eq!(err.api().unwrap().message, "too old resource version");
        let err = Error::Api(ApiError::from_body(404, b"{not json"));
        assert!(err.is_not_found() && !err.is_forbidden());
    }
}
