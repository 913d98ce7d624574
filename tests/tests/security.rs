//! Store security with the real etcdctl 3.4: TLS with client certificates on the client
//! port (and the refusals: no certificate, a certificate from another CA, plain HTTP),
//! and etcd's auth (users, roles, range permissions, enable/disable) with etcd's exact
//! messages. Each body runs against real etcd (validating the expectations) and kvstore.
//! Certificates come from `kvstore certs`.

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};
use tests::etcdctl::{CmdOutput, etcdctl};
use tests::{Backend, ClientTls, Server, TestResult, both_backends};

both_backends!(
    etcdctl_over_tls_with_client_certificates,
    auth_users_roles_and_permissions
);

/// A CA with a member certificate (`server`) and a client certificate (`client`), and a
/// second, unrelated CA with a client certificate of the same name.
struct Certs {
    _dir: tempfile::TempDir,
    main: PathBuf,
    other: PathBuf,
}

impl Certs {
    fn new() -> Result<Certs> {
        let dir = tempfile::tempdir()?;
        let main = dir.path().join("main");
        let other = dir.path().join("other");
        for (d, member) in [(&main, "server"), (&other, "rogue")] {
            let out = std::process::Command::new(tests::server::kvstore_bin()?)
                .args(["certs", "--dir"])
                .arg(d)
                .args(["--member", member, "--client", "client"])
                .output()?;
            ensure!(out.status.success(), "kvstore certs failed: {out:?}");
        }
        Ok(Certs {
            _dir: dir,
            main,
            other,
        })
    }

    fn file(dir: &Path, name: &str) -> String {
        dir.join(name).display().to_string()
    }

    /// The server flags of a member that requires client certificates of the main CA.
    fn server_args(&self) -> Vec<String> {
        vec![
            format!("--cert-file={}", Self::file(&self.main, "server.pem")),
            format!("--key-file={}", Self::file(&self.main, "server-key.pem")),
            format!("--trusted-ca-file={}", Self::file(&self.main, "ca.pem")),
            "--client-cert-auth".into(),
        ]
    }

    fn client_tls(&self) -> ClientTls {
        ClientTls {
            ca: self.main.join("ca.pem"),
            cert: Some(self.main.join("client.pem")),
            key: Some(self.main.join("client-key.pem")),
        }
    }

    /// etcdctl's flags for a client certificate from `dir`, trusting the main CA.
    fn etcdctl_args(&self, dir: &Path) -> Vec<String> {
        vec![
            format!("--cacert={}", Self::file(&self.main, "ca.pem")),
            format!("--cert={}", Self::file(dir, "client.pem")),
            format!("--key={}", Self::file(dir, "client-key.pem")),
        ]
    }
}

async fn run(endpoint: &str, args: &[String], stdin: Option<&str>) -> Result<CmdOutput> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    etcdctl(endpoint, &args, stdin).await
}

fn with(prefix: &[String], rest: &[&str]) -> Vec<String> {
    prefix
        .iter()
        .cloned()
        .chain(rest.iter().map(|s| s.to_string()))
        .collect()
}

/// Asserts the command failed and said `message` on stderr.
fn refused(out: &CmdOutput, message: &str) -> Result<()> {
    ensure!(
        !out.status.success() && out.stderr.contains(message),
        "expected a failure saying {message:?}, got {out:?}"
    );
    Ok(())
}

