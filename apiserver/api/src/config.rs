//! How a client finds and trusts the apiserver: server URLs (several, for failover), the
//! CA, the bearer token and the timeouts. Built directly or read from a kubeconfig file
//! (the subset kubectl writes: clusters, users with token/tokenFile, contexts,
//! current-context; certificate-authority-data or a certificate-authority file).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use reqwest::Url;
use serde::Deserialize;

use crate::Error;

/// Everything a [`crate::Client`] needs.
#[derive(Clone)]
pub struct Config {
    /// The apiservers, tried in order from the sticky current one on failure.
    pub servers: Vec<Url>,
    /// PEM of the CA that signed the servers' certificates (the only trust root).
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any server certificate (tests only, like kubectl's flag).
    pub insecure_skip_tls_verify: bool,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Deadline of one attempt of a plain call (not of a watch or followed log).
    pub request_timeout: Duration,
    /// Deadline to open a TCP (+TLS) connection to one server.
    pub connect_timeout: Duration,
    /// Added to a watch's `timeoutSeconds` for the client's own deadline on the stream.
    pub watch_timeout_margin: Duration,
    /// Deadline of a followed log stream.
    pub log_follow_timeout: Duration,
    /// Attempts of one call over all servers (connect errors, 503, 429, resets).
    pub max_attempts: u32,
    /// Pause before going round the server list again; doubles per round, capped.
    pub retry_backoff: Duration,
    /// Cap on a 429's Retry-After the client is willing to wait.
    pub max_retry_after: Duration,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Config")
            .field(
                "servers",
                &self.servers.iter().map(Url::as_str).collect::<Vec<_>>(),
            )
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A config for these servers (`https://127.0.0.1:6443`, ...), no CA, no token.
    pub fn new<I, S>(servers: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let servers = servers
            .into_iter()
            .map(|s| parse_server(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(Error::Config("no server URL given".into()));
        }
        Ok(Config {
            servers,
            ca_pem: None,
            insecure_skip_tls_verify: false,
            token: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            watch_timeout_margin: Duration::from_secs(30),
            log_follow_timeout: Duration::from_secs(3600),
            max_attempts: 6,
            retry_backoff: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(10),
            user_agent: format!("api-client/{}", env!("CARGO_PKG_VERSION")),
        })
    }

    /// With this CA (PEM).
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// With this bearer token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Adds more servers for failover (after the ones already there, duplicates skipped).
    pub fn with_extra_servers<I, S>(mut self, servers: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for s in servers {
            let url = parse_server(s.as_ref())?;
            if !self.servers.contains(&url) {
                self.servers.push(url);
            }
        }
        Ok(self)
    }

    /// Reads a kubeconfig file and takes its current context (or `context` if given).
    pub fn from_kubeconfig(path: &Path, context: Option<&str>) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_kubeconfig_str(&text, base, context)
    }

    /// Parses kubeconfig text; relative file paths in it are taken from `base_dir`.
    pub fn from_kubeconfig_str(
        text: &str,
        base_dir: &Path,
        context: Option<&str>,
    ) -> Result<Self, Error> {
        let kc: Kubeconfig = serde_yaml_ng::from_str(text)
            .map_err(|e| Error::Config(format!("kubeconfig is not valid YAML: {e}")))?;
        let context_name = match context {
            Some(c) => c.to_string(),
            None => kc
                .current_context
                .clone()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| Error::Config("kubeconfig has no current-context".into()))?,
        };
        let contexts: HashMap<_, _> = kc.contexts.iter().map(|c| (&c.name, &c.context)).collect();
        let ctx = contexts
            .get(&context_name)
            .ok_or_else(|| Error::Config(format!("kubeconfig has no context {context_name:?}")))?;
        let cluster = kc
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)
            .map(|c| &c.cluster)
            .ok_or_else(|| Error::Config(format!("kubeconfig has no cluster {:?}", ctx.cluster)))?;
        let mut config = Config::new([cluster.server.as_str()])?;
        config.insecure_skip_tls_verify = cluster.insecure_skip_tls_verify;
        if let Some(data) = &cluster.certificate_authority_data {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| {
                    Error::Config(format!("certificate-authority-data is not base64: {e}"))
                })?;
            config.ca_pem = Some(pem);
        } else if let Some(file) = &cluster.certificate_authority {
            config.ca_pem = Some(read_file(&resolve(base_dir, file))?);
        }
        if let Some(user_name) = ctx.user.as_deref().filter(|u| !u.is_empty()) {
            let user = kc
                .users
                .iter()
                .find(|u| u.name == user_name)
                .map(|u| &u.user)
                .ok_or_else(|| Error::Config(format!("kubeconfig has no user {user_name:?}")))?;
            if let Some(token) = &user.token {
                config.token = Some(token.clone());
            } else if let Some(file) = &user.token_file {
                let bytes = read_file(&resolve(base_dir, file))?;
                let token = String::from_utf8(bytes)
                    .map_err(|_| Error::Config("tokenFile is not UTF-8".into()))?;
                config.token = Some(token.trim().to_string());
            }
        }
        Ok(config)
    }
}

