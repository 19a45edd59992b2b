//! Authentication of every call: the bearer token in the `authorization` header is checked by an
//! interceptor in front of each public service, which leaves the [`Caller`] in the request's
//! extensions; handlers then ask for the permission they need.
//!
//! Nodes call each other with tokens of role `node` that they sign themselves (every node holds
//! the cluster key). With TLS, a node token is accepted only over a connection presenting the
//! certificate of that same node, and only from a current member ([`super::pki::NodeGate`]): the
//! key alone (say, from a stolen backup) does not make a node. A node acting for a client on
//! another node (the coordinator of a finished aggregate) sends its own token and the client's in
//! `x-sus-on-behalf`; the callee checks both, and refuses the header with any other token. A call
//! forwarded to a leader carries the client's own token unchanged (a node's own token is never
//! passed on: the forwarding node signs with its own).

use super::meta::MetaState;
use super::pki::NodeGate;
use crate::access::{Caller, Keys, Role, token};
use crate::{Error, Result};
use std::sync::{Arc, Mutex};
use sus_raft::NodeId;
use tokio::sync::watch;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The header a coordinating node uses to name the client it acts for.
pub const ON_BEHALF: &str = "x-sus-on-behalf";

/// Lifetime of the tokens nodes sign for their own calls.
const NODE_TOKEN_SECS: i64 = 300;

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The bearer token of a request, if any.
pub fn bearer(metadata: &MetadataMap) -> Result<Option<&str>> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthenticated("the authorization header is not text".into()))?;
    // Basic credentials belong to the Flight handshake, which checks them itself.
    if value.starts_with("Basic ") || value.starts_with("basic ") {
        return Ok(None);
    }
    match value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    {
        Some(t) => Ok(Some(t.trim())),
        None => Err(Error::Unauthenticated(
            "the authorization header must be `Bearer <token>` (or Basic, for the Flight \
             handshake)"
                .into(),
        )),
    }
}

/// Verifies a user's token against the users of the meta group.
pub fn verify_user(state: &MetaState, token: &str, now: i64) -> Result<Caller> {
    let claims = token::verify(&keys(state)?.token_key(), token, now)?;
    user_caller(state, claims)
}

/// The caller a verified user token stands for, as the meta group knows the user now.
fn user_caller(state: &MetaState, claims: token::Claims) -> Result<Caller> {
    if claims.role == Role::Node {
        return Err(Error::Unauthenticated(
            "a node token cannot stand for a user".into(),
        ));
    }
    let user = state
        .users
        .get(&claims.sub)
        .ok_or_else(|| Error::Unauthenticated(format!("user {} does not exist", claims.sub)))?;
    if user.revoked {
        return Err(Error::Unauthenticated(format!(
            "user {} has been revoked",
            claims.sub
        )));
    }
    if user.generation != claims.generation {
        return Err(Error::Unauthenticated(format!(
            "this token of user {} was revoked; log in again",
            claims.sub
        )));
    }
    Ok(Caller {
        user: claims.sub,
        role: user.role,
        org: user.org.clone(),
        purpose: claims.purpose,
        max_tier: user.max_tier,
        delegated: user.delegated.clone(),
        via_node: false,
    })
}

fn keys(state: &MetaState) -> Result<Keys> {
    if state.secret.is_empty() {
        return Err(Error::Unauthenticated(
            "this node has not joined a bootstrapped cluster yet: no token can be checked".into(),
        ));
    }
    Ok(Keys::new(&state.secret))
}

/// The node id a node token names (`node-<id>`).
fn token_node(sub: &str) -> Result<NodeId> {
    sub.strip_prefix("node-")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| Error::Unauthenticated(format!("malformed node token subject '{sub}'")))
}

/// The caller of a request's metadata (`None` when it carries no token), and the node whose
/// token it carries, if a node's: the caller of [`authenticate`] must check that the connection
/// is that node's ([`NodeGate::check_node_token`]).
pub fn authenticate(
    state: &MetaState,
    metadata: &MetadataMap,
    now: i64,
) -> Result<Option<(Caller, Option<NodeId>)>> {
    let Some(token) = bearer(metadata)? else {
        if metadata.get(ON_BEHALF).is_some() {
            return Err(on_behalf_refused());
        }
        return Ok(None);
    };
    let claims = token::verify(&keys(state)?.token_key(), token, now)?;
    if claims.role != Role::Node {
        if metadata.get(ON_BEHALF).is_some() {
            return Err(on_behalf_refused());
        }
        return user_caller(state, claims).map(|c| Some((c, None)));
    }
    let node = token_node(&claims.sub)?;
    let Some(client) = metadata.get(ON_BEHALF) else {
        return Ok(Some((
            Caller {
                user: claims.sub,
                ..Caller::node(0)
            },
            Some(node),
        )));
    };
    let client = client
        .to_str()
        .map_err(|_| Error::Unauthenticated(format!("{ON_BEHALF} is not text")))?;
    let mut caller = verify_user(state, client, now)?;
    caller.via_node = true;
    Ok(Some((caller, Some(node))))
}

