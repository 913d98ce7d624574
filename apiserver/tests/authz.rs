//! The authn/RBAC wiring of the server (the full matrix is in rbac_matrix.rs): a
//! service-account token is authenticated, refused with kube's 403 message until a
//! binding grants it, allowed right after the binding is written (no lag from the RBAC
//! cache), and refused with 401 once expired; the audit log records who did what.

mod common;

use std::time::Duration;

use apiserver::auth::TokenAuthenticator;
use common::{Backend, Cluster, get_json, send_json};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn service_account_is_forbidden_until_bound() -> anyhow::Result<()> {
    let c = Cluster::start(Backend::Kvstore).await?;
    let key = std::fs::read(c.data_dir().join("sa.key"))?;
    let issuer = TokenAuthenticator::new(None, key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let token = issuer.issue_service_account_token("default", "bot", Duration::from_secs(600));
    let bot = c.client_with_token(Some(&token));
    let pods = format!("{}/api/v1/namespaces/default/pods", c.url());

    let (code, st) = get_json(&bot, &pods).await?;
    assert_eq!(code, 403, "{st}");
    assert_eq!(st["reason"], "Forbidden");
    assert_eq!(
        st["message"],
        "pods is forbidden: User \"system:serviceaccount:default:bot\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    // Discovery is open to every authenticated user.
    let (code, _) = get_json(&bot, &format!("{}/api/v1", c.url())).await?;
    assert_eq!(code, 200);

    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "bot-view", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "default"}]});
    let (code, b) = send_json(
        &c.client(),
        Method::POST,
        &format!(
            "{}/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            c.url()
        ),
        &binding,
    )
    .await?;
    assert_eq!(code, 201, "{b}");
    // Allowed at once, and only what the role says.
    let (code, _) = get_json(&bot, &pods).await?;
    assert_eq!(code, 200);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let (code, _) = send_json(&bot, Method::POST, &pods, &pod).await?;
    assert_eq!(code, 403);
    let (code, _) = get_json(
        &bot,
        &format!("{}/api/v1/namespaces/kube-system/pods", c.url()),
    )
    .await?;
    assert_eq!(code, 403);
    // Its own access review agrees.
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "list", "resource": "pods"}}});
    let (code, r) = send_json(
        &bot,
        Method::POST,
        &format!(
            "{}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            c.url()
        ),
        &review,
    )
    .await?;
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["status"]["allowed"], true);

    // An expired token is a 401.
    let expired = issuer.issue_service_account_token("default", "bot", Duration::from_secs(0));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, st) = get_json(&c.client_with_token(Some(&expired)), &pods).await?;
    assert_eq!(code, 401, "{st}");

    // The audit log has a line per request with the user and the code.
    let audit = std::fs::read_to_string(c.data_dir().join("../audit-0.log"))?;
    let lines: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["user"] == "system:serviceaccount:default:bot"
                && l["code"] == 403
                && l["verb"] == "list"),
        "{audit}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["user"] == "admin" && l["code"] == 201 && l["resource"] == "rolebindings")
    );
    Ok(())
}
