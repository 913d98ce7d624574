//! etcd's auth store: users (bcrypt password hashes), roles with key-range permissions,
//! the enabled flag and the auth revision. It is state-machine state: changed only by
//! [`AuthCommand`]s applied through Raft (`apply.rs`, deterministic — passwords are
//! hashed and the token secret is drawn on the proposing member), persisted in the
//! `meta` family under [`META_AUTH`] in the same write batch as the command's log
//! position, and so carried by snapshots and backups like the rest of `meta`.
//!
//! Permission checks (`perms.rs`) and tokens (`token.rs`) only read it; they run on the
//! member that receives a request, against its replicated copy, as etcd does.

mod apply;
mod perms;
pub mod token;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use perms::{Access, KeyRange};

/// Key of the encoded [`AuthState`] in the `meta` family.
pub const META_AUTH: &[u8] = b"auth";
/// The role that may do everything, and the user that must hold it before auth is enabled.
pub const ROOT: &str = "root";

// authpb.Permission.Type.
pub const PERM_READ: i32 = 0;
pub const PERM_WRITE: i32 = 1;
pub const PERM_READWRITE: i32 = 2;

/// A permission of a role: a key (`range_end` empty) or a range `[key, range_end)`
/// (`range_end` `\0`: every key from `key` on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub perm_type: i32,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub perms: Vec<Permission>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The bcrypt hash; `None` for a user added with `--no-password` (only a client
    /// certificate can name it).
    pub password_hash: Option<String>,
    pub roles: BTreeSet<String>,
    /// The auth revision of the user's creation or last password change: tokens carry
    /// it, so a new password (or a re-created user) invalidates older tokens.
    pub generation: u64,
}

/// The whole replicated auth state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub enabled: bool,
    /// Increases with every successful change (etcd's auth revision).
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
    /// The HMAC key of tokens, drawn by the member that proposed the last `auth enable`:
    /// every member verifies tokens with it, and a disable/enable cycle invalidates them.
    pub token_secret: Vec<u8>,
}

/// A change to the auth store, as proposed and applied. Everything non-deterministic
/// (password hashes, the token secret) is decided before proposing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    Enable {
        token_secret: Vec<u8>,
    },
    Disable,
    UserAdd {
        name: String,
        password_hash: Option<String>,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password_hash: String,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        role: String,
        perm: Permission,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

impl AuthCommand {
    pub fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(self).map_err(|e| Error::Corrupt(format!("auth command: {e}")))
    }

    pub fn decode(bytes: &[u8]) -> Result<AuthCommand> {
        postcard::from_bytes(bytes).map_err(|e| Error::Corrupt(format!("auth command: {e}")))
    }
}

impl AuthState {
    pub fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(self).map_err(|e| Error::Corrupt(format!("auth state: {e}")))
    }

    pub fn decode(bytes: &[u8]) -> Result<AuthState> {
        postcard::from_bytes(bytes).map_err(|e| Error::Corrupt(format!("auth state: {e}")))
    }

    /// Whether `user` exists and holds the root role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// etcd's admin check: with auth on, only a user with the root role passes.
    pub fn check_admin(&self, caller: &Caller) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        match caller {
            Caller::Unrestricted => Ok(()),
            Caller::Anonymous => Err(Error::UserEmpty),
            Caller::User(name) if self.is_root(name) => Ok(()),
            Caller::User(name) if !self.users.contains_key(name) => Err(Error::UserNotFound),
            Caller::User(_) => Err(Error::PermissionDenied),
        }
    }

    /// Whether `caller` may access `range` as `access` (see `perms.rs`).
    pub fn check(&self, caller: &Caller, range: KeyRange<'_>, access: Access) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let name = match caller {
            Caller::Unrestricted => return Ok(()),
            Caller::Anonymous => return Err(Error::UserEmpty),
            Caller::User(name) => name,
        };
        let Some(user) = self.users.get(name) else {
            return Err(Error::PermissionDenied);
        };
        if user.roles.contains(ROOT) {
            return Ok(());
        }
        let granted = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.perms.iter())
            .filter(|p| access.allowed_by(p.perm_type));
        if perms::covered(granted, range) {
            Ok(())
        } else {
            Err(Error::PermissionDenied)
        }
    }
}

/// Who sent a request, as far as permission checks care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Auth is off: everything is allowed.
    Unrestricted,
    /// Auth is on and the request carried no credentials.
    Anonymous,
    /// An authenticated user (by token, or by client certificate common name).
    User(String),
}

#[cfg(test)]
mod tests;
