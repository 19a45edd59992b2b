//! Users and logins: users live in the meta group; a login checks the password on any node and
//! returns a token signed with the cluster key.
//!
//! Guessing is slowed per user name and per source address ([`super::throttle`]), and a name
//! that is no user costs the same password work as a wrong password (it is checked against a
//! hash of the same cost), so answers and their timing do not tell which names exist.

use super::Cluster;
use super::meta::MetaCommand;
use super::service::Services;
use crate::access::password::{self, PasswordHash, check_strength};
use crate::access::{Keys, Role, Tier, User, token};
use crate::{Error, Result};
use std::net::IpAddr;
use sus_proto::v1::{AddUserRequest, LoginReply, UserInfo};
use tracing::info;

/// The longest user name (`User::check`).
const MAX_NAME_CHARS: usize = 64;

/// Token lifetime when the login names none, and the longest allowed.
pub const DEFAULT_TTL_SECS: u64 = 8 * 3600;
pub const MAX_TTL_SECS: u64 = 7 * 24 * 3600;

/// The tier a new user of `role` gets when none is given.
pub fn default_tier(role: Role) -> Tier {
    match role {
        Role::Admin | Role::Provider | Role::Node => Tier::Identifiable,
        Role::Commissioner | Role::National | Role::Shared => Tier::Pseudonymised,
        Role::Auditor => Tier::Anonymised,
    }
}

impl Services {
    /// On the meta leader: checks and records a new user.
    pub(crate) async fn add_user_here(&self, req: AddUserRequest) -> Result<UserInfo> {
        let info = req
            .user
            .ok_or_else(|| Error::InvalidArgument("add user: no user given".into()))?;
        let role = Role::parse(&info.role).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown role '{}' (admin, provider, commissioner, national, shared, auditor)",
                info.role
            ))
        })?;
        let max_tier = Tier::from_proto(info.max_tier)?.unwrap_or(default_tier(role));
        check_strength(&req.password)
            .map_err(|e| Error::InvalidArgument(format!("user {}: {e}", info.name)))?;
        let password = req.password.clone();
        let password = tokio::task::spawn_blocking(move || PasswordHash::new(&password))
            .await
            .map_err(|e| Error::InvalidArgument(format!("hashing task: {e}")))?;
        let user = User {
            role,
            org: info.org.trim().to_uppercase(),
            max_tier,
            delegated: info
                .delegated
                .iter()
                .map(|d| d.trim().to_uppercase())
                .collect(),
            password,
            generation: 0,
            revoked: false,
            created: chrono::Utc::now().timestamp(),
        };
        User::check(&info.name, &user)?;
        let out = user.info(&info.name);
        self.cluster
            .propose_meta(&MetaCommand::AddUser {
                name: info.name.clone(),
                user,
            })
            .await?;
        info!(user = %info.name, role = role.name(), "user added");
        Ok(out)
    }

    /// Checks a password and issues a token.
    pub(crate) async fn login_here(
        &self,
        name: &str,
        password: &str,
        purpose: &str,
        ttl_secs: u64,
        source: Option<IpAddr>,
    ) -> Result<LoginReply> {
        login(&self.cluster, name, password, purpose, ttl_secs, source).await
    }
}

/// Checks `name`'s password and issues a token for `purpose`; `source` is the caller's address
/// (for the per-source back-off).
pub async fn login(
    cluster: &Cluster,
    name: &str,
    password: &str,
    purpose: &str,
    ttl_secs: u64,
    source: Option<IpAddr>,
) -> Result<LoginReply> {
    // No user name is longer (`User::check`): longer ones are counted and quoted by their start.
    let name = match name.char_indices().nth(MAX_NAME_CHARS) {
        Some((end, _)) => &name[..end],
        None => name,
    };
    let refused = || Error::Unauthenticated(format!("unknown user {name} or wrong password"));
    if purpose.trim().is_empty() {
        return Err(Error::InvalidArgument(
            "a login needs a purpose: why the data is needed (it is recorded with every \
             audited read)"
                .into(),
        ));
    }
    if ttl_secs > MAX_TTL_SECS {
        return Err(Error::InvalidArgument(format!(
            "a token lives at most {MAX_TTL_SECS} s"
        )));
    }
    let attempt = cluster.logins.begin(name, source)?;
    let (user, secret) = {
        let state = cluster.meta_state.borrow();
        (state.users.get(name).cloned(), state.secret.clone())
    };
    // An unknown name does the same work as a wrong password.
    let hash = user
        .as_ref()
        .map_or_else(password::unknown_user_hash, |u| u.password.clone());
    let given = password.to_string();
    let ok = tokio::task::spawn_blocking(move || hash.verify(&given))
        .await
        .map_err(|e| Error::InvalidArgument(format!("password task: {e}")))?;
    let user = match user {
        Some(user) if ok => user,
        _ => {
            info!(user = name, source = ?source, "failed login");
            return Err(refused());
        }
    };
    cluster.logins.succeeded(attempt);
    if user.revoked {
        return Err(Error::Unauthenticated(format!(
            "user {name} has been revoked"
        )));
    }
    let now = super::auth::now();
    let ttl = if ttl_secs == 0 {
        DEFAULT_TTL_SECS
    } else {
        ttl_secs
    };
    let claims = token::Claims {
        sub: name.to_string(),
        role: user.role,
        org: user.org.clone(),
        purpose: purpose.trim().to_string(),
        tier: user.max_tier,
        generation: user.generation,
        iat: now,
        exp: now + ttl as i64,
    };
    let token = token::sign(&Keys::new(&secret).token_key(), &claims);
    info!(user = name, "login");
    Ok(LoginReply {
        token,
        expires: claims.exp,
        user: Some(user.info(name)),
    })
}
