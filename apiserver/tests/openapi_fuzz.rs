//! Property test over the OpenAPI document the server publishes: random requests for
//! every operation in `/openapi/v3` (random path parameters, query parameters of the
//! advertised names with good and bad values, and bodies that are random JSON, valid
//! objects with one field replaced by random JSON, or random bytes) must never get a
//! 5xx, and the server must still answer afterwards with no panic in its log.
//!
//! The cases are drawn by proptest from a fixed seed, so a failure replays; the
//! failing request is printed in full.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Backend, Cluster, get_json};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Map, Value, json};

/// Requests sent per run.
const CASES: u32 = 400;

/// One operation of the document.
#[derive(Debug, Clone)]
struct Op {
    method: String,
    path: String,
    /// (name, schema type) of the query parameters.
    query: Vec<(String, String)>,
    content_types: Vec<String>,
    kind: String,
}

/// The operations of every group/version document the server publishes.
async fn operations(c: &Cluster) -> anyhow::Result<Vec<Op>> {
    let http = c.client();
    let (code, root) = get_json(&http, &format!("{}/openapi/v3", c.url())).await?;
    anyhow::ensure!(code == 200, "GET /openapi/v3: {code} {root}");
    let mut ops = Vec::new();
    for (_, gv) in root["paths"].as_object().into_iter().flatten() {
        let url = gv["serverRelativeURL"].as_str().unwrap_or_default();
        let (code, doc) = get_json(&http, &format!("{}{url}", c.url())).await?;
        anyhow::ensure!(code == 200, "GET {url}: {code}");
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                if method == "parameters" {
                    continue;
                }
                let query = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .map(|p| {
                        let name = p["name"].as_str().unwrap_or_default().to_string();
                        let ty = p["schema"]["type"].as_str().unwrap_or("string").to_string();
                        (name, ty)
                    })
                    .collect();
                let content_types = op["requestBody"]["content"]
                    .as_object()
                    .map(|c| c.keys().cloned().collect())
                    .unwrap_or_default();
                let kind = op["x-kubernetes-group-version-kind"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                ops.push(Op {
                    method: method.to_uppercase(),
                    path: path.clone(),
                    query,
                    content_types,
                    kind,
                });
            }
        }
    }
    Ok(ops)
}

/// Valid objects to start mutations from, by kind.
fn sample(kind: &str) -> Value {
    let container = json!({"name": "c", "image": "nginx", "ports": [{"containerPort": 80}],
                           "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}});
    let template =
        json!({"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [container.clone()]}});
    match kind {
        "Pod" => {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fuzz-pod", "labels": {"app": "w"}},
                        "spec": {"containers": [container]}})
        }
        "Deployment" | "ReplicaSet" => {
            json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "fuzz-w"},
                        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "w"}}, "template": template}})
        }
        "Service" => {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fuzz-svc"},
                        "spec": {"selector": {"app": "w"}, "ports": [{"port": 80, "targetPort": 8080}]}})
        }
        "Node" => json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "fuzz-node"},
                        "status": {"capacity": {"cpu": "4", "memory": "8Gi"}}}),
        "Scale" => {
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "fuzz-w"}, "spec": {"replicas": 2}})
        }
        "Binding" => {
            json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "fuzz-pod"},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": "fuzz-node"}})
        }
        "Lease" => {
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "fuzz-lease"},
                        "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}})
        }
        "Role" | "ClusterRole" => {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": "fuzz-role"},
                        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                        "metadata": {"name": "fuzz-binding"},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                        "subjects": [{"kind": "User", "name": "fuzzer"}]})
        }
        "SelfSubjectAccessReview" => json!({"apiVersion": "authorization.k8s.io/v1", "kind": kind,
                        "spec": {"resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "default"}}}),
        "SelfSubjectRulesReview" => {
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": kind, "spec": {"namespace": "default"}})
        }
        other => json!({"apiVersion": "v1", "kind": other, "metadata": {"name": "fuzz-x"}}),
    }
}

/// Field names the server's schemas use, so random objects reach deep validation code.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
    "status",
    "containers",
    "image",
    "ports",
    "containerPort",
    "resources",
    "requests",
    "limits",
    "cpu",
    "replicas",
    "selector",
    "matchLabels",
    "matchExpressions",
    "template",
    "rules",
    "subjects",
    "roleRef",
    "items",
    "resourceVersion",
    "finalizers",
    "$patch",
    "$retainKeys",
    "$setElementOrder/containers",
    "op",
    "path",
    "value",
];

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-zA-Z$/._-]{0,10}",
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        prop_oneof![
            "[a-z0-9.-]{0,20}",
            "\\PC{0,16}",
            Just("100m".to_string()),
            Just("-1".to_string())
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(arb_key(), inner, 0..6).prop_map(
                |m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect::<Map<_, _>>())
            ),
        ]
    })
}

