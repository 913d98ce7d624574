//! Bearer-token authentication.
//!
//! Two kinds of token:
//! - static tokens from a CSV file in kube-apiserver's format
//!   (`token,user,uid,"group1,group2"`), for people and bootstrap identities;
//! - service-account tokens this server issues: `sa1.<payload>.<mac>`, where the payload
//!   is base64url JSON `{"ns","name","uid","exp"}` and the mac is HMAC-SHA256 over
//!   `sa1.<payload>` with the server's signing key. They carry their expiry, so an
//!   expired token is told apart from a forged one.
//!
//! Static tokens are compared as SHA-256 digests in constant time against every entry,
//! so the time taken says nothing about how much of a token was right.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AUTHENTICATED_GROUP, AuthError, AuthnError, UserInfo};

type HmacSha256 = Hmac<Sha256>;

/// Prefix (and version) of our service-account tokens.
const SA_TOKEN_PREFIX: &str = "sa1.";
/// Longest token looked at; a bound on hashing and decoding work per request.
pub const TOKEN_MAX_LEN: usize = 8 * 1024;
/// Most lines read from a token file.
const TOKEN_FILE_MAX_LINES: usize = 100_000;
/// Shortest signing key accepted (HMAC-SHA256's block of security).
pub const SIGNING_KEY_MIN_LEN: usize = 32;

/// One static token's user.
struct StaticToken {
    digest: [u8; 32],
    user: UserInfo,
}

/// The claims of a service-account token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    ns: String,
    name: String,
    uid: String,
    /// Expiry, seconds since the Unix epoch.
    exp: u64,
}

/// Authenticates `Authorization: Bearer` headers.
pub struct TokenAuthenticator {
    static_tokens: Vec<StaticToken>,
    signing_key: Vec<u8>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn with_authenticated(mut groups: Vec<String>) -> Vec<String> {
    if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.to_string());
    }
    groups
}

/// Splits one CSV line into fields; double quotes group commas, `""` is a quote.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unclosed quote".into());
    }
    fields.push(cur);
    Ok(fields)
}

fn parse_token_file(path: &Path) -> Result<Vec<StaticToken>, AuthError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: name.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().take(TOKEN_FILE_MAX_LINES) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax = |reason: String| AuthError::Syntax {
            path: name.clone(),
            line: i + 1,
            reason,
        };
        let f = csv_fields(line).map_err(syntax)?;
        if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
            return Err(syntax(
                "expected token,user,uid[,\"group1,group2\"] with a token and a user".into(),
            ));
        }
        if f[0].len() > TOKEN_MAX_LEN {
            return Err(syntax(format!("token longer than {TOKEN_MAX_LEN} bytes")));
        }
        let groups = f
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        out.push(StaticToken {
            digest: Sha256::digest(f[0].as_bytes()).into(),
            user: UserInfo {
                name: f[1].clone(),
                uid: f[2].clone(),
                groups: with_authenticated(groups),
            },
        });
    }
    Ok(out)
}

impl TokenAuthenticator {
    /// Static tokens from a CSV token file (kube-apiserver format: token,user,uid,"group1,group2")
    /// plus service-account tokens signed with `signing_key` (HMAC-SHA256, with an expiry).
    pub fn new(token_file: Option<&Path>, signing_key: Vec<u8>) -> Result<Self, AuthError> {
        if signing_key.len() < SIGNING_KEY_MIN_LEN {
            return Err(AuthError::WeakKey);
        }
        let static_tokens = match token_file {
            Some(p) => parse_token_file(p)?,
            None => Vec::new(),
        };
        Ok(TokenAuthenticator {
            static_tokens,
            signing_key,
        })
    }

    /// The user of an `Authorization` header's bearer token.
    pub fn authenticate(&self, authorization_header: Option<&str>) -> Result<UserInfo, AuthnError> {
        self.authenticate_at(authorization_header, now_s())
    }

    fn authenticate_at(&self, header: Option<&str>, now: u64) -> Result<UserInfo, AuthnError> {
        let header = header.ok_or(AuthnError::Missing)?.trim();
        let (scheme, token) = header.split_once(' ').ok_or(AuthnError::Invalid)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > TOKEN_MAX_LEN
        {
            return Err(AuthnError::Invalid);
        }
        if let Some(user) = self.static_user(token) {
            return Ok(user);
        }
        if token.starts_with(SA_TOKEN_PREFIX) {
            return self.service_account_user(token, now);
        }
        Err(AuthnError::Invalid)
    }