async fn etcdctl_over_tls_with_client_certificates(backend: Backend) -> TestResult {
    let certs = Certs::new()?;
    let server_args = certs.server_args();
    let server_args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let s = Server::start_tls(backend, certs.client_tls(), &server_args).await?;
    let ep = s.endpoint();
    assert!(ep.starts_with("https://"));
    let good = certs.etcdctl_args(&certs.main);

    let out = run(&ep, &with(&good, &["put", "tls/k", "v1"]), None).await?;
    assert_eq!(out.ok()?, "OK\n");
    let out = run(&ep, &with(&good, &["get", "tls/k"]), None).await?;
    assert_eq!(out.ok()?, "tls/k\nv1\n");
    // Per-endpoint commands send `https://host` as the HTTP/2 authority.
    let out = run(&ep, &with(&good, &["endpoint", "health"]), None).await?;
    // etcdctl 3.4 prints health lines on stderr.
    assert!(
        out.status.success() && out.stderr.contains("is healthy"),
        "{out:?}"
    );

    // No client certificate: the handshake fails.
    let ca_only = vec![format!("--cacert={}", Certs::file(&certs.main, "ca.pem"))];
    let out = run(&ep, &with(&ca_only, &["get", "tls/k"]), None).await?;
    ensure!(
        !out.status.success(),
        "no client certificate was accepted: {out:?}"
    );
    // A client certificate from another CA.
    let foreign = certs.etcdctl_args(&certs.other);
    let out = run(&ep, &with(&foreign, &["get", "tls/k"]), None).await?;
    ensure!(
        !out.status.success(),
        "a foreign certificate was accepted: {out:?}"
    );
    // Plain HTTP/2 to the TLS port.
    let plain = ep.replace("https://", "http://");
    let out = run(&plain, &["get".into(), "tls/k".into()], None).await?;
    ensure!(!out.status.success(), "plain HTTP was accepted: {out:?}");

    // Our own client, with etcdctl's flags, works against both backends too.
    let kvstore = |extra: &[String]| {
        std::process::Command::new(tests::server::kvstore_bin().unwrap())
            .arg(format!("--endpoints={ep}"))
            .args(extra)
            .args(["get", "tls/k", "--print-value-only"])
            .output()
            .unwrap()
    };
    let out = kvstore(&good);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v1\n");
    let mut skip = good[1..].to_vec();
    skip.push("--insecure-skip-tls-verify".into());
    let out = kvstore(&skip);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v1\n");
    assert!(!kvstore(&foreign).status.success());
    assert!(!kvstore(&ca_only).status.success());

    // With auth on, a request without a token acts as the user its certificate names.
    let admin = |rest: &[&str]| {
        let args = with(&good, rest);
        let ep = ep.clone();
        async move { run(&ep, &args, None).await }
    };
    for cmd in [
        &["user", "add", "root:rootpw"][..],
        &["user", "add", "client:clientpw"],
        &["role", "add", "tls"],
        &[
            "role",
            "grant-permission",
            "tls",
            "readwrite",
            "tls/",
            "--prefix=true",
        ],
        &["user", "grant-role", "client", "tls"],
        &["auth", "enable"],
    ] {
        admin(cmd).await?.ok()?;
    }
    assert_eq!(admin(&["put", "tls/cn", "by-cn"]).await?.ok()?, "OK\n");
    refused(
        &admin(&["put", "other", "x"]).await?,
        "Error: etcdserver: permission denied",
    )?;
    Ok(())
}

