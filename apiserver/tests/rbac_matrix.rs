//! The RBAC matrix over a real apiserver and store: for each identity, verb and target,
//! the request is allowed (2xx) or refused (403 Forbidden Status) exactly as the
//! bindings say; no token, a bad token and an expired service-account token get 401.
//!
//! Identities: the admin (system:masters), a namespace editor (RoleBinding → ClusterRole
//! edit), a cluster-wide viewer (ClusterRoleBinding → view), a user allowed one
//! deployment by name (Role with resourceNames), and a service account bound to view in
//! one namespace. Mutating requests use `dryRun=All`, so the matrix leaves the objects
//! as they were and its cells do not depend on their order.

mod common;

use std::time::Duration;

use apiserver::auth::TokenAuthenticator;
use common::{Backend, Cluster, get_json, send_json, send_raw};
use reqwest::Method;
use serde_json::{Value, json};

const VERBS: [&str; 7] = [
    "get", "list", "create", "update", "patch", "delete", "list-all",
];

/// What a request is aimed at.
struct Target {
    label: &'static str,
    /// `/api/v1` or `/apis/apps/v1`.
    prefix: &'static str,
    plural: &'static str,
    namespace: Option<&'static str>,
    name: &'static str,
}

const TARGETS: [Target; 5] = [
    Target {
        label: "team pod",
        prefix: "/api/v1",
        plural: "pods",
        namespace: Some("team"),
        name: "p",
    },
    Target {
        label: "other pod",
        prefix: "/api/v1",
        plural: "pods",
        namespace: Some("other"),
        name: "p",
    },
    Target {
        label: "team deployment web",
        prefix: "/apis/apps/v1",
        plural: "deployments",
        namespace: Some("team"),
        name: "web",
    },
    Target {
        label: "team deployment db",
        prefix: "/apis/apps/v1",
        plural: "deployments",
        namespace: Some("team"),
        name: "db",
    },
    Target {
        label: "node",
        prefix: "/api/v1",
        plural: "nodes",
        namespace: None,
        name: "n1",
    },
];

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

fn object_for(t: &Target, name: &str) -> Value {
    match t.plural {
        "pods" => pod(name),
        "deployments" => deployment(name),
        _ => node(name),
    }
}

fn collection(t: &Target) -> String {
    match t.namespace {
        Some(ns) => format!("{}/namespaces/{ns}/{}", t.prefix, t.plural),
        None => format!("{}/{}", t.prefix, t.plural),
    }
}

/// Whether `who` may do `verb` on `t`, as the bindings below say.
fn expected(who: &str, verb: &str, t: &Target) -> bool {
    let write = matches!(verb, "create" | "update" | "patch" | "delete");
    let in_team = t.namespace == Some("team");
    match who {
        "admin" => true,
        // edit, bound in team only: everything on pods and deployments there.
        "editor" => in_team && verb != "list-all",
        // view, cluster-wide: reads of pods and deployments anywhere, never nodes.
        "viewer" => t.plural != "nodes" && !write,
        // get/update/patch of the deployment named web, nothing else (not even list).
        "one-name" => {
            t.label == "team deployment web" && matches!(verb, "get" | "update" | "patch")
        }
        // view, bound in team to the service account.
        "service-account" => in_team && !write && verb != "list-all",
        other => panic!("unknown identity {other}"),
    }
}

/// Sends one request of the matrix and returns its HTTP code and body.
async fn attempt(
    c: &Cluster,
    admin: &reqwest::Client,
    http: &reqwest::Client,
    verb: &str,
    t: &Target,
) -> anyhow::Result<(u16, Value)> {
    let base = format!("{}{}", c.url(), collection(t));
    let one = format!("{base}/{}", t.name);
    let dry = "dryRun=All";
    Ok(match verb {
        "get" => get_json(http, &one).await?,
        "list" => get_json(http, &base).await?,
        "list-all" => get_json(http, &format!("{}{}/{}", c.url(), t.prefix, t.plural)).await?,
        "create" => {
            let obj = object_for(t, &format!("{}-new", t.name));
            send_json(http, Method::POST, &format!("{base}?{dry}"), &obj).await?
        }
        "update" => {
            let (code, current) = get_json(admin, &one).await?;
            anyhow::ensure!(code == 200, "admin GET {one}: {code} {current}");
            send_json(http, Method::PUT, &format!("{one}?{dry}"), &current).await?
        }
        "patch" => {
            let body = br#"{"metadata":{"labels":{"touched":"yes"}}}"#.to_vec();
            send_raw(
                http,
                Method::PATCH,
                &format!("{one}?{dry}"),
                "application/merge-patch+json",
                body,
            )
            .await?
        }
        "delete" => {
            let r = http.delete(format!("{one}?{dry}")).send().await?;
            let code = r.status().as_u16();
            let text = r.text().await?;
            (
                code,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        other => anyhow::bail!("unknown verb {other}"),
    })
}

async fn admin_create(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<()> {
    let (code, out) = send_json(http, Method::POST, url, &body).await?;
    anyhow::ensure!(code == 201, "POST {url}: {code} {out}");
    Ok(())
}

fn binding(
    kind: &str,
    ns: Option<&str>,
    name: &str,
    role_kind: &str,
    role: &str,
    subject: Value,
) -> Value {
    let mut metadata = json!({"name": name});
    if let Some(ns) = ns {
        metadata["namespace"] = json!(ns);
    }
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata,
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
           "subjects": [subject]})
}

fn user(name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name})
}

