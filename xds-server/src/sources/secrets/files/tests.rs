use super::super::testutil::Ca;
use super::*;
use crate::watch::testutil::{TempDir, QUIET, SOON};

fn write_identity(dir: &TempDir, name: &str, cert: &str, key: &str) {
    dir.write(&format!("{name}/{CERT_FILE}"), cert);
    dir.write(&format!("{name}/{KEY_FILE}"), key);
}

#[test]
fn startup_needs_a_trust_bundle_and_valid_files() {
    let dir = TempDir::new("secrets-load");
    let ca = Ca::new("ca1");
    let (cert, key) = ca.issue("web");
    write_identity(&dir, "web", &cert, &key);
    std::fs::create_dir_all(dir.join("..data")).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let e = load_secrets_dir(dir.path()).unwrap_err();
    assert!(
        e.file.ends_with("ca.crt") && e.reason.contains("missing"),
        "{e}"
    );
    std::fs::write(dir.join(TRUST_BUNDLE_FILE), &ca.pem).unwrap();
    let set = load_secrets_dir(dir.path()).unwrap();
    assert_eq!(set.identities.keys().collect::<Vec<_>>(), vec!["web"]);
    assert_eq!(set.trust_bundle.as_deref(), Some(ca.pem.as_bytes()));
    std::fs::write(dir.join("web").join(KEY_FILE), "garbage").unwrap();
    let e = load_secrets_dir(dir.path()).unwrap_err();
    assert!(e.file.ends_with("web/tls.key"), "{e}");
}

#[test]
fn a_bad_item_keeps_its_last_good_version_while_others_move_on() {
    let dir = TempDir::new("secrets-apply");
    let ca = Ca::new("ca1");
    let (web1, web1_key) = ca.issue("web");
    let (db1, db1_key) = ca.issue("db");
    std::fs::write(dir.join(TRUST_BUNDLE_FILE), &ca.pem).unwrap();
    write_identity(&dir, "web", &web1, &web1_key);
    write_identity(&dir, "db", &db1, &db1_key);
    let first = load_secrets_dir(dir.path()).unwrap();
    // Rotation caught half-way for web (new cert, old key); db rotates completely; the bundle
    // is truncated.
    let (web2, _) = ca.issue("web");
    let (db2, db2_key) = ca.issue("db");
    write_identity(&dir, "web", &web2, &web1_key);
    write_identity(&dir, "db", &db2, &db2_key);
    std::fs::write(dir.join(TRUST_BUNDLE_FILE), &ca.pem[..40]).unwrap();
    let raw = read_raw(dir.path()).unwrap();
    let (next, errors) = apply(dir.path(), &raw, &first);
    assert_eq!(next.identities["web"], first.identities["web"]);
    assert_eq!(next.identities["db"].cert_chain, db2.as_bytes());
    assert_eq!(next.trust_bundle, first.trust_bundle);
    let files: Vec<String> = errors.iter().map(|e| e.file.clone()).collect();
    assert_eq!(files.len(), 2, "{errors:?}");
    assert!(
        files[0].ends_with("ca.crt") && files[1].ends_with("web/tls.key"),
        "{files:?}"
    );
    // A removed identity directory removes the identity; a removed bundle is kept.
    std::fs::remove_dir_all(dir.join("db")).unwrap();
    std::fs::remove_file(dir.join(TRUST_BUNDLE_FILE)).unwrap();
    let (after, errors) = apply(dir.path(), &read_raw(dir.path()).unwrap(), &next);
    assert!(!after.identities.contains_key("db"));
    assert_eq!(after.trust_bundle, first.trust_bundle);
    assert!(errors
        .iter()
        .any(|e| e.reason.contains("keeping the last trust bundle")));
    // An identity whose key file is missing is an error, not a removal.
    std::fs::remove_file(dir.join("web").join(KEY_FILE)).unwrap();
    let (after, errors) = apply(dir.path(), &read_raw(dir.path()).unwrap(), &next);
    assert_eq!(after.identities["web"], first.identities["web"]);
    assert!(errors
        .iter()
        .any(|e| e.file.ends_with("web/tls.key") && e.reason.contains("missing")));
}

// On tokio's paused time: waits are virtual, and the watcher's poll (which sees every write made with
// `TempDir::write`) reports whatever notify did not already. Notify itself is tested on real time in
// `crate::watch`.
#[tokio::test(start_paused = true)]
async fn rotation_is_published_and_a_half_rotation_is_not() {
    let dir = TempDir::new("secrets-watch");
    let ca = Ca::new("ca1");
    let (cert1, key1) = ca.issue("web");
    std::fs::write(dir.join(TRUST_BUNDLE_FILE), &ca.pem).unwrap();
    write_identity(&dir, "web", &cert1, &key1);
    let (tx, mut rx) = watch::channel(Arc::new(load_secrets_dir(dir.path()).unwrap()));
    let _watch = watch_secrets_dir(dir.path().to_path_buf(), tx).unwrap();
    rx.mark_unchanged();
    // The new certificate without its key: not taken.
    let (cert2, key2) = ca.issue("web");
    dir.write(&format!("web/{CERT_FILE}"), &cert2);
    let none = tokio::time::timeout(QUIET, rx.changed()).await;
    assert!(none.is_err(), "a half rotation must not be published");
    dir.write(&format!("web/{KEY_FILE}"), &key2);
    tokio::time::timeout(SOON, rx.changed())
        .await
        .expect("rotation published")
        .unwrap();
    assert_eq!(rx.borrow().identities["web"].cert_chain, cert2.as_bytes());
    // A new identity directory shows up too.
    let (cert3, key3) = ca.issue("db");
    write_identity(&dir, "db", &cert3, &key3);
    tokio::time::timeout(SOON, rx.wait_for(|s| s.identities.contains_key("db")))
        .await
        .expect("new identity published")
        .unwrap();
}

// Paused time, as above.
#[tokio::test(start_paused = true)]
async fn a_removed_identity_goes_and_a_removed_bundle_or_directory_changes_nothing() {
    let root = TempDir::new("secrets-watch-removal");
    let ca = Ca::new("ca1");
    let (web, web_key) = ca.issue("web");
    let (db, db_key) = ca.issue("db");
    root.write(&format!("secrets/{TRUST_BUNDLE_FILE}"), &ca.pem);
    write_identity(&root, "secrets/web", &web, &web_key);
    write_identity(&root, "secrets/db", &db, &db_key);
    let dir = root.join("secrets");
    let first = Arc::new(load_secrets_dir(&dir).unwrap());
    let (tx, mut rx) = watch::channel(first.clone());
    let _watch = watch_secrets_dir(dir.clone(), tx).unwrap();

    std::fs::remove_dir_all(dir.join("db")).unwrap();
    tokio::time::timeout(SOON, rx.changed())
        .await
        .expect("removal published")
        .unwrap();
    let after = rx.borrow_and_update().clone();
    assert_eq!(after.identities.keys().collect::<Vec<_>>(), vec!["web"]);
    assert_eq!(after.trust_bundle, first.trust_bundle);

    // The trust bundle is kept when its file goes, and everything when the directory goes.
    std::fs::remove_file(dir.join(TRUST_BUNDLE_FILE)).unwrap();
    tokio::time::sleep(QUIET).await;
    std::fs::remove_dir_all(&dir).unwrap();
    tokio::time::sleep(QUIET).await;
    assert!(!rx.has_changed().unwrap(), "{:?}", rx.borrow());
    assert_eq!(*rx.borrow(), after);
}