async fn auth_users_roles_and_permissions(backend: Backend) -> TestResult {
    let s = Server::start(backend).await?;
    let ep = s.endpoint();
    let admin = |args: &[&str]| {
        let ep = ep.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move { run(&ep, &args, None).await }
    };
    assert_eq!(
        admin(&["user", "add", "root:rootpw"]).await?.ok()?,
        "User root created\n"
    );
    assert_eq!(
        admin(&["user", "add", "alice:alicepw"]).await?.ok()?,
        "User alice created\n"
    );
    assert_eq!(
        admin(&["role", "add", "r"]).await?.ok()?,
        "Role r created\n"
    );
    let out = admin(&[
        "role",
        "grant-permission",
        "r",
        "readwrite",
        "a/",
        "--prefix=true",
    ])
    .await?;
    assert_eq!(out.ok()?, "Role r updated\n");
    let out = admin(&["user", "grant-role", "alice", "r"]).await?;
    assert_eq!(out.ok()?, "Role r is granted to user alice\n");
    // etcdctl adds the root role and grants it to root when the server asks for it.
    assert_eq!(
        admin(&["auth", "enable"]).await?.ok()?,
        "Authentication Enabled\n"
    );

    let alice = ["--user=alice:alicepw".to_string()];
    let as_alice = |rest: &[&str], stdin: Option<&'static str>| {
        let ep = ep.clone();
        let args = with(&alice, rest);
        async move { run(&ep, &args, stdin).await }
    };
    // Inside the granted range.
    assert_eq!(as_alice(&["put", "a/1", "v"], None).await?.ok()?, "OK\n");
    assert_eq!(as_alice(&["get", "a/1"], None).await?.ok()?, "a/1\nv\n");
    let txn_inside = "value(\"a/1\") = \"v\"\n\nput a/2 w\n\nput a/3 x\n\n";
    let out = as_alice(&["txn"], Some(txn_inside)).await?;
    assert_eq!(out.ok()?, "SUCCESS\n\nOK\n");
    // Outside it: Range, Put, DeleteRange, Txn and Watch are refused.
    let denied = "Error: etcdserver: permission denied";
    refused(&as_alice(&["put", "b", "v"], None).await?, denied)?;
    refused(&as_alice(&["get", "b"], None).await?, denied)?;
    refused(&as_alice(&["get", "a", "--prefix"], None).await?, denied)?;
    refused(&as_alice(&["del", "b"], None).await?, denied)?;
    let txn_outside = "value(\"a/1\") = \"v\"\n\nput b w\n\n\n";
    refused(&as_alice(&["txn"], Some(txn_outside)).await?, denied)?;
    let txn_compare_outside = "value(\"b\") = \"v\"\n\nput a/4 w\n\n\n";
    refused(
        &as_alice(&["txn"], Some(txn_compare_outside)).await?,
        denied,
    )?;
    let out = as_alice(&["watch", "b"], None).await?;
    refused(&out, "permission denied")?;
    assert!(
        out.stderr.contains("watch is canceled by the server"),
        "{out:?}"
    );
    // Auth management needs the root role.
    refused(&as_alice(&["user", "list"], None).await?, denied)?;
    // Nothing outside the range was written.
    let root = ["--user=root:rootpw".to_string()];
    let out = run(&ep, &with(&root, &["get", "b"]), None).await?;
    assert_eq!(out.ok()?, "");
    let out = run(
        &ep,
        &with(&root, &["get", "a/", "--prefix", "--keys-only"]),
        None,
    )
    .await?;
    assert_eq!(out.ok()?, "a/1\n\na/2\n\n");

    // Wrong password, unknown user, no user at all.
    let failed = "Error: etcdserver: authentication failed, invalid user ID or password";
    refused(
        &run(
            &ep,
            &["--user=alice:wrong".into(), "get".into(), "a/1".into()],
            None,
        )
        .await?,
        failed,
    )?;
    refused(
        &run(
            &ep,
            &["--user=bob:x".into(), "get".into(), "a/1".into()],
            None,
        )
        .await?,
        failed,
    )?;
    refused(
        &run(&ep, &["get".into(), "a/1".into()], None).await?,
        "Error: etcdserver: user name is empty",
    )?;
    let out = run(&ep, &with(&root, &["user", "get", "bob"]), None).await?;
    refused(&out, "Error: etcdserver: user name not found")?;
    let out = run(&ep, &with(&root, &["role", "get", "r"]), None).await?;
    assert_eq!(
        out.ok()?,
        "Role r\nKV Read:\n\t[a/, a0) (prefix a/)\nKV Write:\n\t[a/, a0) (prefix a/)\n"
    );

    // Revoking the role takes the permission away at once.
    let out = run(
        &ep,
        &with(&root, &["user", "revoke-role", "alice", "r"]),
        None,
    )
    .await?;
    assert_eq!(out.ok()?, "Role r is revoked from user alice\n");
    refused(&as_alice(&["get", "a/1"], None).await?, denied)?;

    let out = run(&ep, &with(&root, &["auth", "disable"]), None).await?;
    assert_eq!(out.ok()?, "Authentication Disabled\n");
    let out = run(
        &ep,
        &["get".into(), "a/1".into(), "--print-value-only".into()],
        None,
    )
    .await?;
    assert_eq!(out.ok()?, "v\n");
    Ok(())
}
