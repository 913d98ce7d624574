//! The verbs on stored resources: get, list (paged, at one revision), create, update,
//! patch, delete (finalizers, preconditions) and deletecollection. Every change is a
//! compare-and-swap on the object's mod_revision.

use base64::Engine;
use serde_json::{Value, json};

use super::AppState;
use super::glue;
use super::reply::{Reply, decode_object, success_status};
use super::request::{Query, Target};
use crate::error::{ApiError, ApiResult, qualified};
use crate::object::{self, finalizers, meta, meta_mut};
use crate::resources::{self, ResourceInfo};
use crate::store::{Stored, set_resource_version};

/// Attempts of an update without a client precondition before giving up with 409.
const UPDATE_ATTEMPTS: usize = 8;
/// Keys read per store call while filling a page through a selector.
const LIST_CHUNK: i64 = 500;

impl Target {
    pub fn key(&self) -> String {
        let name = self.name.as_deref().unwrap_or("");
        self.resource.store_key(self.namespace.as_deref(), name)
    }

    pub fn name_or_empty(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    pub fn not_found(&self) -> ApiError {
        ApiError::not_found(
            self.resource.group,
            self.resource.plural,
            self.name_or_empty(),
        )
    }

    /// Store prefix of a collection request.
    pub fn prefix(&self) -> String {
        match &self.namespace {
            Some(ns) if self.resource.namespaced => self.resource.store_namespace_prefix(ns),
            _ => self.resource.store_prefix(),
        }
    }
}

pub async fn get(state: &AppState, target: &Target) -> ApiResult<Stored> {
    let (item, _) = state.store.get(&target.key()).await?;
    item.ok_or_else(|| target.not_found())
}

/// A continue token: the next key and the revision the list is read at.
fn encode_continue(next_key: &str, revision: i64) -> String {
    let raw = json!({"start": next_key, "rv": revision}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str, prefix: &str) -> ApiResult<(String, i64)> {
    let bad = || ApiError::bad_request("invalid continue token");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    let rv = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    if !start.starts_with(prefix) || rv <= 0 {
        return Err(bad());
    }
    Ok((start.to_string(), rv))
}

/// Lists a collection: objects (with their resourceVersion), the revision read at and
/// the continue token.
pub async fn list(
    state: &AppState,
    target: &Target,
    query: &Query,
) -> ApiResult<(Vec<Value>, i64, Option<String>)> {
    let resource = target.resource;
    let prefix = target.prefix();
    let mut predicate = glue::selector_predicate(
        resource,
        query.get("labelSelector"),
        query.get("fieldSelector"),
    )?;
    if let Some(name) = &target.name {
        predicate = Some(glue::name_predicate(name.clone()));
    }
    let limit = query.int("limit")?.unwrap_or(0);
    let rv = query.resource_version()?;
    let rv_match = query.get("resourceVersionMatch").unwrap_or("");
    let continue_token = query.get("continue").filter(|s| !s.is_empty());

    // resourceVersion=0 without paging: any recent state will do, so the watch cache
    // answers and the store is not touched.
    if continue_token.is_none()
        && rv == Some(0)
        && limit == 0
        && rv_match != "Exact"
        && let Some(cache) = state.caches.get(resource)
    {
        cache
            .wait_revision(1, std::time::Duration::from_secs(10))
            .await?;
        let filter = crate::watch_cache::WatchFilter {
            key_prefix: prefix,
            predicate,
        };
        let (items, revision) = cache.snapshot(&filter);
        return Ok((
            items.iter().map(|o| o.value.clone()).collect(),
            revision,
            None,
        ));
    }

    let (mut start, mut revision) = match continue_token {
        Some(token) => {
            let (start, rv) = decode_continue(token, &prefix)?;
            (Some(start), rv)
        }
        None => match (rv_match, rv) {
            ("Exact", Some(rv)) if rv > 0 => (None, rv),
            ("Exact", _) => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch=Exact needs a non-zero resourceVersion",
                ));
            }
            ("" | "NotOlderThan", _) => (None, 0),
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported resourceVersionMatch {other:?}"
                )));
            }
        },
    };
    let mut items = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let want = if limit > 0 {
            if predicate.is_some() {
                LIST_CHUNK.max(limit)
            } else {
                limit - items.len() as i64
            }
        } else {
            0
        };
        let page = state
            .store
            .list(&prefix, start.as_deref(), want, revision)
            .await
            .map_err(|e| match e {
                ApiError::Expired { .. } if continue_token.is_some() => ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                other => other,
            })?;
        // A read at a given revision reports the store's current revision in its
        // header; the list's revision is the one it was read at.
        if revision == 0 {
            revision = page.revision;
        }
        let count = page.items.len();
        let mut stopped_at: Option<String> = None;
        for (i, s) in page.items.into_iter().enumerate() {
            if predicate.as_ref().is_none_or(|p| p(&s.value)) {
                items.push(s.value);
            }
            if limit > 0 && items.len() as i64 >= limit {
                if i + 1 < count || page.more {
                    stopped_at = Some(s.key);
                }
                break;
            }
            if i + 1 == count && page.more {
                start = Some(format!("{}\0", s.key));
            }
        }
        if let Some(last) = stopped_at {
            next = Some(encode_continue(&format!("{last}\0"), revision));
            break;
        }
        if !page.more || count == 0 || limit == 0 {
            break;
        }
    }
    Ok((items, revision, next))
}

