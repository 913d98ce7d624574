//! Auth tokens: `HEX(user).GENERATION.HEX(HMAC-SHA256)` signed with the replicated
//! token secret, so a token issued by one member is accepted by every member (etcdctl
//! authenticates on one endpoint and may send the token to another), without a Raft
//! round per authentication. A token stops working when its user is deleted or changes
//! password (the generation moves) and when auth is disabled (the secret is dropped; a
//! later enable draws a new one).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::AuthState;
use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted (a user name is bounded by the request size; this bounds the
/// work spent on garbage).
const MAX_TOKEN_LEN: usize = 4096;

fn mac(secret: &[u8], user: &str, generation: u64) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(user.as_bytes());
    mac.update(&[0]);
    mac.update(&generation.to_be_bytes());
    Some(mac)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A token for `user` under the current state (auth enabled, user exists).
pub fn issue(state: &AuthState, user: &str) -> Result<String> {
    let generation = state.users.get(user).ok_or(Error::AuthFailed)?.generation;
    let mac = mac(&state.token_secret, user, generation).ok_or(Error::AuthNotEnabled)?;
    Ok(format!(
        "{}.{generation}.{}",
        hex(user.as_bytes()),
        hex(&mac.finalize().into_bytes())
    ))
}

/// The user a token names, if it is valid under the current state.
pub fn verify(state: &AuthState, token: &str) -> Result<String> {
    if !state.enabled || token.len() > MAX_TOKEN_LEN {
        return Err(Error::InvalidAuthToken);
    }
    let mut parts = token.split('.');
    let (Some(user), Some(generation), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::InvalidAuthToken);
    };
    let user = unhex(user)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(Error::InvalidAuthToken)?;
    let generation: u64 = generation.parse().map_err(|_| Error::InvalidAuthToken)?;
    let sig = unhex(sig).ok_or(Error::InvalidAuthToken)?;
    let current = state.users.get(&user).ok_or(Error::InvalidAuthToken)?;
    if current.generation != generation {
        return Err(Error::InvalidAuthToken);
    }
    let mac = mac(&state.token_secret, &user, generation).ok_or(Error::InvalidAuthToken)?;
    // verify_slice compares in constant time.
    mac.verify_slice(&sig)
        .map_err(|_| Error::InvalidAuthToken)?;
    Ok(user)
}