fn parse_server(s: &str) -> Result<Url, Error> {
    let url = Url::parse(s).map_err(|e| Error::Config(format!("bad server URL {s:?}: {e}")))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(Error::Config(format!(
            "server URL {s:?} must be http:// or https://"
        )));
    }
    if url.host_str().is_none() {
        return Err(Error::Config(format!("server URL {s:?} has no host")));
    }
    Ok(url)
}

fn resolve(base: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    current_context: Option<String>,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: ClusterEntry,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry {
    server: String,
    certificate_authority_data: Option<String>,
    certificate_authority: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: UserEntry,
}

#[derive(Deserialize, Default)]
struct UserEntry {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: ContextEntry,
}

#[derive(Deserialize)]
struct ContextEntry {
    cluster: String,
    user: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
- name: other
  cluster:
    server: http://127.0.0.1:8080
    certificate-authority: ca.crt
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: s3cret
- name: sa
  user:
    tokenFile: token
contexts:
- name: admin@local
  context: {cluster: local, user: admin}
- name: sa@other
  context: {cluster: other, user: sa}
current-context: admin@local
preferences: {}
"#;

    #[test]
    fn kubeconfig_current_context_gives_server_ca_and_token() {
        let c = Config::from_kubeconfig_str(KUBECONFIG, Path::new("/nonexistent"), None).unwrap();
        assert_eq!(c.servers[0].as_str(), "https://127.0.0.1:6443/");
        assert_eq!(
            c.ca_pem.as_deref(),
            Some(&b"-----BEGIN CERTIFICATE-----\n"[..])
        );
        assert_eq!(c.token.as_deref(), Some("s3cret"));
        assert!(!c.insecure_skip_tls_verify);
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "Debug must not print the token"
        );
    }

    #[test]
    fn kubeconfig_files_are_read_relative_to_the_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "PEM").unwrap();
        std::fs::write(dir.path().join("token"), "tok\n").unwrap();
        let c = Config::from_kubeconfig_str(KUBECONFIG, dir.path(), Some("sa@other")).unwrap();
        assert_eq!(c.ca_pem.as_deref(), Some(&b"PEM"[..]));
        assert_eq!(c.token.as_deref(), Some("tok"));
        assert!(c.insecure_skip_tls_verify);
    }

    #[test]
    fn bad_kubeconfigs_are_clear_errors() {
        let dir = Path::new("/nonexistent");
        let err = Config::from_kubeconfig_str("clusters: [", dir, None).unwrap_err();
        assert!(err.to_string().contains("not valid YAML"), "{err}");
        let err = Config::from_kubeconfig_str(KUBECONFIG, dir, Some("nope")).unwrap_err();
        assert!(err.to_string().contains("no context \"nope\""), "{err}");
        let err = Config::from_kubeconfig_str(KUBECONFIG, dir, Some("sa@other")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let err = Config::new(["ftp://x"]).unwrap_err();
        assert!(err.to_string().contains("http"), "{err}");
        assert!(Config::new(Vec::<String>::new()).is_err());
    }
}
