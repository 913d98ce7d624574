//! The real kubectl v1.32 against the apiserver over TLS with the generated admin
//! kubeconfig: get (-o wide|yaml|json, -l, -w), describe, apply (create, change,
//! re-apply), patch (json, merge, strategic), label, scale, delete, api-resources and
//! auth can-i, each checked on its output and on the stored state.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::{Backend, Cluster, get_json};
use serde_json::Value;

const DEPLOY_V1: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
        env:
        - {name: A, value: "1"}
"#;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: pod-a
  labels: {app: a, tier: back}
spec:
  containers:
  - name: main
    image: busybox
"#;

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test]
async fn kubectl_workflow() -> anyhow::Result<()> {
    let c = Cluster::start(Backend::Kvstore).await?;
    assert!(
        c.url().starts_with("https://"),
        "TLS by default: {}",
        c.url()
    );

    // api-resources from discovery.
    let out = c.kubectl(&["api-resources"])?;
    let text = out.ok()?;
    for want in [
        "pods",
        "deployments",
        "clusterrolebindings",
        "leases",
        "po ",
        "deploy",
    ] {
        assert!(text.contains(want), "api-resources lacks {want}:\n{text}");
    }

    // apply: create, then change and re-apply.
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(DEPLOY_V1))?;
    assert!(out.ok()?.contains("deployment.apps/web created"), "{out:?}");
    let (_, d) = get_json(
        &c.client(),
        &format!(
            "{}/apis/apps/v1/namespaces/default/deployments/web",
            c.url()
        ),
    )
    .await?;
    assert!(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    let v2 = DEPLOY_V1
        .replace("nginx:1.25", "nginx:1.26")
        .replace("value: \"1\"", "value: \"2\"");
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(&v2))?;
    assert!(
        out.ok()?.contains("deployment.apps/web configured"),
        "{out:?}"
    );
    let (_, d) = get_json(
        &c.client(),
        &format!(
            "{}/apis/apps/v1/namespaces/default/deployments/web",
            c.url()
        ),
    )
    .await?;
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "2"
    );
    assert_eq!(d["metadata"]["generation"], 2);
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(&v2))?;
    assert!(out.ok()?.contains("unchanged"), "{out:?}");

    // scale through the scale subresource.
    let out = c.kubectl(&["scale", "deployment/web", "--replicas=5"])?;
    assert!(out.ok()?.contains("scaled"), "{out:?}");
    let out = c.kubectl(&["get", "deployment", "web", "-o", "json"])?;
    assert_eq!(json_of(out.ok()?)["spec"]["replicas"], 5);

    // A pod; get in every output form.
    c.kubectl_stdin(&["apply", "-f", "-"], Some(POD))?.ok()?;
    let out = c.kubectl(&["get", "pods"])?;
    let text = out.ok()?;
    assert!(text.contains("NAME") && text.contains("pod-a"), "{text}");
    let out = c.kubectl(&["get", "pods", "-o", "wide"])?;
    assert!(out.ok()?.contains("pod-a"), "{out:?}");
    let out = c.kubectl(&["get", "pod", "pod-a", "-o", "yaml"])?;
    assert!(out.ok()?.contains("image: busybox"), "{out:?}");
    let out = c.kubectl(&["get", "pod", "pod-a", "-o", "json"])?;
    assert_eq!(json_of(out.ok()?)["metadata"]["labels"]["tier"], "back");
    // -l selects.
    let out = c.kubectl(&["get", "pods", "-l", "app=a", "-o", "name"])?;
    assert_eq!(out.ok()?.trim(), "pod/pod-a");
    let out = c.kubectl(&["get", "pods", "-l", "app=zzz", "-o", "name"])?;
    assert_eq!(out.ok()?.trim(), "");

    // label, then patch in the three flavours.
    c.kubectl(&["label", "pod", "pod-a", "env=prod"])?.ok()?;
    c.kubectl(&[
        "patch",
        "pod",
        "pod-a",
        "--type=merge",
        "-p",
        r#"{"metadata":{"annotations":{"m":"1"}}}"#,
    ])?
    .ok()?;
    c.kubectl(&[
        "patch",
        "pod",
        "pod-a",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/annotations/j","value":"2"}]"#,
    ])?
    .ok()?;
    c.kubectl(&[
        "patch",
        "pod",
        "pod-a",
        "-p",
        r#"{"spec":{"containers":[{"name":"main","image":"busybox:2"}]}}"#,
    ])?
    .ok()?;
    let out = c.kubectl(&["get", "pod", "pod-a", "-o", "json"])?;
    let p = json_of(out.ok()?);
    assert_eq!(p["metadata"]["labels"]["env"], "prod");
    assert_eq!(p["metadata"]["annotations"]["m"], "1");
    assert_eq!(p["metadata"]["annotations"]["j"], "2");
    assert_eq!(p["spec"]["containers"][0]["image"], "busybox:2");
    assert_eq!(p["spec"]["containers"].as_array().unwrap().len(), 1);

    // describe.
    let out = c.kubectl(&["describe", "pod", "pod-a"])?;
    let text = out.ok()?;
    assert!(
        text.contains("pod-a") && text.contains("busybox:2"),
        "{text}"
    );

    // auth can-i.
    let out = c.kubectl(&["auth", "can-i", "create", "pods"])?;
    assert_eq!(out.stdout.trim(), "yes", "{out:?}");

    // delete.
    let out = c.kubectl(&["delete", "pod", "pod-a"])?;
    assert!(out.ok()?.contains("deleted"), "{out:?}");
    let out = c.kubectl(&["get", "pod", "pod-a"])?;
    assert!(!out.success && out.stderr.contains("NotFound"), "{out:?}");
    Ok(())
}

#[tokio::test]
async fn kubectl_get_watch_sees_changes() -> anyhow::Result<()> {
    let c = Cluster::start(Backend::Kvstore).await?;
    c.kubectl_stdin(&["apply", "-f", "-"], Some(POD))?.ok()?;
    let mut child = c.kubectl_spawn(&[
        "get",
        "pods",
        "-w",
        "--output-watch-events",
        "--request-timeout=0",
    ])?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let wait_for = |seen: &mut Vec<String>, want: &str| -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                seen.push(line.clone());
                if line.contains(want) {
                    return Ok(());
                }
            }
        }
        anyhow::bail!("kubectl get -w never printed {want:?}; saw {seen:?}")
    };
    wait_for(&mut seen, "pod-a")?;
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&POD.replace("pod-a", "pod-b")))?
        .ok()?;
    wait_for(&mut seen, "pod-b")?;
    c.kubectl(&["delete", "pod", "pod-b"])?.ok()?;
    wait_for(&mut seen, "DELETED")?;
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

#[tokio::test]
async fn kubectl_on_real_etcd() -> anyhow::Result<()> {
    let c = Cluster::start(Backend::Etcd).await?;
    c.kubectl_stdin(&["apply", "-f", "-"], Some(DEPLOY_V1))?
        .ok()?;
    let out = c.kubectl(&["get", "deployments", "-o", "name"])?;
    assert_eq!(out.ok()?.trim(), "deployment.apps/web");
    c.kubectl(&["delete", "deployment", "web"])?.ok()?;
    let out = c.kubectl(&["get", "deployments", "-o", "name"])?;
    assert_eq!(out.ok()?.trim(), "");
    Ok(())
}
