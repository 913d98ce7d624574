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
    // Bad controller flags fail at once, before anything is created.
    let controller_settings = if config.controllers {
        Some(controller_settings(&config)?)
    } else {
        None
    };
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
    if let Some(settings) = controller_settings {
        let client_host = if host.is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            host.to_string()
        };
        let url = match host {
            std::net::IpAddr::V6(_) if !host.is_unspecified() => {
                format!("https://[{client_host}]:{secure_port}")
            }
            _ => format!("https://{client_host}:{secure_port}"),
        };
        let identity = format!("{server_address}_{}", uuid::Uuid::new_v4().simple());
        let (scheduler, manager) = controller_clients(&config, &url)?;
        let run_config = controllers::RunConfig {
            identity: identity.clone(),
            ..settings
        };
        tracing::info!(%identity, "starting the scheduler and controllers");
        println!("apiserver: controllers on, identity {identity}");
        tasks.push(tokio::spawn(async move {
            controllers::run::run_with_clients(
                scheduler,
                manager,
                run_config,
                api::CancellationToken::new(),
            )
            .await;
        }));
    }
    let _ = std::io::stdout().flush();
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// The controllers' settings from the flags (identity filled in once serving).
fn controller_settings(config: &Config) -> anyhow::Result<controllers::RunConfig> {
    let strategy: controllers::scheduler::Strategy = config
        .scheduler_strategy
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--scheduler-strategy: {e}"))?;
    let secs = |flag: &str, v: u64| -> anyhow::Result<Duration> {
        anyhow::ensure!(v > 0, "--{flag} must be at least 1");
        Ok(Duration::from_secs(v))
    };
    let lease = secs(
        "leader-elect-lease-duration-s",
        config.leader_elect_lease_duration_s,
    )?;
    let renew = secs(
        "leader-elect-renew-deadline-s",
        config.leader_elect_renew_deadline_s,
    )?;
    let retry = secs(
        "leader-elect-retry-period-s",
        config.leader_elect_retry_period_s,
    )?;
    anyhow::ensure!(
        renew < lease,
        "--leader-elect-renew-deadline-s ({}) must be less than --leader-elect-lease-duration-s ({})",
        renew.as_secs(),
        lease.as_secs()
    );
    anyhow::ensure!(
        retry < renew,
        "--leader-elect-retry-period-s ({}) must be less than --leader-elect-renew-deadline-s ({})",
        retry.as_secs(),
        renew.as_secs()
    );
    let mut run = controllers::RunConfig::new("");
    run.lease_duration = lease;
    run.renew_deadline = renew;
    run.retry_period = retry;
    run.leader_elect = config.leader_elect;
    run.scheduler.strategy = strategy;
    run.node_lifecycle.grace_period = secs(
        "node-monitor-grace-period-s",
        config.node_monitor_grace_period_s,
    )?;
    Ok(run)
}

/// The token of `user` in the token file.
fn token_of(token_file: &Path, user: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(token_file)
        .with_context(|| format!("read {}", token_file.display()))?;
    text.lines()
        .find(|l| l.split(',').nth(1).map(str::trim) == Some(user))
        .and_then(|l| l.split(',').next())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .with_context(|| {
            format!(
                "--controllers needs a token for {user} in {}",
                token_file.display()
            )
        })
}

/// Clients of this apiserver for the scheduler and the controller manager: its own
/// HTTPS URL, trusting only `<data-dir>/pki/ca.crt`, each with its component's token.
fn controller_clients(config: &Config, url: &str) -> anyhow::Result<(api::Client, api::Client)> {
    let ca_path = config.data_dir.join("pki").join(crate::tls::CA_CERT_FILE);
    let ca = std::fs::read(&ca_path).with_context(|| format!("read {}", ca_path.display()))?;
    let token_file = config.token_file();
    let client = |user: &str| -> anyhow::Result<api::Client> {
        let mut cfg = api::Config::new([url])
            .map_err(|e| anyhow::anyhow!("controller client: {e}"))?
            .with_ca_pem(ca.clone())
            .with_token(token_of(&token_file, user)?);
        cfg.user_agent = format!("apiserver/{user}");
        api::Client::new(cfg).map_err(|e| anyhow::anyhow!("controller client: {e}"))
    };
    Ok((
        client("system:kube-scheduler")?,
        client("system:kube-controller-manager")?,
    ))
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
