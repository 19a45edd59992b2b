//! Who a certificate names: the URIs that tell a node's certificate from an operator's.
//!
//! Every node certificate carries its node id as the subject alternative name
//! `sus://node/<id>` (decimal, no sign or leading zero, id 1 or more), and exactly one such name.
//! Operator (client) certificates carry `sus://operator` and no node name. The node parses the
//! certificate itself (`sus_node::cluster::pki`); this module only holds the names, so that the
//! certificate maker (`sus certs`) and the node cannot disagree on them.

/// The prefix of a node's URI; the node id follows.
pub const NODE_URI_PREFIX: &str = "sus://node/";

/// The URI of an operator's client certificate (never accepted as a node).
pub const OPERATOR_URI: &str = "sus://operator";

/// The URI naming node `id`.
pub fn node_uri(id: u64) -> String {
    format!("{NODE_URI_PREFIX}{id}")
}

/// What one URI of a certificate says: `None` if it is not a node URI (does not start with
/// `sus://node/`), else the node id or why the URI is malformed.
pub fn parse_node_uri(uri: &str) -> Option<Result<u64, String>> {
    // URI schemes are case-insensitive: `SUS://NODE/1` must not slip past as "not a node URI".
    let prefix = uri.get(..NODE_URI_PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(NODE_URI_PREFIX) {
        return None;
    }
    let id = &uri[NODE_URI_PREFIX.len()..];
    let canonical = !id.is_empty()
        && id.len() <= 20
        && id.bytes().all(|b| b.is_ascii_digit())
        && !id.starts_with('0');
    if !canonical {
        return Some(Err(format!(
            "malformed node URI '{}': expected {NODE_URI_PREFIX}<id>, the id a decimal number \
             of 1 or more without leading zeros",
            uri.escape_default()
        )));
    }
    Some(
        id.parse::<u64>()
            .map_err(|_| format!("node URI '{uri}': the id is out of range")),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn node_uris_round_trip_and_malformed_ones_are_refused() {
        assert_eq!(parse_node_uri(&node_uri(7)), Some(Ok(7)));
        assert_eq!(
            parse_node_uri("sus://node/18446744073709551615"),
            Some(Ok(u64::MAX))
        );
        assert_eq!(parse_node_uri(OPERATOR_URI), None);
        assert_eq!(parse_node_uri("https://node/1"), None);
        assert_eq!(parse_node_uri("sus://nod"), None);
        for bad in [
            "sus://node/",
            "sus://node/0",
            "sus://node/01",
            "sus://node/+1",
            "sus://node/-1",
            "sus://node/1/",
            "sus://node/1?x",
            "sus://node/ 1",
            "sus://node/abc",
            "sus://node/18446744073709551616",
            "SUS://NODE/x",
        ] {
            assert!(
                matches!(parse_node_uri(bad), Some(Err(_))),
                "{bad} must be refused"
            );
        }
        assert_eq!(parse_node_uri("SUS://Node/3"), Some(Ok(3)));
    }
}
