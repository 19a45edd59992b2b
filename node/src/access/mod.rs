//! Access control, enforced by the node (domain spec section 8): who the caller is (a bearer
//! token signed by the cluster), what its role and organisation let it read (scope), and how much
//! a read may reveal (tier).
//!
//! ```text
//!  authorization: Bearer sus1.<claims>.<mac> ──► token::verify (cluster key, expiry)
//!      ──► the user in the meta group (exists, not revoked, same generation) ──► Caller
//!  Caller + asked tier ──► Tier (no escalation) ──► Scope (filters every scan ANDs in)
//!      ──► identifiable: rows as stored │ pseudonymised: pseudonym::apply │ anonymised:
//!          finished aggregates only, disclosure::control
//! ```
//!
//! Every key is derived from the cluster secret in the meta group (random at bootstrap, never sent
//! to clients): the token key, and one pseudonym key per recipient organisation.

pub mod disclosure;
pub mod password;
pub mod pseudonym;
pub mod read;
pub mod token;

use crate::model::Dataset;
use crate::query::{Field, Filter, Pred, Value};
use crate::{Error, Result};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sus_proto::v1;

/// What a read may reveal, most revealing first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tier {
    Identifiable,
    Pseudonymised,
    Anonymised,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Identifiable => "identifiable",
            Tier::Pseudonymised => "pseudonymised",
            Tier::Anonymised => "anonymised",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "identifiable" | "clear" => Some(Tier::Identifiable),
            "pseudonymised" | "pseudonymized" => Some(Tier::Pseudonymised),
            "anonymised" | "anonymized" => Some(Tier::Anonymised),
            _ => None,
        }
    }

    /// The wire tier; `None` for unspecified.
    pub fn from_proto(t: i32) -> Result<Option<Tier>> {
        match v1::Tier::try_from(t) {
            Ok(v1::Tier::Unspecified) => Ok(None),
            Ok(v1::Tier::Identifiable) => Ok(Some(Tier::Identifiable)),
            Ok(v1::Tier::Pseudonymised) => Ok(Some(Tier::Pseudonymised)),
            Ok(v1::Tier::Anonymised) => Ok(Some(Tier::Anonymised)),
            Err(_) => Err(Error::InvalidArgument(format!("unknown tier {t}"))),
        }
    }

    pub fn to_proto(self) -> v1::Tier {
        match self {
            Tier::Identifiable => v1::Tier::Identifiable,
            Tier::Pseudonymised => v1::Tier::Pseudonymised,
            Tier::Anonymised => v1::Tier::Anonymised,
        }
    }
}

/// A user's role: what it may do and which rows it may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Operates the cluster (members, shards, freeze points, users) and submits for any sender;
    /// reads nationally at its tier. Every identifiable read is audited like anyone's.
    Admin,
    /// A provider organisation: submits its own files; sees rows where it is `provider_code`.
    Provider,
    /// A commissioner: sees rows where it is `commissioner_code`.
    Commissioner,
    /// A national analyst: sees every row.
    National,
    /// A shared service: sees the rows of the organisations that delegated to it (as provider or
    /// as commissioner).
    Shared,
    /// Reads the audit log only.
    Auditor,
    /// Another node of the cluster (internal calls; never a stored user).
    Node,
}

impl Role {
    pub const USER_ROLES: [Role; 6] = [
        Role::Admin,
        Role::Provider,
        Role::Commissioner,
        Role::National,
        Role::Shared,
        Role::Auditor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Provider => "provider",
            Role::Commissioner => "commissioner",
            Role::National => "national",
            Role::Shared => "shared",
            Role::Auditor => "auditor",
            Role::Node => "node",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::USER_ROLES.into_iter().find(|r| r.name() == s)
    }
}

/// A user as the meta group stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub role: Role,
    pub org: String,
    pub max_tier: Tier,
    #[serde(default)]
    pub delegated: Vec<String>,
    pub password: password::PasswordHash,
    /// Bumped by revocation: tokens name the generation they were issued for.
    pub generation: u64,
    pub revoked: bool,
    pub created: i64,
}

