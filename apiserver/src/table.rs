//! `meta.k8s.io/v1` Table output (for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`):
//! the columns `kubectl get` prints for each resource, computed on the server as
//! kube-apiserver does, with `priority: 1` on the columns only `-o wide` shows, and each
//! row's object as `includeObject` asks (None, Metadata or the whole Object).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::resources::ResourceInfo;

/// One column: (name, type, format, priority, description).
type Column = (&'static str, &'static str, &'static str, u8, &'static str);

const NAME: Column = (
    "Name",
    "string",
    "name",
    0,
    "Name must be unique within a namespace.",
);
const AGE: Column = (
    "Age",
    "string",
    "",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

fn columns(resource: &ResourceInfo) -> Vec<Column> {
    let c = |name, ty, priority, description| (name, ty, "", priority, description);
    match (resource.group, resource.plural) {
        ("", "pods") => vec![
            NAME,
            c(
                "Ready",
                "string",
                0,
                "The number of ready containers out of all containers.",
            ),
            c(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            c(
                "Restarts",
                "string",
                0,
                "The number of times the containers have been restarted.",
            ),
            AGE,
            c("IP", "string", 1, "The IP address allocated to the pod."),
            c("Node", "string", 1, "The node the pod is bound to."),
            c(
                "Nominated Node",
                "string",
                1,
                "The node the pod is nominated to.",
            ),
            c("Readiness Gates", "string", 1, "The pod's readiness gates."),
        ],
        ("", "nodes") => vec![
            NAME,
            c("Status", "string", 0, "The status of the node."),
            c("Roles", "string", 0, "The roles of the node."),
            AGE,
            c(
                "Version",
                "string",
                0,
                "Kubelet version reported by the node.",
            ),
            c("Internal-IP", "string", 1, "The node's internal IP."),
            c("External-IP", "string", 1, "The node's external IP."),
            c("OS-Image", "string", 1, "OS image reported by the node."),
            c(
                "Kernel-Version",
                "string",
                1,
                "Kernel version reported by the node.",
            ),
            c(
                "Container-Runtime",
                "string",
                1,
                "Container runtime reported by the node.",
            ),
        ],
        ("apps", "deployments") => vec![
            NAME,
            c(
                "Ready",
                "string",
                0,
                "Number of ready pods out of those desired.",
            ),
            c(
                "Up-to-date",
                "integer",
                0,
                "Total number of pods with the desired template.",
            ),
            c("Available", "integer", 0, "Total number of available pods."),
            AGE,
            c(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            c(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            c("Selector", "string", 1, "Label selector for pods."),
        ],
        ("apps", "replicasets") => vec![
            NAME,
            c("Desired", "integer", 0, "Number of desired pods."),
            c("Current", "integer", 0, "Number of actually running pods."),
            c("Ready", "integer", 0, "Number of ready pods."),
            AGE,
            c(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            c(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            c("Selector", "string", 1, "Label selector for pods."),
        ],
        ("", "services") => vec![
            NAME,
            c("Type", "string", 0, "The type of the service."),
            c("Cluster-IP", "string", 0, "The cluster IP of the service."),
            c(
                "External-IP",
                "string",
                0,
                "The external IPs of the service.",
            ),
            c("Port(s)", "string", 0, "The ports of the service."),
            AGE,
            c(
                "Selector",
                "string",
                1,
                "Route traffic to pods with these labels.",
            ),
        ],
        ("", "namespaces") => vec![
            NAME,
            c("Status", "string", 0, "The status of the namespace."),
            AGE,
        ],
        ("", "endpoints") => vec![
            NAME,
            c("Endpoints", "string", 0, "Endpoints of the service."),
            AGE,
        ],
        ("", "events") => vec![
            c(
                "Last Seen",
                "string",
                0,
                "Time since the event was last seen.",
            ),
            c("Type", "string", 0, "Type of the event."),
            c("Reason", "string", 0, "Why the event happened."),
            c("Object", "string", 0, "The object the event is about."),
            c("Message", "string", 0, "A human-readable description."),
        ],
        ("coordination.k8s.io", "leases") => vec![
            NAME,
            c("Holder", "string", 0, "The holder of the lease."),
            AGE,
        ],
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => vec![
            NAME,
            c("Role", "string", 0, "The role bound."),
            AGE,
            c("Users", "string", 1, "Users bound."),
            c("Groups", "string", 1, "Groups bound."),
            c("ServiceAccounts", "string", 1, "Service accounts bound."),
        ],
        _ => vec![NAME, AGE],
    }
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`2024-01-02T03:04:05Z`, offsets
/// allowed); None if it does not parse.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's method.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut t = days * 86_400 + h * 3600 + mi * 60 + sec;
    // Skip fractional seconds, then apply the offset.
    let rest = s[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    match rest.as_bytes() {
        [b'Z' | b'z'] => {}
        [sign @ (b'+' | b'-'), ..] if rest.len() == 6 => {
            let off = num_at(rest, 1..3)? * 3600 + num_at(rest, 4..6)? * 60;
            t -= if *sign == b'+' { off } else { -off };
        }
        _ => return None,
    }
    Some(t)
}

fn num_at(s: &str, r: std::ops::Range<usize>) -> Option<i64> {
    s.get(r)?.parse().ok()
}

/// kubectl's human duration: `45s`, `3m20s`, `47m`, `5h12m`, `30h`, `3d4h`, `200d`, `2y10d`.
pub fn human_duration(secs: i64) -> String {
    if secs < 0 {
        return "<invalid>".into();
    }
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", secs % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        let y = d / 365;
        if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        }
    } else {
        format!("{}y", d / 365)
    }
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or("")
}

fn int(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_i64().unwrap_or(0)
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn age(o: &Value, now: i64) -> String {
    parse_timestamp(text(o, &["metadata", "creationTimestamp"]))
        .map_or_else(|| "<unknown>".into(), |t| human_duration(now - t))
}

/// The pod STATUS column, as kubectl derives it.
fn pod_status(pod: &Value) -> String {
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return "Terminating".into();
    }
    let mut reason = match text(pod, &["status", "reason"]) {
        "" => text(pod, &["status", "phase"]).to_string(),
        r => r.to_string(),
    };
    for cs in pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let waiting = text(cs, &["state", "waiting", "reason"]);
        let terminated = text(cs, &["state", "terminated", "reason"]);
        if !waiting.is_empty() {
            reason = waiting.to_string();
        } else if !terminated.is_empty() {
            reason = terminated.to_string();
        }
    }
    if reason.is_empty() {
        "Pending".into()
    } else {
        reason
    }
}

fn containers_and_images(template_spec: &Value) -> (String, String) {
    let cs = template_spec["containers"].as_array().into_iter().flatten();
    let (names, images): (Vec<&str>, Vec<&str>) = cs
        .map(|c| (text(c, &["name"]), text(c, &["image"])))
        .unzip();
    (names.join(","), images.join(","))
}

fn selector_text(sel: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in sel["matchLabels"].as_object().into_iter().flatten() {
        parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let key = text(e, &["key"]);
        parts.push(match text(e, &["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    or_none(parts.join(","))
}

fn map_text(m: &Value) -> String {
    let parts: Vec<String> = m
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    or_none(parts.join(","))
}

fn cells(resource: &ResourceInfo, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(text(o, &["metadata", "name"]));
    let age = json!(age(o, now));
    match (resource.group, resource.plural) {
        ("", "pods") => {
            let statuses = o["status"]["containerStatuses"].as_array();
            let ready = statuses
                .into_iter()
                .flatten()
                .filter(|c| c["ready"] == true)
                .count();
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let restarts: i64 = statuses
                .into_iter()
                .flatten()
                .map(|c| int(c, &["restartCount"]))
                .sum();
            let gates = o["spec"]["readinessGates"].as_array().map_or(0, Vec::len);
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                age,
                json!(or_none(text(o, &["status", "podIP"]).to_string())),
                json!(or_none(text(o, &["spec", "nodeName"]).to_string())),
                json!(or_none(
                    text(o, &["status", "nominatedNodeName"]).to_string()
                )),
                json!(if gates == 0 {
                    "<none>".to_string()
                } else {
                    format!("0/{gates}")
                }),
            ]
        }
        ("", "nodes") => {
            let conditions = o["status"]["conditions"].as_array().into_iter().flatten();
            let ready = conditions
                .filter(|c| c["type"] == "Ready")
                .map(|c| text(c, &["status"]))
                .next();
            let mut status = match ready {
                Some("True") => "Ready".to_string(),
                Some(_) => "NotReady".to_string(),
                None => "Unknown".to_string(),
            };
            if o["spec"]["unschedulable"] == true {
                status.push_str(",SchedulingDisabled");
            }
            let labels = o["metadata"]["labels"].as_object().into_iter().flatten();
            let roles: Vec<&str> = labels
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
                .collect();
            let addr = |t: &str| {
                let addrs = o["status"]["addresses"].as_array().into_iter().flatten();
                let found = addrs
                    .filter(|a| a["type"] == t)
                    .map(|a| text(a, &["address"]))
                    .next();
                or_none(found.unwrap_or("").to_string())
            };
            let info = |k: &str| json!(or_none(text(o, &["status", "nodeInfo", k]).to_string()));
            vec![
                name,
                json!(status),
                json!(or_none(roles.join(","))),
                age,
                json!(text(o, &["status", "nodeInfo", "kubeletVersion"])),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                info("osImage"),
                info("kernelVersion"),
                info("containerRuntimeVersion"),
            ]
        }
        ("apps", "deployments") => {
            let (c, i) = containers_and_images(&o["spec"]["template"]["spec"]);
            let desired = o["spec"]["replicas"].as_i64().unwrap_or(1);
            vec![
                name,
                json!(format!(
                    "{}/{desired}",
                    int(o, &["status", "readyReplicas"])
                )),
                json!(int(o, &["status", "updatedReplicas"])),
                json!(int(o, &["status", "availableReplicas"])),
                age,
                json!(c),
                json!(i),
                json!(selector_text(&o["spec"]["selector"])),
            ]
        }
        ("apps", "replicasets") => {
            let (c, i) = containers_and_images(&o["spec"]["template"]["spec"]);
            vec![
                name,
                json!(o["spec"]["replicas"].as_i64().unwrap_or(1)),
                json!(int(o, &["status", "replicas"])),
                json!(int(o, &["status", "readyReplicas"])),
                age,
                json!(c),
                json!(i),
                json!(selector_text(&o["spec"]["selector"])),
            ]
        }
        ("", "services") => {
            let ports: Vec<String> = o["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(np) => format!("{}:{np}/{proto}", int(p, &["port"])),
                        None => format!("{}/{proto}", int(p, &["port"])),
                    }
                })
                .collect();
            let external: Vec<&str> = o["spec"]["externalIPs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            vec![
                name,
                json!(match text(o, &["spec", "type"]) {
                    "" => "ClusterIP",
                    t => t,
                }),
                json!(or_none(text(o, &["spec", "clusterIP"]).to_string())),
                json!(or_none(external.join(","))),
                json!(or_none(ports.join(","))),
                age,
                json!(map_text(&o["spec"]["selector"])),
            ]
        }
        ("", "namespaces") => vec![
            name,
            json!(match text(o, &["status", "phase"]) {
                "" => "Active",
                p => p,
            }),
            age,
        ],
        ("", "endpoints") => {
            let mut eps = Vec::new();
            for s in o["subsets"].as_array().into_iter().flatten() {
                for a in s["addresses"].as_array().into_iter().flatten() {
                    for p in s["ports"].as_array().into_iter().flatten() {
                        eps.push(format!("{}:{}", text(a, &["ip"]), int(p, &["port"])));
                    }
                }
            }
            vec![name, json!(or_none(eps.join(","))), age]
        }
        ("", "events") => {
            let last = ["lastTimestamp", "eventTime", "firstTimestamp"]
                .iter()
                .find_map(|k| parse_timestamp(text(o, &[k])))
                .or_else(|| parse_timestamp(text(o, &["metadata", "creationTimestamp"])));
            let involved = &o["involvedObject"];
            vec![
                json!(last.map_or_else(|| "<unknown>".into(), |t| human_duration(now - t))),
                json!(text(o, &["type"])),
                json!(text(o, &["reason"])),
                json!(format!(
                    "{}/{}",
                    text(involved, &["kind"]).to_lowercase(),
                    text(involved, &["name"])
                )),
                json!(text(o, &["message"])),
            ]
        }
        ("coordination.k8s.io", "leases") => vec![
            name,
            json!(or_none(text(o, &["spec", "holderIdentity"]).to_string())),
            age,
        ],
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            let of_kind = |k: &str| {
                let subjects = o["subjects"].as_array().into_iter().flatten();
                let names: Vec<String> = subjects
                    .filter(|s| s["kind"] == k)
                    .map(|s| match s["namespace"].as_str() {
                        Some(ns) if k == "ServiceAccount" => format!("{ns}/{}", text(s, &["name"])),
                        _ => text(s, &["name"]).to_string(),
                    })
                    .collect();
                json!(names.join(", "))
            };
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    text(o, &["roleRef", "kind"]),
                    text(o, &["roleRef", "name"])
                )),
                age,
                of_kind("User"),
                of_kind("Group"),
                of_kind("ServiceAccount"),
            ]
        }
        _ => vec![name, age],
    }
}

fn row_object(o: &Value, include_object: &str) -> Option<Value> {
    match include_object {
        "None" => None,
        "Object" => Some(o.clone()),
        // Metadata is kube's default.
        _ => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": o["metadata"].clone(),
        })),
    }
}

