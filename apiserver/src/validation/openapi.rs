//! The OpenAPI documents: `/openapi/v3` (a root listing one document per group/version,
//! each with `paths` and `components.schemas`) and `/openapi/v2` (one swagger 2.0
//! document), both generated from the schema registry validation uses and from the
//! resource table, so the server advertises exactly what it enforces and serves.
//!
//! What kubectl 1.32 reads here: the PATCH operation of each kind, with its
//! `x-kubernetes-group-version-kind` and a `fieldValidation` query parameter (that is how
//! it decides the server validates fields itself), and each kind's schema with the
//! `x-kubernetes-patch-merge-key`/`-strategy` of its lists (to compute strategic merge
//! patches for `apply` and `edit`).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::schema::{REF_PREFIX, Schemas, schemas};
use crate::resources::{RESOURCES, ResourceInfo, group_versions};

/// The Kubernetes version the documents (and `/version`) speak for.
const INFO_VERSION: &str = "v1.32.0";
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";
const PATCH_DEF: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

/// One query or path parameter.
#[derive(Clone, Copy)]
struct Param {
    name: &'static str,
    location: &'static str,
    kind: &'static str,
    description: &'static str,
}

const fn q(name: &'static str, kind: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: "query",
        kind,
        description,
    }
}

const PRETTY: Param = q(
    "pretty",
    "string",
    "If 'true', the output is pretty printed.",
);
const DRY_RUN: Param = q(
    "dryRun",
    "string",
    "When present (All), modifications are validated but not persisted.",
);
const FIELD_MANAGER: Param = q(
    "fieldManager",
    "string",
    "A name for the actor making the change.",
);
const FIELD_VALIDATION: Param = q(
    "fieldValidation",
    "string",
    "How to treat fields the schema does not know: Ignore, Warn (default) or Strict.",
);
const WRITE_PARAMS: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
const LIST_PARAMS: &[Param] = &[
    q("labelSelector", "string", "Select objects by their labels."),
    q("fieldSelector", "string", "Select objects by their fields."),
    q(
        "limit",
        "integer",
        "The most objects to return in one page.",
    ),
    q(
        "continue",
        "string",
        "The continue token of the previous page.",
    ),
    q(
        "resourceVersion",
        "string",
        "Read (or watch from) this resourceVersion.",
    ),
    q(
        "resourceVersionMatch",
        "string",
        "How resourceVersion applies: NotOlderThan or Exact.",
    ),
    q("watch", "boolean", "Watch for changes instead of listing."),
    q(
        "allowWatchBookmarks",
        "boolean",
        "Send BOOKMARK events while watching.",
    ),
    q(
        "timeoutSeconds",
        "integer",
        "End the list or watch after this many seconds.",
    ),
];
const DELETE_PARAMS: &[Param] = &[
    DRY_RUN,
    q(
        "gracePeriodSeconds",
        "integer",
        "Seconds before the object is deleted.",
    ),
    q(
        "propagationPolicy",
        "string",
        "Orphan, Background or Foreground deletion of dependents.",
    ),
];
const LOG_PARAMS: &[Param] = &[
    q("container", "string", "The container whose log to read."),
    q("follow", "boolean", "Stream the log as it grows."),
    q(
        "previous",
        "boolean",
        "The log of the previous instance of the container.",
    ),
    q("tailLines", "integer", "Only this many lines from the end."),
    q(
        "timestamps",
        "boolean",
        "Prefix each line with its timestamp.",
    ),
    q(
        "sinceSeconds",
        "integer",
        "Only lines newer than this many seconds.",
    ),
];

/// One operation, rendered into either OpenAPI version.
struct Operation {
    method: &'static str,
    /// `x-kubernetes-action`: get list post put patch delete deletecollection connect.
    action: &'static str,
    id: String,
    gvk: Value,
    params: Vec<Param>,
    /// Request body schema (definition name) and the content types it is accepted in.
    body: Option<(String, &'static [&'static str])>,
    /// Response schema (definition name), or None for plain text.
    response: Option<String>,
    description: String,
}