/// The list object (or a Table when the client asked for one and one can be built).
pub fn list_body(
    resource: &ResourceInfo,
    items: Vec<Value>,
    revision: i64,
    next: Option<String>,
    table: Option<&str>,
) -> Value {
    let mut list_meta = json!({"resourceVersion": revision.to_string()});
    if let Some(n) = next {
        list_meta["continue"] = json!(n);
    }
    if let Some(include) = table
        && let Some(t) = glue::table(resource, &items, list_meta.clone(), include)
    {
        return t;
    }
    json!({
        "kind": resource.list_kind(),
        "apiVersion": resource.api_version(),
        "metadata": list_meta,
        "items": items,
    })
}

/// Checks a namespaced object's namespace exists (kube answers 404 for the namespace).
async fn require_namespace(state: &AppState, target: &Target) -> ApiResult<()> {
    let Some(ns) = target.namespace.as_deref() else {
        return Ok(());
    };
    if !target.resource.namespaced {
        return Ok(());
    }
    let nss = resources::lookup("", "namespaces").expect("namespaces is in the table");
    let (item, _) = state.store.get(&nss.store_key(None, ns)).await?;
    match item {
        Some(n) if object::str_field(&n.value, "deletionTimestamp").is_some() => {
            Err(ApiError::Forbidden {
                message: format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    qualified(target.resource.group, target.resource.plural),
                    target.name_or_empty()
                ),
                details: Default::default(),
            })
        }
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("", "namespaces", ns)),
    }
}

pub async fn create(
    state: &AppState,
    target: &Target,
    query: &Query,
    content_type: &str,
    body: &[u8],
) -> ApiResult<Reply> {
    let resource = target.resource;
    let mut obj = decode_object(content_type, body)?;
    object::check_type_and_namespace(resource, &mut obj, target.namespace.as_deref())?;
    object::prepare_create(resource, &mut obj)?;
    let warnings = glue::validate(resource, &obj, query.get("fieldValidation"))?;
    let name = object::name(&obj).to_string();
    let t = Target {
        name: Some(name.clone()),
        ..target.clone()
    };
    require_namespace(state, &t).await?;
    if query.dry_run()? {
        let (existing, _) = state.store.get(&t.key()).await?;
        if existing.is_some() {
            return Err(ApiError::already_exists(
                resource.group,
                resource.plural,
                &name,
            ));
        }
        return Ok(Reply::created(obj).with_warnings(warnings));
    }
    match state.store.create(&t.key(), &obj).await? {
        Some(revision) => {
            set_resource_version(&mut obj, revision);
            Ok(Reply::created(obj).with_warnings(warnings))
        }
        None => Err(ApiError::already_exists(
            resource.group,
            resource.plural,
            &name,
        )),
    }
}

/// A resourceVersion precondition in a body (`metadata.resourceVersion`), if any.
pub fn body_precondition(obj: &Value) -> ApiResult<Option<i64>> {
    match meta(obj).get("resourceVersion") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}"))),
        Some(_) => Err(ApiError::bad_request(
            "metadata.resourceVersion must be a string",
        )),
    }
}

