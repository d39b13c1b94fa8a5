//! What a test run knows about its target: where it is, which identities
//! and signing keys the suite holds, and which optional capabilities the
//! deployment offers. Accessors return `Verdict::Skip` with a reason when a
//! piece is missing, so a test states its needs with `?`.

use crate::catalogue::Verdict;
use crate::client::{load_roots, Client, Identity, Target, TlsSettings};
use crate::craft::SigningKey;
use crate::setup::{Setup, SetupError};
use josekit::jwk::Jwk;
use rustls::RootCertStore;
use serde_json::Value;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Boxed future returned by [`TargetControl`] (object safety).
pub type ControlFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Operator actions that have no HTTP API in the contract (key rotation and
/// revocation go through `bashu keys …`). Only `--spawn` can offer them;
/// against a foreign deployment the tests that need them are skipped.
pub trait TargetControl: Send + Sync {
    /// `bashu keys rotate` on the target: a new key is published as `next`.
    fn rotate(&self) -> ControlFuture<'_, ()>;
    /// Imports a fresh issuer key for the target's credit bank, revokes it,
    /// republishes, and returns its private JWK.
    fn revoked_issuer_key(&self) -> ControlFuture<'_, Jwk>;
    /// The same on the *peer's* side: a fresh issuer key of the peer's
    /// credit bank, revoked now; returns its private JWK and `revoked_at`.
    fn revoked_peer_issuer_key(&self) -> ControlFuture<'_, (Jwk, i64)>;
}

/// A peer gateway identity with its signing material.
#[derive(Debug)]
pub struct Peer {
    pub member: String,
    pub client: Client,
    pub gateway_key: Option<SigningKey>,
    pub issuer_key: Option<SigningKey>,
}

/// The destination side of a full exchange.
#[derive(Debug)]
pub struct Destination {
    pub client: Client,
    /// The destination credit bank's identity (to present it to the target).
    pub identity: Identity,
    pub federation_key: Option<Jwk>,
}

/// A submitted exchange that reached the destination inbox, shared by the
/// DELIVERY and MAP tests so the suite submits it once.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub exchange_id: String,
    pub credential: String,
    pub payload: Value,
    pub item: Value,
}

