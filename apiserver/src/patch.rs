//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and Kubernetes'
//! strategic merge patch, applied to the stored object. Pure: the caller reads the
//! object, applies the patch here, validates the result and writes it with a
//! resourceVersion precondition.
//!
//! Strategic merge patch reads the patch strategy and merge key of each list from the
//! schema registry (`validation::schema`), the same metadata the OpenAPI documents give
//! kubectl, so what kubectl computes and what the server merges agree.

use serde_json::{Map, Value};

use crate::resources::ResourceInfo;
use crate::validation::schema::{Schemas, schemas};

/// Most operations one JSON patch may carry (kube-apiserver's limit too).
pub const JSON_PATCH_MAX_OPERATIONS: usize = 10_000;
/// Deepest nesting a strategic merge patch is followed to; a bound on recursion.
const MAX_DEPTH: usize = 64;

/// The patch formats, by request Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    StrategicMerge,
}

impl PatchType {
    /// The patch type of a Content-Type header (parameters such as `charset` ignored).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let media = ct.split(';').next().unwrap_or("").trim();
        match media.to_ascii_lowercase().as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            _ => None,
        }
    }
}

/// Why a patch was not applied. `Display` is the message for the Status object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The body is not a patch of this type (400 Bad Request).
    #[error("{0}")]
    Malformed(String),
    /// The patch is well formed but cannot be applied to this object, e.g. a failed
    /// `test` operation or a path that does not exist (422 Unprocessable Entity).
    #[error("{0}")]
    Unprocessable(String),
}

impl PatchError {
    /// The HTTP status code kube-apiserver answers with.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::Malformed(_) => 400,
            PatchError::Unprocessable(_) => 422,
        }
    }
}

/// Applies `patch` of type `kind` to `original` (an object of `resource`) and returns the
/// patched object. The original is left as it was.
pub fn apply_patch(
    kind: PatchType,
    resource: &ResourceInfo,
    original: &Value,
    patch: &[u8],
) -> Result<Value, PatchError> {
    let body: Value = serde_json::from_slice(patch)
        .map_err(|e| PatchError::Malformed(format!("the patch is not valid JSON: {e}")))?;
    match kind {
        PatchType::Json => json_patch(original, body),
        PatchType::Merge => {
            if !body.is_object() {
                return Err(PatchError::Malformed(
                    "a merge patch must be a JSON object".into(),
                ));
            }
            let mut out = original.clone();
            json_patch::merge(&mut out, &body);
            Ok(out)
        }
        PatchType::StrategicMerge => {
            let Value::Object(patch) = body else {
                return Err(PatchError::Malformed(
                    "a strategic merge patch must be a JSON object".into(),
                ));
            };
            let s = schemas();
            let root = s.root_of(resource).and_then(|d| s.def(d));
            let orig = match original {
                Value::Object(o) => o.clone(),
                _ => Map::new(),
            };
            match merge_map(s, orig, patch, root, 0)? {
                Some(m) => Ok(Value::Object(m)),
                None => Err(PatchError::Unprocessable(
                    "a strategic merge patch may not delete the whole object".into(),
                )),
            }
        }
    }
}

fn json_patch(original: &Value, body: Value) -> Result<Value, PatchError> {
    let count = body.as_array().map_or(0, Vec::len);
    if count > JSON_PATCH_MAX_OPERATIONS {
        return Err(PatchError::Unprocessable(format!(
            "the JSON patch has {count} operations, more than the {JSON_PATCH_MAX_OPERATIONS} allowed"
        )));
    }
    let ops: json_patch::Patch = serde_json::from_value(body)
        .map_err(|e| PatchError::Malformed(format!("the JSON patch is malformed: {e}")))?;
    let mut out = original.clone();
    json_patch::patch(&mut out, &ops).map_err(|e| {
        PatchError::Unprocessable(format!("the JSON patch could not be applied: {e}"))
    })?;
    Ok(out)
}