/// A path with its path parameters and operations.
struct PathItem {
    path: String,
    params: Vec<Param>,
    ops: Vec<Operation>,
}

fn camel(s: &str) -> String {
    let mut out = String::new();
    for part in s.split(['.', '/', '-']) {
        let mut c = part.chars();
        if let Some(f) = c.next() {
            out.extend(f.to_uppercase());
            out.push_str(c.as_str());
        }
    }
    out
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

const JSON_TYPES: &[&str] = &["application/json", "application/yaml"];
const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// The paths of one resource, with the definitions they refer to.
fn resource_paths(s: &Schemas, r: &ResourceInfo) -> Vec<PathItem> {
    let Some(def) = s.root_of(r).map(str::to_string) else {
        return Vec::new();
    };
    let base = r.group_version_path();
    let gv_id = camel(&format!(
        "{}{}",
        r.group.split('.').next().unwrap_or(""),
        r.version
    ));
    let kind_gvk = gvk(r.group, r.version, r.kind);
    let list_def = format!("{def}List");
    let name_param = Param {
        name: "name",
        location: "path",
        kind: "string",
        description: "The name of the object.",
    };
    let ns_param = Param {
        name: "namespace",
        location: "path",
        kind: "string",
        description: "The namespace of the object.",
    };
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let (collection, mut scope_params) = if r.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", r.plural),
            vec![ns_param],
        )
    } else {
        (format!("{base}/{}", r.plural), vec![])
    };
    scope_params.push(PRETTY);
    let op = |method,
              action,
              verb: &str,
              params: &[Param],
              body: Option<(String, &'static [&'static str])>,
              response: Option<String>,
              what: &str| Operation {
        method,
        action,
        id: format!("{verb}{}{scope}{}{what}", camel(&gv_id), r.kind),
        gvk: kind_gvk.clone(),
        params: params.to_vec(),
        body,
        response,
        description: format!("{verb} {}{what}", r.kind),
    };
    let mut items = Vec::new();
    if !r.stored {
        items.push(PathItem {
            path: format!("{base}/{}", r.plural),
            params: vec![PRETTY],
            ops: vec![op(
                "post",
                "post",
                "create",
                WRITE_PARAMS,
                Some((def.clone(), JSON_TYPES)),
                Some(def.clone()),
                "",
            )],
        });
        return items;
    }
    let delete_collection_params: Vec<Param> =
        LIST_PARAMS.iter().chain(DELETE_PARAMS).copied().collect();
    items.push(PathItem {
        path: collection.clone(),
        params: scope_params.clone(),
        ops: vec![
            op(
                "get",
                "list",
                "list",
                LIST_PARAMS,
                None,
                Some(list_def.clone()),
                "",
            ),
            op(
                "post",
                "post",
                "create",
                WRITE_PARAMS,
                Some((def.clone(), JSON_TYPES)),
                Some(def.clone()),
                "",
            ),
            op(
                "delete",
                "deletecollection",
                "deleteCollection",
                &delete_collection_params,
                Some((format!("{META}.DeleteOptions"), JSON_TYPES)),
                Some(format!("{META}.Status")),
                "",
            ),
        ],
    });
    if r.namespaced {
        items.push(PathItem {
            path: format!("{base}/{}", r.plural),
            params: vec![PRETTY],
            ops: vec![Operation {
                id: format!("list{}{}ForAllNamespaces", camel(&gv_id), r.kind),
                ..op(
                    "get",
                    "list",
                    "list",
                    LIST_PARAMS,
                    None,
                    Some(list_def.clone()),
                    "",
                )
            }],
        });
    }
    let mut named_params = scope_params.clone();
    named_params.insert(0, name_param);
    let patch_params: Vec<Param> = WRITE_PARAMS
        .iter()
        .copied()
        .chain([q("force", "boolean", "Force the apply.")])
        .collect();
    items.push(PathItem {
        path: format!("{collection}/{{name}}"),
        params: named_params.clone(),
        ops: vec![
            op("get", "get", "read", &[], None, Some(def.clone()), ""),
            op(
                "put",
                "put",
                "replace",
                WRITE_PARAMS,
                Some((def.clone(), JSON_TYPES)),
                Some(def.clone()),
                "",
            ),
            op(
                "patch",
                "patch",
                "patch",
                &patch_params,
                Some((PATCH_DEF.to_string(), PATCH_TYPES)),
                Some(def.clone()),
                "",
            ),
            op(
                "delete",
                "delete",
                "delete",
                DELETE_PARAMS,
                Some((format!("{META}.DeleteOptions"), JSON_TYPES)),
                Some(format!("{META}.Status")),
                "",
            ),
        ],
    });
    for sub in r.subresources {
        let path = format!("{collection}/{{name}}/{sub}");
        let what = camel(sub);
        let item = match *sub {
            "status" => PathItem {
                path,
                params: named_params.clone(),
                ops: vec![
                    op("get", "get", "read", &[], None, Some(def.clone()), &what),
                    op(
                        "put",
                        "put",
                        "replace",
                        WRITE_PARAMS,
                        Some((def.clone(), JSON_TYPES)),
                        Some(def.clone()),
                        &what,
                    ),
                    op(
                        "patch",
                        "patch",
                        "patch",
                        &patch_params,
                        Some((PATCH_DEF.to_string(), PATCH_TYPES)),
                        Some(def.clone()),
                        &what,
                    ),
                ],
            },
            "scale" => {
                let scale = "io.k8s.api.autoscaling.v1.Scale".to_string();
                let g = gvk("autoscaling", "v1", "Scale");
                let mut ops = vec![
                    op("get", "get", "read", &[], None, Some(scale.clone()), &what),
                    op(
                        "put",
                        "put",
                        "replace",
                        WRITE_PARAMS,
                        Some((scale.clone(), JSON_TYPES)),
                        Some(scale.clone()),
                        &what,
                    ),
                    op(
                        "patch",
                        "patch",
                        "patch",
                        &patch_params,
                        Some((PATCH_DEF.to_string(), PATCH_TYPES)),
                        Some(scale.clone()),
                        &what,
                    ),
                ];
                for o in &mut ops {
                    o.gvk = g.clone();
                }
                PathItem {
                    path,
                    params: named_params.clone(),
                    ops,
                }
            }
            "binding" => {
                let binding = "io.k8s.api.core.v1.Binding".to_string();
                let mut o = op(
                    "post",
                    "post",
                    "create",
                    WRITE_PARAMS,
                    Some((binding.clone(), JSON_TYPES)),
                    Some(binding),
                    &what,
                );
                o.gvk = gvk("", "v1", "Binding");
                PathItem {
                    path,
                    params: named_params.clone(),
                    ops: vec![o],
                }
            }
            "log" => PathItem {
                path,
                params: named_params.clone(),
                ops: vec![op("get", "get", "read", LOG_PARAMS, None, None, &what)],
            },
            _ => continue,
        };
        items.push(item);
    }
    items
}