impl User {
    /// Checks a new user's fields (name included) and says what is wrong.
    pub fn check(name: &str, user: &User) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(format!("user {name}: {m}")));
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
        {
            return bad("a user name is 1-64 letters, digits, '.', '_', '-' or '@'".into());
        }
        let needs_org = matches!(
            user.role,
            Role::Provider | Role::Commissioner | Role::Shared
        );
        if needs_org && user.org.is_empty() {
            return bad(format!("role {} needs an organisation", user.role.name()));
        }
        if user.role == Role::Shared && user.delegated.is_empty() {
            return bad("role shared needs the organisations that delegated to it".into());
        }
        if user.role != Role::Shared && !user.delegated.is_empty() {
            return bad("only role shared takes delegated organisations".into());
        }
        if user.role == Role::Node {
            return bad("role node is reserved for the cluster's own nodes".into());
        }
        Ok(())
    }

    pub fn info(&self, name: &str) -> v1::UserInfo {
        v1::UserInfo {
            name: name.to_string(),
            role: self.role.name().to_string(),
            org: self.org.clone(),
            max_tier: self.max_tier.to_proto() as i32,
            delegated: self.delegated.clone(),
            revoked: self.revoked,
            created: self.created,
        }
    }
}

/// The authenticated caller of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub role: Role,
    pub org: String,
    pub purpose: String,
    pub max_tier: Tier,
    pub delegated: Vec<String>,
    /// The call came from a node acting for this caller (it may receive partial states).
    pub via_node: bool,
}

/// Which rows a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    National,
    /// Rows whose provider is one of `providers` or whose commissioner is one of
    /// `commissioners`.
    Orgs {
        providers: Vec<String>,
        commissioners: Vec<String>,
    },
}

impl Caller {
    /// A node of this cluster acting on its own account.
    pub fn node(id: u64) -> Caller {
        Caller {
            user: format!("node-{id}"),
            role: Role::Node,
            org: String::new(),
            purpose: "cluster operation".into(),
            max_tier: Tier::Identifiable,
            delegated: Vec::new(),
            via_node: false,
        }
    }

    fn denied(&self, what: &str) -> Error {
        Error::PermissionDenied(format!(
            "user {} (role {}{}) may not {what}",
            self.user,
            self.role.name(),
            if self.org.is_empty() {
                String::new()
            } else {
                format!(", organisation {}", self.org)
            }
        ))
    }

    /// Cluster administration: members, shards, freeze points, compaction, users.
    pub fn require_admin(&self, what: &str) -> Result<()> {
        match self.role {
            Role::Admin | Role::Node => Ok(()),
            _ => Err(self.denied(what)),
        }
    }

    pub fn require_node(&self, what: &str) -> Result<()> {
        match self.role {
            Role::Node => Ok(()),
            _ => Err(self.denied(what)),
        }
    }

    pub fn require_audit_reader(&self) -> Result<()> {
        match self.role {
            Role::Auditor | Role::Admin | Role::Node => Ok(()),
            _ => Err(self.denied("read the audit log (roles auditor and admin)")),
        }
    }

    /// Whether the caller may submit a file for `sender`.
    pub fn require_submit(&self, sender: &str) -> Result<()> {
        match self.role {
            Role::Admin | Role::Node => Ok(()),
            Role::Provider if self.org == sender => Ok(()),
            Role::Provider => Err(self.denied(&format!(
                "submit for sender {sender}: a provider submits only its own files"
            ))),
            _ => Err(self.denied("submit data (roles provider and admin)")),
        }
    }

    /// The tier a read runs at: the one asked for (default: the caller's highest), never more
    /// revealing than the caller's.
    pub fn tier(&self, asked: Option<Tier>) -> Result<Tier> {
        let tier = asked.unwrap_or(self.max_tier);
        if tier < self.max_tier {
            return Err(self.denied(&format!(
                "read at tier {}: its highest tier is {}",
                tier.name(),
                self.max_tier.name()
            )));
        }
        Ok(tier)
    }

