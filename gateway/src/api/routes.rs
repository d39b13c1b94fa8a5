//! The route table of SPEC §4, as data.
//!
//! The router, the authorisation check, the metrics labels and the OpenAPI
//! completeness test all read [`ROUTES`], so a route cannot exist in one of
//! them and be missing from another.

use crate::wire;
use http::Method;

/// Who may call a route. Decided from the caller's [`ClientIdentity`]
/// (certificate), never from its address.
///
/// [`ClientIdentity`]: crate::transport::ClientIdentity
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The credit bank of this gateway's own member.
    OwnCreditBank,
    /// The gateway of any other member.
    PeerGateway,
    /// An operator of this gateway's own member.
    OwnOperator,
    /// Any identity the CA vouches for (health, key set).
    Authenticated,
}

/// Which operation a route performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Submit,
    ExchangeStatus,
    Inbox,
    InboxAck,
    ReceiveEnvelope,
    KeySet,
    AuditCheckpoint,
    AdminExchanges,
    AdminRetry,
    AdminRedeliver,
    AdminTrustRefresh,
    Healthz,
    Readyz,
}

/// One row of the route table. `path` segments written `{name}` match any
/// single non-empty segment.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub handler: Handler,
}

const fn route(method: Method, path: &'static str, access: Access, handler: Handler) -> Route {
    Route {
        method,
        path,
        access,
        handler,
    }
}

/// Every route of the mTLS API listener.
pub static ROUTES: &[Route] = &[
    route(
        Method::POST,
        "/v1/exchanges",
        Access::OwnCreditBank,
        Handler::Submit,
    ),
    route(
        Method::GET,
        "/v1/exchanges/{id}",
        Access::OwnCreditBank,
        Handler::ExchangeStatus,
    ),
    route(Method::GET, "/v1/inbox", Access::OwnCreditBank, Handler::Inbox),
    route(
        Method::POST,
        "/v1/inbox/ack",
        Access::OwnCreditBank,
        Handler::InboxAck,
    ),
    route(
        Method::POST,
        wire::ENVELOPES_PATH,
        Access::PeerGateway,
        Handler::ReceiveEnvelope,
    ),
    route(
        Method::GET,
        wire::KEYS_PATH,
        Access::Authenticated,
        Handler::KeySet,
    ),
    route(
        Method::GET,
        wire::CHECKPOINT_PATH,
        Access::Authenticated,
        Handler::AuditCheckpoint,
    ),
    route(
        Method::GET,
        "/v1/admin/exchanges",
        Access::OwnOperator,
        Handler::AdminExchanges,
    ),
    route(
        Method::POST,
        "/v1/admin/exchanges/{id}/retry",
        Access::OwnOperator,
        Handler::AdminRetry,
    ),
    route(
        Method::POST,
        "/v1/admin/redeliver",
        Access::OwnOperator,
        Handler::AdminRedeliver,
    ),
    route(
        Method::POST,
        "/v1/admin/trust/refresh",
        Access::OwnOperator,
        Handler::AdminTrustRefresh,
    ),
    route(Method::GET, "/healthz", Access::Authenticated, Handler::Healthz),
    route(Method::GET, "/readyz", Access::Authenticated, Handler::Readyz),
];

/// Result of looking a request up in the table.
#[derive(Debug)]
pub enum Lookup<'p> {
    /// The route and the value of its `{…}` segment, if it has one.
    Found(&'static Route, Option<&'p str>),
    /// The path exists but not with this method; the allowed methods.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

/// Finds the route for `method` and `path` (the path without query).
pub fn lookup<'p>(method: &Method, path: &'p str) -> Lookup<'p> {
    let mut allowed = Vec::new();
    for route in ROUTES {
        if let Some(param) = match_path(route.path, path) {
            if route.method == *method {
                return Lookup::Found(route, param);
            }
            allowed.push(route.method.clone());
        }
    }
    if allowed.is_empty() {
        Lookup::NotFound
    } else {
        Lookup::MethodNotAllowed(allowed)
    }
}

/// `Some(param)` if `path` matches `pattern`; `param` is the `{…}` segment.
fn match_path<'p>(pattern: &str, path: &'p str) -> Option<Option<&'p str>> {
    let mut param = None;
    let mut pat = pattern.split('/');
    let mut segs = path.split('/');
    loop {
        match (pat.next(), segs.next()) {
            (None, None) => return Some(param),
            (Some(p), Some(s)) if p.starts_with('{') && p.ends_with('}') && !s.is_empty() => param = Some(s),
            (Some(p), Some(s)) if p == s => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_matches_patterns_and_methods() {
        match lookup(&Method::GET, "/v1/exchanges/ex-1") {
            Lookup::Found(r, Some("ex-1")) => assert_eq!(r.handler, Handler::ExchangeStatus),
            other => panic!("{other:?}"),
        }
        match lookup(&Method::POST, "/v1/admin/exchanges/x/retry") {
            Lookup::Found(r, Some("x")) => assert_eq!(r.handler, Handler::AdminRetry),
            other => panic!("{other:?}"),
        }
        assert!(matches!(lookup(&Method::GET, "/v1/exchanges/"), Lookup::NotFound));
        assert!(matches!(
            lookup(&Method::GET, "/v1/exchanges/a/b"),
            Lookup::NotFound
        ));
        assert!(matches!(
            lookup(&Method::GET, "/v1/exchanges//"),
            Lookup::NotFound
        ));
        assert!(matches!(lookup(&Method::GET, "/nope"), Lookup::NotFound));
        match lookup(&Method::DELETE, "/v1/exchanges") {
            Lookup::MethodNotAllowed(m) => assert_eq!(m, vec![Method::POST]),
            other => panic!("{other:?}"),
        }
    }
}
