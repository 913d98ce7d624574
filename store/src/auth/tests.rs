use super::*;

fn cmd(state: &mut AuthState, c: AuthCommand) -> Result<()> {
    state.apply(&c)
}

fn user_add(name: &str) -> AuthCommand {
    AuthCommand::UserAdd {
        name: name.into(),
        password_hash: Some(format!("hash-of-{name}")),
    }
}

fn enabled_with_reader() -> AuthState {
    let mut s = AuthState::default();
    cmd(&mut s, user_add("root")).unwrap();
    cmd(
        &mut s,
        AuthCommand::UserGrantRole {
            user: "root".into(),
            role: ROOT.into(),
        },
    )
    .unwrap();
    cmd(&mut s, user_add("alice")).unwrap();
    cmd(&mut s, AuthCommand::RoleAdd { name: "r".into() }).unwrap();
    cmd(
        &mut s,
        AuthCommand::RoleGrantPermission {
            role: "r".into(),
            perm: Permission {
                perm_type: PERM_READWRITE,
                key: b"a/".to_vec(),
                range_end: b"a0".to_vec(),
            },
        },
    )
    .unwrap();
    cmd(
        &mut s,
        AuthCommand::UserGrantRole {
            user: "alice".into(),
            role: "r".into(),
        },
    )
    .unwrap();
    cmd(
        &mut s,
        AuthCommand::Enable {
            token_secret: vec![7; 32],
        },
    )
    .unwrap();
    s
}

#[test]
fn enable_needs_a_root_user_with_the_root_role() {
    let mut s = AuthState::default();
    let secret = AuthCommand::Enable {
        token_secret: vec![1; 32],
    };
    assert_eq!(s.apply(&secret), Err(Error::RootUserNotExist));
    cmd(&mut s, user_add("root")).unwrap();
    assert_eq!(s.apply(&secret), Err(Error::RootRoleNotExist));
    assert!(!s.enabled);
    cmd(
        &mut s,
        AuthCommand::UserGrantRole {
            user: "root".into(),
            role: ROOT.into(),
        },
    )
    .unwrap();
    s.apply(&secret).unwrap();
    assert!(s.enabled);
}

#[test]
fn refused_commands_change_nothing() {
    let mut s = enabled_with_reader();
    let before = s.clone();
    let refused = [
        (user_add("alice"), Error::UserAlreadyExist),
        (user_add(""), Error::UserEmpty),
        (
            AuthCommand::UserDelete {
                name: "root".into(),
            },
            Error::InvalidAuthMgmt,
        ),
        (
            AuthCommand::UserDelete {
                name: "nobody".into(),
            },
            Error::UserNotFound,
        ),
        (
            AuthCommand::RoleDelete { name: ROOT.into() },
            Error::InvalidAuthMgmt,
        ),
        (
            AuthCommand::UserGrantRole {
                user: "alice".into(),
                role: "nope".into(),
            },
            Error::RoleNotFound,
        ),
        (
            AuthCommand::UserRevokeRole {
                user: "alice".into(),
                role: "nope".into(),
            },
            Error::RoleNotGranted,
        ),
        (
            AuthCommand::UserRevokeRole {
                user: "root".into(),
                role: ROOT.into(),
            },
            Error::InvalidAuthMgmt,
        ),
        (
            AuthCommand::RoleAdd { name: "r".into() },
            Error::RoleAlreadyExist,
        ),
        (
            AuthCommand::RoleRevokePermission {
                role: "r".into(),
                key: b"x".to_vec(),
                range_end: vec![],
            },
            Error::PermissionNotGranted,
        ),
    ];
    for (c, e) in refused {
        assert_eq!(s.apply(&c), Err(e), "{c:?}");
        assert_eq!(s, before, "{c:?} left a trace");
    }
}

#[test]
fn permissions_follow_roles_and_root_may_do_everything() {
    let mut s = enabled_with_reader();
    let alice = Caller::User("alice".into());
    let inside = KeyRange::new(b"a/1", b"");
    let outside = KeyRange::new(b"b", b"");
    assert_eq!(s.check(&alice, inside, Access::Write), Ok(()));
    assert_eq!(
        s.check(&alice, outside, Access::Read),
        Err(Error::PermissionDenied)
    );
    assert_eq!(
        s.check(&Caller::Anonymous, inside, Access::Read),
        Err(Error::UserEmpty)
    );
    assert_eq!(
        s.check(&Caller::User("root".into()), outside, Access::Write),
        Ok(())
    );
    assert_eq!(s.check_admin(&alice), Err(Error::PermissionDenied));
    assert_eq!(s.check_admin(&Caller::User("root".into())), Ok(()));
    // Deleting the role takes the permission away from its users.
    cmd(&mut s, AuthCommand::RoleDelete { name: "r".into() }).unwrap();
    assert_eq!(
        s.check(&alice, inside, Access::Read),
        Err(Error::PermissionDenied)
    );
    // With auth off everything passes.
    cmd(&mut s, AuthCommand::Disable).unwrap();
    assert_eq!(s.check(&Caller::Anonymous, outside, Access::Write), Ok(()));
}

#[test]
fn tokens_die_with_a_password_change_and_with_auth_disable() {
    let mut s = enabled_with_reader();
    let token = token::issue(&s, "alice").unwrap();
    assert_eq!(token::verify(&s, &token).unwrap(), "alice");
    for garbage in ["", "x", "616c696365.1.00", "zz.1.00", &format!("{token}0")] {
        assert_eq!(
            token::verify(&s, garbage),
            Err(Error::InvalidAuthToken),
            "{garbage}"
        );
    }
    // A token forged with another secret is refused.
    let mut other = s.clone();
    other.token_secret = vec![9; 32];
    let forged = token::issue(&other, "alice").unwrap();
    assert_eq!(token::verify(&s, &forged), Err(Error::InvalidAuthToken));

    cmd(
        &mut s,
        AuthCommand::UserChangePassword {
            name: "alice".into(),
            password_hash: "new".into(),
        },
    )
    .unwrap();
    assert_eq!(token::verify(&s, &token), Err(Error::InvalidAuthToken));
    let token = token::issue(&s, "alice").unwrap();
    assert_eq!(token::verify(&s, &token).unwrap(), "alice");
    cmd(&mut s, AuthCommand::Disable).unwrap();
    cmd(
        &mut s,
        AuthCommand::Enable {
            token_secret: vec![8; 32],
        },
    )
    .unwrap();
    assert_eq!(token::verify(&s, &token), Err(Error::InvalidAuthToken));
}

#[test]
fn state_and_commands_round_trip_and_garbage_is_an_error() {
    let s = enabled_with_reader();
    assert_eq!(AuthState::decode(&s.encode().unwrap()).unwrap(), s);
    let c = user_add("bob");
    assert_eq!(AuthCommand::decode(&c.encode().unwrap()).unwrap(), c);
    assert!(matches!(
        AuthCommand::decode(&[200, 1]),
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(AuthState::decode(&[1]), Err(Error::Corrupt(_))));
}