/// The list schema of a kind: `{apiVersion, kind, metadata: ListMeta, items: [kind]}`.
fn list_schema(r: &ResourceInfo, def: &str) -> Value {
    json!({
        "description": format!("{} is a list of {} objects.", r.list_kind(), r.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": "The versioned schema of this object."},
            "kind": {"type": "string", "description": "The REST resource this object represents."},
            "metadata": {"$ref": format!("{REF_PREFIX}{META}.ListMeta")},
            "items": {"type": "array", "items": {"$ref": format!("{REF_PREFIX}{def}")}}
        },
        "x-kubernetes-group-version-kind": [{"group": r.group, "version": r.version, "kind": r.list_kind()}]
    })
}

/// kube's form of a `$ref` with siblings: `allOf: [{$ref}]` next to the description,
/// which every OpenAPI reader accepts.
fn wrap_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.len() > 1
                && let Some(r) = m.remove("$ref")
            {
                m.insert("allOf".into(), json!([{"$ref": r}]));
            }
            m.values_mut().for_each(wrap_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(wrap_refs),
        _ => {}
    }
}

/// Every definition named by a `$ref` inside `v`, added to `out` with what they name.
fn collect_refs(
    s: &Schemas,
    v: &Value,
    extra: &Map<String, Value>,
    out: &mut BTreeMap<String, Value>,
) {
    match v {
        Value::Object(m) => {
            if let Some(name) = m
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(REF_PREFIX))
                && !out.contains_key(name)
                && let Some(d) = s.def(name).or_else(|| extra.get(name))
            {
                out.insert(name.to_string(), d.clone());
                collect_refs(s, d, extra, out);
            }
            m.values().for_each(|x| collect_refs(s, x, extra, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(s, x, extra, out)),
        _ => {}
    }
}

/// The (group, version) of a `/openapi/v3` path key: "api/v1" or "apis/apps/v1".
fn parse_gv(gv: &str) -> Option<(&str, &str)> {
    if let Some(v) = gv.strip_prefix("api/") {
        return Some(("", v));
    }
    gv.strip_prefix("apis/")?.rsplit_once('/')
}

fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn v3_param(p: &Param) -> Value {
    json!({"name": p.name, "in": p.location, "description": p.description,
           "required": p.location == "path", "schema": {"type": p.kind, "uniqueItems": true}})
}

fn v3_doc(group: &str, version: &str) -> Value {
    let s = schemas();
    let mut extra = Map::new();
    let patch_doc = "A patch: JSON patch, merge patch or strategic merge patch.";
    extra.insert(
        PATCH_DEF.into(),
        json!({"type": "object", "description": patch_doc}),
    );
    let mut paths = Map::new();
    let mut wanted = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        if let Some(def) = s.root_of(r) {
            extra.insert(format!("{def}List"), list_schema(r, def));
        }
        for item in resource_paths(s, r) {
            let mut p = Map::new();
            p.insert(
                "parameters".into(),
                Value::Array(item.params.iter().map(v3_param).collect()),
            );
            for op in item.ops {
                let mut o = json!({
                    "operationId": op.id, "description": op.description,
                    "tags": [gv_key(group, version).replace('/', "_")],
                    "parameters": op.params.iter().map(v3_param).collect::<Vec<_>>(),
                    "x-kubernetes-action": op.action,
                    "x-kubernetes-group-version-kind": op.gvk,
                    "responses": {"401": {"description": "Unauthorized"}}
                });
                let ok = if op.method == "post" { "201" } else { "200" };
                o["responses"][ok] = match &op.response {
                    Some(def) => {
                        wanted.push(def.clone());
                        {
                            let schema = json!({"$ref": format!("{REF_PREFIX}{def}")});
                            json!({"description": "OK",
                                   "content": {"application/json": {"schema": schema}}})
                        }
                    }
                    None => {
                        let schema = json!({"type": "string"});
                        json!({"description": "OK", "content": {"text/plain": {"schema": schema}}})
                    }
                };
                if let Some((def, types)) = &op.body {
                    wanted.push(def.clone());
                    let content: Map<String, Value> = types
                        .iter()
                        .map(|t| {
                            (
                                t.to_string(),
                                json!({"schema": {"$ref": format!("{REF_PREFIX}{def}")}}),
                            )
                        })
                        .collect();
                    o["requestBody"] =
                        json!({"content": content, "required": op.method != "delete"});
                }
                p.insert(op.method.into(), o);
            }
            paths.insert(item.path, Value::Object(p));
        }
    }
    let mut defs = BTreeMap::new();
    for w in wanted {
        let holder = json!({"$ref": format!("{REF_PREFIX}{w}")});
        collect_refs(s, &holder, &extra, &mut defs);
    }
    let mut schemas_out: Map<String, Value> = defs.into_iter().collect();
    let mut doc_schemas = Value::Object(std::mem::take(&mut schemas_out));
    wrap_refs(&mut doc_schemas);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": INFO_VERSION},
        "paths": paths,
        "components": {
            "schemas": doc_schemas,
            "securitySchemes": {"BearerToken": {
                "type": "apiKey", "name": "authorization", "in": "header", "description": BEARER
            }}
        },
        "security": [{"BearerToken": []}]
    })
}

