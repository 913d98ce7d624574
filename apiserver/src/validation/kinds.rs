//! The rules a schema cannot state, per kind: object names (DNS-1123 subdomain or label,
//! or a path segment for RBAC names like `system:node`), label and annotation syntax and
//! size, container names unique and images present, port ranges, requests within
//! limits, and workload selectors that match their pod template. Runs after the schema
//! walk, on objects whose types are known to be right.

use serde_json::{Map, Value};

use super::names;
use super::{FieldError, FieldErrorReason};
use crate::resources::ResourceInfo;
use crate::selectors::LabelSelector;

/// Most bytes all annotations of an object may take, keys and values (kube's limit).
pub const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

type Errors = Vec<FieldError>;

fn invalid(errs: &mut Errors, path: &str, detail: String) {
    errs.push(FieldError::new(path, FieldErrorReason::Invalid, detail));
}

/// The semantic checks for one object of `resource`.
pub(super) fn check(resource: &ResourceInfo, object: &Value, errs: &mut Errors) {
    let empty = Value::Object(Map::new());
    let meta = object.get("metadata").unwrap_or(&empty);
    metadata(resource, meta, errs);
    match (resource.group, resource.kind) {
        ("", "Pod") => {
            if let Some(spec) = object.get("spec") {
                pod_spec("spec", spec, errs);
            } else {
                errs.push(FieldError::new(
                    "spec",
                    FieldErrorReason::Required,
                    "a pod needs a spec",
                ));
            }
        }
        ("apps", "Deployment" | "ReplicaSet") => workload(object, errs),
        ("", "Service") => {
            if let Some(spec) = object.get("spec") {
                service_spec(spec, errs);
            }
        }
        _ => {}
    }
}

/// How a kind's names are checked.
fn name_rule(resource: &ResourceInfo) -> fn(&str) -> Option<String> {
    match (resource.group, resource.kind) {
        ("", "Namespace" | "Service") => names::dns1123_label,
        ("rbac.authorization.k8s.io", _) => path_segment_name,
        _ => names::dns1123_subdomain,
    }
}

/// RBAC objects may be named anything that fits in a URL path segment (`system:node`).
fn path_segment_name(s: &str) -> Option<String> {
    if s == "." || s == ".." {
        return Some(format!("may not be {s:?}"));
    }
    if s.contains('/') || s.contains('%') {
        return Some("may not contain '/' or '%'".into());
    }
    (s.len() > names::DNS1123_SUBDOMAIN_MAX_LEN).then(|| {
        format!(
            "must be no more than {} characters",
            names::DNS1123_SUBDOMAIN_MAX_LEN
        )
    })
}