/// The run context handed to every test.
pub struct Ctx {
    pub member: String,
    pub destination: String,
    pub framework: String,
    pub delivery_timeout: Duration,
    target: Target,
    server_name: Option<String>,
    request_timeout: Duration,
    roots: Arc<RootCertStore>,
    anonymous: Client,
    /// Every client identity configured, in order credit bank, peer.
    identities: Vec<Identity>,
    credit_bank: Option<Client>,
    issuer_key: Option<SigningKey>,
    operator: Option<Client>,
    peer: Option<Peer>,
    dest: Option<Destination>,
    federation_key: Option<Jwk>,
    ca: Option<crate::pki::CaSigner>,
    revoked_issuer_key: Option<SigningKey>,
    control: Option<Arc<dyn TargetControl>>,
    records: Value,
    goldens: Value,
    revoked_from_control: OnceCell<Result<SigningKey, Verdict>>,
    /// Shared result of the first full exchange (see [`Delivered`]).
    pub delivered: OnceCell<Result<Delivered, Verdict>>,
    /// Shared deliveries of the golden records, paired with their golden.
    pub golden_runs: OnceCell<Result<Vec<(Value, Delivered)>, Verdict>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("target", &self.target)
            .field("member", &self.member)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

fn load_jwk(path: &PathBuf) -> Result<Jwk, SetupError> {
    let err = |message: String| SetupError::FederationKey {
        path: path.clone(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let jwk = Jwk::from_bytes(bytes).map_err(|e| err(e.to_string()))?;
    // A private federation key (dev dirs hold them) works too: keep only the public part.
    jwk.to_public_key().map_err(|e| err(e.to_string()))
}

impl Ctx {
    /// Loads every file the setup names; fails on unreadable material
    /// rather than silently skipping tests later.
    pub fn from_setup(setup: &Setup) -> Result<Self, SetupError> {
        let target = Target::parse(&setup.target)?;
        let roots = Arc::new(load_roots(&setup.ca)?);
        let sn = setup.server_name.as_deref();
        let timeout = setup.request_timeout;
        let client_for =
            |id: Option<Identity>| Client::new(&target, sn, &TlsSettings::new(roots.clone(), id), timeout);
        let mut identities = Vec::new();
        let credit_bank = match &setup.credit_bank {
            Some(files) => {
                identities.push(files.load()?);
                Some(client_for(identities.last().cloned())?)
            }
            None => None,
        };
        let operator = match &setup.operator {
            Some(files) => Some(client_for(Some(files.load()?))?),
            None => None,
        };
        let peer = match &setup.peer {
            Some(p) => Some(Peer {
                member: p.member.clone(),
                client: {
                    identities.push(p.identity.load()?);
                    client_for(identities.last().cloned())?
                },
                gateway_key: p.gateway_key.as_deref().map(SigningKey::load).transpose()?,
                issuer_key: p.issuer_key.as_deref().map(SigningKey::load).transpose()?,
            }),
            None => None,
        };
        let dest = match &setup.dest {
            Some(d) => {
                let dest_target = Target::parse(&d.target)?;
                let identity = d.identity.load()?;
                let settings = TlsSettings::new(roots.clone(), Some(identity.clone()));
                Some(Destination {
                    identity,
                    client: Client::new(&dest_target, sn, &settings, timeout)?,
                    federation_key: d.federation_key.as_ref().map(load_jwk).transpose()?,
                })
            }
            None => None,
        };
        let ca = match &setup.ca_key {
            Some(key) => Some(crate::pki::CaSigner::load(&setup.ca, key).map_err(SetupError::Invalid)?),
            None => None,
        };
        let framework = setup
            .framework
            .clone()
            .unwrap_or_else(|| crate::fixtures::default_framework(&setup.member).to_owned());
        Ok(Self {
            member: setup.member.clone(),
            destination: setup.destination.clone(),
            framework,
            delivery_timeout: setup.delivery_timeout,
            anonymous: client_for(None)?,
            identities,
            target,
            server_name: setup.server_name.clone(),
            request_timeout: timeout,
            roots,
            credit_bank,
            issuer_key: setup.issuer_key.as_deref().map(SigningKey::load).transpose()?,
            operator,
            peer,
            dest,
            federation_key: setup.federation_key.as_ref().map(load_jwk).transpose()?,
            ca,
            revoked_issuer_key: setup
                .revoked_issuer_key
                .as_deref()
                .map(SigningKey::load)
                .transpose()?,
            control: None,
            records: load_json(
                setup.records.as_ref(),
                crate::fixtures::DEFAULT_RECORDS,
                "records",
            )?,
            goldens: load_json(
                setup.goldens.as_ref(),
                crate::fixtures::DEFAULT_GOLDENS,
                "goldens",
            )?,
            revoked_from_control: OnceCell::new(),
            delivered: OnceCell::new(),
            golden_runs: OnceCell::new(),
        })
    }

    /// Adds operator actions (only `--spawn` has them).
    pub fn with_control(mut self, control: Arc<dyn TargetControl>) -> Self {
        self.control = Some(control);
        self
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A client with arbitrary TLS settings towards the target.
    pub fn client_with(&self, settings: &TlsSettings) -> Result<Client, Verdict> {
        Client::new(
            &self.target,
            self.server_name.as_deref(),
            settings,
            self.request_timeout,
        )
        .map_err(|e| Verdict::Fail(format!("cannot build TLS client: {e}")))
    }

    /// The federation CA roots the suite trusts.
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// A client that presents no certificate at all.
    pub fn anonymous(&self) -> &Client {
        &self.anonymous
    }

    /// Some identity the target should accept, for transport-level tests.
    pub fn any_identity(&self) -> Result<Identity, Verdict> {
        self.identities
            .first()
            .cloned()
            .ok_or_else(|| skip("needs any client identity (--cert/--key)"))
    }

    /// A client presenting some accepted identity.
    pub fn any_client(&self) -> Result<&Client, Verdict> {
        self.credit_bank
            .as_ref()
            .or(self.peer.as_ref().map(|p| &p.client))
            .ok_or_else(|| skip("needs a credit-bank or peer identity (--cert/--key)"))
    }

    pub fn credit_bank(&self) -> Result<&Client, Verdict> {
        self.credit_bank
            .as_ref()
            .ok_or_else(|| skip("needs a credit-bank identity (--role credit-bank --cert/--key)"))
    }

    /// The target member's credit-bank issuer key.
    pub fn issuer_key(&self) -> Result<&SigningKey, Verdict> {
        self.issuer_key
            .as_ref()
            .ok_or_else(|| skip("needs the credit bank's issuer signing key (--issuer-key)"))
    }

    pub fn operator(&self) -> Result<&Client, Verdict> {
        self.operator
            .as_ref()
            .ok_or_else(|| skip("needs an operator identity (--operator-cert/--operator-key)"))
    }

    pub fn peer(&self) -> Result<&Peer, Verdict> {
        self.peer
            .as_ref()
            .ok_or_else(|| skip("needs a peer gateway identity (--role peer --cert/--key)"))
    }

    /// The peer's gateway and issuer keys, needed to craft envelope chains.
    pub fn peer_keys(&self) -> Result<(&Peer, &SigningKey, &SigningKey), Verdict> {
        let peer = self.peer()?;
        let gateway = peer
            .gateway_key
            .as_ref()
            .ok_or_else(|| skip("needs the peer gateway's signing key (--gateway-key)"))?;
        let issuer = peer
            .issuer_key
            .as_ref()
            .ok_or_else(|| skip("needs the peer credit bank's issuer key (--peer-issuer-key)"))?;
        Ok((peer, gateway, issuer))
    }

    pub fn dest(&self) -> Result<&Destination, Verdict> {
        self.dest.as_ref().ok_or_else(|| {
            skip("needs the destination's credit-bank identity and gateway (--dest-target/--dest-cert/--dest-key)")
        })
    }

    pub fn federation_key(&self) -> Result<&Jwk, Verdict> {
        self.federation_key
            .as_ref()
            .ok_or_else(|| skip("needs the target's pinned federation public key (--federation-key)"))
    }

    pub fn ca(&self) -> Result<&crate::pki::CaSigner, Verdict> {
        self.ca
            .as_ref()
            .ok_or_else(|| skip("needs the federation CA key to mint test certificates (--ca-key)"))
    }

    /// An issuer key the target lists as revoked: from `--revoked-issuer-key`,
    /// or made on the spot through [`TargetControl`].
    pub async fn revoked_issuer_key(&self) -> Result<&SigningKey, Verdict> {
        if let Some(key) = &self.revoked_issuer_key {
            return Ok(key);
        }
        let control = self
            .control
            .as_deref()
            .ok_or_else(|| skip("needs an issuer key the target lists as revoked (--revoked-issuer-key)"))?;
        let made =
            self.revoked_from_control
                .get_or_init(|| async {
                    let jwk = control.revoked_issuer_key().await.map_err(|e| {
                        Verdict::Fail(format!("cannot revoke an issuer key on the target: {e}"))
                    })?;
                    SigningKey::from_jwk(jwk).map_err(|e| Verdict::Fail(e.to_string()))
                })
                .await;
        made.as_ref().map_err(Clone::clone)
    }

    /// The configured learning record for `framework`.
    pub fn record(&self, framework: &str) -> Result<Value, Verdict> {
        self.records.get(framework).cloned().ok_or_else(|| {
            skip(&format!(
                "no learning record for framework {framework:?} (--records)"
            ))
        })
    }

    /// Golden mapping records for exchanges from this member to the destination.
    pub fn goldens(&self) -> Vec<Value> {
        self.goldens["goldens"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter(|g| g["from"] == self.member.as_str() && g["to"] == self.destination.as_str())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The mapping table a peer's interchange link names for `framework`.
    pub fn interchange_table(&self, framework: &str) -> Result<crate::chain::TableRef, Verdict> {
        let entry = self.records.get("_tables").and_then(|t| t.get(framework));
        let field = |name: &str| {
            entry
                .and_then(|e| e.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        match (field("id"), field("version")) {
            (Some(id), Some(version)) => Ok(crate::chain::TableRef { id, version }),
            _ => Err(skip(&format!(
                "no interchange mapping table for {framework:?} in the records file"
            ))),
        }
    }

    /// A valid credential payload from the target member's credit bank.
    pub fn valid_credential(&self) -> Result<Value, Verdict> {
        let record = self.record(&self.framework)?;
        let issuer = crate::fixtures::issuer_id(&self.member, "credit-bank");
        Ok(crate::fixtures::credential(&issuer, &self.member, &record))
    }

    pub fn control(&self) -> Result<&dyn TargetControl, Verdict> {
        self.control.as_deref().ok_or_else(|| {
            skip("needs operator control of the target (key rotation/revocation; --spawn only)")
        })
    }
}

fn load_json(path: Option<&PathBuf>, default: &str, what: &str) -> Result<Value, SetupError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| SetupError::Invalid(format!("cannot read {what} {}: {e}", p.display())))?,
        None => default.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| SetupError::Invalid(format!("{what} file is not JSON: {e}")))
}

fn skip(reason: &str) -> Verdict {
    Verdict::Skip(reason.to_owned())
}