/// The per-group/version v3 documents and their hashes, built once.
fn v3_docs() -> &'static BTreeMap<String, (Value, String)> {
    static DOCS: OnceLock<BTreeMap<String, (Value, String)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        group_versions()
            .into_iter()
            .map(|(g, v)| {
                let doc = v3_doc(g, v);
                let digest = Sha256::digest(doc.to_string().as_bytes());
                let hash: String = digest.iter().map(|b| format!("{b:02X}")).collect();
                (gv_key(g, v), (doc, hash))
            })
            .collect()
    })
}

/// GET /openapi/v3: {"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=..."}, ...}}
pub fn openapi_v3_root() -> Value {
    let paths: Map<String, Value> = v3_docs()
        .iter()
        .map(|(k, (_, hash))| {
            (
                k.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={hash}")}),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// GET /openapi/v3/<gv>: gv = "api/v1" | "apis/apps/v1"; None for a group/version not served.
pub fn openapi_v3_group_version(gv: &str) -> Option<Value> {
    let (g, v) = parse_gv(gv.trim_matches('/'))?;
    v3_docs().get(&gv_key(g, v)).map(|(doc, _)| doc.clone())
}

/// Rewrites v3 references and request bodies into swagger 2.0 form.
fn to_v2_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(name) = r.strip_prefix(REF_PREFIX)
            {
                *r = format!("#/definitions/{name}");
            }
            m.values_mut().for_each(to_v2_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(to_v2_refs),
        _ => {}
    }
}

fn v2_param(p: &Value) -> Value {
    json!({"name": p["name"], "in": p["in"], "description": p["description"],
           "required": p["required"], "type": p["schema"]["type"], "uniqueItems": true})
}

const BEARER: &str = "Bearer token authentication";

/// One v3 operation in swagger 2.0 form: the request body becomes a `body` parameter,
/// response content a `schema`.
fn v2_operation(op: &Value) -> Value {
    let mut o = op.clone();
    let params = op["parameters"].as_array().into_iter().flatten();
    let mut params: Vec<Value> = params.map(v2_param).collect();
    let mut consumes = Vec::new();
    if let Some(content) = op["requestBody"]["content"].as_object() {
        consumes = content.keys().cloned().collect();
        let schema = content.values().next().map(|c| c["schema"].clone());
        params.push(json!({
            "name": "body", "in": "body",
            "required": op["requestBody"]["required"],
            "schema": schema.unwrap_or(Value::Null)
        }));
    }
    let Some(m) = o.as_object_mut() else {
        return o;
    };
    m.remove("requestBody");
    m.insert("parameters".into(), Value::Array(params));
    if !consumes.is_empty() {
        m.insert("consumes".into(), json!(consumes));
    }
    m.insert(
        "produces".into(),
        json!(["application/json", "application/yaml"]),
    );
    m.insert("schemes".into(), json!(["https"]));
    let responses = m.get_mut("responses").and_then(Value::as_object_mut);
    for (_, resp) in responses.into_iter().flatten() {
        let content = resp["content"].as_object();
        let schema = content
            .and_then(|c| c.values().next())
            .map(|c| c["schema"].clone());
        if let Some(r) = resp.as_object_mut() {
            r.remove("content");
            if let Some(s) = schema {
                r.insert("schema".into(), s);
            }
        }
    }
    o
}

fn build_v2() -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for (doc, _) in v3_docs().values() {
        let schemas = doc["components"]["schemas"]
            .as_object()
            .into_iter()
            .flatten();
        for (k, v) in schemas {
            definitions.insert(k.clone(), v.clone());
        }
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            let mut out = Map::new();
            for (method, op) in item.as_object().into_iter().flatten() {
                let v2 = if method == "parameters" {
                    let params = op.as_array().into_iter().flatten();
                    Value::Array(params.map(v2_param).collect())
                } else {
                    v2_operation(op)
                };
                out.insert(method.clone(), v2);
            }
            paths.insert(path.clone(), Value::Object(out));
        }
    }
    let mut doc = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": INFO_VERSION},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {
            "type": "apiKey", "name": "authorization", "in": "header", "description": BEARER
        }},
        "security": [{"BearerToken": []}]
    });
    to_v2_refs(&mut doc);
    doc
}

