//! TLS: "No valid client certificate, no HTTP at all" and authorisation by
//! the SPIFFE identity in the certificate, never by address (SPEC §1, §4).

use super::{ensure, expect_problem, fail, no_answer, ADMIN_EXCHANGES, ENVELOPES, EXCHANGES, INBOX};
use crate::case;
use crate::catalogue::{CheckResult, TestCase};
use crate::client::{Client, ClientError, Identity, TlsSettings, TlsVersions};
use crate::context::Ctx;
use crate::keyset::KEYS_PATH;
use crate::pki::{CaSigner, Names, Validity};
use http::StatusCode;
use serde_json::json;

/// This group's catalogue rows (one per line: the table is the data).
#[rustfmt::skip]
pub fn cases() -> Vec<TestCase> {
    vec![
        case!("TLS-001", Must, "§1", Any, "No client certificate: no HTTP answer at all", no_client_cert),
        case!("TLS-002", Must, "§1", Any, "Client certificate from a foreign CA is refused", foreign_ca),
        case!("TLS-003", Must, "§1", Any, "Expired client certificate from the federation CA is refused", expired_cert),
        case!("TLS-004", Must, "§1", Any, "TLS 1.2 without a client certificate is refused too", tls12_no_cert),
        case!("TLS-005", Must, "§1", Any, "Federation-CA certificate without a SPIFFE role gets no access", no_role),
        case!("TLS-006", Must, "§4", CreditBank, "Credit bank may not post federation envelopes (403 forbidden-role)", bank_on_envelopes),
        case!("TLS-007", Must, "§4", CreditBank, "Credit bank may not use the operator API (403 forbidden-role)", bank_on_admin),
        case!("TLS-008", Must, "§4", Peer, "Peer gateway may not submit exchanges (403 forbidden-role)", peer_on_exchanges),
        case!("TLS-009", Must, "§4", Peer, "Peer gateway may not read the inbox (403 forbidden-role)", peer_on_inbox),
        case!("TLS-010", Must, "§1", Destination, "Another member's credit bank may not submit here (403 forbidden-role)", foreign_bank),
        case!("TLS-011", Should, "§4", Any, "TLS 1.3 is negotiated when offered", tls13),
        case!("TLS-012", Must, "§4", Any, "HTTP/1.1 over mTLS serves the key set", http1),
        case!("TLS-013", Must, "§4", Any, "HTTP/2 (ALPN h2) over mTLS serves the key set", http2),
        case!("TLS-014", Must, "§4", Operator, "Operator may not submit exchanges (403 forbidden-role)", operator_on_exchanges),
    ]
}

/// Passes if the target accepts the TCP connection and then answers no
/// HTTP at all (handshake failure, alert, reset). An unreachable target and
/// a hang are failures, so a dead target cannot pass a refusal test.
async fn refused(client: &Client) -> CheckResult {
    match client.get(KEYS_PATH).await {
        Ok(resp) => Err(fail(format!(
            "target answered HTTP {} to a client it must refuse at the TLS layer",
            resp.status
        ))),
        Err(e @ (ClientError::Timeout(_) | ClientError::Connect { .. })) => {
            Err(fail(format!("target neither refused nor answered: {e}")))
        }
        Err(_) => Ok(()),
    }
}

fn settings(ctx: &Ctx, identity: Option<Identity>) -> TlsSettings {
    TlsSettings::new(ctx.roots(), identity)
}

async fn no_client_cert(ctx: &Ctx) -> CheckResult {
    refused(ctx.anonymous()).await
}

async fn foreign_ca(ctx: &Ctx) -> CheckResult {
    let rogue = CaSigner::generate("rogue federation CA").map_err(fail)?;
    let id = rogue
        .issue(&Names::spiffe(&ctx.member, "credit-bank"), Validity::Current)
        .map_err(fail)?;
    refused(&ctx.client_with(&settings(ctx, Some(id)))?).await
}

async fn expired_cert(ctx: &Ctx) -> CheckResult {
    let id = ctx
        .ca()?
        .issue(&Names::spiffe(&ctx.member, "credit-bank"), Validity::Expired)
        .map_err(fail)?;
    refused(&ctx.client_with(&settings(ctx, Some(id)))?).await
}

async fn tls12_no_cert(ctx: &Ctx) -> CheckResult {
    let mut s = settings(ctx, None);
    s.versions = TlsVersions::Tls12Only;
    refused(&ctx.client_with(&s)?).await
}

