use super::*;
use crate::watch::testutil::TempDir;

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    other_key_pem: String,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        other_key_pem: rcgen::KeyPair::generate().unwrap().serialize_pem(),
    }
}

fn write(dir: &TempDir, pki: &Pki) -> TlsFiles {
    std::fs::write(dir.join("tls.crt"), &pki.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &pki.key_pem).unwrap();
    std::fs::write(dir.join("ca.crt"), &pki.ca_pem).unwrap();
    TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: Some(dir.join("ca.crt")),
    }
}

fn error(files: &TlsFiles) -> String {
    load_server_config(files).unwrap_err().to_string()
}

#[test]
fn loads_good_files_with_h2_alpn() {
    let dir = TempDir::new("tls-good");
    let files = write(&dir, &pki());
    let config = load_server_config(&files).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    let no_ca = TlsFiles {
        client_ca: None,
        ..files
    };
    load_server_config(&no_ca).unwrap();
}

#[test]
fn missing_files_are_named() {
    let dir = TempDir::new("tls-missing");
    let mut files = write(&dir, &pki());
    files.key = dir.join("nope.key");
    let e = error(&files);
    assert!(
        e.contains("nope.key") && e.contains("cannot read the private key"),
        "{e}"
    );
    files = write(&dir, &pki());
    files.client_ca = Some(dir.join("nope-ca.crt"));
    let e = error(&files);
    assert!(
        e.contains("nope-ca.crt") && e.contains("client CA bundle"),
        "{e}"
    );
}

#[test]
fn garbage_and_truncated_pem_are_named() {
    let dir = TempDir::new("tls-garbage");
    let pki = pki();
    let files = write(&dir, &pki);
    std::fs::write(&files.cert, "this is not a certificate\n").unwrap();
    let e = error(&files);
    assert!(
        e.contains("tls.crt") && e.contains("no certificate chain in it"),
        "{e}"
    );

    // Half-written: cut in the middle of the block.
    std::fs::write(&files.cert, &pki.cert_pem[..pki.cert_pem.len() / 2]).unwrap();
    let e = error(&files);
    assert!(e.contains("tls.crt") && e.contains("truncated"), "{e}");

    let files = write(&dir, &pki);
    std::fs::write(
        &files.key,
        "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = error(&files);
    assert!(
        e.contains("tls.key") && e.contains("private key is not valid PEM"),
        "{e}"
    );
    std::fs::write(&files.key, &pki.cert_pem).unwrap();
    let e = error(&files);
    assert!(
        e.contains("tls.key") && e.contains("no private key in it"),
        "{e}"
    );

    let files = write(&dir, &pki);
    std::fs::write(files.client_ca.as_ref().unwrap(), "garbage").unwrap();
    let e = error(&files);
    assert!(
        e.contains("ca.crt") && e.contains("no client CA bundle"),
        "{e}"
    );
}

#[test]
fn a_key_of_another_certificate_is_a_mismatch() {
    let dir = TempDir::new("tls-mismatch");
    let pki = pki();
    let files = write(&dir, &pki);
    std::fs::write(&files.key, &pki.other_key_pem).unwrap();
    let e = error(&files);
    assert!(
        e.contains("tls.key")
            && e.contains("does not belong to the certificate in")
            && e.contains("tls.crt"),
        "{e}"
    );
}

#[test]
fn reload_swaps_on_change_and_keeps_the_last_good_config_on_error() {
    let dir = TempDir::new("tls-reload");
    let files = write(&dir, &pki());
    let tls = ReloadingTls::load(files.clone()).unwrap();
    let first = tls.config();
    assert!(!tls.reload().unwrap(), "same bytes: nothing to do");
    assert!(Arc::ptr_eq(&first, &tls.config()));

    let next = pki();
    std::fs::write(&files.cert, &next.cert_pem).unwrap();
    // The key is still the old one: refused, the old config stays.
    let e = tls.reload().unwrap_err().to_string();
    assert!(e.contains("does not belong"), "{e}");
    assert!(Arc::ptr_eq(&first, &tls.config()));

    std::fs::write(&files.key, &next.key_pem).unwrap();
    assert!(tls.reload().unwrap());
    assert!(!Arc::ptr_eq(&first, &tls.config()));
}

#[test]
fn an_open_admin_port_needs_mtls_or_a_token() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = TempDir::new("tls-open-admin");
        let files = write(&dir, &pki());
        let open: SocketAddr = "0.0.0.0:18001".parse().unwrap();
        let e = Security::start(&SecurityArgs::default(), open)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--admin-addr 0.0.0.0:18001 is not a loopback address"),
            "{e}"
        );
        // TLS without client certificates does not authenticate anyone.
        let tls_only = SecurityArgs {
            tls_cert: Some(files.cert.clone()),
            tls_key: Some(files.key.clone()),
            ..Default::default()
        };
        assert!(Security::start(&tls_only, open).is_err());
        let mtls = SecurityArgs {
            tls_client_ca: files.client_ca.clone(),
            ..tls_only
        };
        Security::start(&mtls, open).unwrap();
        std::fs::write(dir.join("token"), "s3cret\n").unwrap();
        let token = SecurityArgs {
            admin_token_file: Some(dir.join("token")),
            ..Default::default()
        };
        Security::start(&token, open).unwrap();
        Security::start(&SecurityArgs::default(), "127.0.0.1:0".parse().unwrap()).unwrap();
    });
}
