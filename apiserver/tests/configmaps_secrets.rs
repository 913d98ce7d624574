//! ConfigMaps and Secrets: served through kubectl, a Secret's `stringData` is folded into
//! base64 `data` (and never stored), `data` that is not base64 is refused with nothing
//! written, and the `view` role reads ConfigMaps but not Secrets while `edit` reads both.

mod common;

use common::{Backend, Cluster, get_json, send_json};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmaps_and_secrets() -> anyhow::Result<()> {
    let mut c = Cluster::start(Backend::Kvstore).await?;
    c.add_token("cm-viewer-token-0123456789", "viewer", &[])?;
    c.add_token("cm-editor-token-0123456789", "editor", &[])?;
    c.restart_apiserver(0).await?;
    let admin = c.client();
    let core = format!("{}/api/v1/namespaces/default", c.url());

    // kubectl: apply a ConfigMap, see it by its short name.
    let out = c.kubectl_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast, level: \"3\"}\n"),
    )?;
    assert!(out.ok()?.contains("configmap/settings created"), "{out:?}");
    let out = c.kubectl(&["get", "cm", "settings", "-o", "jsonpath={.data.mode}"])?;
    assert_eq!(out.ok()?, "fast");

    // A Secret with stringData: stored as base64 data, stringData gone.
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db"}, "type": "Opaque",
        "data": {"user": "YWRtaW4="}, "stringData": {"password": "s3cr3t"}});
    let (code, created) =
        send_json(&admin, Method::POST, &format!("{core}/secrets"), &secret).await?;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["data"]["password"], "czNjcjN0");
    assert_eq!(created["data"]["user"], "YWRtaW4=");
    assert!(created.get("stringData").is_none(), "{created}");
    let mut etcd = c.etcd().await?;
    let stored = etcd.get("/registry/secrets/default/db", None).await?;
    let raw = String::from_utf8_lossy(stored.kvs()[0].value()).to_string();
    assert!(
        !raw.contains("s3cr3t") && !raw.contains("stringData"),
        "{raw}"
    );
    let out = c.kubectl(&["get", "secret", "db", "-o", "jsonpath={.data.password}"])?;
    assert_eq!(out.ok()?, "czNjcjN0");

    // data that is not base64: 422, nothing written.
    let bad = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bad"}, "data": {"k": "not base64!"}});
    let (code, status) = send_json(&admin, Method::POST, &format!("{core}/secrets"), &bad).await?;
    assert_eq!(code, 422, "{status}");
    assert!(
        status["message"].as_str().unwrap_or("").contains("base64"),
        "{status}"
    );
    let (code, _) = get_json(&admin, &format!("{core}/secrets/bad")).await?;
    assert_eq!(code, 404);

    // view reads ConfigMaps but not Secrets; edit reads and writes both.
    for (user, role) in [("viewer", "view"), ("editor", "edit")] {
        let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("{user}-binding")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]});
        let url = format!(
            "{}/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            c.url()
        );
        let (code, body) = send_json(&admin, Method::POST, &url, &rb).await?;
        assert_eq!(code, 201, "{body}");
    }
    let viewer = c.client_with_token(Some("cm-viewer-token-0123456789"));
    let editor = c.client_with_token(Some("cm-editor-token-0123456789"));
    // RBAC follows bindings through a watch cache: wait until the viewer's shows.
    let mut code = 0;
    for _ in 0..50 {
        (code, _) = get_json(&viewer, &format!("{core}/configmaps/settings")).await?;
        if code == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(code, 200);
    let (code, _) = get_json(&viewer, &format!("{core}/secrets/db")).await?;
    assert_eq!(code, 403);
    let mut code = 0;
    for _ in 0..50 {
        (code, _) = get_json(&editor, &format!("{core}/secrets/db")).await?;
        if code == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(code, 200);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "by-editor"}, "data": {"a": "b"}});
    let (code, body) = send_json(&editor, Method::POST, &format!("{core}/configmaps"), &cm).await?;
    assert_eq!(code, 201, "{body}");
    let (code, _) = send_json(
        &viewer,
        Method::POST,
        &format!("{core}/configmaps"),
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "by-viewer"}}),
    )
    .await?;
    assert_eq!(code, 403);
    Ok(())
}
