//! CRUD over real processes: create/get/list/update/patch/delete, resourceVersion
//! compare-and-swap (409s), status split, generation, finalizers, paging at one
//! revision, dry run, and the Status answers for bad input. The main paths run on
//! both real etcd and kvstore.

mod common;

use common::{Backend, Cluster, get_json, send_json, send_raw};
use reqwest::Method;
use serde_json::{Value, json};

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

async fn crud_roundtrip(backend: Backend) -> anyhow::Result<()> {
    let c = Cluster::start(backend).await?;
    let http = c.client();
    let base = format!("{}/api/v1/namespaces/default/pods", c.url());

    let (code, created) = send_json(&http, Method::POST, &base, &pod("web-1")).await?;
    assert_eq!(code, 201, "{created}");
    let rv1: i64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()?;
    assert!(
        created["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["metadata"]["namespace"], "default");

    // resourceVersion is the store's mod_revision.
    let mut etcd = c.etcd().await?;
    let kv = etcd.get("/registry/pods/default/web-1", None).await?;
    assert_eq!(kv.kvs()[0].mod_revision(), rv1);

    // Duplicate create: 409 AlreadyExists.
    let (code, status) = send_json(&http, Method::POST, &base, &pod("web-1")).await?;
    assert_eq!(code, 409);
    assert_eq!(status["reason"], "AlreadyExists");
    assert_eq!(status["kind"], "Status");

    // Update with the current rv succeeds and bumps generation (spec changed).
    let mut upd = created.clone();
    upd["spec"]["containers"][0]["image"] = json!("nginx:2");
    let (code, updated) = send_json(&http, Method::PUT, &format!("{base}/web-1"), &upd).await?;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["metadata"]["generation"], 2);
    let rv2: i64 = updated["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()?;
    assert!(rv2 > rv1);

    // Update with the stale rv: 409 Conflict, nothing written.
    let (code, status) = send_json(&http, Method::PUT, &format!("{base}/web-1"), &upd).await?;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "Conflict");
    let (_, now) = get_json(&http, &format!("{base}/web-1")).await?;
    assert_eq!(
        now["metadata"]["resourceVersion"],
        updated["metadata"]["resourceVersion"]
    );

    // A label change keeps the generation.
    let (code, patched) = send_raw(
        &http,
        Method::PATCH,
        &format!("{base}/web-1"),
        "application/merge-patch+json",
        br#"{"metadata":{"labels":{"tier":"front"}}}"#.to_vec(),
    )
    .await?;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["metadata"]["labels"]["tier"], "front");
    assert_eq!(patched["metadata"]["generation"], 2);

    // List has the list's revision.
    let (code, list) = get_json(&http, &base).await?;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(
        list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<i64>()?
            >= rv2
    );

    // Delete, then 404.
    let (code, _) = send_json(&http, Method::DELETE, &format!("{base}/web-1"), &json!({})).await?;
    assert_eq!(code, 200);
    let (code, status) = get_json(&http, &format!("{base}/web-1")).await?;
    assert_eq!(code, 404);
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["message"], "pods \"web-1\" not found");
    Ok(())
}

#[tokio::test]
async fn crud_roundtrip_kvstore() -> anyhow::Result<()> {
    crud_roundtrip(Backend::Kvstore).await
}

#[tokio::test]
async fn crud_roundtrip_etcd() -> anyhow::Result<()> {
    crud_roundtrip(Backend::Etcd).await
}