/// Namespaces, the objects the matrix aims at, and the bindings under test.
async fn seed(c: &Cluster) -> anyhow::Result<()> {
    let http = c.client();
    let u = c.url();
    for ns in ["team", "other"] {
        admin_create(
            &http,
            &format!("{u}/api/v1/namespaces"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
        admin_create(&http, &format!("{u}/api/v1/namespaces/{ns}/pods"), pod("p")).await?;
    }
    for d in ["web", "db"] {
        admin_create(
            &http,
            &format!("{u}/apis/apps/v1/namespaces/team/deployments"),
            deployment(d),
        )
        .await?;
    }
    admin_create(&http, &format!("{u}/api/v1/nodes"), node("n1")).await?;
    let rbac = format!("{u}/apis/rbac.authorization.k8s.io/v1");
    admin_create(
        &http,
        &format!("{rbac}/namespaces/team/rolebindings"),
        binding(
            "RoleBinding",
            Some("team"),
            "ed-edit",
            "ClusterRole",
            "edit",
            user("ed"),
        ),
    )
    .await?;
    admin_create(
        &http,
        &format!("{rbac}/clusterrolebindings"),
        binding(
            "ClusterRoleBinding",
            None,
            "vi-view",
            "ClusterRole",
            "view",
            user("vi"),
        ),
    )
    .await?;
    admin_create(&http, &format!("{rbac}/namespaces/team/roles"), json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "web-only", "namespace": "team"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["web"],
                   "verbs": ["get", "update", "patch"]}]
    })).await?;
    admin_create(
        &http,
        &format!("{rbac}/namespaces/team/rolebindings"),
        binding(
            "RoleBinding",
            Some("team"),
            "one-web",
            "Role",
            "web-only",
            user("one"),
        ),
    )
    .await?;
    admin_create(
        &http,
        &format!("{rbac}/namespaces/team/rolebindings"),
        binding(
            "RoleBinding",
            Some("team"),
            "bot-view",
            "ClusterRole",
            "view",
            json!({"kind": "ServiceAccount", "name": "bot", "namespace": "team"}),
        ),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_matrix_allows_and_refuses_exactly_as_bound() -> anyhow::Result<()> {
    let mut c = Cluster::start(Backend::Etcd).await?;
    c.add_token("editor-token-0123456789", "ed", &["team-editors"])?;
    c.add_token("viewer-token-0123456789", "vi", &[])?;
    c.add_token("one-name-token-0123456789", "one", &[])?;
    // The token file is read at start.
    c.restart_apiserver(0).await?;
    seed(&c).await?;

    // Service-account tokens signed with the server's own key, as the server issues them.
    let key = std::fs::read(c.data_dir().join("sa.key"))?;
    let signer = TokenAuthenticator::new(None, key)?;
    let sa_token = signer.issue_service_account_token("team", "bot", Duration::from_secs(3600));
    let expired = signer.issue_service_account_token("team", "bot", Duration::ZERO);

    let admin = c.client();
    let identities: Vec<(&str, reqwest::Client)> = vec![
        ("admin", c.client()),
        (
            "editor",
            c.client_with_token(Some("editor-token-0123456789")),
        ),
        (
            "viewer",
            c.client_with_token(Some("viewer-token-0123456789")),
        ),
        (
            "one-name",
            c.client_with_token(Some("one-name-token-0123456789")),
        ),
        ("service-account", c.client_with_token(Some(&sa_token))),
    ];
    let mut wrong = Vec::new();
    let mut cells = 0;
    for (who, http) in &identities {
        for t in &TARGETS {
            for verb in VERBS {
                if verb == "list-all" && t.namespace.is_none() {
                    continue;
                }
                cells += 1;
                let want = expected(who, verb, t);
                let (code, body) = attempt(&c, &admin, http, verb, t).await?;
                let ok = if want {
                    (200..300).contains(&code)
                } else {
                    code == 403 && body["kind"] == "Status" && body["reason"] == "Forbidden"
                };
                if !ok {
                    wrong.push(format!(
                        "{who} {verb} {}: want {}, got {code} {body}",
                        t.label,
                        if want { "allowed" } else { "403" }
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Nothing the matrix did was written: dry runs only.
    let (_, pods) = get_json(&admin, &format!("{}/api/v1/namespaces/team/pods", c.url())).await?;
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(1), "{pods}");
    let (_, web) = get_json(
        &admin,
        &format!("{}/apis/apps/v1/namespaces/team/deployments/web", c.url()),
    )
    .await?;
    assert!(web["metadata"]["labels"].get("touched").is_none(), "{web}");

    // Who is refused before RBAC: no token, a bad token, an expired token.
    let pods_url = format!("{}/api/v1/namespaces/team/pods", c.url());
    for (what, token) in [
        ("no token", None),
        ("bad token", Some("not-a-token")),
        ("forged sa token", Some("sa1.e30.AAAA")),
        ("expired sa token", Some(expired.as_str())),
    ] {
        let (code, body) = get_json(&c.client_with_token(token), &pods_url).await?;
        assert_eq!(code, 401, "{what}: {body}");
        assert_eq!(body["kind"], "Status", "{what}: {body}");
        assert_eq!(body["reason"], "Unauthorized", "{what}: {body}");
        if what == "expired sa token" {
            assert!(
                body["message"].as_str().unwrap_or("").contains("expired"),
                "{body}"
            );
        }
    }
    Ok(())
}
