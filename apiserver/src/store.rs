//! The store layer: the only code that talks to the etcd v3 store (kvstore or real etcd),
//! through `etcd-client`.
//!
//! Objects are stored as JSON at their `resources.rs` key. An object's resourceVersion is
//! the key's mod_revision; it is never stored inside the value (it is stripped on write
//! and filled in on read), so the store stays the one authority for it. Every change is
//! a Txn guarded by a mod_revision compare, which is what makes updates compare-and-swap.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KeyValue, Txn, TxnOp,
    TxnOpResponse,
};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// How long one store call may take before the request fails with 503.
const STORE_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest object the store is asked to hold (etcd's default request limit is
/// 1.5 MiB; a larger value would fail inside the store with a less clear error).
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// One object as read from the store.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: String,
    /// The object, with `metadata.resourceVersion` filled from `mod_revision`.
    pub value: Value,
    pub mod_revision: i64,
}

/// One page of a range read.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Stored>,
    /// The store revision the page was read at.
    pub revision: i64,
    /// True when keys remain after the last one returned.
    pub more: bool,
}

/// TLS material for the store connection.
#[derive(Debug, Clone, Default)]
pub struct StoreTls {
    pub ca_file: Option<std::path::PathBuf>,
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: Client,
}

impl Store {
    /// Connects to the store endpoints (lazily: an unreachable store shows up as 503s).
    pub async fn connect(endpoints: &[String], tls: &StoreTls) -> anyhow::Result<Self> {
        let mut options = ConnectOptions::new();
        if tls.ca_file.is_some() || tls.cert_file.is_some() || tls.key_file.is_some() {
            options = options.with_tls(tls_options(tls)?);
        }
        let options = options
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(STORE_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints, Some(options)).await?;
        Ok(Self { client })
    }

    /// The underlying client (the watch cache opens its watches on it).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Reads one key at the latest revision (a linearizable read). Returns the object
    /// and the store revision read at.
    pub async fn get(&self, key: &str) -> ApiResult<(Option<Stored>, i64)> {
        let resp = timed(|| {
            let mut kv = self.client.kv_client();
            async move { kv.get(key, None).await }
        })
        .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let item = match resp.kvs().first() {
            Some(kv) => Some(decode(kv)?),
            None => None,
        };
        Ok((item, revision))
    }

    /// Reads up to `limit` keys (0 = all) of `prefix`, starting at `start` (inclusive;
    /// None = the prefix start), at `revision` (0 = latest).
    pub async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: i64,
        revision: i64,
    ) -> ApiResult<Page> {
        let from = start.unwrap_or(prefix).to_string();
        let mut options = GetOptions::new().with_range(prefix_end(prefix));
        if limit > 0 {
            options = options.with_limit(limit);
        }
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let resp = timed(|| {
            let mut kv = self.client.kv_client();
            let (from, options) = (from.clone(), options.clone());
            async move { kv.get(from, Some(options)).await }
        })
        .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let items = resp
            .kvs()
            .iter()
            .map(decode)
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(Page {
            items,
            revision,
            more: resp.more(),
        })
    }

    /// The store's current revision.
    pub async fn current_revision(&self) -> ApiResult<i64> {
        let resp = timed(|| {
            let mut kv = self.client.kv_client();
            async move {
                kv.get("/registry/", Some(GetOptions::new().with_count_only()))
                    .await
            }
        })
        .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Creates `key` if it does not exist. Ok(Some(revision)) when written, Ok(None) when
    /// the key already exists.
    pub async fn create(&self, key: &str, value: &Value) -> ApiResult<Option<i64>> {
        let bytes = encode(value)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, bytes, None)]);
        let resp = timed(|| {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok(resp.succeeded().then_some(revision))
    }

    /// Replaces `key` if its mod_revision is still `expected`. Ok(Some(revision)) when
    /// written, Ok(None) on a conflict (changed or deleted meanwhile).
    pub async fn update(&self, key: &str, value: &Value, expected: i64) -> ApiResult<Option<i64>> {
        let bytes = encode(value)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, bytes, None)]);
        let resp = timed(|| {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok(resp.succeeded().then_some(revision))
    }

    /// Deletes `key` if its mod_revision is still `expected`. Ok(Some(revision of the
    /// deletion)) or Ok(None) on a conflict.
    pub async fn delete(&self, key: &str, expected: i64) -> ApiResult<Option<i64>> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::delete(key, Some(DeleteOptions::new()))]);
        let resp = timed(|| {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        if !resp.succeeded() {
            return Ok(None);
        }
        let deleted = resp
            .op_responses()
            .into_iter()
            .any(|r| matches!(r, TxnOpResponse::Delete(d) if d.deleted() > 0));
        Ok(deleted.then_some(revision))
    }

    /// Checks the store answers (for `/readyz`).
    pub async fn ping(&self) -> ApiResult<()> {
        self.current_revision().await.map(|_| ())
    }
}

/// The TLS settings of the store connection: the CA to trust, and an optional client
/// certificate (both files PEM).
fn tls_options(tls: &StoreTls) -> anyhow::Result<etcd_client::TlsOptions> {
    use anyhow::Context;
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("read {}", p.display()));
    let mut options = etcd_client::TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        options = options.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            options = options.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => anyhow::bail!("--etcd-certfile and --etcd-keyfile go together"),
    }
    Ok(options)
}

/// The first key after every key with `prefix` (etcd's range_end for a prefix).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Decodes a stored value and stamps its resourceVersion.
pub fn decode(kv: &KeyValue) -> ApiResult<Stored> {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    decode_value(key, kv.value(), kv.mod_revision())
}

/// Decodes stored bytes and sets `metadata.resourceVersion` to `revision`.
pub fn decode_value(key: String, bytes: &[u8], revision: i64) -> ApiResult<Stored> {
    let mut value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::internal(format!("stored object at {key} is not valid JSON: {e}"))
    })?;
    set_resource_version(&mut value, revision);
    Ok(Stored {
        key,
        value,
        mod_revision: revision,
    })
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(value: &mut Value, revision: i64) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
}

fn encode(value: &Value) -> ApiResult<Vec<u8>> {
    let mut value = value.clone();
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let bytes = serde_json::to_vec(&value).map_err(|e| ApiError::internal(e.to_string()))?;
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::TooLarge {
            message: format!(
                "object is {} bytes, over the store's limit of {MAX_OBJECT_BYTES} bytes",
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}

/// Runs one store call within `STORE_TIMEOUT`. A call that failed to connect (the
/// request never left: a killed member's endpoint is still in the client's balanced
/// list) is sent again, up to `CONNECT_RETRIES` times, and reaches another member;
/// any other error or answer is final, so no request that may have been received is
/// ever sent twice.
async fn timed<T, F, Fut>(mut call: F) -> ApiResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    const CONNECT_RETRIES: u32 = 6;
    let deadline = tokio::time::Instant::now() + STORE_TIMEOUT;
    let mut attempt = 0;
    loop {
        match tokio::time::timeout_at(deadline, call()).await {
            Ok(Err(e)) if attempt < CONNECT_RETRIES && never_sent(&e) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Ok(r) => return r.map_err(ApiError::from),
            Err(_) => {
                return Err(ApiError::ServiceUnavailable {
                    message: "the store did not answer in time".into(),
                });
            }
        }
    }
}

/// The transport could not connect to the chosen member: nothing was sent.
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    text.contains("tcp connect error") || text.contains("Connection refused")
}
