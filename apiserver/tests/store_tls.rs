//! The apiserver over a store served with TLS (real etcd 3.4 with a certificate from
//! our own PKI code): `--etcd-cafile` makes the connection verify it.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::apiserver_bin;

#[tokio::test]
async fn apiserver_over_an_https_store() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A CA and a certificate for 127.0.0.1, from the same code the apiserver uses.
    apiserver::tls::ensure_pki(&dir.path().join("pki"), &[]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (client_port, peer_port) = (tests::ports::free_port(), tests::ports::free_port());
    let client_url = format!("https://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let p = |f: &str| dir.path().join("pki").join(f).display().to_string();
    let log = std::fs::File::create(dir.path().join("etcd.log"))?;
    let mut etcd = Command::new("etcd")
        .args(["--name", "tls", "--data-dir"])
        .arg(dir.path().join("etcd"))
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("tls={peer_url}")])
        .args([
            "--cert-file",
            &p("apiserver.crt"),
            "--key-file",
            &p("apiserver.key"),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let port = tests::ports::free_port();
    let mut api = Command::new(apiserver_bin())
        .args(["--etcd-servers", &client_url, "--etcd-cafile", &p("ca.crt")])
        .args(["--secure-port", &tests::ports::free_port().to_string()])
        .args(["--insecure-port", &port.to_string(), "--data-dir"])
        .arg(dir.path().join("api"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("http://127.0.0.1:{port}/api/v1/namespaces/default");
    let result = common::eventually("the apiserver to read from the TLS store", || async {
        let r = http.get(&url).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let _ = api.kill();
    let _ = api.wait();
    let _ = etcd.kill();
    let _ = etcd.wait();
    result
}
