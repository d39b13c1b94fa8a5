//! Before any test: is the target (and the destination) reachable, does
//! its certificate chain to `--ca`, is it the gateway of `--member`, and
//! does it answer an authenticated `/healthz`? A wrong `--ca` or URL would
//! otherwise make the refusal tests pass for the wrong reason and every
//! other test fail with a misleading error; the preflight names the one
//! root cause and the run stops.

use crate::client::{Client, ClientError};
use crate::context::Ctx;
use http::StatusCode;

/// The first thing found wrong, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {cause}")]
pub struct PreflightError {
    /// `target` or `destination`, with its URL.
    pub what: String,
    pub cause: String,
}

/// Checks the target, then the destination if one is configured.
pub async fn check(ctx: &Ctx) -> Result<(), PreflightError> {
    // With no client identity at all (a TLS-only run) the server can only
    // be checked up to its certificate.
    let (target, identified) = match ctx.any_client().or_else(|_| ctx.operator()) {
        Ok(client) => (client, true),
        Err(_) => (ctx.anonymous(), false),
    };
    endpoint(
        &format!("target {}", target.target().url()),
        target,
        &ctx.member,
        identified,
    )
    .await?;
    if let Ok(dest) = ctx.dest() {
        endpoint(
            &format!("destination {}", dest.client.target().url()),
            &dest.client,
            &ctx.destination,
            true,
        )
        .await?;
    }
    Ok(())
}

async fn endpoint(what: &str, client: &Client, member: &str, identified: bool) -> Result<(), PreflightError> {
    let ca_flag = "--ca";
    let fail = |cause: String| PreflightError {
        what: what.to_owned(),
        cause,
    };
    let certs = match client.server_certificates().await {
        Ok(certs) => certs,
        // Without a client certificate the server may end the handshake
        // with an alert; the client had already accepted the server's
        // certificate by then, which is all that can be checked.
        Err(ClientError::Handshake(io)) if !identified && is_alert(&io) => return Ok(()),
        Err(e) => return Err(fail(explain(&e, client, ca_flag))),
    };
    let want = format!(
        "spiffe://{}/{member}/gateway",
        bashu_gateway::transport::TRUST_DOMAIN
    );
    let leaf = certs.first().map(|c| c.as_ref()).unwrap_or_default();
    if !contains(leaf, want.as_bytes()) {
        return Err(fail(format!(
            "the server certificate chains to {ca_flag} but is not the {member} gateway (no URI SAN {want}); wrong URL or --member?"
        )));
    }
    if !identified {
        return Ok(());
    }
    let resp = client
        .get("/healthz")
        .await
        .map_err(|e| fail(format!("GET /healthz failed after a good handshake: {e}")))?;
    match resp.status {
        StatusCode::OK => Ok(()),
        StatusCode::UNAUTHORIZED => Err(fail(
            "our client certificate is trusted but carries no bashu identity (401 on /healthz); check --cert"
                .into(),
        )),
        other => Err(fail(format!("GET /healthz answered {other}, not 200"))),
    }
}

/// Turns a connection or handshake error into its likely root cause.
fn explain(e: &ClientError, client: &Client, ca_flag: &str) -> String {
    match e {
        ClientError::Connect { addr, source } => format!("not reachable at {addr}: {source}"),
        ClientError::Timeout(after) => {
            format!("no TLS handshake within {after:?} (wrong port, or a firewall?)")
        }
        ClientError::Handshake(io) => {
            let tls = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            match tls {
                Some(rustls::Error::InvalidCertificate(cert)) => match cert {
                    rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature => {
                        format!(
                            "the server certificate does not chain to {ca_flag} ({cert:?}); wrong {ca_flag}?"
                        )
                    }
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. } => format!(
                        "the server certificate is not valid for {:?}; pass --server-name",
                        client.server_name()
                    ),
                    rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => {
                        "the server certificate has expired".into()
                    }
                    other => format!("the server certificate is refused: {other:?}"),
                },
                Some(rustls::Error::AlertReceived(alert)) => {
                    format!("the server refused the handshake ({alert:?}): is our client certificate from its CA?")
                }
                Some(other) => format!("TLS handshake failed: {other}"),
                None => format!("TLS handshake failed: {io}"),
            }
        }
        other => other.to_string(),
    }
}

fn is_alert(io: &std::io::Error) -> bool {
    matches!(
        io.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::AlertReceived(_))
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
