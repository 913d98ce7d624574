//! Applying [`AuthCommand`]s: deterministic, checked before anything changes (a refused
//! command leaves the state as it was), with etcd 3.4's rules and errors.

use super::{AuthCommand, AuthState, ROOT, Role, User};
use crate::error::{Error, Result};

impl AuthState {
    /// Applies one command; on success the auth revision moves by one.
    pub fn apply(&mut self, cmd: &AuthCommand) -> Result<()> {
        match cmd {
            AuthCommand::Enable { token_secret } => {
                if self.enabled {
                    // etcd answers success and changes nothing.
                    return Ok(());
                }
                let root = self.users.get(ROOT).ok_or(Error::RootUserNotExist)?;
                if !root.roles.contains(ROOT) {
                    return Err(Error::RootRoleNotExist);
                }
                self.enabled = true;
                self.token_secret = token_secret.clone();
            }
            AuthCommand::Disable => {
                if !self.enabled {
                    return Ok(());
                }
                self.enabled = false;
                self.token_secret.clear();
            }
            AuthCommand::UserAdd {
                name,
                password_hash,
            } => {
                if name.is_empty() {
                    return Err(Error::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(Error::UserAlreadyExist);
                }
                let generation = self.revision + 1;
                self.users.insert(
                    name.clone(),
                    User {
                        password_hash: password_hash.clone(),
                        roles: Default::default(),
                        generation,
                    },
                );
            }
            AuthCommand::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(Error::InvalidAuthMgmt);
                }
                self.users.remove(name).ok_or(Error::UserNotFound)?;
            }
            AuthCommand::UserChangePassword {
                name,
                password_hash,
            } => {
                let generation = self.revision + 1;
                let user = self.users.get_mut(name).ok_or(Error::UserNotFound)?;
                user.password_hash = Some(password_hash.clone());
                user.generation = generation;
            }
            AuthCommand::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(Error::UserNotFound);
                }
                // The root role exists implicitly (etcd grants it without `role add`).
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(Error::RoleNotFound);
                }
                let u = self.users.get_mut(user).ok_or(Error::UserNotFound)?;
                if !u.roles.insert(role.clone()) {
                    return Ok(());
                }
            }
            AuthCommand::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(Error::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(user).ok_or(Error::UserNotFound)?;
                if !u.roles.remove(role) {
                    return Err(Error::RoleNotGranted);
                }
            }
            AuthCommand::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(Error::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(Error::RoleAlreadyExist);
                }
                self.roles.insert(name.clone(), Role::default());
            }
            AuthCommand::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(Error::InvalidAuthMgmt);
                }
                self.roles.remove(name).ok_or(Error::RoleNotFound)?;
                for user in self.users.values_mut() {
                    user.roles.remove(name);
                }
            }
            AuthCommand::RoleGrantPermission { role, perm } => {
                let r = self.roles.get_mut(role).ok_or(Error::RoleNotFound)?;
                // The same range granted again replaces the old type, as in etcd.
                match r
                    .perms
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    Some(p) => p.perm_type = perm.perm_type,
                    None => r.perms.push(perm.clone()),
                }
                r.perms
                    .sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
            }
            AuthCommand::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let r = self.roles.get_mut(role).ok_or(Error::RoleNotFound)?;
                let before = r.perms.len();
                r.perms
                    .retain(|p| !(p.key == *key && p.range_end == *range_end));
                if r.perms.len() == before {
                    return Err(Error::PermissionNotGranted);
                }
            }
        }
        self.revision += 1;
        Ok(())
    }
}
