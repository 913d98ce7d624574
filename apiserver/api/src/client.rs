//! The HTTP transport of the typed client: one `reqwest` client, several apiservers with
//! client-side failover, bounded retries and timeouts, bearer auth and `Status` errors.
//!
//! Failover: the client keeps a sticky "current" server. A call that cannot connect, is
//! reset or times out before an answer, or is answered 503 or 429 (after waiting its
//! Retry-After, capped) moves the current server to the next one and tries again, up to
//! `max_attempts` attempts in all, pausing with a doubling backoff after each full round.
//! A retried write may have reached the first server before its connection broke: a
//! create can then answer AlreadyExists and an update Conflict, which callers of a
//! level-based control loop handle anyway (re-read and retry).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::error::{ApiError, Error};

/// Longest pause between two rounds over the server list.
const MAX_ROUND_BACKOFF: Duration = Duration::from_secs(5);

/// A client of one apiserver cluster. Cheap to clone (shared connection pool and
/// current-server choice).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: Config,
    /// Index into `config.servers` of the server calls go to first.
    current: AtomicUsize,
}

/// One request, rebuilt for every attempt (the body is shared, not copied).
pub(crate) struct RequestSpec<'a> {
    pub method: Method,
    pub path: &'a str,
    pub query: &'a (dyn Fn(&mut Url) + Sync),
    pub body: Option<(Bytes, &'static str)>,
    pub timeout: Duration,
}

pub(crate) fn no_query(_: &mut Url) {}

impl Client {
    /// A client for this configuration.
    pub fn new(config: Config) -> Result<Self, Error> {
        if config.servers.is_empty() {
            return Err(Error::Config("no server URL given".into()));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent.clone())
            // The apiserver never redirects; a redirect would be a misconfiguration.
            .redirect(reqwest::redirect::Policy::none())
            .tls_built_in_root_certs(false)
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Config(format!("CA is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Config("CA PEM holds no certificate".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if config.insecure_skip_tls_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                config,
                current: AtomicUsize::new(0),
            }),
        })
    }

    /// A client from a kubeconfig file's current context.
    pub fn from_kubeconfig(path: &std::path::Path) -> Result<Self, Error> {
        Self::new(Config::from_kubeconfig(path, None)?)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The server calls currently go to first.
    pub fn current_server(&self) -> &Url {
        let servers = &self.inner.config.servers;
        &servers[self.inner.current.load(Ordering::Relaxed) % servers.len()]
    }

    /// Moves off server `from` (only if no other call already moved off it).
    fn fail_over(&self, from: usize) {
        let n = self.inner.config.servers.len();
        let _ = self.inner.current.compare_exchange(
            from,
            (from + 1) % n,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Sends a request with failover; returns the first answer that is not a reason to
    /// move on (any status code but 503/429), without looking at its status.
    pub(crate) async fn send(&self, spec: &RequestSpec<'_>) -> Result<Response, Error> {
        let cfg = &self.inner.config;
        let n = cfg.servers.len();
        let attempts = cfg.max_attempts.max(1);
        let mut last = String::new();
        let mut backoff = cfg.retry_backoff;
        for attempt in 0..attempts {
            let idx = self.inner.current.load(Ordering::Relaxed) % n;
            let mut url = cfg.servers[idx].clone();
            url.set_path(spec.path);
            (spec.query)(&mut url);
            let mut req = self
                .inner
                .http
                .request(spec.method.clone(), url.clone())
                .timeout(spec.timeout);
            if let Some(token) = &cfg.token {
                req = req.bearer_auth(token);
            }
            if let Some((body, content_type)) = &spec.body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(body.clone());
            }
            req = req.header(reqwest::header::ACCEPT, "application/json");
            match req.send().await {
                Ok(resp) if resp.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    last = format!("{} {}: 503 Service Unavailable", spec.method, url);
                    self.fail_over(idx);
                }
                Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS => {
                    let wait = retry_after(&resp).min(cfg.max_retry_after);
                    last = format!("{} {}: 429 Too Many Requests", spec.method, url);
                    tracing::debug!(%url, ?wait, "apiserver asked to retry later");
                    tokio::time::sleep(wait).await;
                    self.fail_over(idx);
                }
                Ok(resp) => return Ok(resp),
                Err(e) if e.is_builder() => return Err(Error::Http(e)),
                Err(e) => {
                    // Connect errors, TLS failures, resets and timeouts before an answer.
                    last = format!("{} {}: {}", spec.method, url, error_chain(&e));
                    tracing::debug!(error = %last, "apiserver unreachable, failing over");
                    self.fail_over(idx);
                }
            }
            if ((attempt + 1) as usize).is_multiple_of(n) && attempt + 1 < attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ROUND_BACKOFF);
            }
        }
        Err(Error::Unavailable { attempts, last })
    }

    /// Sends and turns a failure status into `Error::Api`.
    pub(crate) async fn send_ok(&self, spec: &RequestSpec<'_>) -> Result<Response, Error> {
        let resp = self.send(spec).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        Err(Error::Api(ApiError::from_body(code, &body)))
    }

    /// Sends and decodes a successful JSON answer as `R`.
    pub(crate) async fn send_json<R: DeserializeOwned>(
        &self,
        spec: &RequestSpec<'_>,
    ) -> Result<R, Error> {
        let resp = self.send_ok(spec).await?;
        let body = resp.bytes().await?;
        serde_json::from_slice(&body).map_err(|source| Error::Decode {
            what: format!("{} {}", spec.method, spec.path),
            source,
        })
    }

    /// The default deadline of one plain call.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.config.request_timeout
    }

    /// GET any path (discovery, `/version`, `/healthz`) as JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, Error> {
        self.send_json(&RequestSpec {
            method: Method::GET,
            path,
            query: &no_query,
            body: None,
            timeout: self.request_timeout(),
        })
        .await
    }

    /// Any request to any path, answered with (status code, body): for tests and tools
    /// that need to see failures as they are (no `Status` parsing).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<(u16, Bytes), Error> {
        let resp = self
            .send(&RequestSpec {
                method,
                path,
                query: &no_query,
                body,
                timeout: self.request_timeout(),
            })
            .await?;
        let code = resp.status().as_u16();
        Ok((code, resp.bytes().await?))
    }
}

/// A 429's Retry-After in seconds (default 1 s).
fn retry_after(resp: &Response) -> Duration {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
}

/// The error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