/// GET /openapi/v2: one swagger 2.0 document of every group/version.
pub fn openapi_v2() -> Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build_v2).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r.to_string());
                }
                m.values().for_each(|x| all_refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| all_refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn the_root_lists_every_group_version_with_a_hash() {
        let root = openapi_v3_root();
        let paths = root["paths"].as_object().unwrap();
        for key in [
            "api/v1",
            "apis/apps/v1",
            "apis/rbac.authorization.k8s.io/v1",
            "apis/coordination.k8s.io/v1",
        ] {
            let url = paths[key]["serverRelativeURL"].as_str().unwrap();
            assert!(
                url.starts_with(&format!("/openapi/v3/{key}?hash=")),
                "{url}"
            );
        }
        assert!(openapi_v3_group_version("apis/nope/v1").is_none());
        assert!(openapi_v3_group_version("garbage").is_none());
    }

    #[test]
    fn every_reference_resolves_inside_its_document() {
        for (key, _) in openapi_v3_root()["paths"].as_object().unwrap() {
            let doc = openapi_v3_group_version(key).unwrap();
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            let mut refs = Vec::new();
            all_refs(&doc, &mut refs);
            for r in refs {
                let name = r.strip_prefix(REF_PREFIX).unwrap();
                assert!(schemas.contains_key(name), "{key}: {r}");
            }
        }
        let v2 = openapi_v2();
        let mut refs = Vec::new();
        all_refs(&v2, &mut refs);
        for r in refs {
            let name = r.strip_prefix("#/definitions/").unwrap();
            assert!(v2["definitions"].get(name).is_some(), "v2: {r}");
        }
    }

    /// What kubectl looks for: a PATCH with the kind's GVK and a fieldValidation param,
    /// and the kind's schema (by GVK) with merge keys on its lists.
    #[test]
    fn kubectl_finds_field_validation_and_merge_keys() {
        let doc = openapi_v3_group_version("apis/apps/v1").unwrap();
        let path = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        let patch = &path["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
        );
        let d = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            d["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        let core = openapi_v3_group_version("api/v1").unwrap();
        let pod_spec = &core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"];
        assert_eq!(
            pod_spec["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        assert_eq!(pod_spec["properties"]["restartPolicy"]["enum"][0], "Always");
        assert!(
            core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"].is_object()
        );
        assert!(core["paths"]["/api/v1/pods"]["get"].is_object());
        assert!(core["paths"]["/api/v1/nodes/{name}/status"]["patch"].is_object());
        assert!(core["components"]["schemas"]["io.k8s.api.core.v1.PodList"].is_object());
    }

    #[test]
    fn v2_has_body_parameters_and_definitions() {
        let v2 = openapi_v2();
        assert_eq!(v2["swagger"], "2.0");
        let create = &v2["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"];
        let body = create["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["in"] == "body")
            .unwrap();
        assert_eq!(
            body["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Pod"
        );
        assert!(v2["definitions"]["io.k8s.api.apps.v1.Deployment"].is_object());
    }
}