/// The read-modify-write loop every update, patch and finalizer change goes through.
/// `change` builds the full new object from the current one and returns it with the
/// client's precondition (a stale one is a 409, never retried); without one, a lost
/// race is retried on a fresh read.
pub async fn guaranteed_update<F>(
    state: &AppState,
    target: &Target,
    dry_run: bool,
    mut change: F,
) -> ApiResult<Reply>
where
    F: FnMut(&Value) -> ApiResult<(Value, Option<i64>, Vec<String>)>,
{
    let resource = target.resource;
    let name = target.name_or_empty();
    for _ in 0..UPDATE_ATTEMPTS {
        let current = get(state, target).await?;
        let (mut new, precondition, warnings) = change(&current.value)?;
        if let Some(rv) = precondition
            && rv != current.mod_revision
        {
            return Err(ApiError::conflict(
                resource.group,
                resource.plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        if object::without_rv(&new) == object::without_rv(&current.value) {
            return Ok(Reply::ok(current.value).with_warnings(warnings));
        }
        // An object marked for deletion goes away when its last finalizer does.
        let gone = object::deletion_complete(resource, &new);
        if dry_run {
            set_resource_version(&mut new, current.mod_revision);
            return Ok(Reply::ok(new).with_warnings(warnings));
        }
        let written = if gone {
            state
                .store
                .delete(&target.key(), current.mod_revision)
                .await?
        } else {
            state
                .store
                .update(&target.key(), &new, current.mod_revision)
                .await?
        };
        match written {
            Some(revision) => {
                set_resource_version(&mut new, revision);
                return Ok(Reply::ok(new).with_warnings(warnings));
            }
            None if precondition.is_some() => {
                return Err(ApiError::conflict(
                    resource.group,
                    resource.plural,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            None => continue,
        }
    }
    Err(ApiError::conflict(
        resource.group,
        resource.plural,
        name,
        "too many concurrent writers; try again",
    ))
}

pub async fn update(
    state: &AppState,
    target: &Target,
    query: &Query,
    content_type: &str,
    body: &[u8],
) -> ApiResult<Reply> {
    let resource = target.resource;
    let mut obj = decode_object(content_type, body)?;
    object::check_type_and_namespace(resource, &mut obj, target.namespace.as_deref())?;
    let body_name = object::name(&obj).to_string();
    if body_name != target.name_or_empty() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            target.name_or_empty()
        )));
    }
    let precondition = body_precondition(&obj)?;
    let sub = target.subresource.clone();
    let fv = query.get("fieldValidation").map(String::from);
    guaranteed_update(state, target, query.dry_run()?, |current| {
        let new = object::prepare_update(resource, current, obj.clone(), sub.as_deref())?;
        let warnings = glue::validate(resource, &new, fv.as_deref())?;
        Ok((new, precondition, warnings))
    })
    .await
}

pub async fn patch(
    state: &AppState,
    target: &Target,
    query: &Query,
    content_type: &str,
    body: &[u8],
) -> ApiResult<Reply> {
    let resource = target.resource;
    let sub = target.subresource.clone();
    let fv = query.get("fieldValidation").map(String::from);
    let ct = content_type.to_string();
    guaranteed_update(state, target, query.dry_run()?, |current| {
        let patched = glue::apply_patch(&ct, resource, current, body)?;
        let mut patched = patched;
        object::check_type_and_namespace(resource, &mut patched, target.namespace.as_deref())?;
        if object::name(&patched) != target.name_or_empty() {
            return Err(ApiError::bad_request(
                "a patch may not change the object's name",
            ));
        }
        // A resourceVersion the patch sets is a precondition; the current one is not.
        let precondition = match body_precondition(&patched)? {
            Some(rv) if rv != current_rv(current) => Some(rv),
            _ => None,
        };
        let new = object::prepare_update(resource, current, patched, sub.as_deref())?;
        let warnings = glue::validate(resource, &new, fv.as_deref())?;
        Ok((new, precondition, warnings))
    })
    .await
}

fn current_rv(current: &Value) -> i64 {
    object::str_field(current, "resourceVersion")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// DELETE of one object: with finalizers (or Foreground propagation) it is only marked
/// (deletionTimestamp); otherwise it is removed, guarded by its mod_revision.
pub async fn delete(
    state: &AppState,
    target: &Target,
    query: &Query,
    body: &[u8],
) -> ApiResult<Reply> {
    let resource = target.resource;
    let name = target.name_or_empty().to_string();
    let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("DeleteOptions is not valid JSON: {e}")))?
    };
    let explicit = options
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(query.get("propagationPolicy"))
        .or_else(|| {
            // The old DeleteOptions field (kubectl < 1.20): orphanDependents=true.
            match options.get("orphanDependents").and_then(Value::as_bool) {
                Some(true) => Some("Orphan"),
                Some(false) => Some("Background"),
                None => None,
            }
        });
    let explicit_policy = explicit.is_some();
    // Kubernetes' default for every resource we serve (apps/v1, core/v1): Background.
    let policy = explicit.unwrap_or("Background").to_string();
    if !matches!(policy.as_str(), "Orphan" | "Background" | "Foreground") {
        return Err(ApiError::bad_request(format!(
            "unsupported propagationPolicy {policy:?}"
        )));
    }
    let pre_rv = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| ApiError::bad_request("invalid preconditions.resourceVersion"))
        })
        .transpose()?;
    let pre_uid = options
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
        .map(String::from);
    let grace = options
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let dry_run = query.dry_run()?
        || options
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    if resource.plural == "namespaces"
        && matches!(name.as_str(), "default" | "kube-system" | "kube-public")
    {
        return Err(ApiError::Forbidden {
            message: format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            ),
            details: Default::default(),
        });
    }
    for _ in 0..UPDATE_ATTEMPTS {
        let current = get(state, target).await?;
        let conflict = |why: &str| ApiError::conflict(resource.group, resource.plural, &name, why);
        if let Some(rv) = pre_rv
            && rv != current.mod_revision
        {
            return Err(conflict("Precondition failed: ResourceVersion mismatch"));
        }
        if let Some(uid) = &pre_uid
            && object::str_field(&current.value, "uid") != Some(uid.as_str())
        {
            return Err(conflict("Precondition failed: UID mismatch"));
        }
        let mut fins = finalizers(&current.value);
        let already_deleting = object::str_field(&current.value, "deletionTimestamp").is_some();
        // The propagation policy becomes a finalizer the garbage collector acts on
        // (Kubernetes: only when the object is not already being deleted; an explicit
        // policy on a second DELETE switches between orphan and foreground).
        match policy.as_str() {
            "Foreground" if !fins.iter().any(|f| f == "foregroundDeletion") => {
                fins.retain(|f| f != "orphan");
                fins.push("foregroundDeletion".into());
            }
            "Orphan" if !fins.iter().any(|f| f == "orphan") => {
                fins.retain(|f| f != "foregroundDeletion");
                fins.push("orphan".into());
            }
            "Background" if explicit_policy && already_deleting => {
                fins.retain(|f| f != "orphan" && f != "foregroundDeletion");
            }
            _ => {}
        }
        let namespace_pending =
            resource.plural == "namespaces" && !object::spec_finalizers(&current.value).is_empty();
        if !fins.is_empty() || namespace_pending {
            // Graceful: mark, and let the finalizers' owners finish the deletion.
            let mut marked = current.value.clone();
            {
                let m = meta_mut(&mut marked)?;
                if !m.contains_key("deletionTimestamp") {
                    m.insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                if fins.is_empty() {
                    m.remove("finalizers");
                } else {
                    m.insert("finalizers".into(), json!(fins));
                }
            }
            if resource.plural == "namespaces"
                && let Some(obj) = marked.as_object_mut()
            {
                let status = obj.entry("status").or_insert_with(|| json!({}));
                if let Some(st) = status.as_object_mut() {
                    st.insert("phase".into(), json!("Terminating"));
                }
            }
            if object::without_rv(&marked) == object::without_rv(&current.value) || dry_run {
                return Ok(Reply::ok(marked).with_accepted());
            }
            match state
                .store
                .update(&target.key(), &marked, current.mod_revision)
                .await?
            {
                Some(rev) => {
                    set_resource_version(&mut marked, rev);
                    return Ok(Reply::ok(marked).with_accepted());
                }
                None if pre_rv.is_some() => return Err(conflict("the object has been modified")),
                None => continue,
            }
        }
        if dry_run {
            return Ok(Reply::ok(current.value));
        }
        match state
            .store
            .delete(&target.key(), current.mod_revision)
            .await?
        {
            Some(rev) => {
                let mut last = current.value;
                set_resource_version(&mut last, rev);
                return Ok(Reply::ok(last));
            }
            None if pre_rv.is_some() => return Err(conflict("the object has been modified")),
            None => continue,
        }
    }
    Err(ApiError::conflict(
        resource.group,
        resource.plural,
        &name,
        "too many concurrent writers; try again",
    ))
}

impl Reply {
    /// 202: the deletion was accepted but waits for finalizers.
    fn with_accepted(mut self) -> Self {
        self.code = axum::http::StatusCode::ACCEPTED;
        self
    }
}

/// DELETE of a collection: each matching object as a single DELETE would.
pub async fn delete_collection(
    state: &AppState,
    target: &Target,
    query: &Query,
    body: &[u8],
) -> ApiResult<Reply> {
    let (items, _, _) = list(
        state,
        target,
        &Query(
            query
                .0
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "labelSelector" | "fieldSelector"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
    )
    .await?;
    let mut deleted = Vec::new();
    for item in items {
        let t = Target {
            name: Some(object::name(&item).to_string()),
            namespace: object::str_field(&item, "namespace")
                .map(String::from)
                .or(target.namespace.clone()),
            ..target.clone()
        };
        match delete(state, &t, query, body).await {
            Ok(r) => deleted.push(r.body),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let _ = success_status;
    Ok(Reply::ok(list_body(
        target.resource,
        deleted,
        0,
        None,
        None,
    )))
}
