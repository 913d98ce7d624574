//! Query parameters and bodies of the typed calls: list/watch options, write options
//! (dry run, field validation), patch kinds, delete options and log options. Each knows
//! how to put itself on a URL's query string.

use reqwest::Url;
use serde_json::json;

/// Options of a list (and the list half of an informer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// `labelSelector`, e.g. `app=web,tier!=db`.
    pub label_selector: Option<String>,
    /// `fieldSelector`, e.g. `spec.nodeName=n1`.
    pub field_selector: Option<String>,
    /// Page size (`limit`); `list_all` follows `continue` tokens.
    pub limit: Option<u32>,
    /// `continue` token of the next page.
    pub continue_token: Option<String>,
    /// `resourceVersion`: "" or None = latest (quorum read), "0" = any.
    pub resource_version: Option<String>,
}

impl ListParams {
    /// With a label selector.
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = Some(selector.to_string());
        self
    }

    /// With a field selector.
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = Some(selector.to_string());
        self
    }

    /// With a page size.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    pub(crate) fn apply(&self, url: &mut Url) {
        let mut q = url.query_pairs_mut();
        if let Some(s) = &self.label_selector {
            q.append_pair("labelSelector", s);
        }
        if let Some(s) = &self.field_selector {
            q.append_pair("fieldSelector", s);
        }
        if let Some(l) = self.limit {
            q.append_pair("limit", &l.to_string());
        }
        if let Some(c) = &self.continue_token {
            q.append_pair("continue", c);
        }
        if let Some(rv) = &self.resource_version {
            q.append_pair("resourceVersion", rv);
        }
    }
}

/// Options of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchParams {
    /// `labelSelector`.
    pub label_selector: Option<String>,
    /// `fieldSelector`.
    pub field_selector: Option<String>,
    /// Ask for BOOKMARK events (they move the resume point on quiet watches).
    pub bookmarks: bool,
    /// The server ends the watch after this many seconds (`timeoutSeconds`); the client's
    /// own deadline for the stream is this plus a margin.
    pub timeout_s: u32,
}

impl Default for WatchParams {
    fn default() -> Self {
        WatchParams {
            label_selector: None,
            field_selector: None,
            bookmarks: true,
            timeout_s: 290,
        }
    }
}

impl WatchParams {
    /// The watch options matching a list's selectors.
    pub fn from_list(list: &ListParams) -> Self {
        WatchParams {
            label_selector: list.label_selector.clone(),
            field_selector: list.field_selector.clone(),
            ..WatchParams::default()
        }
    }

    pub(crate) fn apply(&self, url: &mut Url, resource_version: &str) {
        let mut q = url.query_pairs_mut();
        q.append_pair("watch", "1");
        if !resource_version.is_empty() {
            q.append_pair("resourceVersion", resource_version);
        }
        if self.bookmarks {
            q.append_pair("allowWatchBookmarks", "true");
        }
        q.append_pair("timeoutSeconds", &self.timeout_s.to_string());
        if let Some(s) = &self.label_selector {
            q.append_pair("labelSelector", s);
        }
        if let Some(s) = &self.field_selector {
            q.append_pair("fieldSelector", s);
        }
    }
}

/// How the server treats fields it does not know (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    fn as_str(self) -> &'static str {
        match self {
            FieldValidation::Ignore => "Ignore",
            FieldValidation::Warn => "Warn",
            FieldValidation::Strict => "Strict",
        }
    }
}

/// Options of create, update and patch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostParams {
    /// `dryRun=All`: validate and answer, write nothing.
    pub dry_run: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `fieldValidation` (server default: Warn).
    pub field_validation: Option<FieldValidation>,
}

impl PostParams {
    pub(crate) fn apply(&self, url: &mut Url) {
        let mut q = url.query_pairs_mut();
        if self.dry_run {
            q.append_pair("dryRun", "All");
        }
        if let Some(m) = &self.field_manager {
            q.append_pair("fieldManager", m);
        }
        if let Some(v) = self.field_validation {
            q.append_pair("fieldValidation", v.as_str());
        }
    }
}

/// A patch and its kind (the Content-Type tells the server which).
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// RFC 7386 JSON merge patch (`application/merge-patch+json`).
    Merge(serde_json::Value),
    /// RFC 6902 JSON patch, an array of operations (`application/json-patch+json`).
    Json(serde_json::Value),
    /// Kubernetes strategic merge patch: lists merged by key
    /// (`application/strategic-merge-patch+json`).
    Strategic(serde_json::Value),
}