#[tokio::test]
async fn status_split_finalizers_and_dry_run() -> anyhow::Result<()> {
    let c = Cluster::start(Backend::Kvstore).await?;
    let http = c.client();
    let base = format!("{}/apis/apps/v1/namespaces/default/deployments", c.url());
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d1", "finalizers": ["example.com/hold"]},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d1"}},
                 "template": {"metadata": {"labels": {"app": "d1"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        "status": {"replicas": 7}});

    // Dry run writes nothing.
    let (code, _) = send_json(&http, Method::POST, &format!("{base}?dryRun=All"), &deploy).await?;
    assert_eq!(code, 201);
    let (code, _) = get_json(&http, &format!("{base}/d1")).await?;
    assert_eq!(code, 404);

    let (code, created) = send_json(&http, Method::POST, &base, &deploy).await?;
    assert_eq!(code, 201, "{created}");

    // Status write changes only status.
    let mut st = created.clone();
    st["status"] = json!({"replicas": 2, "observedGeneration": 1});
    st["spec"]["replicas"] = json!(9);
    let (code, after) = send_json(&http, Method::PUT, &format!("{base}/d1/status"), &st).await?;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["status"]["replicas"], 2);
    assert_eq!(after["spec"]["replicas"], 2);
    assert_eq!(after["metadata"]["generation"], 1);

    // Main write keeps the old status and bumps generation on a spec change.
    let mut main = after.clone();
    main["spec"]["replicas"] = json!(3);
    main["status"] = json!({"replicas": 100});
    let (code, after2) = send_json(&http, Method::PUT, &format!("{base}/d1"), &main).await?;
    assert_eq!(code, 200, "{after2}");
    assert_eq!(after2["status"]["replicas"], 2);
    assert_eq!(after2["spec"]["replicas"], 3);
    assert_eq!(after2["metadata"]["generation"], 2);

    // Scale subresource.
    let (code, scale) = get_json(&http, &format!("{base}/d1/scale")).await?;
    assert_eq!(code, 200);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);

    // Delete with a finalizer only marks the object.
    let (code, marked) =
        send_json(&http, Method::DELETE, &format!("{base}/d1"), &json!({})).await?;
    assert!(code == 200 || code == 202, "{code} {marked}");
    let (code, still) = get_json(&http, &format!("{base}/d1")).await?;
    assert_eq!(code, 200);
    assert!(still["metadata"]["deletionTimestamp"].is_string());
    // Removing the finalizer removes the object.
    let (code, _) = send_raw(
        &http,
        Method::PATCH,
        &format!("{base}/d1"),
        "application/merge-patch+json",
        br#"{"metadata":{"finalizers":null}}"#.to_vec(),
    )
    .await?;
    assert_eq!(code, 200);
    let (code, _) = get_json(&http, &format!("{base}/d1")).await?;
    assert_eq!(code, 404);
    Ok(())
}

#[tokio::test]
async fn paging_at_one_revision_and_bad_input() -> anyhow::Result<()> {
    let c = Cluster::start(Backend::Kvstore).await?;
    let http = c.client();
    let base = format!("{}/api/v1/namespaces/default/pods", c.url());
    for i in 0..7 {
        let (code, _) = send_json(&http, Method::POST, &base, &pod(&format!("p{i}"))).await?;
        assert_eq!(code, 201);
    }
    let (_, page1) = get_json(&http, &format!("{base}?limit=3")).await?;
    assert_eq!(page1["items"].as_array().unwrap().len(), 3);
    let token = page1["metadata"]["continue"].as_str().unwrap().to_string();
    let rv = page1["metadata"]["resourceVersion"].clone();
    // A write between pages is not seen by the next pages (same revision).
    let (code, _) = send_json(&http, Method::POST, &base, &pod("p99")).await?;
    assert_eq!(code, 201);
    let mut names: Vec<String> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut token = Some(token);
    while let Some(t) = token {
        let (code, page) = get_json(&http, &format!("{base}?limit=3&continue={t}")).await?;
        assert_eq!(code, 200, "{page}");
        assert_eq!(page["metadata"]["resourceVersion"], rv);
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string()),
        );
        token = page["metadata"]["continue"].as_str().map(String::from);
    }
    assert_eq!(names, (0..7).map(|i| format!("p{i}")).collect::<Vec<_>>());

    // Malformed JSON and YAML: 400, nothing written.
    let (code, st) = send_raw(
        &http,
        Method::POST,
        &base,
        "application/json",
        b"{\"apiVersion\": ".to_vec(),
    )
    .await?;
    assert_eq!(code, 400, "{st}");
    assert_eq!(st["kind"], "Status");
    let (code, _) = send_raw(
        &http,
        Method::POST,
        &base,
        "application/yaml",
        b"kind: Pod\n  bad: [indent".to_vec(),
    )
    .await?;
    assert_eq!(code, 400);
    // YAML bodies work.
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: from-yaml\nspec:\n  containers:\n  - name: c\n    image: nginx\n";
    let (code, _) = send_raw(
        &http,
        Method::POST,
        &base,
        "application/yaml",
        yaml.as_bytes().to_vec(),
    )
    .await?;
    assert_eq!(code, 201);
    // Oversize body: 413.
    let big = vec![b' '; 4 * 1024 * 1024];
    let (code, st) = send_raw(&http, Method::POST, &base, "application/json", big).await?;
    assert_eq!(code, 413, "{st}");
    // Unsupported media type.
    let (code, _) = send_raw(&http, Method::POST, &base, "text/plain", b"hi".to_vec()).await?;
    assert_eq!(code, 415);
    // Create in a missing namespace: 404 for the namespace.
    let (code, st) = send_json(
        &http,
        Method::POST,
        &format!("{}/api/v1/namespaces/nope/pods", c.url()),
        &pod("x"),
    )
    .await?;
    assert_eq!(code, 404);
    assert_eq!(st["details"]["kind"], "namespaces");
    Ok(())
}

