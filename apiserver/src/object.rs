//! What the server itself sets and keeps in an object's metadata: uid,
//! creationTimestamp, generation, namespace, generateName, deletionTimestamp; and the
//! spec/status split between the main resource and its `status` subresource.

use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult, Details};
use crate::resources::ResourceInfo;

/// The current time as Kubernetes writes it (RFC 3339, whole seconds, UTC).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `metadata` of an object (an empty map if it has none).
pub fn meta(object: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    object
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

/// `metadata`, created if missing.
pub fn meta_mut(object: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let obj = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the body is not a JSON object"))?;
    let m = obj.entry("metadata").or_insert_with(|| json!({}));
    if !m.is_object() {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(m.as_object_mut().expect("checked above"))
}

pub fn name(object: &Value) -> &str {
    meta(object)
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn str_field<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    meta(object).get(field).and_then(Value::as_str)
}

/// The finalizers of an object.
pub fn finalizers(object: &Value) -> Vec<String> {
    meta(object)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks `apiVersion`/`kind` (filled in when missing) and the namespace of a body
/// against the URL.
pub fn check_type_and_namespace(
    resource: &ResourceInfo,
    object: &mut Value,
    namespace: Option<&str>,
) -> ApiResult<()> {
    let obj = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the body is not a JSON object"))?;
    let api_version = resource.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None => {
            obj.insert("apiVersion".into(), json!(api_version));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None => {
            obj.insert("kind".into(), json!(resource.kind));
        }
        Some(k) if k == resource.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                resource.kind
            )));
        }
    }
    let m = meta_mut(object)?;
    if resource.namespaced {
        let url_ns = namespace.unwrap_or("");
        match m.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                m.insert("namespace".into(), json!(url_ns));
            }
            Some(ns) if ns == url_ns => {}
            Some(ns) => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({url_ns})"
                )));
            }
        }
    } else {
        m.remove("namespace");
    }
    Ok(())
}

/// Sets what the server owns on a new object: name from generateName, uid,
/// creationTimestamp, generation 1; drops what a client may not set.
pub fn prepare_create(resource: &ResourceInfo, object: &mut Value) -> ApiResult<()> {
    let m = meta_mut(object)?;
    let has_name = m
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !has_name {
        let Some(prefix) = m.get("generateName").and_then(Value::as_str) else {
            return Err(invalid(
                resource,
                "",
                "metadata.name",
                "FieldValueRequired",
                "name or generateName is required",
            ));
        };
        let suffix: String = uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .chars()
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            .take(5)
            .collect();
        m.insert("name".into(), json!(format!("{prefix}{suffix}")));
    }
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(now_rfc3339()));
    m.insert("generation".into(), json!(1));
    m.remove("resourceVersion");
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    m.remove("managedFields");
    m.remove("selfLink");
    normalize_secret(resource, object)?;
    if resource.plural == "namespaces" {
        // As Kubernetes: every namespace carries the `kubernetes` finalizer (emptied by
        // the namespace controller through `/finalize` once its contents are gone) and
        // starts Active.
        let obj = object
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("the body is not a JSON object"))?;
        let spec = obj.entry("spec").or_insert_with(|| json!({}));
        if let Some(spec) = spec.as_object_mut() {
            let has = spec
                .get("finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|f| f == "kubernetes"));
            if !has {
                let mut fins = spec
                    .get("finalizers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                fins.push(json!(NAMESPACE_FINALIZER));
                spec.insert("finalizers".into(), Value::Array(fins));
            }
        }
        obj.insert("status".into(), json!({"phase": "Active"}));
    }
    Ok(())
}

/// The finalizer in a namespace's `spec.finalizers` that the namespace controller owns.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// A namespace's `spec.finalizers`.
pub fn spec_finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an object marked for deletion may now be removed from the store: no
/// finalizer left (for a namespace, none in `spec.finalizers` either).
pub fn deletion_complete(resource: &ResourceInfo, object: &Value) -> bool {
    str_field(object, "deletionTimestamp").is_some()
        && finalizers(object).is_empty()
        && (resource.plural != "namespaces" || spec_finalizers(object).is_empty())
}

