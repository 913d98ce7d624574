//! The client over real sockets against [`crate::testserver`]: failover, sticky current
//! server, bounded retries, Status errors, typed calls' requests, paging and watch.

use std::time::Duration;

use serde_json::json;

use crate::testserver::{Reply, TestServer, dead_url};
use crate::*;

fn ok(body: serde_json::Value) -> Reply {
    Reply::Full(200, vec![], body.to_string().into_bytes())
}

fn status(code: u16, reason: &str, message: &str) -> Reply {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": reason, "message": message, "code": code});
    Reply::Full(code, vec![], body.to_string().into_bytes())
}

fn pod_json(name: &str, rv: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": rv}})
}

fn client(servers: &[&str]) -> Client {
    let mut config = Config::new(servers).unwrap().with_token("t0ken");
    config.retry_backoff = Duration::from_millis(10);
    config.request_timeout = Duration::from_secs(10);
    Client::new(config).unwrap()
}

#[tokio::test]
async fn fails_over_past_dead_and_unavailable_servers_and_stays_on_the_good_one() {
    let dead = dead_url().await;
    let busy = TestServer::start(|_| status(503, "ServiceUnavailable", "starting")).await;
    let good = TestServer::start(|_| ok(pod_json("web", "5"))).await;
    let c = client(&[&dead, &busy.url, &good.url]);

    let pod: Pod = c.get(Some("default"), "web").await.unwrap();
    assert_eq!(pod.metadata.resource_version.as_deref(), Some("5"));
    assert_eq!(busy.requests().len(), 1);
    assert_eq!(good.requests().len(), 1);
    assert_eq!(c.current_server().as_str(), format!("{}/", good.url));

    // Sticky: the next call goes straight to the server that answered.
    let _: Pod = c.get(Some("default"), "web").await.unwrap();
    assert_eq!(busy.requests().len(), 1);
    assert_eq!(good.requests().len(), 2);
    let req = &good.requests()[0];
    assert_eq!(req.target, "/api/v1/namespaces/default/pods/web");
    assert_eq!(req.header("authorization"), Some("Bearer t0ken"));
}

#[tokio::test]
async fn a_429_is_retried_on_the_next_server_after_retry_after() {
    let limited =
        TestServer::start(|_| Reply::Full(429, vec![("retry-after", "1".into())], b"{}".to_vec()))
            .await;
    let good = TestServer::start(|_| ok(pod_json("web", "5"))).await;
    let c = client(&[&limited.url, &good.url]);
    let _: Pod = c.get(Some("default"), "web").await.unwrap();
    assert_eq!(limited.requests().len(), 1);
    assert_eq!(good.requests().len(), 1);
}

#[tokio::test]
async fn retries_are_bounded_and_say_what_failed_last() {
    let dead = dead_url().await;
    let hangup = TestServer::start(|_| Reply::Hangup).await;
    let mut config = Config::new([&dead, &hangup.url]).unwrap();
    config.max_attempts = 5;
    config.retry_backoff = Duration::from_millis(10);
    let c = Client::new(config).unwrap();
    let err = c.get::<Pod>(Some("default"), "web").await.unwrap_err();
    match &err {
        Error::Unavailable { attempts, last } => {
            assert_eq!(*attempts, 5);
            assert!(
                last.contains("/api/v1/namespaces/default/pods/web"),
                "{last}"
            );
        }
        other => panic!("expected Unavailable, got {other}"),
    }
    // Attempts alternate: 3 on the dead server, 2 on the one that hangs up.
    assert_eq!(hangup.requests().len(), 2);
}

#[tokio::test]
async fn failure_statuses_become_typed_errors_without_failover() {
    let a = TestServer::start(|_| status(404, "NotFound", "pods \"x\" not found")).await;
    let b = TestServer::start(|_| ok(pod_json("x", "1"))).await;
    let c = client(&[&a.url, &b.url]);
    let err = c.get::<Pod>(Some("default"), "x").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(
        c.get_opt::<Pod>(Some("default"), "x")
            .await
            .unwrap()
            .map(|_| ()),
        None
    );
    assert_eq!(
        b.requests().len(),
        0,
        "a real answer is not a reason to fail over"
    );

    let conflict =
        TestServer::start(|_| status(409, "Conflict", "the object has been modified")).await;
    let c = client(&[&conflict.url]);
    let mut pod = Pod::default();
    pod.metadata.name = Some("x".into());
    pod.metadata.namespace = Some("default".into());
    let err = c.update(&pod, &PostParams::default()).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidRequest(_)),
        "no resourceVersion, no request: {err}"
    );
    assert!(conflict.requests().is_empty());
    pod.metadata.resource_version = Some("3".into());
    let err = c.update(&pod, &PostParams::default()).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    let req = &conflict.requests()[0];
    assert_eq!(req.method, "PUT");
    let sent: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(sent["metadata"]["resourceVersion"], "3");
}

