//! Workload certificates and the trust bundle that sidecars get over SDS: what a secret source
//! produces ([`SecretSet`]); the sources validate it before it can reach an Envoy.
//!
//! Key material never leaves this module except as bytes in an SDS answer: [`Identity`]'s `Debug`
//! prints no key, logs name files and reasons only, and the admin API and CSDS show secret names and
//! versions, never contents.

use std::collections::BTreeMap;

/// The identity of a client that does not name one in its node metadata (`identity`).
pub const DEFAULT_IDENTITY: &str = "default";

/// One identity's certificate chain and private key, both PEM, validated (see [`Identity::parse`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// Leaf first, then intermediates.
    pub cert_chain: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cert_chain_bytes", &self.cert_chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Everything the secret sources know: the trust bundle (PEM, one or more CA certificates) and the
/// identities by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretSet {
    pub trust_bundle: Option<Vec<u8>>,
    pub identities: BTreeMap<String, Identity>,
}

/// Why a secret file was not taken: the file and the reason, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct SecretError {
    pub file: String,
    pub reason: String,
}

impl SecretError {
    pub fn new(file: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
impl SecretSet {
    /// A set with placeholder bytes (the cache does not parse them): `cert` is the chain's content.
    pub fn placeholder(bundle: &str, identities: &[(&str, &str)]) -> std::sync::Arc<SecretSet> {
        std::sync::Arc::new(SecretSet {
            trust_bundle: Some(bundle.as_bytes().to_vec()),
            identities: identities
                .iter()
                .map(|(name, cert)| {
                    let id = Identity {
                        cert_chain: cert.as_bytes().to_vec(),
                        key: format!("key of {cert}").into_bytes(),
                    };
                    (name.to_string(), id)
                })
                .collect(),
        })
    }
}