/// Replaces the value at a path chosen by `steps` with `replacement`.
fn mutate(mut v: Value, steps: &[usize], replacement: Value) -> Value {
    mutate_at(&mut v, steps, replacement);
    v
}

fn mutate_at(v: &mut Value, steps: &[usize], replacement: Value) {
    let Some((s, rest)) = steps.split_first() else {
        *v = replacement;
        return;
    };
    // Pick the child first, then borrow it: the key of a map entry or an index.
    let key = match &*v {
        Value::Object(m) if !m.is_empty() => m.keys().nth(s % m.len()).cloned().map(Ok),
        Value::Array(a) if !a.is_empty() => Some(Err(s % a.len())),
        _ => None,
    };
    let child = match (key, v) {
        (Some(Ok(k)), Value::Object(m)) => m.get_mut(&k),
        (Some(Err(i)), Value::Array(a)) => a.get_mut(i),
        (_, v) => {
            *v = replacement;
            return;
        }
    };
    if let Some(c) = child {
        if (c.is_object() || c.is_array()) && !rest.is_empty() {
            mutate_at(c, rest, replacement);
        } else {
            *c = replacement;
        }
    }
}

#[derive(Debug, Clone)]
enum Body {
    None,
    Json(Value),
    Mutated(Vec<usize>, Value),
    Bytes(Vec<u8>),
}

fn arb_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        1 => Just(Body::None),
        3 => arb_json().prop_map(Body::Json),
        5 => (proptest::collection::vec(any::<usize>(), 1..5), arb_json()).prop_map(|(s, v)| Body::Mutated(s, v)),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Body::Bytes),
    ]
}

fn arb_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("default".to_string()),
        2 => Just("fuzz-pod".to_string()),
        2 => "[a-z0-9-]{1,12}",
        1 => "\\PC{0,12}",
    ]
}

fn arb_query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("true".to_string()),
        Just("All".to_string()),
        Just("Strict".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z]{1,5}(=|!=|==| in |,)[a-z0-9()]{0,6}",
        "\\PC{0,16}",
    ]
}

/// One request: an operation index and everything random about it.
#[derive(Debug, Clone)]
struct Request {
    op: usize,
    segments: (String, String),
    query: Vec<(usize, String)>,
    body: Body,
    content_type: usize,
}

fn arb_request(n_ops: usize) -> impl Strategy<Value = Request> {
    (
        0..n_ops,
        (arb_segment(), arb_segment()),
        proptest::collection::vec((any::<usize>(), arb_query_value()), 0..4),
        arb_body(),
        any::<usize>(),
    )
        .prop_map(|(op, segments, query, body, content_type)| Request {
            op,
            segments,
            query,
            body,
            content_type,
        })
}

