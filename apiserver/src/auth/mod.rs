//! Who is asking and may they: bearer-token authentication (`authn`: a kube-apiserver
//! style token file plus HMAC-signed service-account tokens), RBAC authorization over
//! the current roles and bindings (`rbac`), and the policy created at first start
//! (`bootstrap`). Pure: the server feeds it headers, request attributes and the RBAC
//! objects from its watch cache.

pub mod authn;
pub mod bootstrap;
pub mod rbac;

pub use authn::TokenAuthenticator;
pub use bootstrap::bootstrap_policy;
pub use rbac::RbacPolicy;

/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The group of cluster administrators (bound to cluster-admin).
pub const MASTERS_GROUP: &str = "system:masters";

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    /// Always includes `system:authenticated`.
    pub groups: Vec<String>,
}

/// Why a request was not authenticated (each is a 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("no bearer token was given")]
    Missing,
    #[error("the bearer token is not valid")]
    Invalid,
    #[error("the bearer token has expired")]
    Expired,
}

/// Why the authenticator could not be built (a bad token file).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file {path} line {line}: {reason}")]
    Syntax {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("the service-account signing key must be at least 32 bytes")]
    WeakKey,
}

/// What a request wants to do, as RBAC sees it.
#[derive(Debug, Clone)]
pub struct Attributes {
    pub user: UserInfo,
    /// get list watch create update patch delete deletecollection (resource requests);
    /// the lower-case HTTP method for non-resource requests.
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    /// "" for cluster-scoped resources and for requests across all namespaces.
    pub namespace: String,
    pub name: String,
    pub resource_request: bool,
    /// The URL path, for non-resource requests like /healthz, /api.
    pub path: String,
}

/// The authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// The reason, for the 403 Status message.
    Deny(String),
}
