//! The one protobuf body the server reads: kubectl 1.32 sends `auth can-i`'s
//! SelfSubjectAccessReview as `application/vnd.kubernetes.protobuf` whatever discovery
//! says. This decodes that envelope (`k8s\0` + runtime.Unknown) and the review into the
//! JSON form the handler works on; the answer goes back as JSON, which client-go reads.

use prost::Message;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};

/// The magic prefix of Kubernetes protobuf bodies.
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, prost::Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceAttributes {
    #[prost(string, optional, tag = "1")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
    #[prost(string, optional, tag = "3")]
    group: Option<String>,
    #[prost(string, optional, tag = "4")]
    version: Option<String>,
    #[prost(string, optional, tag = "5")]
    resource: Option<String>,
    #[prost(string, optional, tag = "6")]
    subresource: Option<String>,
    #[prost(string, optional, tag = "7")]
    name: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NonResourceAttributes {
    #[prost(string, optional, tag = "1")]
    path: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Spec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SelfSubjectAccessReview {
    #[prost(message, optional, tag = "2")]
    spec: Option<Spec>,
}

/// Decodes a protobuf SelfSubjectAccessReview into its JSON form.
pub fn decode_access_review(body: &[u8]) -> ApiResult<Value> {
    let bad =
        |why: String| ApiError::bad_request(format!("cannot decode the protobuf body: {why}"));
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s protobuf prefix".into()))?;
    let unknown = Unknown::decode(rest).map_err(|e| bad(e.to_string()))?;
    let kind = unknown
        .type_meta
        .as_ref()
        .and_then(|t| t.kind.clone())
        .unwrap_or_default();
    if kind != "SelfSubjectAccessReview" {
        return Err(ApiError::UnsupportedMediaType {
            message: format!(
                "protobuf bodies are only read for SelfSubjectAccessReview, not {kind:?}; send JSON"
            ),
        });
    }
    let review = SelfSubjectAccessReview::decode(unknown.raw.as_deref().unwrap_or_default())
        .map_err(|e| bad(e.to_string()))?;
    let spec = review.spec.unwrap_or_default();
    let mut spec_json = json!({});
    if let Some(r) = spec.resource_attributes {
        spec_json["resourceAttributes"] = json!({
            "namespace": r.namespace.unwrap_or_default(), "verb": r.verb.unwrap_or_default(),
            "group": r.group.unwrap_or_default(), "version": r.version.unwrap_or_default(),
            "resource": r.resource.unwrap_or_default(), "subresource": r.subresource.unwrap_or_default(),
            "name": r.name.unwrap_or_default(),
        });
    }
    if let Some(n) = spec.non_resource_attributes {
        spec_json["nonResourceAttributes"] =
            json!({"path": n.path.unwrap_or_default(), "verb": n.verb.unwrap_or_default()});
    }
    Ok(
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "metadata": {}, "spec": spec_json}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_client_go_sends() {
        let review = SelfSubjectAccessReview {
            spec: Some(Spec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some("default".into()),
                    verb: Some("create".into()),
                    resource: Some("pods".into()),
                    ..Default::default()
                }),
                non_resource_attributes: None,
            }),
        };
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("authorization.k8s.io/v1".into()),
                kind: Some("SelfSubjectAccessReview".into()),
            }),
            raw: Some(review.encode_to_vec()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        let v = decode_access_review(&body).unwrap();
        assert_eq!(v["spec"]["resourceAttributes"]["verb"], "create");
        assert_eq!(v["spec"]["resourceAttributes"]["resource"], "pods");
        assert!(decode_access_review(b"garbage").is_err());
    }
}
