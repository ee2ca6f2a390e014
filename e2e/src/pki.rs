//! Test certificates made at test time (rcgen): CAs, server certificates for 127.0.0.1/localhost and
//! client certificates, written as PEM files the way operators would mount them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate authority that can issue server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM, and the certificate's DER (to compare with what a peer
/// presented).
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

/// Where a [`Leaf`] was written.
#[derive(Debug, Clone)]
pub struct LeafFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = name(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("generate CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-sign CA"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `path` (atomically).
    pub fn write(&self, path: &Path) {
        write_atomic(path, &self.pem());
    }

    fn issue(&self, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<String>>())
                .expect("leaf params");
        self.issue_with(cn, params.subject_alt_names, vec![usage])
    }

    fn issue_with(
        &self,
        cn: &str,
        sans: Vec<SanType>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Leaf {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name = name(cn);
        params.extended_key_usages = usages;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("generate key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for `127.0.0.1` and `localhost` (and `extra_sans`).
    pub fn server(&self, cn: &str, extra_sans: &[&str]) -> Leaf {
        let mut sans = vec!["127.0.0.1", "localhost"];
        sans.extend_from_slice(extra_sans);
        self.issue(cn, &sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A workload certificate as SDS hands out: client and server use, its one URI SAN the SPIFFE ID
    /// `spiffe_id` (e.g. `spiffe://cluster.local/ns/bank/sa/ledger`).
    pub fn workload(&self, cn: &str, spiffe_id: &str) -> Leaf {
        self.issue_with(
            cn,
            vec![SanType::URI(
                spiffe_id.try_into().expect("SPIFFE ID is IA5"),
            )],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate (URI/DNS SAN `cn`).
    pub fn client(&self, cn: &str) -> Leaf {
        self.issue(cn, &[cn], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

impl Leaf {
    /// Writes `dir/NAME.crt` and `dir/NAME.key`, each atomically (temp file + rename).
    pub fn write(&self, dir: &Path, name: &str) -> LeafFiles {
        let files = LeafFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        self.write_to(&files);
        files
    }

    /// Replaces the files' contents: the key, then the certificate. Between the two renames the pair
    /// does not match, as in any real rotation; the server must ride that out.
    pub fn write_to(&self, files: &LeafFiles) {
        write_atomic(&files.key, &self.key_pem);
        write_atomic(&files.cert, &self.cert_pem);
    }
}

/// Writes a temporary file next to `path` and renames it over `path`, as config tools do.
pub fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, content).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}