fn metadata(resource: &ResourceInfo, meta: &Value, errs: &mut Errors) {
    let name = meta.get("name").and_then(Value::as_str);
    let generate = meta.get("generateName").and_then(Value::as_str);
    let rule = name_rule(resource);
    match (name, generate) {
        (Some(n), _) if !n.is_empty() => {
            if let Some(e) = rule(n) {
                invalid(errs, "metadata.name", format!("{n:?}: {e}"));
            }
        }
        (_, Some(g)) if !g.is_empty() => {
            // The generated suffix is five alphanumerics; the prefix must allow it.
            let sample = format!("{}abcde", g.trim_end_matches('-'));
            if rule(&format!("{g}abcde")).is_some() && rule(&sample).is_some() {
                invalid(
                    errs,
                    "metadata.generateName",
                    format!("{g:?}: not a valid prefix for a name"),
                );
            }
        }
        _ => errs.push(FieldError::new(
            "metadata.name",
            FieldErrorReason::Required,
            "name or generateName is required",
        )),
    }
    if resource.namespaced
        && let Some(ns) = meta.get("namespace").and_then(Value::as_str)
        && let Some(e) = names::dns1123_label(ns)
    {
        invalid(errs, "metadata.namespace", format!("{ns:?}: {e}"));
    }
    labels("metadata.labels", meta.get("labels"), errs);
    if let Some(Value::Object(ann)) = meta.get("annotations") {
        let mut total = 0usize;
        for (k, v) in ann {
            if let Some(e) = names::qualified_name(&k.to_ascii_lowercase()) {
                invalid(errs, "metadata.annotations", format!("{k:?}: {e}"));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > ANNOTATIONS_MAX_BYTES {
            errs.push(FieldError::new(
                "metadata.annotations",
                FieldErrorReason::TooLong,
                format!("may not have more than {ANNOTATIONS_MAX_BYTES} bytes, has {total}"),
            ));
        }
    }
}

/// Label keys and values at `path` (a map of strings, types already checked).
fn labels(path: &str, labels: Option<&Value>, errs: &mut Errors) {
    let Some(Value::Object(map)) = labels else {
        return;
    };
    for (k, v) in map {
        if let Some(e) = names::qualified_name(k) {
            invalid(errs, path, format!("{k:?}: {e}"));
        }
        if let Some(v) = v.as_str()
            && let Some(e) = names::label_value(v)
        {
            invalid(errs, path, format!("{v:?}: {e}"));
        }
    }
}

fn port_in_range(errs: &mut Errors, path: &str, v: Option<&Value>, required: bool) {
    match v.and_then(Value::as_i64) {
        Some(p) if (1..=65535).contains(&p) => {}
        Some(p) => invalid(
            errs,
            path,
            format!("{p}: must be between 1 and 65535, inclusive"),
        ),
        None if required => errs.push(FieldError::new(
            path,
            FieldErrorReason::Required,
            "a port number is required",
        )),
        None => {}
    }
}

/// A pod spec at `path` (`spec` of a Pod, `spec.template.spec` of a workload).
fn pod_spec(path: &str, spec: &Value, errs: &mut Errors) {
    let mut seen: Vec<&str> = Vec::new();
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get(list).and_then(Value::as_array) else {
            continue;
        };
        if list == "containers" && containers.is_empty() {
            errs.push(FieldError::new(
                &format!("{path}.containers"),
                FieldErrorReason::Required,
                "a pod needs at least one container",
            ));
        }
        for (i, c) in containers.iter().enumerate() {
            let cpath = format!("{path}.{list}[{i}]");
            container(&cpath, c, &mut seen, errs);
        }
    }
    if let Some(Value::Object(sel)) = spec.get("nodeSelector") {
        labels(
            &format!("{path}.nodeSelector"),
            Some(&Value::Object(sel.clone())),
            errs,
        );
    }
}

fn container<'a>(path: &str, c: &'a Value, seen: &mut Vec<&'a str>, errs: &mut Errors) {
    if let Some(name) = c.get("name").and_then(Value::as_str) {
        if let Some(e) = names::dns1123_label(name) {
            invalid(errs, &format!("{path}.name"), format!("{name:?}: {e}"));
        }
        if seen.contains(&name) {
            errs.push(FieldError::new(
                &format!("{path}.name"),
                FieldErrorReason::Duplicate,
                format!("{name:?}: container names must be unique within a pod"),
            ));
        }
        seen.push(name);
    }
    if c.get("image")
        .and_then(Value::as_str)
        .is_none_or(|i| i.trim().is_empty())
    {
        errs.push(FieldError::new(
            &format!("{path}.image"),
            FieldErrorReason::Required,
            "a container needs an image",
        ));
    }
    if let Some(ports) = c.get("ports").and_then(Value::as_array) {
        for (i, p) in ports.iter().enumerate() {
            let ppath = format!("{path}.ports[{i}]");
            port_in_range(
                errs,
                &format!("{ppath}.containerPort"),
                p.get("containerPort"),
                true,
            );
            port_in_range(errs, &format!("{ppath}.hostPort"), p.get("hostPort"), false);
        }
    }
    resources(&format!("{path}.resources"), c.get("resources"), errs);
}