#[tokio::test]
async fn discovery_and_version() -> anyhow::Result<()> {
    let c = Cluster::start(Backend::Kvstore).await?;
    let http = c.client();
    let (code, v) = get_json(&http, &format!("{}/version", c.url())).await?;
    assert_eq!(code, 200);
    assert_eq!(v["gitVersion"], "v1.32.0-kvstore");
    let (_, api) = get_json(&http, &format!("{}/api/v1", c.url())).await?;
    let names: Vec<&str> = api["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"pods") && names.contains(&"pods/status") && names.contains(&"pods/log")
    );
    let (_, apis) = get_json(&http, &format!("{}/apis", c.url())).await?;
    let groups: Vec<&str> = apis["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(groups.contains(&"apps") && groups.contains(&"rbac.authorization.k8s.io"));
    let (_, apps) = get_json(&http, &format!("{}/apis/apps/v1", c.url())).await?;
    assert!(
        apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "deployments/scale")
    );
    // Bootstrap namespaces exist.
    let (_, nss) = get_json(&http, &format!("{}/api/v1/namespaces", c.url())).await?;
    let ns: Vec<&str> = nss["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&want), "{ns:?}");
    }
    // Metrics count requests.
    let text = http
        .get(format!("{}/metrics", c.url()))
        .send()
        .await?
        .text()
        .await?;
    assert!(text.contains("apiserver_request_total"), "{text}");
    // No token on the secure port: 401 Status.
    let anon = c.client_with_token(None);
    let (code, st) = get_json(&anon, &format!("{}/api/v1/pods", c.url())).await?;
    assert_eq!(code, 401);
    assert_eq!(st["reason"], "Unauthorized");
    // Health probes need no token.
    let r = anon.get(format!("{}/healthz", c.url())).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    let bad = c.client_with_token(Some("not-a-token"));
    let (code, _) = get_json(&bad, &format!("{}/api/v1/pods", c.url())).await?;
    assert_eq!(code, 401);
    Ok(())
}

#[tokio::test]
async fn binding_and_log_hop() -> anyhow::Result<()> {
    let c = Cluster::start(Backend::Kvstore).await?;
    let http = c.client();
    let base = format!("{}/api/v1/namespaces/default/pods", c.url());
    let (code, _) = send_json(&http, Method::POST, &base, &pod("web")).await?;
    assert_eq!(code, 201);
    // Not scheduled yet: no logs.
    let (code, st) = get_json(&http, &format!("{base}/web/log")).await?;
    assert_eq!(code, 400, "{st}");
    // Bind once; a second bind is a conflict.
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"}, "target": {"kind": "Node", "name": "n1"}});
    let (code, st) = send_json(
        &http,
        Method::POST,
        &format!("{base}/web/binding"),
        &binding,
    )
    .await?;
    assert_eq!(code, 201, "{st}");
    let (code, _) = send_json(
        &http,
        Method::POST,
        &format!("{base}/web/binding"),
        &binding,
    )
    .await?;
    assert_eq!(code, 409);
    let (_, p) = get_json(&http, &format!("{base}/web")).await?;
    assert_eq!(p["spec"]["nodeName"], "n1");
    // A node whose agent does not answer: 503 with a clear message.
    let port = tests::ports::free_port();
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
    let (code, st) = send_json(
        &http,
        Method::POST,
        &format!("{}/api/v1/nodes", c.url()),
        &node,
    )
    .await?;
    assert_eq!(code, 201, "{st}");
    let (code, st) = get_json(&http, &format!("{base}/web/log")).await?;
    assert_eq!(code, 503, "{st}");
    assert!(
        st["message"].as_str().unwrap().contains("did not answer"),
        "{st}"
    );
    Ok(())
}