    /// The rows the caller may see.
    pub fn scope(&self) -> Result<Scope> {
        let one = |v: &String| vec![v.clone()];
        match self.role {
            Role::Admin | Role::National | Role::Node => Ok(Scope::National),
            Role::Provider => Ok(Scope::Orgs {
                providers: one(&self.org),
                commissioners: Vec::new(),
            }),
            Role::Commissioner => Ok(Scope::Orgs {
                providers: Vec::new(),
                commissioners: one(&self.org),
            }),
            Role::Shared => Ok(Scope::Orgs {
                providers: self.delegated.clone(),
                commissioners: self.delegated.clone(),
            }),
            Role::Auditor => {
                Err(self.denied("read activity data (role auditor reads the audit log)"))
            }
        }
    }
}

impl Scope {
    pub fn is_national(&self) -> bool {
        matches!(self, Scope::National)
    }

    /// The scope as filters of which a row must pass at least one (empty: every row).
    pub fn filters(&self, dataset: Dataset) -> Result<Vec<Filter>> {
        let Scope::Orgs {
            providers,
            commissioners,
        } = self
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (column, codes) in [
            ("provider_code", providers),
            ("commissioner_code", commissioners),
        ] {
            if codes.is_empty() {
                continue;
            }
            out.push(Filter {
                name: column.to_string(),
                field: Field::resolve(dataset, column)?,
                pred: Pred::In(codes.iter().map(|c| Value::Text(c.clone())).collect()),
            });
        }
        Ok(out)
    }

