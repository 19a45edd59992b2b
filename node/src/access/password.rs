//! Password hashes: PBKDF2-HMAC-SHA-256 with a random salt per user.

use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::sync::LazyLock;

/// Work factor of new hashes (about 0.1 s per login on one core).
pub const ITERATIONS: u32 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordHash {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub hash: Vec<u8>,
}

impl PasswordHash {
    /// Hashes `password` under a fresh random salt.
    pub fn new(password: &str) -> PasswordHash {
        let salt: [u8; 16] = rand::random();
        PasswordHash {
            salt: salt.to_vec(),
            iterations: ITERATIONS,
            hash: derive(password, &salt, ITERATIONS).to_vec(),
        }
    }

    /// Whether `password` matches (in constant time).
    pub fn verify(&self, password: &str) -> bool {
        let got = derive(password, &self.salt, self.iterations);
        got.len() == self.hash.len()
            && got
                .iter()
                .zip(&self.hash)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

fn derive(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations)
}

/// Refuses passwords too weak to keep patient data behind.
pub fn check_strength(password: &str) -> crate::Result<()> {
    if password.chars().count() < 12 {
        return Err(crate::Error::InvalidArgument(
            "a password needs at least 12 characters".into(),
        ));
    }
    Ok(())
}

/// What a login for a name that is no user is checked against: the same work as a real user's
/// hash (a random password nobody knows, under the current work factor).
static NO_USER: LazyLock<PasswordHash> = LazyLock::new(|| {
    let password: [u8; 32] = rand::random();
    PasswordHash::new(&hex::encode(password))
});

/// Computes the hash unknown names are checked against, so that the first such login does not
/// take twice as long as the others (call once at start, off the async runtime).
pub fn prepare_unknown_user_hash() {
    LazyLock::force(&NO_USER);
}

/// The hash a login for an unknown name is checked against.
pub fn unknown_user_hash() -> PasswordHash {
    NO_USER.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_password_verifies() {
        let h = PasswordHash {
            salt: b"salt".to_vec(),
            iterations: 1000,
            hash: derive("correct horse", b"salt", 1000).to_vec(),
        };
        assert!(h.verify("correct horse"));
        assert!(!h.verify("correct horse "));
    }
}