/// The patch strategy and merge key of a property's schema.
fn patch_meta(prop: Option<&Value>) -> (bool, bool, Option<&str>) {
    let strategy = prop
        .and_then(|p| p.get("x-kubernetes-patch-strategy"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let key = prop
        .and_then(|p| p.get("x-kubernetes-patch-merge-key"))
        .and_then(Value::as_str);
    let merge = strategy.split(',').any(|s| s == "merge");
    let retain = strategy.split(',').any(|s| s == "retainKeys");
    (merge, retain, key)
}

/// The schema of property `name` of an object schema (map values for maps).
fn child_schema<'a>(s: &'a Schemas, schema: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    let schema = s.resolve(schema?);
    schema
        .get("properties")
        .and_then(|p| p.get(name))
        .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
}

/// Merges a patch map into an original map. `None` means `$patch: delete`.
fn merge_map(
    s: &Schemas,
    mut orig: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Option<&Value>,
    depth: usize,
) -> Result<Option<Map<String, Value>>, PatchError> {
    if depth > MAX_DEPTH {
        return Err(PatchError::Unprocessable(format!(
            "the patch is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    match patch.remove("$patch") {
        None => {}
        Some(Value::String(d)) if d == "merge" => {}
        Some(Value::String(d)) if d == "delete" => return Ok(None),
        Some(Value::String(d)) if d == "replace" => {
            // Replace: the patch (minus directives) is the new map.
            return merge_map(s, Map::new(), patch, schema, depth + 1);
        }
        Some(other) => {
            return Err(PatchError::Malformed(format!(
                "unknown $patch directive {other}"
            )));
        }
    }
    let retain_keys = match patch.remove("$retainKeys") {
        None => None,
        Some(Value::Array(keys)) => Some(
            keys.iter()
                .map(|k| k.as_str().map(str::to_string))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| PatchError::Malformed("$retainKeys must list strings".into()))?,
        ),
        Some(_) => return Err(PatchError::Malformed("$retainKeys must be a list".into())),
    };
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    let mut deletions: Vec<(String, Vec<Value>)> = Vec::new();
    let keys: Vec<String> = patch.keys().cloned().collect();
    for k in keys {
        let v = patch.remove(&k).unwrap_or(Value::Null);
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let Value::Array(order) = v else {
                return Err(PatchError::Malformed(format!("{k} must be a list")));
            };
            orders.push((field.to_string(), order));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let Value::Array(values) = v else {
                return Err(PatchError::Malformed(format!("{k} must be a list")));
            };
            deletions.push((field.to_string(), values));
            continue;
        }
        if k.starts_with('$') {
            return Err(PatchError::Malformed(format!(
                "unknown patch directive {k}"
            )));
        }
        let prop = child_schema(s, schema, &k);
        if v.is_null() {
            orig.remove(&k);
            continue;
        }
        let merged = merge_value(s, orig.remove(&k), v, prop, depth)?;
        if let Some(m) = merged {
            orig.insert(k, m);
        }
    }
    for (field, values) in deletions {
        if let Some(Value::Array(list)) = orig.get_mut(&field) {
            list.retain(|x| !values.contains(x));
        }
    }
    for (field, order) in orders {
        let prop = child_schema(s, schema, &field);
        let (_, _, key) = patch_meta(prop);
        if let Some(Value::Array(list)) = orig.get_mut(&field) {
            reorder(list, &order, key);
        }
    }
    if let Some(keep) = retain_keys {
        orig.retain(|k, _| keep.contains(k));
    }
    Ok(Some(orig))
}

/// Merges one patch value into the original value of a property (if any).
fn merge_value(
    s: &Schemas,
    orig: Option<Value>,
    patch: Value,
    prop: Option<&Value>,
    depth: usize,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Object(p) => {
            let base = match orig {
                Some(Value::Object(o)) => o,
                _ => Map::new(),
            };
            Ok(merge_map(s, base, p, prop, depth + 1)?.map(Value::Object))
        }
        Value::Array(p) => {
            let (merge, _, key) = patch_meta(prop);
            let items = prop.map(|x| s.resolve(x)).and_then(|x| x.get("items"));
            let orig_list = match orig {
                Some(Value::Array(o)) if merge => o,
                _ => Vec::new(),
            };
            if !merge {
                // Atomic list: the patch's list replaces the original, directives removed.
                return Ok(Some(Value::Array(clean_list(s, p, items, depth)?)));
            }
            Ok(Some(Value::Array(match key {
                Some(key) => merge_keyed_list(s, orig_list, p, key, items, depth)?,
                None => merge_primitive_list(orig_list, p),
            })))
        }
        scalar => Ok(Some(scalar)),
    }
}

/// Patch list items with directives and nulls removed (for lists that are replaced).
fn clean_list(
    s: &Schemas,
    list: Vec<Value>,
    items: Option<&Value>,
    depth: usize,
) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(list.len());
    for v in list {
        match v {
            Value::Object(m) => {
                if let Some(m) = merge_map(s, Map::new(), m, items, depth + 1)? {
                    out.push(Value::Object(m));
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Merges lists of objects by their merge key: patch items with the key of an original
/// item are merged into it, `$patch: delete` items remove it, others are appended. A
/// `{"$patch": "replace"}` item makes the rest of the patch list replace the original.
fn merge_keyed_list(
    s: &Schemas,
    mut orig: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    items: Option<&Value>,
    depth: usize,
) -> Result<Vec<Value>, PatchError> {
    let replace = patch.iter().any(|p| {
        p.get("$patch").and_then(Value::as_str) == Some("replace")
            && p.as_object().is_some_and(|m| m.len() == 1)
    });
    if replace {
        let rest = patch
            .into_iter()
            .filter(|p| p.get("$patch").and_then(Value::as_str) != Some("replace"))
            .collect();
        return clean_list(s, rest, items, depth);
    }
    for p in patch {
        let Value::Object(mut pm) = p else {
            return Err(PatchError::Malformed(format!(
                "list items merged by {key:?} must be objects"
            )));
        };
        let Some(k) = pm.get(key).cloned() else {
            return Err(PatchError::Unprocessable(format!(
                "a list item in the patch has no merge key {key:?}"
            )));
        };
        let pos = orig.iter().position(|o| o.get(key) == Some(&k));
        if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
            orig.retain(|o| o.get(key) != Some(&k));
            continue;
        }
        match pos {
            Some(i) => {
                let base = match std::mem::take(&mut orig[i]) {
                    Value::Object(o) => o,
                    _ => Map::new(),
                };
                match merge_map(s, base, pm, items, depth + 1)? {
                    Some(m) => orig[i] = Value::Object(m),
                    None => {
                        orig.remove(i);
                    }
                }
            }
            None => {
                pm.remove("$patch");
                if let Some(m) = merge_map(s, Map::new(), pm, items, depth + 1)? {
                    orig.push(Value::Object(m));
                }
            }
        }
    }
    Ok(orig)
}

/// A primitive list with the merge strategy is a set: patch values are added once.
fn merge_primitive_list(mut orig: Vec<Value>, patch: Vec<Value>) -> Vec<Value> {
    for v in patch {
        if !orig.contains(&v) {
            orig.push(v);
        }
    }
    orig
}

/// `$setElementOrder`: items named in `order` come first, in that order; the others keep
/// their relative order after them.
fn reorder(list: &mut [Value], order: &[Value], key: Option<&str>) {
    let rank = |v: &Value| -> usize {
        order
            .iter()
            .position(|o| match key {
                Some(k) => o.get(k).is_some() && o.get(k) == v.get(k),
                None => o == v,
            })
            .unwrap_or(usize::MAX)
    };
    // A stable sort keeps unranked items in their original relative order.
    list.sort_by_key(|v| rank(v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;
    use serde_json::json;

    fn pods() -> &'static ResourceInfo {
        lookup("", "pods").unwrap()
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "web", "tier": "fe"}, "finalizers": ["a"]},
            "spec": {
                "containers": [
                    {"name": "app", "image": "nginx:1",
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 80}]},
                    {"name": "side", "image": "busybox"}
                ],
                "tolerations": [{"key": "x", "operator": "Exists"}]
            }
        })
    }

    fn smp(patch: Value) -> Result<Value, PatchError> {
        apply_patch(
            PatchType::StrategicMerge,
            pods(),
            &pod(),
            patch.to_string().as_bytes(),
        )
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json"),
            Some(PatchType::Json)
        );
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json"),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_env_by_name() {
        let out = smp(json!({"spec": {"containers": [
            {"name": "app", "image": "nginx:2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}
        ]}}))
        .unwrap();
        let c = &out["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 2);
        assert_eq!(c[0]["image"], "nginx:2");
        assert_eq!(c[1]["name"], "side");
        assert_eq!(
            c[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(c[0]["ports"], json!([{"containerPort": 80}]));
    }

    #[test]
    fn strategic_merge_ports_by_container_port_and_delete_directive() {
        let out = smp(json!({"spec": {"containers": [
            {"name": "app", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]},
            {"name": "side", "$patch": "delete"}
        ]}}))
        .unwrap();
        let c = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0]["ports"],
            json!([{"containerPort": 80, "name": "http"}, {"containerPort": 443}])
        );
    }

    #[test]
    fn strategic_merge_replaces_lists_without_strategy_and_null_deletes() {
        let out = smp(json!({
            "metadata": {"labels": {"tier": null, "v": "2"}},
            "spec": {"tolerations": [{"key": "y", "operator": "Exists"}]}
        }))
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "v": "2"}));
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "y", "operator": "Exists"}])
        );
    }

    #[test]
    fn strategic_merge_primitive_set_and_delete_from_primitive_list() {
        let out = smp(json!({"metadata": {"finalizers": ["b", "a"]}})).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        let out = smp(json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!([]));
    }

    #[test]
    fn strategic_merge_replace_directives() {
        let out = smp(json!({"spec": {"containers": [
            {"$patch": "replace"}, {"name": "only", "image": "x"}
        ]}}))
        .unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
        let out = smp(json!({"metadata": {"labels": {"$patch": "replace", "new": "1"}}})).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"new": "1"}));
    }

    #[test]
    fn strategic_merge_set_element_order_as_kubectl_sends_it() {
        let out = smp(json!({"spec": {
            "$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
            "containers": [{"name": "side", "image": "busybox:2"}]
        }}))
        .unwrap();
        let c = &out["spec"]["containers"];
        assert_eq!(c[0]["name"], "side");
        assert_eq!(c[0]["image"], "busybox:2");
        assert_eq!(c[1]["name"], "app");
    }

    #[test]
    fn strategic_merge_retain_keys_on_deployment_strategy() {
        let deploy = lookup("apps", "deployments").unwrap();
        let orig = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = apply_patch(
            PatchType::StrategicMerge,
            deploy,
            &orig,
            patch.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn strategic_merge_errors() {
        assert!(matches!(smp(json!([1])), Err(PatchError::Malformed(_))));
        assert!(matches!(
            smp(json!({"spec": {"containers": [{"image": "x"}]}})),
            Err(PatchError::Unprocessable(_))
        ));
        assert!(matches!(
            smp(json!({"$patch": "explode"})),
            Err(PatchError::Malformed(_))
        ));
        assert!(matches!(
            smp(json!({"$patch": "delete"})),
            Err(PatchError::Unprocessable(_))
        ));
        let mut deep = json!("x");
        for _ in 0..100 {
            deep = json!({ "a": deep });
        }
        assert!(smp(deep).is_err());
    }

    #[test]
    fn merge_patch_replaces_lists_and_deletes_with_null() {
        let out = apply_patch(
            PatchType::Merge,
            pods(),
            &pod(),
            br#"{"metadata":{"labels":{"app":null}},"spec":{"containers":[{"name":"x","image":"y"}]}}"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"tier": "fe"}));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "x", "image": "y"}])
        );
        assert!(matches!(
            apply_patch(PatchType::Merge, pods(), &pod(), b"[]"),
            Err(PatchError::Malformed(_))
        ));
        assert!(matches!(
            apply_patch(PatchType::Merge, pods(), &pod(), b"{not json"),
            Err(PatchError::Malformed(_))
        ));
    }

    #[test]
    fn json_patch_ops_and_failed_test() {
        let out = apply_patch(
            PatchType::Json,
            pods(),
            &pod(),
            br#"[{"op":"test","path":"/metadata/name","value":"p"},
                 {"op":"replace","path":"/spec/containers/0/image","value":"nginx:3"},
                 {"op":"add","path":"/metadata/labels/new","value":"1"},
                 {"op":"remove","path":"/spec/tolerations"}]"#,
        )
        .unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], "nginx:3");
        assert_eq!(out["metadata"]["labels"]["new"], "1");
        assert!(out["spec"].get("tolerations").is_none());
        let e = apply_patch(
            PatchType::Json,
            pods(),
            &pod(),
            br#"[{"op":"test","path":"/metadata/name","value":"q"}]"#,
        )
        .unwrap_err();
        assert_eq!(e.status_code(), 422);
        let e = apply_patch(PatchType::Json, pods(), &pod(), br#"[{"op":"fly"}]"#).unwrap_err();
        assert_eq!(e.status_code(), 400);
        let e = apply_patch(
            PatchType::Json,
            pods(),
            &pod(),
            br#"[{"op":"remove","path":"/nope/deeper"}]"#,
        )
        .unwrap_err();
        assert_eq!(e.status_code(), 422, "{e}");
    }
}