fn on_behalf_refused() -> Error {
    Error::PermissionDenied(format!(
        "{ON_BEHALF} is sent only by a node of the cluster, with its own token over its own \
         certificate"
    ))
}

/// The server-side interceptor: rejects bad tokens (and node tokens not over their node's
/// certificate), records the caller of good ones.
#[derive(Clone)]
pub struct Authenticator {
    gate: NodeGate,
}

impl Authenticator {
    pub fn new(gate: NodeGate) -> Authenticator {
        Authenticator { gate }
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> std::result::Result<Request<()>, Status> {
        let caller = {
            let state = self.gate.state();
            authenticate(&state, request.metadata(), now()).map_err(crate::error::status)?
        };
        if let Some((caller, node)) = caller {
            if let Some(node) = node {
                let certs = request.peer_certs();
                self.gate
                    .check_node_token(certs.as_deref().map(Vec::as_slice), node)?;
            }
            request.extensions_mut().insert(caller);
        }
        Ok(request)
    }
}

/// The authenticated caller of a request, or `UNAUTHENTICATED`.
pub fn caller<T>(request: &Request<T>) -> std::result::Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            Status::unauthenticated(
                "no bearer token: log in (`sus login`) and send `authorization: Bearer <token>`",
            )
        })
}

/// A new request carrying the same credentials and trace as `from` (a call forwarded to a
/// leader). A node's token is not passed on: the forwarding node's channel signs the call with
/// its own (a node token is accepted only over its own node's certificate).
pub fn forward<T>(from: &MetadataMap, message: T) -> Request<T> {
    let mut r = Request::new(message);
    if let Some(v) = from.get("authorization") {
        let node_token = bearer(from)
            .ok()
            .flatten()
            .and_then(token::claimed_role)
            .is_some_and(|role| role == Role::Node);
        if !node_token {
            r.metadata_mut().insert("authorization", v.clone());
        }
    }
    if let Some(v) = from.get(ON_BEHALF) {
        r.metadata_mut().insert(ON_BEHALF, v.clone());
    }
    super::trace::propagate(from, r.metadata_mut());
    r
}

/// The client-side interceptor of node-to-node channels: adds this node's own token to calls
/// that carry no credentials.
#[derive(Clone)]
pub struct NodeAuth {
    id: u64,
    state: watch::Receiver<MetaState>,
    cached: Arc<Mutex<Option<(String, i64)>>>,
}

impl NodeAuth {
    pub fn new(id: u64, state: watch::Receiver<MetaState>) -> NodeAuth {
        NodeAuth {
            id,
            state,
            cached: Arc::default(),
        }
    }

    /// This node's token (renewed a minute before it expires); `None` before bootstrap.
    pub fn token(&self) -> Option<String> {
        let now = now();
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, exp)) = cached.as_ref()
            && *exp - 60 > now
        {
            return Some(t.clone());
        }
        let key = {
            let state = self.state.borrow();
            keys(&state).ok()?.token_key()
        };
        let claims = token::Claims {
            sub: format!("node-{}", self.id),
            role: Role::Node,
            org: String::new(),
            purpose: "cluster operation".into(),
            tier: crate::access::Tier::Identifiable,
            generation: 0,
            iat: now,
            exp: now + NODE_TOKEN_SECS,
        };
        let t = token::sign(&key, &claims);
        *cached = Some((t.clone(), claims.exp));
        Some(t)
    }
}

impl Interceptor for NodeAuth {
    fn call(&mut self, mut request: Request<()>) -> std::result::Result<Request<()>, Status> {
        if request.metadata().get("authorization").is_none()
            && let Some(t) = self.token()
        {
            let v = MetadataValue::try_from(format!("Bearer {t}"))
                .map_err(|e| Status::internal(format!("node token header: {e}")))?;
            request.metadata_mut().insert("authorization", v);
        }
        Ok(request)
    }
}

/// A channel to a peer node that authenticates as this node unless the call carries credentials.
pub type PeerChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, NodeAuth>;

/// A public service behind the [`Authenticator`].
pub type Authenticated<S> = tonic::service::interceptor::InterceptedService<S, Authenticator>;