/// Percent-encodes one path segment.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn send(
    c: &Cluster,
    http: &reqwest::Client,
    op: &Op,
    r: &Request,
) -> anyhow::Result<(u16, String)> {
    let path = op
        .path
        .replace("{namespace}", &encode(&r.segments.0))
        .replace("{name}", &encode(&r.segments.1));
    let mut query: Vec<(String, String)> = Vec::new();
    for (i, value) in &r.query {
        if let Some((name, _)) = op.query.get(i % op.query.len().max(1)) {
            query.push((name.clone(), value.clone()));
        }
    }
    // A watch would stream until its timeout: keep it short, and read only the status.
    let watching = query.iter().any(|(k, _)| k == "watch");
    if watching {
        query.push(("timeoutSeconds".into(), "1".into()));
    }
    let method = reqwest::Method::from_bytes(op.method.as_bytes())?;
    let mut req = http
        .request(method, format!("{}{path}", c.url()))
        .query(&query);
    let body = match &r.body {
        Body::None => None,
        Body::Json(v) => Some(v.to_string().into_bytes()),
        Body::Mutated(steps, v) => Some(
            mutate(sample(&op.kind), steps, v.clone())
                .to_string()
                .into_bytes(),
        ),
        Body::Bytes(b) => Some(b.clone()),
    };
    if let Some(b) = body {
        let ct = if op.content_types.is_empty() {
            "application/json".to_string()
        } else {
            op.content_types[r.content_type % op.content_types.len()].clone()
        };
        req = req.header(reqwest::header::CONTENT_TYPE, ct).body(b);
    }
    let resp = req.timeout(Duration::from_secs(20)).send().await?;
    let code = resp.status().as_u16();
    let text = if watching {
        String::new()
    } else {
        resp.text().await.unwrap_or_default()
    };
    Ok((code, text))
}

#[test]
fn random_requests_for_every_documented_operation_never_get_a_5xx() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let c = rt.block_on(Cluster::start(Backend::Etcd))?;
    let ops = rt.block_on(operations(&c))?;
    assert!(
        ops.len() > 50,
        "the document lists only {} operations",
        ops.len()
    );
    let http = c.client();
    // Objects for the random requests to find: a namespace-scoped pod and deployment.
    rt.block_on(async {
        let pods = format!("{}/api/v1/namespaces/default/pods", c.url());
        http.post(&pods).json(&sample("Pod")).send().await?;
        let deps = format!("{}/apis/apps/v1/namespaces/default/deployments", c.url());
        http.post(&deps).json(&sample("Deployment")).send().await?;
        anyhow::Ok(())
    })?;

    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let sent = std::cell::Cell::new(0u32);
    let result = runner.run(&arb_request(ops.len()), |r| {
        let op = &ops[r.op];
        let (code, text) = rt.block_on(send(&c, &http, op, &r)).map_err(|e| {
            TestCaseError::fail(format!("{} {}: transport error {e:#}", op.method, op.path))
        })?;
        sent.set(sent.get() + 1);
        // pods/log is a hop to the node's agent: 503 says no agent answered, which is
        // the right answer for a pod bound to a node that runs none.
        let agent_unreachable = op.path.ends_with("/log") && code == 503;
        prop_assert!(
            code < 500 || agent_unreachable,
            "{} {} -> {code}: {}\nrequest: {r:?}",
            op.method,
            op.path,
            text
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\n{}", c.logs());
    }
    assert!(
        sent.get() >= CASES,
        "only {} requests were sent",
        sent.get()
    );

    // Still serving, and nothing panicked.
    let (code, version) = rt.block_on(get_json(&http, &format!("{}/version", c.url())))?;
    assert_eq!(code, 200, "{version}");
    let (code, _) = rt.block_on(get_json(
        &http,
        &format!("{}/api/v1/namespaces/default/pods", c.url()),
    ))?;
    assert!(code == 200 || code == 404, "list after fuzzing: {code}");
    let logs = c.logs();
    assert!(
        !logs.contains("panicked"),
        "a panic in the apiserver log:\n{logs}"
    );
    Ok(())
}
