//! A credit bank as the contract sees it: an mTLS client of its own gateway
//! that issues credentials with its private key and uses the SPEC §4 API.

use super::{mtls_client, DevFedError};
use crate::credential::{issue_credential, new_learning_credential, IssuerId};
use crate::devpki::DevMember;
use crate::jose::SigningKey;
use crate::transport::{PeerHttpClient, PeerResponse, Role};
use http::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Status and parsed JSON body of one API call.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: StatusCode,
    pub body: Value,
}

impl HttpAnswer {
    /// The `exchangeId` member of the body (submissions, status documents, problems).
    pub fn exchange_id(&self) -> Option<&str> {
        self.body.get("exchangeId").and_then(Value::as_str)
    }

    fn from_response(r: PeerResponse) -> Self {
        let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        Self {
            status: r.status,
            body,
        }
    }
}

/// One inbox item as a credit bank consumes it.
#[derive(Debug, Clone)]
pub struct InboxEntry {
    pub cursor: u64,
    pub exchange_id: String,
    pub origin: String,
    /// `[original, interchange, home]`; the last link is the home credential.
    pub chain: Vec<String>,
}

impl InboxEntry {
    fn from_json(item: &Value) -> Option<Self> {
        Some(Self {
            cursor: item.get("cursor")?.as_u64()?,
            exchange_id: item.get("exchangeId")?.as_str()?.to_owned(),
            origin: item.get("origin")?.as_str()?.to_owned(),
            chain: item
                .get("chain")?
                .as_array()?
                .iter()
                .map(|l| l.as_str().map(str::to_owned))
                .collect::<Option<_>>()?,
        })
    }
}

/// How often [`CreditBank::wait_for_status`] asks; the API has no push.
const POLL: Duration = Duration::from_millis(20);

pub struct CreditBank {
    pub member: String,
    base: String,
    http: PeerHttpClient,
    issuer_key: SigningKey,
    issuer: IssuerId,
}

impl CreditBank {
    pub fn new(member: &DevMember, ca: &Path) -> Result<Self, DevFedError> {
        let (cert, key) = member.identity(Role::CreditBank);
        let http = mtls_client(ca, cert, key)?;
        let issuer_key = SigningKey::load(&member.issuer_key)
            .map_err(|e| DevFedError::Client(format!("issuer key of {}: {e}", member.id)))?;
        let issuer = IssuerId::credit_bank(&member.id).map_err(|e| DevFedError::Client(e.to_string()))?;
        Ok(Self {
            member: member.id.clone(),
            base: member.url(),
            http,
            issuer_key,
            issuer,
        })
    }

    /// Signs a learning credential for `subject`, valid for a year.
    pub fn issue(&self, subject: Value) -> Result<String, DevFedError> {
        let now = time::OffsetDateTime::now_utc();
        let payload =
            new_learning_credential(&self.issuer, subject, now, Some(now + time::Duration::days(365)));
        issue_credential(&payload, &self.issuer_key).map_err(|e| DevFedError::Client(e.to_string()))
    }

    pub async fn submit(&self, credential: &str, destination: &str) -> Result<HttpAnswer, DevFedError> {
        let body = json!({ "credential": credential, "destination": destination });
        self.post("/v1/exchanges", &body).await
    }

    pub async fn exchange(&self, id: &str) -> Result<HttpAnswer, DevFedError> {
        self.get(&format!("/v1/exchanges/{id}")).await
    }

    pub async fn inbox(&self, after: Option<u64>, limit: u32) -> Result<HttpAnswer, DevFedError> {
        let path = match after {
            Some(a) => format!("/v1/inbox?after={a}&limit={limit}"),
            None => format!("/v1/inbox?limit={limit}"),
        };
        self.get(&path).await
    }

    /// One inbox page as typed entries; an error for any non-200 answer or
    /// an item that does not have the SPEC §4 shape.
    pub async fn inbox_entries(
        &self,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<InboxEntry>, DevFedError> {
        let page = self.inbox(after, limit).await?;
        if page.status != StatusCode::OK {
            return Err(DevFedError::Client(format!(
                "inbox: HTTP {} {}",
                page.status, page.body
            )));
        }
        let items = page
            .body
            .get("items")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        items
            .iter()
            .map(|item| {
                InboxEntry::from_json(item).ok_or_else(|| {
                    DevFedError::Client("inbox item without cursor, exchangeId, origin or chain".into())
                })
            })
            .collect()
    }

    pub async fn ack(&self, up_to: u64) -> Result<HttpAnswer, DevFedError> {
        self.post("/v1/inbox/ack", &json!({ "upTo": up_to })).await
    }

    /// `POST path` with raw bytes as the body (for malformed-input probes).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> Result<HttpAnswer, DevFedError> {
        let r = self
            .http
            .post_raw(&format!("{}{path}", self.base), body.into())
            .await
            .map_err(|e| DevFedError::Client(e.to_string()))?;
        Ok(HttpAnswer::from_response(r))
    }

    /// The compact key-set JWS published at `base_url`.
    pub async fn keyset(&self, base_url: &str) -> Result<String, DevFedError> {
        let r = self
            .http
            .get(&format!("{base_url}/v1/federation/keys"))
            .await
            .map_err(|e| DevFedError::Client(e.to_string()))?;
        if r.status != StatusCode::OK {
            return Err(DevFedError::Client(format!(
                "key set at {base_url}: HTTP {}",
                r.status
            )));
        }
        String::from_utf8(r.body.to_vec()).map_err(|_| DevFedError::Client("key set is not UTF-8".into()))
    }

    /// Polls the exchange until its status is one of `wanted` or `timeout`
    /// passes; returns the last status document either way.
    pub async fn wait_for_status(
        &self,
        id: &str,
        wanted: &[&str],
        timeout: Duration,
    ) -> Result<Value, DevFedError> {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.exchange(id).await?;
            let status = answer
                .body
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if wanted.contains(&status) || Instant::now() >= deadline {
                return Ok(answer.body);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the exchange is settled (delivered, rejected or
    /// dead-lettered) or `timeout` passes; returns its last status.
    pub async fn wait_until_settled(&self, id: &str, timeout: Duration) -> Result<String, DevFedError> {
        let doc = self
            .wait_for_status(id, &["delivered", "rejected", "dead-lettered"], timeout)
            .await?;
        Ok(doc
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned())
    }

    async fn get(&self, path: &str) -> Result<HttpAnswer, DevFedError> {
        let r = self
            .http
            .get(&format!("{}{path}", self.base))
            .await
            .map_err(|e| DevFedError::Client(e.to_string()))?;
        Ok(HttpAnswer::from_response(r))
    }

    async fn post(&self, path: &str, body: &Value) -> Result<HttpAnswer, DevFedError> {
        let r = self
            .http
            .post_json(&format!("{}{path}", self.base), body)
            .await
            .map_err(|e| DevFedError::Client(e.to_string()))?;
        Ok(HttpAnswer::from_response(r))
    }
}