/// Requests and limits: non-negative, and requests no larger than limits.
fn resources(path: &str, r: Option<&Value>, errs: &mut Errors) {
    let Some(r) = r else { return };
    let read = |which: &str| -> Vec<(String, api::quantity::Quantity)> {
        r.get(which)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        api::quantity::parse_quantity(&text)
                            .ok()
                            .map(|q| (k.clone(), q))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let requests = read("requests");
    let limits = read("limits");
    for (which, list) in [("requests", &requests), ("limits", &limits)] {
        for (k, q) in list.iter() {
            if q.is_negative() {
                invalid(
                    errs,
                    &format!("{path}.{which}[{k}]"),
                    format!("{q}: must be greater than or equal to 0"),
                );
            }
        }
    }
    for (k, req) in &requests {
        if let Some((_, lim)) = limits.iter().find(|(lk, _)| lk == k)
            && req.nanos() > lim.nanos()
        {
            invalid(
                errs,
                &format!("{path}.requests[{k}]"),
                format!("{req}: must be less than or equal to {k} limit of {lim}"),
            );
        }
    }
}

/// Deployments and ReplicaSets: a selector that matches the template's labels, and a
/// valid pod template.
fn workload(object: &Value, errs: &mut Errors) {
    let Some(spec) = object.get("spec") else {
        errs.push(FieldError::new(
            "spec",
            FieldErrorReason::Required,
            "spec is required",
        ));
        return;
    };
    if let Some(r) = spec.get("replicas").and_then(Value::as_i64)
        && r < 0
    {
        invalid(
            errs,
            "spec.replicas",
            format!("{r}: must be greater than or equal to 0"),
        );
    }
    let template = spec.get("template");
    let template_labels = template
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"));
    labels("spec.template.metadata.labels", template_labels, errs);
    match spec.get("selector") {
        None | Some(Value::Null) => errs.push(FieldError::new(
            "spec.selector",
            FieldErrorReason::Required,
            "a selector is required",
        )),
        Some(sel) => match LabelSelector::from_json(sel) {
            Err(e) => invalid(errs, "spec.selector", e.to_string()),
            Ok(s) if s.is_empty() => invalid(
                errs,
                "spec.selector",
                "empty selector is invalid for deployment and replicaset".into(),
            ),
            Ok(s) => {
                let labels_obj = serde_json::json!({"metadata": {"labels": template_labels}});
                if !s.matches(&labels_obj) {
                    invalid(
                        errs,
                        "spec.template.metadata.labels",
                        "`selector` does not match template `labels`".into(),
                    );
                }
            }
        },
    }
    match template.and_then(|t| t.get("spec")) {
        Some(pod) => pod_spec("spec.template.spec", pod, errs),
        None => errs.push(FieldError::new(
            "spec.template.spec",
            FieldErrorReason::Required,
            "a pod template with a spec is required",
        )),
    }
}

fn service_spec(spec: &Value, errs: &mut Errors) {
    let mut names_seen: Vec<&str> = Vec::new();
    let ports = spec.get("ports").and_then(Value::as_array);
    let many = ports.is_some_and(|p| p.len() > 1);
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let path = format!("spec.ports[{i}]");
        port_in_range(errs, &format!("{path}.port"), p.get("port"), true);
        if let Some(t) = p.get("targetPort").and_then(Value::as_i64) {
            port_in_range(
                errs,
                &format!("{path}.targetPort"),
                Some(&Value::from(t)),
                true,
            );
        }
        match p.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => {
                if names_seen.contains(&n) {
                    errs.push(FieldError::new(
                        &format!("{path}.name"),
                        FieldErrorReason::Duplicate,
                        format!("{n:?}: port names must be unique"),
                    ));
                }
                names_seen.push(n);
            }
            _ if many => errs.push(FieldError::new(
                &format!("{path}.name"),
                FieldErrorReason::Required,
                "each port needs a name when a service has more than one",
            )),
            _ => {}
        }
    }
    labels("spec.selector", spec.get("selector"), errs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;
    use serde_json::json;

    fn run(group: &str, plural: &str, v: Value) -> Errors {
        let mut errs = Vec::new();
        check(lookup(group, plural).unwrap(), &v, &mut errs);
        errs
    }

    #[test]
    fn rbac_names_may_have_colons_but_namespaces_may_not() {
        assert!(
            run(
                "rbac.authorization.k8s.io",
                "clusterroles",
                json!({"metadata": {"name": "system:node"}})
            )
            .is_empty()
        );
        assert!(
            !run(
                "rbac.authorization.k8s.io",
                "clusterroles",
                json!({"metadata": {"name": "a/b"}})
            )
            .is_empty()
        );
        assert!(!run("", "namespaces", json!({"metadata": {"name": "a.b"}})).is_empty());
        assert!(run("", "nodes", json!({"metadata": {"name": "node-1.example"}})).is_empty());
        assert!(run("", "nodes", json!({"metadata": {"generateName": "node-"}})).is_empty());
    }

    #[test]
    fn annotations_size_limit() {
        let big = "x".repeat(ANNOTATIONS_MAX_BYTES + 1);
        let e = run(
            "",
            "nodes",
            json!({"metadata": {"name": "n", "annotations": {"a": big}}}),
        );
        assert_eq!(e[0].reason, FieldErrorReason::TooLong);
    }

    #[test]
    fn deployments_need_a_matching_selector() {
        let d = |sel: Value| {
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 1, "selector": sel,
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
        };
        assert!(
            run(
                "apps",
                "deployments",
                d(json!({"matchLabels": {"app": "web"}}))
            )
            .is_empty()
        );
        let e = run(
            "apps",
            "deployments",
            d(json!({"matchLabels": {"app": "db"}})),
        );
        assert_eq!(e[0].path, "spec.template.metadata.labels");
        let e = run("apps", "deployments", d(json!({})));
        assert_eq!(e[0].path, "spec.selector");
        let e = run("apps", "replicasets", d(Value::Null));
        assert_eq!(e[0].reason, FieldErrorReason::Required);
    }

    #[test]
    fn service_ports() {
        let e = run(
            "",
            "services",
            json!({"metadata": {"name": "s"}, "spec": {"ports": [
                {"name": "a", "port": 80}, {"name": "a", "port": 0}, {"port": 81}
            ]}}),
        );
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.ports[1].port",
                "spec.ports[1].name",
                "spec.ports[2].name"
            ]
        );
        assert!(!run("", "services", json!({"metadata": {"name": "Bad.Svc"}})).is_empty());
    }
}
