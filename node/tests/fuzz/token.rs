//! Target `token`: bearer tokens as a caller can alter them. A token signed by the cluster is
//! edited (characters flipped, inserted, deleted, cut, its parts swapped or replaced) or signed
//! with another key; verification must never panic, never accept an expired token, and accept an
//! altered one only if it still says exactly what was signed (so no edit forges a claim).

use crate::engine::{self, Budget, Report};
use proptest::prelude::*;
use proptest::sample::Index;
use sus_node::access::token::{Claims, claimed_role, sign, verify};
use sus_node::access::{Role, Tier};

const NOW: i64 = 1_796_601_600;

#[derive(Debug, Clone)]
enum Edit {
    Set(Index, char),
    Insert(Index, char),
    Delete(Index),
    Truncate(Index),
    SwapParts,
    /// One part (prefix, claims, signature) replaced.
    Replace(Index, String),
}

#[derive(Debug, Clone)]
struct Case {
    claims: Claims,
    key: Vec<u8>,
    /// Signed with this key instead, when set.
    signer: Option<Vec<u8>>,
    edits: Vec<Edit>,
}

fn claims() -> impl Strategy<Value = Claims> {
    (
        ("\\PC{0,16}", any::<Index>(), "[A-Z0-9]{0,5}", "\\PC{0,16}"),
        (any::<Index>(), any::<u64>(), -10i64..10, -100i64..100_000),
    )
        .prop_map(
            |((sub, role, org, purpose), (tier, generation, iat, exp))| Claims {
                sub,
                role: Role::USER_ROLES[role.index(Role::USER_ROLES.len())],
                org,
                purpose,
                tier: [Tier::Identifiable, Tier::Pseudonymised, Tier::Anonymised][tier.index(3)],
                generation,
                iat: NOW + iat,
                exp: NOW + exp,
            },
        )
}

fn edit() -> impl Strategy<Value = Edit> {
    let c = prop_oneof![
        prop::sample::select(vec!['.', '=', '+', '/', '-', '_', 'A', 'a', '0', '\0', 'é']),
        any::<char>(),
    ];
    prop_oneof![
        3 => (any::<Index>(), c.clone()).prop_map(|(i, c)| Edit::Set(i, c)),
        2 => (any::<Index>(), c).prop_map(|(i, c)| Edit::Insert(i, c)),
        2 => any::<Index>().prop_map(Edit::Delete),
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => Just(Edit::SwapParts),
        2 => (any::<Index>(), "[A-Za-z0-9_=.-]{0,80}").prop_map(|(i, s)| Edit::Replace(i, s)),
    ]
}

fn apply(token: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    for e in edits {
        let n = chars.len();
        match e {
            Edit::Set(i, c) if n > 0 => chars[i.index(n)] = *c,
            Edit::Insert(i, c) => chars.insert(i.index(n + 1), *c),
            Edit::Delete(i) if n > 0 => {
                chars.remove(i.index(n));
            }
            Edit::Truncate(i) => chars.truncate(i.index(n + 1)),
            Edit::SwapParts | Edit::Replace(..) => {
                let s: String = chars.iter().collect();
                let mut parts: Vec<String> = s.split('.').map(str::to_string).collect();
                if let Edit::Replace(i, with) = e {
                    let at = i.index(parts.len());
                    parts[at] = with.clone();
                } else if parts.len() >= 3 {
                    parts.swap(1, 2);
                }
                chars = parts.join(".").chars().collect();
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

pub fn run(budget: &Budget) -> Report {
    let strategy = (
        claims(),
        prop::collection::vec(any::<u8>(), 1..48),
        prop_oneof![3 => Just(None), 1 => prop::collection::vec(any::<u8>(), 1..48).prop_map(Some)],
        prop::collection::vec(edit(), 0..4),
    )
        .prop_map(|(claims, key, signer, edits)| Case {
            claims,
            key,
            signer,
            edits,
        });
    engine::run("token", budget, strategy, |c, tally| {
        let signed = sign(c.signer.as_ref().unwrap_or(&c.key), &c.claims);
        let token = apply(&signed, &c.edits);
        let _ = claimed_role(&token);
        match verify(&c.key, &token, NOW) {
            Ok(got) => {
                if got != c.claims {
                    return Err(format!(
                        "an altered token verified with other claims: {got:?}"
                    ));
                }
                if c.signer.as_ref().is_some_and(|s| *s != c.key) {
                    return Err("a token signed with another key verified".into());
                }
                if got.exp <= NOW {
                    return Err("an expired token verified".into());
                }
                tally.note(if token == signed {
                    "verified (unaltered)"
                } else {
                    "verified (an edit that changed nothing signed)"
                });
            }
            Err(sus_node::Error::Unauthenticated(m)) => {
                let kind = if m.contains("expired") {
                    "refused: expired"
                } else if m.contains("signature invalid") {
                    "refused: signature"
                } else {
                    "refused: malformed"
                };
                tally.note(kind);
            }
            Err(e) => {
                return Err(format!(
                    "verification failed with a non-authentication error: {e}"
                ));
            }
        }
        Ok(())
    })
}