/// A meta.k8s.io/v1 Table (for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`) with
/// the columns kubectl prints for the resource (pods: NAME READY STATUS RESTARTS AGE, and
/// with wide also IP NODE; nodes; deployments: READY UP-TO-DATE AVAILABLE AGE; replicasets; services;
/// others: NAME AGE). `include_object` = the `includeObject` param (None|Metadata|Object).
pub fn to_table(
    resource: &ResourceInfo,
    objects: &[Value],
    list_meta: Value,
    include_object: &str,
) -> Value {
    to_table_at(resource, objects, list_meta, include_object, now_s())
}

fn to_table_at(
    resource: &ResourceInfo,
    objects: &[Value],
    list_meta: Value,
    include_object: &str,
    now: i64,
) -> Value {
    let column_definitions: Vec<Value> = columns(resource)
        .into_iter()
        .map(|(name, ty, format, priority, description)| {
            json!({"name": name, "type": ty, "format": format,
                   "description": description, "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(resource, o, now)});
            if let Some(obj) = row_object(o, include_object) {
                row["object"] = obj;
            }
            row
        })
        .collect();
    let metadata = if list_meta.is_object() {
        list_meta
    } else {
        json!({})
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{RESOURCES, lookup};

    /// 2023-11-14T22:13:20Z.
    const NOW: i64 = 1_700_000_000;

    #[test]
    fn timestamps_and_durations() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("2023-11-14T22:13:20Z"), Some(NOW));
        assert_eq!(parse_timestamp("2023-11-14T22:13:20.5Z"), Some(NOW));
        assert_eq!(parse_timestamp("2023-11-15T00:13:20+02:00"), Some(NOW));
        assert_eq!(parse_timestamp("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("2023-13-14T22:13:20Z"), None);
        for (secs, text) in [
            (5, "5s"),
            (119, "119s"),
            (200, "3m20s"),
            (600, "10m"),
            (47 * 60, "47m"),
            (5 * 3600 + 12 * 60, "5h12m"),
            (30 * 3600, "30h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (200 * 86_400, "200d"),
            (740 * 86_400, "2y10d"),
            (-5, "<invalid>"),
        ] {
            assert_eq!(human_duration(secs), text, "{secs}");
        }
    }

    #[test]
    fn pod_rows_as_kubectl_prints_them() {
        let pods = lookup("", "pods").unwrap();
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2023-11-14T22:10:00Z", "resourceVersion": "7"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 2,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        });
        let t = to_table_at(pods, &[pod], json!({"resourceVersion": "9"}), "", NOW);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["metadata"]["resourceVersion"], "9");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(&names[..5], ["Name", "Ready", "Status", "Restarts", "Age"]);
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web-1",
                "1/2",
                "CrashLoopBackOff",
                "3",
                "3m20s",
                "10.0.0.5",
                "n1",
                "<none>",
                "<none>"
            ])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn include_object_modes() {
        let ns = lookup("", "namespaces").unwrap();
        let o = json!({"metadata": {"name": "a"}, "status": {"phase": "Terminating"}});
        let t = to_table_at(ns, std::slice::from_ref(&o), json!({}), "None", NOW);
        assert!(t["rows"][0].get("object").is_none());
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["a", "Terminating", "<unknown>"])
        );
        let t = to_table_at(ns, std::slice::from_ref(&o), json!({}), "Object", NOW);
        assert_eq!(t["rows"][0]["object"], o);
    }

    #[test]
    fn deployments_nodes_services() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = to_table_at(
            lookup("apps", "deployments").unwrap(),
            &[d],
            json!({}),
            "None",
            NOW,
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["web", "2/3", 3, 2, "<unknown>", "app", "nginx", "app=web"])
        );
        let n = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0"},
                       "addresses": [{"type": "InternalIP", "address": "10.1.1.1"}]}});
        let t = to_table_at(lookup("", "nodes").unwrap(), &[n], json!({}), "None", NOW);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "Ready,SchedulingDisabled");
        assert_eq!(cells[2], "control-plane");
        assert_eq!(cells[4], "v1.32.0");
        assert_eq!(cells[5], "10.1.1.1");
        let s = json!({"metadata": {"name": "svc"}, "spec": {"clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP", "nodePort": 30053}],
            "selector": {"app": "dns"}}});
        let t = to_table_at(
            lookup("", "services").unwrap(),
            &[s],
            json!({}),
            "None",
            NOW,
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "svc",
                "ClusterIP",
                "10.96.0.10",
                "<none>",
                "80/TCP,53:30053/UDP",
                "<unknown>",
                "app=dns"
            ])
        );
    }

    #[test]
    fn every_resource_has_rows_as_wide_as_its_columns() {
        for r in RESOURCES {
            let t = to_table_at(
                r,
                &[json!({"metadata": {"name": "x"}})],
                json!({}),
                "None",
                NOW,
            );
            let cols = t["columnDefinitions"].as_array().unwrap().len();
            assert_eq!(
                t["rows"][0]["cells"].as_array().unwrap().len(),
                cols,
                "{}",
                r.plural
            );
        }
    }
}
