//! Workload certificates and the trust bundle that sidecars get over SDS: what a secret source
//! produces ([`SecretSet`]); the sources validate it before it can reach an Envoy.
//!
//! Key material never leaves this module except as bytes in an SDS answer: [`Identity`]'s `Debug`
//! prints no key, logs name files and reasons only, and the admin API and CSDS show secret names and
//! versions, never contents.

use std::collections::BTreeMap;

use crate::model::SpiffeId;

/// One identity's certificate chain and private key, both PEM, validated by the source: the key is
/// the leaf's, the leaf has not expired, and its one URI SAN is the SPIFFE ID it is served to.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// The leaf certificate's URI SAN: SDS hands this identity only to a client that proved it.
    pub spiffe_id: SpiffeId,
    /// Leaf first, then intermediates.
    pub cert_chain: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id.as_str())
            .field("cert_chain_bytes", &self.cert_chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Everything the secret sources know: the trust bundle (PEM, one or more CA certificates) and the
/// identities by name (an identity directory or Secret name, for logs and the admin API; what a client
/// is served is decided by [`Identity::spiffe_id`]).
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

impl SecretSet {
    /// The name of the identity whose certificate carries `id`.
    pub fn name_of(&self, id: &SpiffeId) -> Option<&str> {
        self.identities
            .iter()
            .find(|(_, identity)| identity.spiffe_id == *id)
            .map(|(name, _)| name.as_str())
    }

    /// Takes out every identity whose SPIFFE ID another identity claims too: which of two
    /// certificates for one workload is the real one cannot be told, so neither is served. Returns an
    /// error per removed identity, naming it (`file_of(name)`) and the other claimants.
    pub fn remove_duplicate_ids(&mut self, file_of: impl Fn(&str) -> String) -> Vec<SecretError> {
        let mut by_id: BTreeMap<&SpiffeId, Vec<&str>> = BTreeMap::new();
        for (name, identity) in &self.identities {
            by_id.entry(&identity.spiffe_id).or_default().push(name);
        }
        let mut errors = Vec::new();
        let mut removed = Vec::new();
        for (id, names) in by_id.into_iter().filter(|(_, n)| n.len() > 1) {
            for name in &names {
                let others: Vec<String> = names
                    .iter()
                    .filter(|n| *n != name)
                    .map(|n| file_of(n))
                    .collect();
                errors.push(SecretError::new(
                    file_of(name),
                    format!(
                        "its certificate claims {id}, as does {}: neither is served until one of them changes",
                        others.join(", ")
                    ),
                ));
                removed.push(name.to_string());
            }
        }
        for name in removed {
            self.identities.remove(&name);
        }
        errors
    }
}

#[cfg(any(test, feature = "test-support"))]
impl SecretSet {
    /// A set with placeholder bytes (the cache does not parse them): `cert` is the chain's content;
    /// identity `NAME` has the SPIFFE ID `spiffe://cluster.local/ns/default/sa/NAME`.
    pub fn placeholder(bundle: &str, identities: &[(&str, &str)]) -> std::sync::Arc<SecretSet> {
        std::sync::Arc::new(SecretSet {
            trust_bundle: Some(bundle.as_bytes().to_vec()),
            identities: identities
                .iter()
                .map(|(name, cert)| {
                    let id = Identity {
                        spiffe_id: SpiffeId::for_service_account("cluster.local", "default", name)
                            .expect("a valid test identity name"),
                        cert_chain: cert.as_bytes().to_vec(),
                        key: format!("key of {cert}").into_bytes(),
                    };
                    (name.to_string(), id)
                })
                .collect(),
        })
    }
}