    /// Refuses a query that names only providers outside a provider-only scope: asking for
    /// another provider's rows is an error, not an empty answer.
    pub fn check_filters(&self, caller: &Caller, filters: &[Filter]) -> Result<()> {
        let Scope::Orgs {
            providers,
            commissioners,
        } = self
        else {
            return Ok(());
        };
        if !commissioners.is_empty() {
            return Ok(());
        }
        for f in filters.iter().filter(|f| f.name == "provider_code") {
            if let Pred::In(values) = &f.pred {
                let outside: Vec<String> = values
                    .iter()
                    .filter_map(|v| match v {
                        Value::Text(t) if !providers.contains(t) => Some(t.clone()),
                        _ => None,
                    })
                    .collect();
                if !outside.is_empty() {
                    return Err(caller.denied(&format!(
                        "read the rows of provider(s) {}: its scope is provider {}",
                        outside.join(", "),
                        providers.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        match self {
            Scope::National => "national".into(),
            Scope::Orgs {
                providers,
                commissioners,
            } => {
                let mut parts = Vec::new();
                if !providers.is_empty() {
                    parts.push(format!("provider_code in {}", providers.join("|")));
                }
                if !commissioners.is_empty() {
                    parts.push(format!("commissioner_code in {}", commissioners.join("|")));
                }
                parts.join(" or ")
            }
        }
    }
}

/// Fields that identify a patient or a record (each has a [`pseudonym::rule`]): below the
/// identifiable tier they may not be filtered on (a filter would test the raw value: a filter on
/// an NHS number reveals its presence, a range on a record key finds it by bisection).
pub const IDENTIFIERS: [&str; 6] = [
    "nhs_number",
    "local_patient_id",
    "cds_unique_id",
    "hospital_provider_spell_number",
    "date_of_birth",
    "postcode",
];

/// Refuses filters on identifiers below the identifiable tier, and group-by on them at the
/// anonymised tier. At the pseudonymised tier a group-by on an identifier is allowed: its keys
/// leave the node transformed like the rows ([`pseudonym::partial`]).
pub fn check_identifiers<'a>(
    tier: Tier,
    filters: impl IntoIterator<Item = &'a str>,
    group_by: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    if tier == Tier::Identifiable {
        return Ok(());
    }
    let refuse = |f: &str, what: &str| {
        Err(Error::PermissionDenied(format!(
            "{f} identifies a patient or a record: {what} it needs the identifiable tier (this \
             read is {})",
            tier.name()
        )))
    };
    for f in filters {
        if IDENTIFIERS.contains(&f) {
            return refuse(f, "filtering on it tests raw values, so filtering on");
        }
    }
    if tier == Tier::Anonymised {
        for f in group_by {
            if IDENTIFIERS.contains(&f) {
                return refuse(f, "grouping by");
            }
        }
    }
    Ok(())
}

/// The keys derived from the cluster secret.
#[derive(Clone)]
pub struct Keys {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    pub fn new(secret: &[u8]) -> Keys {
        Keys {
            secret: secret.to_vec(),
        }
    }

    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(label);
        mac.finalize().into_bytes().into()
    }

    /// Signs and verifies tokens.
    pub fn token_key(&self) -> [u8; 32] {
        self.derive(b"sus token key v1")
    }

    /// The pseudonym key of one recipient organisation (users of the same organisation link the
    /// same patient; two organisations cannot).
    pub fn pseudonym_key(&self, org: &str) -> [u8; 32] {
        let mut label = b"sus pseudonym key v1:".to_vec();
        label.extend_from_slice(org.as_bytes());
        self.derive(&label)
    }

    /// The key of the distinct-patient digests in partial aggregates read by `org` at `tier`:
    /// digests leave the node in partial states, so they are keyed per recipient and per tier
    /// (never cluster-wide), or a user who can read some patients' identifiers would match
    /// their digests against other organisations' partials.
    pub fn distinct_key(&self, org: &str, tier: Tier) -> [u8; 16] {
        let mut label = format!("sus distinct-patient key v1:{}:", tier.name()).into_bytes();
        label.extend_from_slice(org.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&self.derive(&label)[..16]);
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, org: &str, max_tier: Tier) -> Caller {
        Caller {
            user: "u".into(),
            role,
            org: org.into(),
            purpose: String::new(),
            max_tier,
            delegated: Vec::new(),
            via_node: false,
        }
    }

    #[test]
    fn tiers_never_escalate() {
        let c = caller(Role::Commissioner, "15F", Tier::Pseudonymised);
        assert_eq!(c.tier(None).ok(), Some(Tier::Pseudonymised));
        assert_eq!(c.tier(Some(Tier::Anonymised)).ok(), Some(Tier::Anonymised));
        assert!(matches!(
            c.tier(Some(Tier::Identifiable)),
            Err(Error::PermissionDenied(_))
        ));
    }

    #[test]
    fn a_provider_naming_another_provider_is_refused() {
        let c = caller(Role::Provider, "RRV", Tier::Identifiable);
        let scope = c.scope().expect("provider scope");
        let f = |code: &str| Filter {
            name: "provider_code".into(),
            field: Field::resolve(Dataset::Apc, "provider_code").expect("field"),
            pred: Pred::In(vec![Value::Text(code.into())]),
        };
        assert!(scope.check_filters(&c, &[f("RRV")]).is_ok());
        let err = scope.check_filters(&c, &[f("RJ1")]).expect_err("refused");
        assert!(err.to_string().contains("RJ1"), "{err}");
        assert!(caller(Role::Auditor, "", Tier::Anonymised).scope().is_err());
    }

    #[test]
    fn pseudonym_keys_differ_by_organisation() {
        let k = Keys::new(b"secret");
        assert_ne!(k.pseudonym_key("RRV"), k.pseudonym_key("15F"));
        assert_ne!(k.token_key(), k.pseudonym_key(""));
    }

    #[test]
    fn distinct_keys_differ_by_organisation_and_tier() {
        let k = Keys::new(b"secret");
        let p = Tier::Pseudonymised;
        assert_eq!(k.distinct_key("RRV", p), k.distinct_key("RRV", p));
        assert_ne!(k.distinct_key("RRV", p), k.distinct_key("15F", p));
        assert_ne!(
            k.distinct_key("RRV", p),
            k.distinct_key("RRV", Tier::Identifiable)
        );
        // Never the raw secret (the old cluster-wide key was its first 16 bytes).
        assert_ne!(&k.distinct_key("", p)[..6], b"secret");
    }

    #[test]
    fn identifiers_are_never_filtered_below_the_identifiable_tier() {
        for f in IDENTIFIERS {
            assert!(check_identifiers(Tier::Identifiable, [f], [f]).is_ok());
            for tier in [Tier::Pseudonymised, Tier::Anonymised] {
                let e = check_identifiers(tier, [f], []).expect_err("refused");
                assert!(e.to_string().contains(f), "{e}");
            }
            assert!(check_identifiers(Tier::Pseudonymised, [], [f]).is_ok());
            assert!(check_identifiers(Tier::Anonymised, [], [f]).is_err());
        }
        for f in IDENTIFIERS {
            assert!(
                pseudonym::rule(f).is_some(),
                "{f} has no pseudonymisation rule"
            );
        }
    }
}
