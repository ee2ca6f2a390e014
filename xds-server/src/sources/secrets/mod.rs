//! Workload certificates and the trust bundle from files ([`files`]) or Kubernetes Secrets ([`kube`]),
//! validated here before they can reach an Envoy. The types are [`xds_core::model::secrets`].
//!
//! Key material never leaves this module except as bytes in an SDS answer: [`Identity`]'s `Debug`
//! prints no key, logs name files and reasons only, and the admin API and CSDS show secret names and
//! versions, never contents.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub mod files;
pub mod kube;

pub use xds_core::model::secrets::{Identity, SecretError, SecretSet};

/// The certificates of a PEM file, in order. Anything that is not a well-formed `CERTIFICATE` block
/// list (garbage, a truncated block, no certificate at all) is an error.
fn certificates(file: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, SecretError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecretError::new(file, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(SecretError::new(
            file,
            "holds no PEM `CERTIFICATE` block (empty or half-written?)",
        ));
    }
    Ok(certs)
}

/// Validates a certificate chain and its key (PEM, as in a Kubernetes TLS Secret's `tls.crt` and
/// `tls.key`): both parse, the leaf is a well-formed X.509 certificate, and the key is the leaf's
/// (a mismatch is what a rotation caught between writing the two files looks like); the leaf's one
/// URI SAN is a SPIFFE ID (the identity it is served to) and it has not expired.
pub fn parse_identity(
    cert_file: &str,
    cert_chain: Vec<u8>,
    key_file: &str,
    key: Vec<u8>,
) -> Result<Identity, SecretError> {
    let certs = certificates(cert_file, &cert_chain)?;
    let facts = crate::auth::workload::leaf_facts(certs[0].as_ref())
        .map_err(|e| SecretError::new(cert_file, e.to_string()))?;
    let spiffe_id = facts.spiffe_id.map_err(|e| {
        SecretError::new(
            cert_file,
            format!("{e}: SDS serves a workload certificate only to the workload it names"),
        )
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if facts.not_after < now {
        return Err(SecretError::new(
            cert_file,
            format!(
                "the certificate for {spiffe_id} expired {} ago (notAfter {}): renew it",
                humanize_seconds(now - facts.not_after),
                facts.not_after_text
            ),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
        SecretError::new(
            key_file,
            format!("no usable private key (a PKCS#8, PKCS#1 or SEC1 PEM block): {e}"),
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| SecretError::new(key_file, format!("unsupported private key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        Ok(()) => {}
        // The key type cannot report its public key: nothing to compare, not a mismatch.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(SecretError::new(
                key_file,
                format!("the private key does not belong to the certificate in {cert_file}"),
            ))
        }
        Err(e) => {
            return Err(SecretError::new(
                cert_file,
                format!("the leaf certificate does not parse: {e}"),
            ))
        }
    }
    Ok(Identity {
        spiffe_id,
        cert_chain,
        key,
    })
}

fn humanize_seconds(s: i64) -> String {
    match s {
        s if s >= 86_400 => format!("{} days", s / 86_400),
        s if s >= 3_600 => format!("{} hours", s / 3_600),
        s => format!("{s} s"),
    }
}

/// Validates a trust bundle: one or more CA certificates (PEM), each usable as a trust anchor.
pub fn parse_trust_bundle(file: &str, pem: Vec<u8>) -> Result<Vec<u8>, SecretError> {
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certificates(file, &pem)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            SecretError::new(
                file,
                format!("certificate {} is not a usable CA certificate: {e}", i + 1),
            )
        })?;
    }
    Ok(pem)
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Certificates made at test time.

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    pub(crate) fn uri(text: &str) -> rcgen::SanType {
        rcgen::SanType::URI(text.try_into().unwrap())
    }

    /// The SPIFFE ID test certificates for `name` carry.
    pub(crate) fn spiffe_id(name: &str) -> xds_core::model::SpiffeId {
        xds_core::model::SpiffeId::for_service_account("cluster.local", "default", name).unwrap()
    }

    pub(crate) struct Ca {
        pub pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Ca {
        pub(crate) fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            Self {
                pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        /// (certificate PEM, key PEM) for `name`: a workload certificate whose URI SAN is
        /// [`spiffe_id`]`(name)`.
        pub(crate) fn issue(&self, name: &str) -> (String, String) {
            self.issue_with(vec![uri(spiffe_id(name).as_str())], |_| {})
        }

        /// (certificate PEM, key PEM) with these SANs, `edit` changing anything else.
        pub(crate) fn issue_with(
            &self,
            sans: Vec<rcgen::SanType>,
            edit: impl FnOnce(&mut CertificateParams),
        ) -> (String, String) {
            let mut params = CertificateParams::default();
            params.subject_alt_names = sans;
            edit(&mut params);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::Ca;
    use super::*;

    #[test]
    fn a_matching_chain_and_key_parse_and_debug_hides_the_key() {
        let ca = Ca::new("ca1");
        let (cert, key) = ca.issue("web");
        let id = parse_identity("web/tls.crt", cert.into(), "web/tls.key", key.into()).unwrap();
        let shown = format!("{id:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains("PRIVATE"),
            "{shown}"
        );
        assert_eq!(
            parse_trust_bundle("ca.crt", format!("{}{}", ca.pem, Ca::new("ca2").pem).into())
                .map(|_| ()),
            Ok(())
        );
    }

    #[test]
    fn bad_files_are_refused_with_file_and_reason() {
        let ca = Ca::new("ca1");
        let (cert, key) = ca.issue("web");
        let (_, other_key) = ca.issue("other");
        let parse = |c: &str, k: &str| {
            parse_identity("d/web/tls.crt", c.into(), "d/web/tls.key", k.into()).unwrap_err()
        };
        let e = parse(&cert, &other_key);
        assert_eq!(e.file, "d/web/tls.key");
        assert!(e.reason.contains("does not belong"), "{e}");
        let e = parse("", &key);
        assert_eq!(e.file, "d/web/tls.crt");
        assert!(e.reason.contains("no PEM `CERTIFICATE`"), "{e}");
        // Half a certificate: the block never ends.
        let e = parse(&cert[..cert.len() / 2], &key);
        assert_eq!(e.file, "d/web/tls.crt");
        let e = parse(&cert, "not a key");
        assert!(
            e.file == "d/web/tls.key" && e.reason.contains("private key"),
            "{e}"
        );
        // A PEM block with garbage inside.
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = parse(junk, &key);
        assert_eq!(e.file, "d/web/tls.crt");
        let e = parse_trust_bundle("ca.crt", junk.into()).unwrap_err();
        assert!(e.to_string().starts_with("ca.crt: certificate 1"), "{e}");
        assert!(parse_trust_bundle("ca.crt", Vec::new()).is_err());
    }

    #[test]
    fn a_workload_certificate_names_one_spiffe_id_and_has_not_expired() {
        use super::testutil::uri;
        let ca = Ca::new("ca1");
        let parse = |(c, k): (String, String)| {
            parse_identity("d/web/tls.crt", c.into(), "d/web/tls.key", k.into())
        };
        let id = parse(ca.issue("web")).unwrap();
        assert_eq!(id.spiffe_id, super::testutil::spiffe_id("web"));
        let refused = |sans, reason: &str| {
            let e = parse(ca.issue_with(sans, |_| {})).unwrap_err();
            assert_eq!(e.file, "d/web/tls.crt");
            assert!(e.reason.contains(reason), "{e}");
        };
        refused(
            vec![rcgen::SanType::DnsName("web.test".try_into().unwrap())],
            "no URI SAN",
        );
        refused(
            vec![uri("spiffe://td/ns/a/sa/b"), uri("spiffe://td/ns/a/sa/c")],
            "2 URI SANs",
        );
        refused(vec![uri("https://web.test/ns/a/sa/b")], "not a SPIFFE ID");
        let expired = ca.issue_with(vec![uri("spiffe://td/ns/a/sa/b")], |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        });
        let e = parse(expired).unwrap_err();
        assert!(
            e.reason.contains("spiffe://td/ns/a/sa/b expired") && e.reason.contains("2021"),
            "{e}"
        );
    }

    #[test]
    fn two_identities_claiming_one_spiffe_id_are_both_refused() {
        use super::testutil::{spiffe_id, uri};
        let ca = Ca::new("ca1");
        let mut set = SecretSet::default();
        for (name, id) in [("web", "web"), ("web-copy", "web"), ("db", "db")] {
            let (c, k) = ca.issue_with(vec![uri(spiffe_id(id).as_str())], |_| {});
            let identity = parse_identity("c", c.into(), "k", k.into()).unwrap();
            set.identities.insert(name.to_string(), identity);
        }
        let errors = set.remove_duplicate_ids(|name| format!("d/{name}/tls.crt"));
        assert_eq!(set.identities.keys().collect::<Vec<_>>(), vec!["db"]);
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(
            shown[0].starts_with("d/web/tls.crt: its certificate claims spiffe://cluster.local/ns/default/sa/web, as does d/web-copy/tls.crt"),
            "{shown:?}"
        );
        assert!(shown[1].starts_with("d/web-copy/tls.crt:") && shown[1].contains("d/web/tls.crt"));
    }
}
