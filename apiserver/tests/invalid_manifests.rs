//! Invalid manifests against a real apiserver and store: wrong types, missing fields,
//! unknown fields (Strict), bad names, labels, enums, ports and quantities, a selector
//! that does not match its template, oversize objects, malformed JSON and YAML, and a
//! patch whose result is invalid. Each gets 400, 413 or 422 with a Status that names the
//! field, and a GET and a look at the store afterwards prove nothing was written.

mod common;

use common::{Backend, Cluster, get_json, send_raw};
use reqwest::Method;
use serde_json::{Value, json};

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "c", "image": "nginx",
                                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}})
}

/// One invalid manifest: what to send, which codes are right, what the Status must say.
struct Case {
    what: &'static str,
    /// The name the object would have had (checked absent afterwards).
    name: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    codes: &'static [u16],
    /// A field path the Status must name (in a cause or the message).
    field: &'static str,
    query: &'static str,
}

fn json_case(
    what: &'static str,
    name: &'static str,
    body: Value,
    codes: &'static [u16],
    field: &'static str,
) -> Case {
    Case {
        what,
        name,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        codes,
        field,
        query: "",
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut p = pod("wrong-type");
    p["spec"]["containers"][0]["image"] = json!(5);
    v.push(json_case(
        "wrong type",
        "wrong-type",
        p,
        &[422, 400],
        "spec.containers[0].image",
    ));
    let mut p = pod("no-containers");
    p["spec"].as_object_mut().unwrap().remove("containers");
    v.push(json_case(
        "missing required field",
        "no-containers",
        p,
        &[422],
        "spec.containers",
    ));
    let mut p = pod("no-image");
    p["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("image");
    v.push(json_case(
        "missing image",
        "no-image",
        p,
        &[422],
        "spec.containers[0].image",
    ));
    let mut p = pod("unknown-field");
    p["spec"]["containers"][0]["imagePolicy"] = json!("x");
    let mut c = json_case(
        "unknown field under Strict",
        "unknown-field",
        p,
        &[400, 422],
        "spec.containers[0].imagePolicy",
    );
    c.query = "fieldValidation=Strict";
    v.push(c);
    let mut p = pod("x");
    p["metadata"]["name"] = json!("Bad_Name");
    v.push(json_case(
        "bad name",
        "Bad_Name",
        p,
        &[422, 400],
        "metadata.name",
    ));
    let mut p = pod("long-name");
    p["metadata"]["name"] = json!("a".repeat(254));
    v.push(json_case(
        "name too long",
        "long-name",
        p,
        &[422, 400],
        "metadata.name",
    ));
    let mut p = pod("bad-label");
    p["metadata"]["labels"] = json!({"bad key": "v"});
    v.push(json_case(
        "bad label key",
        "bad-label",
        p,
        &[422],
        "metadata.labels",
    ));
    let mut p = pod("bad-quantity");
    p["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("lots");
    v.push(json_case(
        "bad quantity",
        "bad-quantity",
        p,
        &[422],
        "spec.containers[0].resources.requests[cpu]",
    ));
    let mut p = pod("bad-enum");
    p["spec"]["restartPolicy"] = json!("Sometimes");
    v.push(json_case(
        "unsupported enum value",
        "bad-enum",
        p,
        &[422],
        "spec.restartPolicy",
    ));
    let mut p = pod("bad-port");
    p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 70000}]);
    v.push(json_case(
        "port out of range",
        "bad-port",
        p,
        &[422],
        "spec.containers[0].ports[0].containerPort",
    ));
    let mut p = pod("dup-names");
    let second = p["spec"]["containers"][0].clone();
    p["spec"]["containers"].as_array_mut().unwrap().push(second);
    v.push(json_case(
        "duplicate container names",
        "dup-names",
        p,
        &[422],
        "spec.containers[1].name",
    ));
    let mut p = pod("limits");
    p["spec"]["containers"][0]["resources"]["limits"] = json!({"cpu": "50m"});
    v.push(json_case(
        "request above limit",
        "limits",
        p,
        &[422],
        "spec.containers[0].resources.requests[cpu]",
    ));
    let mut p = pod("big-annotations");
    p["metadata"]["annotations"] = json!({"note": "x".repeat(300 * 1024)});
    v.push(json_case(
        "annotations over 256 KiB",
        "big-annotations",
        p,
        &[422],
        "metadata.annotations",
    ));
    let mut p = pod("huge");
    p["metadata"]["annotations"] = json!({"note": "x".repeat(4 * 1024 * 1024)});
    v.push(json_case(
        "oversize object",
        "huge",
        p,
        &[413, 400, 422],
        "",
    ));
    v.push(Case {
        what: "malformed JSON",
        name: "malformed",
        content_type: "application/json",
        body: br#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "malformed""#.to_vec(),
        codes: &[400],
        field: "",
        query: "",
    });
    v.push(Case {
        what: "malformed YAML",
        name: "malformed-yaml",
        content_type: "application/yaml",
        body: b"apiVersion: v1\nkind: Pod\nmetadata: {name: malformed-yaml\nspec: [\n".to_vec(),
        codes: &[400],
        field: "",
        query: "",
    });
    v.push(Case {
        what: "not an object",
        name: "",
        content_type: "application/json",
        body: b"[1, 2, 3]".to_vec(),
        codes: &[400, 422],
        field: "",
        query: "",
    });
    v.push(json_case(
        "kind does not match the URL",
        "svc-as-pod",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc-as-pod"}}),
        &[400, 422],
        "",
    ));
    v
}