impl Patch {
    /// The Content-Type naming this patch kind.
    pub fn content_type(&self) -> &'static str {
        match self {
            Patch::Merge(_) => "application/merge-patch+json",
            Patch::Json(_) => "application/json-patch+json",
            Patch::Strategic(_) => "application/strategic-merge-patch+json",
        }
    }

    /// The patch document.
    pub fn body(&self) -> &serde_json::Value {
        match self {
            Patch::Merge(v) | Patch::Json(v) | Patch::Strategic(v) => v,
        }
    }
}

/// How dependents are deleted (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropagationPolicy {
    Orphan,
    Background,
    Foreground,
}

/// Options of a delete: sent as a `DeleteOptions` body, as kubectl does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteParams {
    pub propagation_policy: Option<PropagationPolicy>,
    /// Delete only if the object still has this UID.
    pub precondition_uid: Option<String>,
    /// Delete only if the object still has this resourceVersion.
    pub precondition_resource_version: Option<String>,
    pub grace_period_s: Option<i64>,
    pub dry_run: bool,
}

impl DeleteParams {
    /// The `DeleteOptions` JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({"kind": "DeleteOptions", "apiVersion": "v1"});
        if let Some(p) = self.propagation_policy {
            let policy = match p {
                PropagationPolicy::Orphan => "Orphan",
                PropagationPolicy::Background => "Background",
                PropagationPolicy::Foreground => "Foreground",
            };
            body["propagationPolicy"] = json!(policy);
        }
        if self.precondition_uid.is_some() || self.precondition_resource_version.is_some() {
            let mut pre = serde_json::Map::new();
            if let Some(uid) = &self.precondition_uid {
                pre.insert("uid".into(), json!(uid));
            }
            if let Some(rv) = &self.precondition_resource_version {
                pre.insert("resourceVersion".into(), json!(rv));
            }
            body["preconditions"] = serde_json::Value::Object(pre);
        }
        if let Some(g) = self.grace_period_s {
            body["gracePeriodSeconds"] = json!(g);
        }
        if self.dry_run {
            body["dryRun"] = json!(["All"]);
        }
        body
    }
}

/// Options of a pod log read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogParams {
    /// Container name (needed when the pod has several).
    pub container: Option<String>,
    /// Keep the stream open and send new lines as they come.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<i64>,
    /// Prefix each line with its timestamp.
    pub timestamps: bool,
}

impl LogParams {
    pub(crate) fn apply(&self, url: &mut Url) {
        let mut q = url.query_pairs_mut();
        if let Some(c) = &self.container {
            q.append_pair("container", c);
        }
        if self.follow {
            q.append_pair("follow", "true");
        }
        if let Some(n) = self.tail_lines {
            q.append_pair("tailLines", &n.to_string());
        }
        if self.timestamps {
            q.append_pair("timestamps", "true");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("https://127.0.0.1:6443/api/v1/pods").unwrap()
    }

    #[test]
    fn list_and_watch_parameters_are_encoded() {
        let mut u = url();
        ListParams::default()
            .labels("app=web,tier in (a,b)")
            .fields("spec.nodeName=n1")
            .limit(50)
            .apply(&mut u);
        assert_eq!(
            u.query().unwrap(),
            "labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29&fieldSelector=spec.nodeName%3Dn1&limit=50"
        );
        let mut u = url();
        WatchParams::default().apply(&mut u, "42");
        assert_eq!(
            u.query().unwrap(),
            "watch=1&resourceVersion=42&allowWatchBookmarks=true&timeoutSeconds=290"
        );
    }

    #[test]
    fn delete_options_carry_preconditions_and_policy() {
        let body = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            precondition_resource_version: Some("7".into()),
            ..Default::default()
        }
        .body();
        assert_eq!(body["propagationPolicy"], "Foreground");
        assert_eq!(body["preconditions"]["resourceVersion"], "7");
        assert!(body.get("dryRun").is_none());
    }

    #[test]
    fn patch_kinds_name_their_content_type() {
        assert_eq!(
            Patch::Strategic(json!({})).content_type(),
            "application/strategic-merge-patch+json"
        );
        assert_eq!(
            Patch::Json(json!([])).content_type(),
            "application/json-patch+json"
        );
    }
}
