//! Request bodies in (JSON or YAML, size-bounded) and JSON replies out.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// The largest request body accepted (kube-apiserver's limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// A successful answer: code, JSON body and warnings (sent as `Warning` headers).
pub struct Reply {
    pub code: StatusCode,
    pub body: Value,
    pub warnings: Vec<String>,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Self {
            code: StatusCode::OK,
            body,
            warnings: Vec::new(),
        }
    }

    pub fn created(body: Value) -> Self {
        Self {
            code: StatusCode::CREATED,
            body,
            warnings: Vec::new(),
        }
    }

    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let bytes = serde_json::to_vec(&self.body).unwrap_or_default();
        let mut resp = (self.code, bytes).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for w in self.warnings {
            let text = format!("299 - \"{}\"", w.replace(['"', '\n'], "'"));
            if let Ok(v) = HeaderValue::from_str(&text) {
                resp.headers_mut().append(header::WARNING, v);
            }
        }
        resp
    }
}

/// Reads the whole body, at most [`MAX_BODY_BYTES`] (413 past it).
pub async fn read_body(body: Body) -> ApiResult<bytes::Bytes> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("length limit") {
                ApiError::TooLarge {
                    message: format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
                }
            } else {
                ApiError::bad_request(format!("cannot read the request body: {text}"))
            }
        })
}

/// The request's content type without parameters ("application/json" when absent).
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "application/json".into())
}

/// Decodes an object body: JSON, or YAML for `application/yaml`; 415 for other types,
/// 400 for a malformed body.
pub fn decode_object(content_type: &str, bytes: &[u8]) -> ApiResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let value: Value = match content_type {
        "application/json" | "*/*" => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_norway::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid YAML: {e}")))?,
        other => {
            return Err(ApiError::UnsupportedMediaType {
                message: format!(
                    "the body of type {other:?} is not supported; send application/json or application/yaml"
                ),
            });
        }
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON/YAML object"));
    }
    Ok(value)
}

/// A `Status` of success (kube returns one for some deletions).
pub fn success_status(details: Value) -> Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Success", "details": details,
    })
}