/// Builds the object to store from an update of the main resource (`sub` = None) or of
/// its status subresource: what the server owns is kept from `old`; a write to the main
/// resource keeps the old status, a write to `status` changes only the status; the
/// generation rises when anything but metadata and status changed.
pub fn prepare_update(
    resource: &ResourceInfo,
    old: &Value,
    mut new: Value,
    sub: Option<&str>,
) -> ApiResult<Value> {
    if sub == Some("finalize") {
        // Only a namespace's spec.finalizers change through `/finalize`.
        let mut out = old.clone();
        let fins = new
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or_else(|| json!([]));
        let obj = out
            .as_object_mut()
            .ok_or_else(|| ApiError::internal("stored object is not an object"))?;
        let spec = obj.entry("spec").or_insert_with(|| json!({}));
        if let Some(spec) = spec.as_object_mut() {
            spec.insert("finalizers".into(), fins);
        }
        return Ok(out);
    }
    if sub == Some("status") {
        let mut out = old.clone();
        let status = new.get("status").cloned();
        let obj = out
            .as_object_mut()
            .ok_or_else(|| ApiError::internal("stored object is not an object"))?;
        match status {
            Some(s) => obj.insert("status".into(), s),
            None => obj.remove("status"),
        };
        return Ok(out);
    }
    {
        let old_meta = meta(old).clone();
        let m = meta_mut(&mut new)?;
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old_meta.get(field) {
                Some(v) => m.insert(field.into(), v.clone()),
                None => m.remove(field),
            };
        }
        m.remove("managedFields");
        m.remove("selfLink");
    }
    normalize_secret(resource, &mut new)?;
    if resource.plural == "namespaces" {
        // spec.finalizers changes only through `/finalize`.
        if let Some(obj) = new.as_object_mut() {
            match old.get("spec") {
                Some(s) => obj.insert("spec".into(), s.clone()),
                None => obj.remove("spec"),
            };
        }
    }
    if resource.has_subresource("status") {
        let obj = new
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("the body is not a JSON object"))?;
        match old.get("status") {
            Some(s) => obj.insert("status".into(), s.clone()),
            None => obj.remove("status"),
        };
    }
    if spec_changed(old, &new) {
        let generation = meta(old)
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta_mut(&mut new)?.insert("generation".into(), json!(generation));
    }
    Ok(new)
}

/// True when anything outside metadata and status differs.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

/// A 422 with one cause.
pub fn invalid(
    resource: &ResourceInfo,
    name: &str,
    field: &str,
    reason: &str,
    message: &str,
) -> ApiError {
    ApiError::Invalid {
        message: format!(
            "{} \"{name}\" is invalid: {field}: {message}",
            resource.kind
        ),
        details: Details {
            name: name.into(),
            group: resource.group.into(),
            kind: resource.kind.into(),
        },
        causes: vec![crate::error::Cause {
            reason: reason.into(),
            message: message.into(),
            field: field.into(),
        }],
    }
}

/// The same object without its resourceVersion (to compare stored states).
pub fn without_rv(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    v
}

/// A Secret as Kubernetes stores it: `stringData` is write-only, merged into `data`
/// (base64, overriding the same keys) and dropped; every `data` value must be base64.
pub fn normalize_secret(resource: &ResourceInfo, object: &mut Value) -> ApiResult<()> {
    use base64::Engine;
    if !resource.group.is_empty() || resource.plural != "secrets" {
        return Ok(());
    }
    let name = name(object).to_string();
    let Some(obj) = object.as_object_mut() else {
        return Ok(());
    };
    let string_data = obj.remove("stringData");
    let engine = base64::engine::general_purpose::STANDARD;
    if let Some(data) = obj.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            let ok = v.as_str().is_some_and(|s| engine.decode(s).is_ok());
            if !ok {
                return Err(invalid(
                    resource,
                    &name,
                    &format!("data[{k}]"),
                    "FieldValueInvalid",
                    "a Secret's data values must be base64-encoded strings",
                ));
            }
        }
    }
    if let Some(Value::Object(sd)) = string_data {
        let data = obj.entry("data").or_insert_with(|| json!({}));
        if data.is_null() {
            *data = json!({});
        }
        if let Some(data) = data.as_object_mut() {
            for (k, v) in sd {
                let text = v.as_str().unwrap_or_default();
                data.insert(k, json!(engine.encode(text.as_bytes())));
            }
        }
    }
    Ok(())
}
