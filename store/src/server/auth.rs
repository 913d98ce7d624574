//! etcd's Auth service: users, roles, permissions, `auth enable|disable` and
//! Authenticate. Changes are proposed through Raft as [`AuthCommand`]s, with password
//! hashes (bcrypt, on a blocking thread) and the token secret decided here, on the
//! proposing member, so apply stays deterministic. Reads (user/role get and list,
//! authenticate) are linearizable: they wait for a read barrier first. With auth on,
//! everything but Authenticate (and a user reading itself or its roles) needs the
//! root role. Passwords are never logged.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::Node;
use crate::auth::{AuthCommand, Caller, Permission, ROOT};
use crate::command::{Command, CommandResult};
use crate::error::Error;

pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::*;

pub struct AuthService(pub Arc<Node>);

type Reply<T> = Result<Response<T>, Status>;

impl AuthService {
    fn header(&self) -> Option<ResponseHeader> {
        let h = self.0.header(self.0.store.current_revision());
        Some(ResponseHeader {
            cluster_id: h.cluster_id,
            member_id: h.member_id,
            revision: h.revision,
            raft_term: h.raft_term,
        })
    }

    fn admin<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let caller = self.0.caller(req)?;
        self.0.check_admin(&caller)?;
        Ok(caller)
    }

    /// Proposes an auth change and waits until it is applied.
    async fn propose(&self, cmd: AuthCommand) -> Result<(), Status> {
        match self.0.propose(Command::Auth(cmd)).await? {
            CommandResult::Auth => Ok(()),
            other => Err(Status::internal(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }

    /// bcrypt is deliberately slow: hash on a blocking thread, never on the runtime.
    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.0.config.bcrypt_cost;
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|_| Status::internal("password hashing failed"))?
            .map_err(|_| Status::internal("password hashing failed"))
    }
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn auth_enable(&self, req: Request<AuthEnableRequest>) -> Reply<AuthEnableResponse> {
        self.admin(&req)?;
        let token_secret: [u8; 32] = rand::random();
        self.propose(AuthCommand::Enable {
            token_secret: token_secret.to_vec(),
        })
        .await?;
        tracing::info!("auth enabled");
        Ok(Response::new(AuthEnableResponse {
            header: self.header(),
        }))
    }

    async fn auth_disable(&self, req: Request<AuthDisableRequest>) -> Reply<AuthDisableResponse> {
        self.admin(&req)?;
        self.propose(AuthCommand::Disable).await?;
        tracing::info!("auth disabled");
        Ok(Response::new(AuthDisableResponse {
            header: self.header(),
        }))
    }

    async fn auth_status(&self, _req: Request<AuthStatusRequest>) -> Reply<AuthStatusResponse> {
        self.0.read_barrier().await?;
        let auth = self.0.store.auth();
        Ok(Response::new(AuthStatusResponse {
            header: self.header(),
            enabled: auth.enabled,
            auth_revision: auth.revision,
        }))
    }

    async fn authenticate(&self, req: Request<AuthenticateRequest>) -> Reply<AuthenticateResponse> {
        let req = req.into_inner();
        self.0.read_barrier().await?;
        let hash = {
            let auth = self.0.store.auth();
            if !auth.enabled {
                return Err(Error::AuthNotEnabled.into());
            }
            auth.users
                .get(&req.name)
                .and_then(|u| u.password_hash.clone())
                .ok_or(Error::AuthFailed)?
        };
        let password = req.password;
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .map_err(|_| Status::internal("password check failed"))?
            .unwrap_or(false);
        if !matches {
            tracing::info!(user = %req.name, "authentication failed");
            return Err(Error::AuthFailed.into());
        }
        let token = crate::auth::token::issue(&self.0.store.auth(), &req.name)?;
        Ok(Response::new(AuthenticateResponse {
            header: self.header(),
            token,
        }))
    }

    async fn user_add(&self, req: Request<AuthUserAddRequest>) -> Reply<AuthUserAddResponse> {
        self.admin(&req)?;
        let req = req.into_inner();
        let no_password = req.options.is_some_and(|o| o.no_password);
        let password_hash = if no_password {
            None
        } else if !req.hashed_password.is_empty() {
            Some(req.hashed_password)
        } else {
            Some(self.hash(req.password).await?)
        };
        self.propose(AuthCommand::UserAdd {
            name: req.name,
            password_hash,
        })
        .await?;
        Ok(Response::new(AuthUserAddResponse {
            header: self.header(),
        }))
    }

    async fn user_get(&self, req: Request<AuthUserGetRequest>) -> Reply<AuthUserGetResponse> {
        let caller = self.0.caller(&req)?;
        let req = req.into_inner();
        if caller != Caller::User(req.name.clone()) {
            self.0.check_admin(&caller)?;
        }
        self.0.read_barrier().await?;
        let auth = self.0.store.auth();
        let user = auth.users.get(&req.name).ok_or(Error::UserNotFound)?;
        Ok(Response::new(AuthUserGetResponse {
            header: self.header(),
            roles: user.roles.iter().cloned().collect(),
        }))
    }

    async fn user_list(&self, req: Request<AuthUserListRequest>) -> Reply<AuthUserListResponse> {
        self.admin(&req)?;
        self.0.read_barrier().await?;
        Ok(Response::new(AuthUserListResponse {
            header: self.header(),
            users: self.0.store.auth().users.keys().cloned().collect(),
        }))
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Reply<AuthUserDeleteResponse> {
        self.admin(&req)?;
        let name = req.into_inner().name;
        self.propose(AuthCommand::UserDelete { name }).await?;
        Ok(Response::new(AuthUserDeleteResponse {
            header: self.header(),
        }))
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Reply<AuthUserChangePasswordResponse> {
        self.admin(&req)?;
        let req = req.into_inner();
        let password_hash = if req.hashed_password.is_empty() {
            self.hash(req.password).await?
        } else {
            req.hashed_password
        };
        self.propose(AuthCommand::UserChangePassword {
            name: req.name,
            password_hash,
        })
        .await?;
        Ok(Response::new(AuthUserChangePasswordResponse {
            header: self.header(),
        }))
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Reply<AuthUserGrantRoleResponse> {
        self.admin(&req)?;
        let req = req.into_inner();
        self.propose(AuthCommand::UserGrantRole {
            user: req.user,
            role: req.role,
        })
        .await?;
        Ok(Response::new(AuthUserGrantRoleResponse {
            header: self.header(),
        }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Reply<AuthUserRevokeRoleResponse> {
        self.admin(&req)?;
        let req = req.into_inner();
        self.propose(AuthCommand::UserRevokeRole {
            user: req.name,
            role: req.role,
        })
        .await?;
        Ok(Response::new(AuthUserRevokeRoleResponse {
            header: self.header(),
        }))
    }

    async fn role_add(&self, req: Request<AuthRoleAddRequest>) -> Reply<AuthRoleAddResponse> {
        self.admin(&req)?;
        let name = req.into_inner().name;
        self.propose(AuthCommand::RoleAdd { name }).await?;
        Ok(Response::new(AuthRoleAddResponse {
            header: self.header(),
        }))
    }

    async fn role_get(&self, req: Request<AuthRoleGetRequest>) -> Reply<AuthRoleGetResponse> {
        let caller = self.0.caller(&req)?;
        let role = req.into_inner().role;
        let own = match &caller {
            Caller::User(name) => self
                .0
                .store
                .auth()
                .users
                .get(name)
                .is_some_and(|u| u.roles.contains(&role)),
            _ => false,
        };
        if !own {
            self.0.check_admin(&caller)?;
        }
        self.0.read_barrier().await?;
        let auth = self.0.store.auth();
        let perm = match auth.roles.get(&role) {
            Some(r) => r
                .perms
                .iter()
                .map(|p| pb::Permission {
                    perm_type: p.perm_type,
                    key: p.key.clone(),
                    range_end: p.range_end.clone(),
                })
                .collect(),
            // The implicit root role has no stored permissions.
            None if role == ROOT => Vec::new(),
            None => return Err(Error::RoleNotFound.into()),
        };
        Ok(Response::new(AuthRoleGetResponse {
            header: self.header(),
            perm,
        }))
    }

    async fn role_list(&self, req: Request<AuthRoleListRequest>) -> Reply<AuthRoleListResponse> {
        self.admin(&req)?;
        self.0.read_barrier().await?;
        Ok(Response::new(AuthRoleListResponse {
            header: self.header(),
            roles: self.0.store.auth().roles.keys().cloned().collect(),
        }))
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Reply<AuthRoleDeleteResponse> {
        self.admin(&req)?;
        let name = req.into_inner().role;
        self.propose(AuthCommand::RoleDelete { name }).await?;
        Ok(Response::new(AuthRoleDeleteResponse {
            header: self.header(),
        }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Reply<AuthRoleGrantPermissionResponse> {
        self.admin(&req)?;
        let req = req.into_inner();
        let perm = req
            .perm
            .ok_or_else(|| Status::invalid_argument("etcdserver: permission not given"))?;
        if !(crate::auth::PERM_READ..=crate::auth::PERM_READWRITE).contains(&perm.perm_type) {
            return Err(Status::invalid_argument(
                "etcdserver: invalid permission type",
            ));
        }
        self.propose(AuthCommand::RoleGrantPermission {
            role: req.name,
            perm: Permission {
                perm_type: perm.perm_type,
                key: perm.key,
                range_end: perm.range_end,
            },
        })
        .await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse {
            header: self.header(),
        }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Reply<AuthRoleRevokePermissionResponse> {
        self.admin(&req)?;
        let req = req.into_inner();
        self.propose(AuthCommand::RoleRevokePermission {
            role: req.role,
            key: req.key,
            range_end: req.range_end,
        })
        .await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse {
            header: self.header(),
        }))
    }
}
