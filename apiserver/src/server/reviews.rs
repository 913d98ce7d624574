//! SelfSubjectAccessReview (`kubectl auth can-i`) and SelfSubjectRulesReview: questions
//! about the asking user's own permissions, answered by the authorizer and never stored.

use serde_json::{Value, json};

use super::AppState;
use super::reply::{Reply, decode_object};
use super::security::User;
use crate::auth::{Attributes, Decision};
use crate::error::{ApiError, ApiResult};
use crate::resources::ResourceInfo;

fn s(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

pub async fn review(
    state: &AppState,
    user: &User,
    resource: &ResourceInfo,
    content_type: &str,
    body: &[u8],
) -> ApiResult<Reply> {
    let mut obj = if content_type == "application/vnd.kubernetes.protobuf" {
        super::proto::decode_access_review(body)?
    } else {
        decode_object(content_type, body)?
    };
    match resource.kind {
        "SelfSubjectAccessReview" => {
            let attrs = if let Some(ra) = obj.pointer("/spec/resourceAttributes") {
                Attributes {
                    user: user.clone(),
                    verb: s(ra, "verb"),
                    api_group: s(ra, "group"),
                    resource: s(ra, "resource"),
                    subresource: s(ra, "subresource"),
                    namespace: s(ra, "namespace"),
                    name: s(ra, "name"),
                    resource_request: true,
                    path: String::new(),
                }
            } else if let Some(na) = obj.pointer("/spec/nonResourceAttributes") {
                Attributes {
                    user: user.clone(),
                    verb: s(na, "verb"),
                    api_group: String::new(),
                    resource: String::new(),
                    subresource: String::new(),
                    namespace: String::new(),
                    name: String::new(),
                    resource_request: false,
                    path: s(na, "path"),
                }
            } else {
                return Err(ApiError::bad_request(
                    "spec.resourceAttributes or spec.nonResourceAttributes is required",
                ));
            };
            let status = match state.security.decide(&attrs).await {
                Decision::Allow => json!({"allowed": true, "reason": "allowed by RBAC"}),
                Decision::Deny(reason) => json!({"allowed": false, "reason": reason}),
            };
            obj["status"] = status;
        }
        "SelfSubjectRulesReview" => {
            let ns = obj
                .pointer("/spec/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let (resource_rules, non_resource_rules) = state.security.rules_for(user, &ns);
            obj["status"] = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false});
        }
        _ => {
            return Err(ApiError::MethodNotAllowed {
                message: "not a review resource".into(),
            });
        }
    }
    obj["apiVersion"] = json!(resource.api_version());
    obj["kind"] = json!(resource.kind);
    Ok(Reply::created(obj))
}