async fn no_role(ctx: &Ctx) -> CheckResult {
    let names = Names {
        dns: vec!["client.invalid".into()],
        ..Names::default()
    };
    let id = ctx.ca()?.issue(&names, Validity::Current).map_err(fail)?;
    let client = ctx.client_with(&settings(ctx, Some(id)))?;
    match client.get(KEYS_PATH).await {
        Ok(resp) => expect_problem(&resp, &["unauthenticated"]),
        Err(e @ (ClientError::Timeout(_) | ClientError::Connect { .. })) => {
            Err(fail(format!("target neither refused nor answered: {e}")))
        }
        Err(_) => Ok(()),
    }
}

/// A well-formed envelope, so that only the caller's role is wrong.
fn plausible_envelope(ctx: &Ctx) -> serde_json::Value {
    json!({
        "exchangeId": uuid::Uuid::new_v4().to_string(),
        "origin": ctx.destination,
        "destination": ctx.member,
        "chain": [],
    })
}

async fn bank_on_envelopes(ctx: &Ctx) -> CheckResult {
    let resp = ctx
        .credit_bank()?
        .post_json(ENVELOPES, &plausible_envelope(ctx))
        .await
        .map_err(no_answer("POST envelopes"))?;
    expect_problem(&resp, &["forbidden-role"])
}

async fn bank_on_admin(ctx: &Ctx) -> CheckResult {
    let resp = ctx
        .credit_bank()?
        .get(ADMIN_EXCHANGES)
        .await
        .map_err(no_answer("GET admin"))?;
    expect_problem(&resp, &["forbidden-role"])
}

fn submission(ctx: &Ctx) -> serde_json::Value {
    json!({ "credential": "e30.e30.AA", "destination": ctx.destination })
}

async fn peer_on_exchanges(ctx: &Ctx) -> CheckResult {
    let resp = ctx
        .peer()?
        .client
        .post_json(EXCHANGES, &submission(ctx))
        .await
        .map_err(no_answer("POST exchanges"))?;
    expect_problem(&resp, &["forbidden-role"])
}

async fn peer_on_inbox(ctx: &Ctx) -> CheckResult {
    let resp = ctx
        .peer()?
        .client
        .get(INBOX)
        .await
        .map_err(no_answer("GET inbox"))?;
    expect_problem(&resp, &["forbidden-role"])
}

async fn operator_on_exchanges(ctx: &Ctx) -> CheckResult {
    let resp = ctx
        .operator()?
        .post_json(EXCHANGES, &submission(ctx))
        .await
        .map_err(no_answer("POST exchanges"))?;
    expect_problem(&resp, &["forbidden-role"])
}

async fn foreign_bank(ctx: &Ctx) -> CheckResult {
    let dest = ctx.dest()?;
    let client = ctx.client_with(&settings(ctx, Some(dest.identity.clone())))?;
    let resp = client
        .post_json(EXCHANGES, &submission(ctx))
        .await
        .map_err(no_answer("POST exchanges"))?;
    expect_problem(&resp, &["forbidden-role"])
}

async fn tls13(ctx: &Ctx) -> CheckResult {
    let mut s = settings(ctx, Some(ctx.any_identity()?));
    s.versions = TlsVersions::Tls13Only;
    let info = ctx
        .client_with(&s)?
        .handshake()
        .await
        .map_err(no_answer("TLS 1.3 handshake"))?;
    ensure(info.version == Some(rustls::ProtocolVersion::TLSv1_3), || {
        format!("negotiated {:?}", info.version)
    })
}

async fn http1(ctx: &Ctx) -> CheckResult {
    let resp = ctx
        .any_client()?
        .get(KEYS_PATH)
        .await
        .map_err(no_answer("GET keys"))?;
    ensure(resp.status == StatusCode::OK, || {
        format!("GET keys answered {}", resp.status)
    })
}

async fn http2(ctx: &Ctx) -> CheckResult {
    let mut s = settings(ctx, Some(ctx.any_identity()?));
    s.alpn = vec![b"h2".to_vec()];
    let client = ctx.client_with(&s)?;
    let info = client
        .handshake()
        .await
        .map_err(no_answer("TLS handshake with ALPN h2"))?;
    ensure(info.alpn.as_deref() == Some(b"h2"), || {
        format!(
            "ALPN negotiated {:?} instead of h2",
            info.alpn.map(|a| String::from_utf8_lossy(&a).into_owned())
        )
    })?;
    let resp = client
        .send_h2(http::Method::GET, KEYS_PATH)
        .await
        .map_err(no_answer("HTTP/2 GET keys"))?;
    ensure(resp.status == StatusCode::OK, || {
        format!("HTTP/2 GET keys answered {}", resp.status)
    })
}
