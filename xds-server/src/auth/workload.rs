//! Who is on the other end of an xDS stream, as the connection proves it: the URI SAN of the client
//! certificate (mutual TLS), or a Kubernetes ServiceAccount token (`authorization: Bearer …`) that a
//! [`TokenVerifier`] has the API server vouch for. Node metadata never decides identity.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tracing::{debug, warn};
use xds_core::model::{PeerIdentity, Proof, SpiffeId};

/// Checks a bearer token and says whose it is. Implemented over the Kubernetes TokenReview API
/// ([`super::token_review`]).
pub trait TokenVerifier: Send + Sync + 'static {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<SpiffeId, TokenRejected>>;
}

/// Why a token did not prove an identity. `Unavailable` fails closed: the stream is refused, never
/// let through unauthenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejected {
    /// The API server says the token is not valid (expired, revoked, another audience, garbage).
    #[error("the ServiceAccount token is not valid: {0}")]
    Invalid(String),
    /// Valid, but not a ServiceAccount's (a person's or a node's token).
    #[error("the token authenticates `{0}`, which is not a ServiceAccount")]
    NotServiceAccount(String),
    /// The TokenReview call failed (API server unreachable, forbidden, timed out).
    #[error("cannot verify the token with the Kubernetes TokenReview API: {0}")]
    Unavailable(String),
}

/// Why a certificate does not name a workload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateIdentityError {
    #[error("the certificate does not parse as X.509: {0}")]
    Unparseable(String),
    #[error(
        "the certificate has no URI SAN (a workload certificate carries its SPIFFE ID as its one URI SAN)"
    )]
    NoUriSan,
    #[error(
        "the certificate has {0} URI SANs; a workload certificate has exactly one, its SPIFFE ID"
    )]
    SeveralUriSans(usize),
    #[error("its URI SAN: {0}")]
    NotSpiffe(#[from] xds_core::model::identity::SpiffeIdError),
}

/// What a leaf certificate says about its workload: its SPIFFE ID and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFacts {
    pub spiffe_id: Result<SpiffeId, CertificateIdentityError>,
    /// `notAfter`, seconds since the Unix epoch.
    pub not_after: i64,
    /// `notAfter` as the certificate says it, for messages.
    pub not_after_text: String,
}

/// Reads a DER certificate's URI SANs and validity. The SPIFFE ID is the one URI SAN, and it must
/// be a SPIFFE ID: a certificate with none, several, or another kind of URI names no workload.
pub fn leaf_facts(der: &[u8]) -> Result<LeafFacts, CertificateIdentityError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertificateIdentityError::Unparseable(e.to_string()))?;
    let not_after = cert.validity().not_after.timestamp();
    let not_after_text = cert.validity().not_after.to_string();
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| CertificateIdentityError::Unparseable(e.to_string()))?;
    let uris: Vec<&str> = sans
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let spiffe_id = match uris.as_slice() {
        [] => Err(CertificateIdentityError::NoUriSan),
        [uri] => SpiffeId::parse(uri).map_err(CertificateIdentityError::from),
        more => Err(CertificateIdentityError::SeveralUriSans(more.len())),
    };
    Ok(LeafFacts {
        spiffe_id,
        not_after,
        not_after_text,
    })
}

/// What the client certificate of a TLS connection proves, read once at the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerCertificate {
    /// The certificate's one URI SAN, a SPIFFE ID.
    Identity(SpiffeId),
    /// A certificate (the handshake verified it chains to the client CA) that names no workload: an
    /// operator's certificate, or a malformed workload one. It proves no identity.
    NoIdentity(CertificateIdentityError),
}

impl PeerCertificate {
    /// From the peer's chain as rustls presents it (leaf first); `None` without a certificate.
    pub fn from_chain(chain: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> Option<Self> {
        let leaf = chain?.first()?;
        Some(
            match leaf_facts(leaf.as_ref()).and_then(|facts| facts.spiffe_id) {
                Ok(id) => PeerCertificate::Identity(id),
                Err(e) => PeerCertificate::NoIdentity(e),
            },
        )
    }

    pub fn identity(&self) -> Option<&SpiffeId> {
        match self {
            PeerCertificate::Identity(id) => Some(id),
            PeerCertificate::NoIdentity(_) => None,
        }
    }
}

/// What tonic records about each connection of our ports (`Request::extensions`): the TCP peer and,
/// over TLS, what its certificate proves.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote_addr: Option<std::net::SocketAddr>,
    pub certificate: Option<Arc<PeerCertificate>>,
}

/// At most one line per [`LogLimiter::EVERY`] for one kind of event a client can repeat at will
/// (refused claims, unusable certificates), with the number left out since the last line.
pub struct LogLimiter {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub const EVERY: Duration = Duration::from_secs(1);

    pub const fn new() -> Self {
        Self {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if a line may be logged now (`n` lines were left out before it), `None` if not.
    pub fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Self::EVERY) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

static UNUSABLE_CERTIFICATE_LOG: LogLimiter = LogLimiter::new();

/// The identity a stream's connection proves: its client certificate's SPIFFE ID, or the token in
/// `authorization: Bearer …` verified by `tokens`. Either is enough; when both are given they must
/// name the same workload. A stream that proves nothing is served without private keys (`Ok(None)`);
/// a token that does not verify refuses the stream (a client that sends one wants it checked).
pub async fn authenticate(
    conn: Option<&ConnInfo>,
    authorization: Option<&[u8]>,
    tokens: Option<&dyn TokenVerifier>,
) -> Result<Option<PeerIdentity>, tonic::Status> {
    let certificate = conn.and_then(|c| c.certificate.as_deref());
    if let Some(PeerCertificate::NoIdentity(reason)) = certificate {
        if let Some(left_out) = UNUSABLE_CERTIFICATE_LOG.allow() {
            warn!(peer = ?conn.and_then(|c| c.remote_addr), %reason, left_out,
                  "client certificate names no workload: the stream proves no identity and gets no private key");
        }
    }
    let by_certificate = certificate
        .and_then(PeerCertificate::identity)
        .map(|id| PeerIdentity {
            id: id.clone(),
            proof: Proof::Certificate,
        });
    let token = match (authorization, tokens) {
        (Some(value), Some(_)) => Some(bearer(value)?),
        // Token authentication is off: a header some bootstraps always send is not an error.
        (Some(_), None) => {
            debug!("authorization header on an xDS stream ignored: token authentication is off");
            None
        }
        (None, _) => None,
    };
    let by_token = match (token, tokens) {
        (Some(token), Some(verifier)) => {
            let id = verifier.verify(token).await.map_err(|e| match e {
                TokenRejected::Unavailable(_) => tonic::Status::unavailable(e.to_string()),
                TokenRejected::Invalid(_) | TokenRejected::NotServiceAccount(_) => {
                    tonic::Status::unauthenticated(e.to_string())
                }
            })?;
            Some(PeerIdentity {
                id,
                proof: Proof::Token,
            })
        }
        _ => None,
    };
    match (by_certificate, by_token) {
        (Some(cert), Some(token)) if cert.id != token.id => {
            Err(tonic::Status::permission_denied(format!(
                "the client certificate proves {} but the ServiceAccount token proves {}: one connection is one workload",
                cert.id, token.id
            )))
        }
        (Some(cert), _) => Ok(Some(cert)),
        (None, token) => Ok(token),
    }
}

/// The token of an `authorization: Bearer TOKEN` value.
fn bearer(value: &[u8]) -> Result<&str, tonic::Status> {
    std::str::from_utf8(super::bearer_token(value)?)
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| tonic::Status::unauthenticated("the bearer token is empty or not text"))
}
