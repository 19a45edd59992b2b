//! Bearer tokens: `sus1.<claims>.<mac>`, the claims as JSON and both parts base64url (no
//! padding), the MAC HMAC-SHA-256 under the cluster's token key. Only nodes hold the key, so only
//! nodes issue tokens; any node verifies them (tickets and tokens are valid cluster-wide).

use super::{Role, Tier};
use crate::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const PREFIX: &str = "sus1.";

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user name (`node-<id>` for a node).
    pub sub: String,
    pub role: Role,
    pub org: String,
    pub purpose: String,
    pub tier: Tier,
    /// The user's generation when the token was issued (revocation bumps it).
    pub generation: u64,
    /// Issued and expires, seconds since 1970 (UTC).
    pub iat: i64,
    pub exp: i64,
}

/// Signs `claims` with `key`.
pub fn sign(key: &[u8], claims: &Claims) -> String {
    let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let mac = mac(key, body.as_bytes());
    format!("{PREFIX}{body}.{}", B64.encode(mac))
}

fn mac(key: &[u8], body: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(body);
    m.finalize().into_bytes().into()
}

/// Checks the signature and the expiry at `now` (seconds) and returns the claims.
pub fn verify(key: &[u8], token: &str, now: i64) -> Result<Claims> {
    let bad = |m: &str| Err(Error::Unauthenticated(m.to_string()));
    let Some(rest) = token.strip_prefix(PREFIX) else {
        return bad("not a sus token (expected sus1.<claims>.<signature>)");
    };
    let Some((body, sig)) = rest.split_once('.') else {
        return bad("malformed token: no signature part");
    };
    let Ok(sig) = B64.decode(sig) else {
        return bad("malformed token: the signature is not base64url");
    };
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(body.as_bytes());
    // Constant-time comparison.
    if m.verify_slice(&sig).is_err() {
        return bad("token signature invalid: not issued by this cluster, or altered");
    }
    let claims: Claims = match B64
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(c) => c,
        None => return bad("malformed token claims"),
    };
    if claims.exp <= now {
        return Err(Error::Unauthenticated(format!(
            "token expired {} s ago; log in again (sus login)",
            now - claims.exp
        )));
    }
    Ok(claims)
}

/// The role a token claims, read without checking its signature or expiry: only to decide how
/// to pass on a token this node has already verified, never to authorise anything.
pub fn claimed_role(token: &str) -> Option<Role> {
    let (body, _) = token.strip_prefix(PREFIX)?.split_once('.')?;
    let claims: Claims = serde_json::from_slice(&B64.decode(body).ok()?).ok()?;
    Some(claims.role)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "alice".into(),
            role: Role::Commissioner,
            org: "15F".into(),
            purpose: "test".into(),
            tier: Tier::Pseudonymised,
            generation: 0,
            iat: 0,
            exp,
        }
    }

    #[test]
    fn signed_tokens_verify_and_altered_ones_do_not() {
        let key = [7u8; 32];
        let t = sign(&key, &claims(100));
        assert_eq!(verify(&key, &t, 50).ok(), Some(claims(100)));
        assert!(verify(&key, &t, 100).is_err(), "expired at exp");
        assert!(verify(&[8u8; 32], &t, 50).is_err(), "another key");
        // Swap the claims for an administrator's, keeping the signature.
        let mut forged = claims(100);
        forged.role = Role::Admin;
        let body = B64.encode(serde_json::to_vec(&forged).unwrap_or_default());
        let sig = t.rsplit('.').next().unwrap_or_default();
        let tampered = format!("{PREFIX}{body}.{sig}");
        let err = verify(&key, &tampered, 50).expect_err("tampered");
        assert!(err.to_string().contains("signature"), "{err}");
        assert!(verify(&key, "Bearer nonsense", 50).is_err());
    }
}