#[tokio::test]
async fn writes_send_the_right_method_path_and_content_type() {
    let s = TestServer::start(|req| {
        if req.target.ends_with("/binding") {
            ok(json!({"kind": "Status", "status": "Success", "code": 201}))
        } else if req.method == "DELETE" {
            ok(json!({"kind": "Status", "status": "Success"}))
        } else {
            ok(pod_json("web", "9"))
        }
    })
    .await;
    let c = client(&[&s.url]);
    let patch =
        Patch::Strategic(json!({"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}));
    let params = PostParams {
        dry_run: true,
        field_validation: Some(FieldValidation::Strict),
        ..Default::default()
    };
    let _: Pod = c
        .patch(Some("default"), "web", &patch, &params)
        .await
        .unwrap();
    c.bind("default", "web", "node-1").await.unwrap();
    let deleted = c
        .delete::<Pod>(
            Some("default"),
            "web",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(deleted, Deleted::Gone));

    let reqs = s.requests();
    assert_eq!(reqs[0].method, "PATCH");
    assert_eq!(
        reqs[0].target,
        "/api/v1/namespaces/default/pods/web?dryRun=All&fieldValidation=Strict"
    );
    assert_eq!(
        reqs[0].header("content-type"),
        Some("application/strategic-merge-patch+json")
    );
    assert_eq!(reqs[1].method, "POST");
    assert_eq!(
        reqs[1].target,
        "/api/v1/namespaces/default/pods/web/binding"
    );
    let binding: serde_json::Value = serde_json::from_slice(&reqs[1].body).unwrap();
    assert_eq!(
        binding["target"],
        json!({"apiVersion": "v1", "kind": "Node", "name": "node-1"})
    );
    assert_eq!(reqs[2].method, "DELETE");
    let opts: serde_json::Value = serde_json::from_slice(&reqs[2].body).unwrap();
    assert_eq!(opts["propagationPolicy"], "Background");
}

#[tokio::test]
async fn list_all_follows_continue_tokens_and_keeps_the_first_pages_version() {
    let s = TestServer::start(|req| {
        let (items, cont, rv) = if req.target.contains("continue=p2") {
            (vec![pod_json("c", "3")], "", "7")
        } else {
            (vec![pod_json("a", "1"), pod_json("b", "2")], "p2", "7")
        };
        ok(json!({"apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": rv, "continue": cont}, "items": items}))
    })
    .await;
    let c = client(&[&s.url]);
    let (pods, rv) = c
        .list_all::<Pod>(
            Some("default"),
            &ListParams::default().labels("app=web").limit(2),
        )
        .await
        .unwrap();
    let names: Vec<_> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(rv, "7");
    let reqs = s.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[0].target,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb&limit=2"
    );
    assert_eq!(
        reqs[1].target,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb&limit=2&continue=p2"
    );
}

#[tokio::test]
async fn a_watch_over_a_socket_yields_typed_events_until_the_server_closes() {
    use futures::StreamExt;
    let s = TestServer::start(|_| {
        let body = format!(
            "{}\n{}\n",
            json!({"type": "ADDED", "object": pod_json("a", "11")}),
            json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "12"}}})
        );
        Reply::Full(200, vec![], body.into_bytes())
    })
    .await;
    let c = client(&[&s.url]);
    let stream = c
        .watch::<Pod>(None, &WatchParams::default(), "10")
        .await
        .unwrap();
    let events: Vec<_> = stream.collect().await;
    assert_eq!(events.len(), 2);
    assert!(
        matches!(&events[0], Ok(WatchEvent::Added(p)) if p.metadata.name.as_deref() == Some("a"))
    );
    assert!(
        matches!(&events[1], Ok(WatchEvent::Bookmark { resource_version }) if resource_version == "12")
    );
    assert_eq!(
        s.requests()[0].target,
        "/api/v1/pods?watch=1&resourceVersion=10&allowWatchBookmarks=true&timeoutSeconds=290"
    );

    let gone = TestServer::start(|_| status(410, "Expired", "too old resource version")).await;
    let c = client(&[&gone.url]);
    let err = c
        .watch::<Pod>(None, &WatchParams::default(), "1")
        .await
        .err()
        .unwrap();
    assert!(err.is_gone(), "{err}");
}

#[tokio::test]
async fn a_bad_ca_is_a_configuration_error() {
    let config = Config::new(["https://127.0.0.1:1"])
        .unwrap()
        .with_ca_pem("not a pem");
    assert!(matches!(Client::new(config), Err(Error::Config(_))));
}