    fn static_user(&self, token: &str) -> Option<UserInfo> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, whatever matches, so timing does not depend on which.
        let mut found = None;
        for t in &self.static_tokens {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(t.user.clone());
            }
        }
        found
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; `new` checked it is long enough.
        HmacSha256::new_from_slice(&self.signing_key).expect("HMAC takes any key length")
    }

    fn service_account_user(&self, token: &str, now: u64) -> Result<UserInfo, AuthnError> {
        let (signed, mac_b64) = token.rsplit_once('.').ok_or(AuthnError::Invalid)?;
        let payload_b64 = signed
            .strip_prefix(SA_TOKEN_PREFIX)
            .ok_or(AuthnError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(mac_b64)
            .map_err(|_| AuthnError::Invalid)?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(&tag).map_err(|_| AuthnError::Invalid)?;
        // The signature is ours, so the payload is too; still, never trust it to parse.
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| AuthnError::Invalid)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| AuthnError::Invalid)?;
        if now >= claims.exp {
            return Err(AuthnError::Expired);
        }
        Ok(UserInfo {
            name: format!("system:serviceaccount:{}:{}", claims.ns, claims.name),
            uid: claims.uid,
            groups: with_authenticated(vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{}", claims.ns),
            ]),
        })
    }

    /// User "system:serviceaccount:<ns>:<name>", groups system:serviceaccounts, system:serviceaccounts:<ns>.
    pub fn issue_service_account_token(
        &self,
        namespace: &str,
        name: &str,
        ttl: Duration,
    ) -> String {
        self.issue_at(namespace, name, now_s().saturating_add(ttl.as_secs()))
    }

    fn issue_at(&self, namespace: &str, name: &str, exp: u64) -> String {
        // A stable uid per account: the same account keeps its uid across tokens.
        let uid_digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
        let uid: String = uid_digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let claims = Claims {
            ns: namespace.to_string(),
            name: name.to_string(),
            uid,
            exp,
        };
        let payload = serde_json::to_vec(&claims).expect("claims serialize");
        let signed = format!("{SA_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(payload));
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn with_file(contents: &str) -> (tempfile::NamedTempFile, TokenAuthenticator) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        let a = TokenAuthenticator::new(Some(f.path()), KEY.to_vec()).unwrap();
        (f, a)
    }

    #[test]
    fn static_tokens_with_groups() {
        let (_f, a) = with_file(
            "# comment\nadmin-token,admin,1,\"system:masters,ops\"\n\nview-token,viewer,2\n",
        );
        let u = a.authenticate(Some("Bearer admin-token")).unwrap();
        assert_eq!(u.name, "admin");
        assert_eq!(u.uid, "1");
        assert_eq!(u.groups, ["system:masters", "ops", "system:authenticated"]);
        let u = a.authenticate(Some("bearer view-token")).unwrap();
        assert_eq!(u.name, "viewer");
        assert_eq!(u.groups, ["system:authenticated"]);
    }

    #[test]
    fn missing_and_bad_tokens() {
        let (_f, a) = with_file("t,u,1\n");
        assert_eq!(a.authenticate(None), Err(AuthnError::Missing));
        assert_eq!(
            a.authenticate(Some("Bearer nope")),
            Err(AuthnError::Invalid)
        );
        assert_eq!(a.authenticate(Some("Basic dTpw")), Err(AuthnError::Invalid));
        assert_eq!(a.authenticate(Some("Bearer ")), Err(AuthnError::Invalid));
        assert_eq!(a.authenticate(Some("t")), Err(AuthnError::Invalid));
        let long = format!("Bearer {}", "x".repeat(TOKEN_MAX_LEN + 1));
        assert_eq!(a.authenticate(Some(&long)), Err(AuthnError::Invalid));
    }

    #[test]
    fn malformed_token_files_are_refused_with_the_line() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"ok,u,1\nonly-token\n").unwrap();
        let e = TokenAuthenticator::new(Some(f.path()), KEY.to_vec())
            .err()
            .unwrap();
        assert!(e.to_string().contains("line 2"), "{e}");
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"t,u,1,\"unclosed\n").unwrap();
        assert!(TokenAuthenticator::new(Some(f.path()), KEY.to_vec()).is_err());
        assert!(
            TokenAuthenticator::new(Some(Path::new("/nonexistent/tokens.csv")), KEY.to_vec())
                .is_err()
        );
        assert!(matches!(
            TokenAuthenticator::new(None, b"short".to_vec()),
            Err(AuthError::WeakKey)
        ));
    }

    #[test]
    fn service_account_tokens_round_trip() {
        let a = TokenAuthenticator::new(None, KEY.to_vec()).unwrap();
        let t =
            a.issue_service_account_token("kube-system", "scheduler", Duration::from_secs(3600));
        let u = a.authenticate(Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!(u.name, "system:serviceaccount:kube-system:scheduler");
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated"
            ]
        );
        let t2 = a.issue_service_account_token("kube-system", "scheduler", Duration::from_secs(60));
        let u2 = a.authenticate(Some(&format!("Bearer {t2}"))).unwrap();
        assert_eq!(u.uid, u2.uid);
    }

    #[test]
    fn expired_is_told_apart_from_forged() {
        let a = TokenAuthenticator::new(None, KEY.to_vec()).unwrap();
        let t = a.issue_at("default", "bot", 1000);
        let h = format!("Bearer {t}");
        assert!(a.authenticate_at(Some(&h), 999).is_ok());
        assert_eq!(a.authenticate_at(Some(&h), 1000), Err(AuthnError::Expired));
        // Another key's token, a tampered payload, a tampered mac: all invalid.
        let other = TokenAuthenticator::new(None, vec![7u8; 32]).unwrap();
        let forged = other.issue_at("default", "bot", u64::MAX);
        assert_eq!(
            a.authenticate_at(Some(&format!("Bearer {forged}")), 0),
            Err(AuthnError::Invalid)
        );
        let (signed, mac) = t.rsplit_once('.').unwrap();
        let tampered = format!("{}x.{mac}", signed);
        assert_eq!(
            a.authenticate_at(Some(&format!("Bearer {tampered}")), 0),
            Err(AuthnError::Invalid)
        );
        assert_eq!(
            a.authenticate_at(Some("Bearer sa1.!!!.???"), 0),
            Err(AuthnError::Invalid)
        );
    }
}
