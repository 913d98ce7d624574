//! Process start: the data directory (token file, PKI, admin kubeconfig), the store
//! connection, the bootstrap objects, the watch caches and the listeners.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::audit::Audit;
use crate::auth::TokenAuthenticator;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::resources;
use crate::server::security::Security;
use crate::server::{AppState, Listener, router};
use crate::store::{Store, StoreTls};
use crate::watch_cache::{CacheConfig, Caches};

/// How long start-up waits for the store before giving up.
const STORE_WAIT: Duration = Duration::from_secs(60);

/// Runs the apiserver until the process is killed.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create data dir {}", config.data_dir.display()))?;
    let admin_token = ensure_token_file(&config)?;

    let store = Store::connect(
        &config.etcd_servers,
        &StoreTls {
            ca_file: config.etcd_cafile.clone(),
            cert_file: config.etcd_certfile.clone(),
            key_file: config.etcd_keyfile.clone(),
        },
    )
    .await?;
    bootstrap(&store).await?;

    let caches = Caches::start(
        &store,
        CacheConfig {
            watcher_buffer: config.watch_buffer_events.max(1),
            history_events: config.watch_history_events.max(1),
            bookmark_interval: Duration::from_secs(config.bookmark_interval_s.max(1)),
        },
    );
    let audit = Audit::start(&config.audit_log()).context("open the audit log")?;
    let signing_key = ensure_signing_key(&config.data_dir.join("sa.key"))?;
    let token_file = config.token_file();
    let authn = TokenAuthenticator::new(Some(&token_file), signing_key)
        .map_err(|e| anyhow::anyhow!("token authentication: {e}"))?;
    let security = Security::new(authn, store.clone(), &caches)?;

    let secure = TcpListener::bind(SocketAddr::new(config.bind_address, config.secure_port))
        .await
        .with_context(|| format!("bind secure port {}", config.secure_port))?;
    let secure_port = secure.local_addr()?.port();
    let host = config.advertise_address.unwrap_or(config.bind_address);
    let server_address = format!("{host}:{secure_port}");
    let state = Arc::new(AppState {
        store,
        caches,
        metrics: Metrics::new(),
        audit,
        security,
        mutating: tokio::sync::Semaphore::new(config.max_mutating_requests_inflight.max(1)),
        server_address: server_address.clone(),
    });

    let tls = tls_config(
        &config,
        &host.to_string(),
        &format!("https://{server_address}"),
        &admin_token,
    )?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(crate::serve::serve(
        secure,
        router(state.clone(), Listener::Secure),
        tls,
    )));
    println!("apiserver: serving on {scheme}://{server_address}");
    println!(
        "apiserver: admin kubeconfig at {}",
        config.data_dir.join("admin.kubeconfig").display()
    );
    if let Some(port) = config.insecure_port {
        let insecure = TcpListener::bind(SocketAddr::new(config.bind_address, port))
            .await
            .with_context(|| format!("bind insecure port {port}"))?;
        let addr = insecure.local_addr()?;
        tasks.push(tokio::spawn(crate::serve::serve(
            insecure,
            router(state.clone(), Listener::Insecure),
            None,
        )));
        println!("apiserver: insecure port on http://{addr}");
    }
    let _ = std::io::stdout().flush();
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// TLS for the secure port, and the admin kubeconfig pointing at it.
/// The CA and serving certificate are made at first start and reused after (several
/// apiservers may share one data dir, hence one CA); the kubeconfig is written when
/// missing, so it names the first apiserver's address.
fn tls_config(
    config: &Config,
    host: &str,
    server_url: &str,
    admin_token: &str,
) -> anyhow::Result<Option<Arc<tokio_rustls::rustls::ServerConfig>>> {
    let mut hosts = vec![host.to_string(), config.bind_address.to_string()];
    hosts.dedup();
    let pki = crate::tls::ensure_pki(&config.data_dir.join("pki"), &hosts)
        .map_err(|e| anyhow::anyhow!("PKI: {e}"))?;
    let kubeconfig = config.data_dir.join("admin.kubeconfig");
    if !kubeconfig.exists() {
        crate::kubeconfig::write_kubeconfig(
            &kubeconfig,
            "kvstore",
            server_url,
            &pki.ca_cert_pem,
            "admin",
            admin_token,
        )
        .context("write the admin kubeconfig")?;
    }
    let server = crate::tls::server_config(&pki).map_err(|e| anyhow::anyhow!("TLS config: {e}"))?;
    Ok(Some(server))
}

/// The service-account token signing key: 32 random bytes made at first start.
fn ensure_signing_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    if let Ok(key) = std::fs::read(path) {
        return Ok(key);
    }
    let key: [u8; 32] = rand::random();
    write_private(path, &key)?;
    Ok(key.to_vec())
}

/// Creates the token file with an admin token at first start; returns the admin token.
fn ensure_token_file(config: &Config) -> anyhow::Result<String> {
    let path = config.token_file();
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text
            .lines()
            .find(|l| l.split(',').nth(1) == Some("admin"))
            .and_then(|l| l.split(',').next())
            .unwrap_or("")
            .to_string();
        return Ok(token);
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    // The admin, and static identities for the components that run outside (bound by the
    // bootstrap policy: system:kube-scheduler, system:kube-controller-manager, system:nodes).
    let mut text = format!("{token},admin,admin,\"system:masters\"\n");
    for (user, groups) in [
        ("system:kube-scheduler", ""),
        ("system:kube-controller-manager", ""),
        ("system:node:agent", "system:nodes"),
    ] {
        let t = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        text.push_str(&format!("{t},{user},{user},\"{groups}\"\n"));
    }
    write_private(&path, text.as_bytes())?;
    Ok(token)
}

/// Writes a file readable only by its owner, via a temporary file and a rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("write {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The namespaces every cluster has, created if missing. Safe with several
/// apiservers starting at once: each create is a create-if-absent Txn.
fn bootstrap_objects() -> Vec<Value> {
    let mut objects: Vec<Value> = ["default", "kube-system", "kube-public", "kube-node-lease"]
        .iter()
        .map(|ns| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}}))
        .collect();
    objects.extend(crate::auth::bootstrap_policy());
    objects
}

async fn bootstrap(store: &Store) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STORE_WAIT;
    for mut obj in bootstrap_objects() {
        let api_version = obj["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let resource = resources::by_kind(&api_version, &kind)
            .with_context(|| format!("bootstrap object of unknown kind {api_version}/{kind}"))?;
        crate::object::prepare_create(resource, &mut obj).map_err(|e| anyhow::anyhow!("{e}"))?;
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(String::from);
        let key = resource.store_key(ns.as_deref(), crate::object::name(&obj));
        loop {
            match store.create(&key, &obj).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!("store not ready for bootstrap ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => anyhow::bail!("bootstrap: the store did not answer: {e}"),
            }
        }
    }
    Ok(())
}
