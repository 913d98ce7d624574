//! The crate's error type for request handling, and its rendering as a Kubernetes
//! `Status` object (every error answer the server gives is one of these).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One cause inside a `Status` (a field error of a 422, for example).
#[derive(Debug, Clone)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

/// What the object an error is about is called (`details` of the Status).
#[derive(Debug, Clone, Default)]
pub struct Details {
    pub name: String,
    pub group: String,
    pub kind: String,
}

/// Every way a request can fail, each mapped to an HTTP code and a Status `reason`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { message: String },
    #[error("{message}")]
    Unauthorized { message: String },
    #[error("{message}")]
    Forbidden { message: String, details: Details },
    #[error("{message}")]
    NotFound { message: String, details: Details },
    #[error("{message}")]
    MethodNotAllowed { message: String },
    #[error("{message}")]
    AlreadyExists { message: String, details: Details },
    #[error("{message}")]
    Conflict { message: String, details: Details },
    #[error("{message}")]
    Expired { message: String },
    #[error("{message}")]
    TooLarge { message: String },
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    #[error("{message}")]
    NotAcceptable { message: String },
    #[error("{message}")]
    Invalid {
        message: String,
        details: Details,
        causes: Vec<Cause>,
    },
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_s: u64 },
    #[error("{message}")]
    Timeout { message: String },
    #[error("{message}")]
    ServiceUnavailable { message: String },
    #[error("{message}")]
    Internal { message: String },
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::Internal {
            message: message.into(),
        }
    }

    /// `pods "web" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        ApiError::NotFound {
            message: format!("{} \"{name}\" not found", qualified(group, plural)),
            details: Details {
                name: name.into(),
                group: group.into(),
                kind: plural.into(),
            },
        }
    }

    /// `pods "web" already exists`.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        ApiError::AlreadyExists {
            message: format!("{} \"{name}\" already exists", qualified(group, plural)),
            details: Details {
                name: name.into(),
                group: group.into(),
                kind: plural.into(),
            },
        }
    }

    /// The optimistic-concurrency conflict kube-apiserver reports on a stale update.
    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        ApiError::Conflict {
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, plural)
            ),
            details: Details {
                name: name.into(),
                group: group.into(),
                kind: plural.into(),
            },
        }
    }

    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::Expired {
            message: message.into(),
        }
    }

    /// The HTTP status code.
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Expired { .. } => StatusCode::GONE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotAcceptable { .. } => StatusCode::NOT_ACCEPTABLE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The Status `reason` (Kubernetes' `StatusReason`).
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "BadRequest",
            ApiError::Unauthorized { .. } => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::NotFound { .. } => "NotFound",
            ApiError::MethodNotAllowed { .. } => "MethodNotAllowed",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Expired { .. } => "Expired",
            ApiError::TooLarge { .. } => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            ApiError::NotAcceptable { .. } => "NotAcceptable",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::Timeout { .. } => "Timeout",
            ApiError::ServiceUnavailable { .. } => "ServiceUnavailable",
            ApiError::Internal { .. } => "InternalError",
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        let details = match self {
            ApiError::Forbidden { details, .. }
            | ApiError::NotFound { details, .. }
            | ApiError::AlreadyExists { details, .. }
            | ApiError::Conflict { details, .. }
            | ApiError::Invalid { details, .. } => Some(details),
            _ => None,
        };
        if let Some(d) = details {
            let mut obj = json!({"name": d.name, "kind": d.kind});
            if !d.group.is_empty() {
                obj["group"] = json!(d.group);
            }
            if let ApiError::Invalid { causes, .. } = self {
                obj["causes"] = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
            }
            status["details"] = obj;
        }
        if let ApiError::TooManyRequests { retry_after_s, .. } = self {
            status["details"] = json!({"retryAfterSeconds": retry_after_s});
        }
        status
    }
}

/// `pods` or `deployments.apps`, as kube-apiserver's messages name a resource.
pub fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        let mut resp = (self.code(), body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let ApiError::TooManyRequests { retry_after_s, .. } = self
            && let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// Errors from the store client: a compacted revision is 410, anything else means the
/// store could not be reached or answered badly (503).
impl From<etcd_client::Error> for ApiError {
    fn from(e: etcd_client::Error) -> Self {
        let text = e.to_string();
        if text.contains("compacted") {
            ApiError::expired(format!("too old resource version: {text}"))
        } else if text.contains("request is too large") || text.contains("too large") {
            ApiError::TooLarge {
                message: format!("object is too large for the store: {text}"),
            }
        } else {
            ApiError::ServiceUnavailable {
                message: format!("store unavailable: {text}"),
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