fn names_field(status: &Value, field: &str) -> bool {
    let causes = status["details"]["causes"].as_array().into_iter().flatten();
    let in_causes = causes.into_iter().any(|c| c["field"] == field);
    in_causes
        || status["message"]
            .as_str()
            .is_some_and(|m| m.contains(field))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_are_refused_with_the_field_and_nothing_is_written() -> anyhow::Result<()>
{
    let c = Cluster::start(Backend::Etcd).await?;
    let http = c.client();
    let pods = format!("{}/api/v1/namespaces/default/pods", c.url());
    let mut wrong = Vec::new();
    for case in cases() {
        let url = if case.query.is_empty() {
            pods.clone()
        } else {
            format!("{pods}?{}", case.query)
        };
        let (code, status) = send_raw(
            &http,
            Method::POST,
            &url,
            case.content_type,
            case.body.clone(),
        )
        .await?;
        let shown = status.to_string().chars().take(400).collect::<String>();
        if !case.codes.contains(&code) {
            wrong.push(format!(
                "{}: got {code}, want one of {:?}: {shown}",
                case.what, case.codes
            ));
            continue;
        }
        if status["kind"] != "Status" || status["status"] != "Failure" {
            wrong.push(format!(
                "{}: answer is not a Failure Status: {shown}",
                case.what
            ));
        }
        if status["message"].as_str().is_none_or(str::is_empty) {
            wrong.push(format!("{}: no message: {shown}", case.what));
        }
        if !case.field.is_empty() && !names_field(&status, case.field) {
            wrong.push(format!(
                "{}: does not name {}: {shown}",
                case.what, case.field
            ));
        }
        if !case.name.is_empty() {
            let (get_code, _) = get_json(&http, &format!("{pods}/{}", case.name)).await?;
            if get_code != 404 {
                wrong.push(format!(
                    "{}: GET after the refusal gave {get_code}",
                    case.what
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The same unknown field under the default (Warn) is accepted with a warning.
    let mut p = pod("warned");
    p["spec"]["containers"][0]["imagePolicy"] = json!("x");
    let r = http
        .post(format!("{pods}?dryRun=All"))
        .json(&p)
        .send()
        .await?;
    let warning = r
        .headers()
        .get("warning")
        .and_then(|w| w.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(r.status().as_u16(), 201);
    assert!(
        warning.contains("spec.containers[0].imagePolicy"),
        "Warning header: {warning:?}"
    );

    // A workload whose selector does not match its template.
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mismatch"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let deployments = format!("{}/apis/apps/v1/namespaces/default/deployments", c.url());
    let (code, status) = send_raw(
        &http,
        Method::POST,
        &deployments,
        "application/json",
        deploy.to_string().into_bytes(),
    )
    .await?;
    assert_eq!(code, 422, "{status}");
    assert!(
        names_field(&status, "spec.template.metadata.labels"),
        "{status}"
    );

    // A patch whose result is invalid is refused and the stored object stays as it was.
    let (code, created) = send_raw(
        &http,
        Method::POST,
        &pods,
        "application/json",
        pod("good").to_string().into_bytes(),
    )
    .await?;
    assert_eq!(code, 201, "{created}");
    for (ct, body) in [
        (
            "application/merge-patch+json",
            r#"{"spec":{"containers":[{"name":"c","image":5}]}}"#,
        ),
        (
            "application/strategic-merge-patch+json",
            r#"{"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":"lots"}}}]}}"#,
        ),
        (
            "application/json-patch+json",
            r#"[{"op":"replace","path":"/metadata/name","value":"Bad_Name"}]"#,
        ),
        (
            "application/json-patch+json",
            r#"[{"op":"test","path":"/metadata/name","value":"other"}]"#,
        ),
        ("application/json-patch+json", r#"[{"op":"explode"}]"#),
        ("application/merge-patch+json", r#"{"spec": "#),
    ] {
        let (code, status) = send_raw(
            &http,
            Method::PATCH,
            &format!("{pods}/good"),
            ct,
            body.as_bytes().to_vec(),
        )
        .await?;
        assert!(
            [400, 409, 422].contains(&code),
            "{ct} {body}: {code} {status}"
        );
        assert_eq!(status["kind"], "Status", "{status}");
    }
    let (_, now) = get_json(&http, &format!("{pods}/good")).await?;
    assert_eq!(
        now["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    assert_eq!(now["spec"]["containers"][0]["image"], "nginx");

    // The store holds exactly the one good pod and no deployment.
    let mut etcd = c.etcd().await?;
    let kvs = etcd
        .get(
            "/registry/pods/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await?;
    let keys: Vec<String> = kvs
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    assert_eq!(keys, ["/registry/pods/default/good"]);
    let kvs = etcd
        .get(
            "/registry/deployments/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await?;
    assert_eq!(kvs.count(), 0);
    Ok(())
}
