use super::*;
use crate::watch::testutil::{TempDir, QUIET, SOON};
use xds_core::policy::testing::{backing_up, doc, factor_of, invalid, with_factor};
use xds_core::policy::PolicyOrigin;

#[test]
fn the_shipped_example_policies_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    if dir.exists() {
        let set = load_policies(&dir).unwrap();
        assert!(!set.entries.is_empty());
    }
}

#[test]
fn load_reads_a_file_or_a_sorted_directory() {
    let dir = TempDir::new("policy-load");
    std::fs::write(dir.join("b.yml"), doc("shop", "b", "  panicThreshold: 2\n")).unwrap();
    std::fs::write(dir.join("a.yaml"), doc("*", "a", "  panicThreshold: 1\n")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a policy").unwrap();
    std::fs::write(dir.join(".hidden.yaml"), "garbage: [").unwrap();
    std::fs::create_dir(dir.join("sub.yaml")).unwrap();
    let set = load_policies(dir.path()).unwrap();
    let names: Vec<String> = set
        .entries
        .iter()
        .map(|e| match &e.origin {
            PolicyOrigin::Named { name, source, .. } => {
                assert!(source.starts_with(&dir.path().display().to_string()));
                name.clone()
            }
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(names, vec!["a", "b"]);

    let single = load_policies(&dir.join("b.yml")).unwrap();
    assert_eq!(single.entries.len(), 1);

    let empty = TempDir::new("policy-load-empty");
    assert_eq!(load_policies(empty.path()).unwrap(), PolicySet::default());
    let err = load_policies(&dir.join("missing.yaml")).unwrap_err();
    assert!(matches!(err, FileError::Read { .. }), "{err:?}");
}

#[test]
fn load_rejects_the_same_scope_in_two_files() {
    let dir = TempDir::new("policy-load-dup");
    std::fs::write(dir.join("a.yaml"), doc("shop", "a", "  {}\n")).unwrap();
    std::fs::write(dir.join("b.yaml"), doc("shop", "b", "  {}\n")).unwrap();
    let err = load_policies(dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("b.yaml:4:"), "{text}");
    assert!(text.contains("shop/b"), "{text}");
    assert!(text.contains("shop/a ("), "{text}");
    assert!(text.contains("a.yaml, document 1, line 4)"), "{text}");
    assert!(text.contains("namespace shop"), "{text}");
}

#[test]
fn load_rejects_an_invalid_file_in_a_directory() {
    let dir = TempDir::new("policy-load-bad");
    std::fs::write(
        dir.join("a.yaml"),
        doc("shop", "a", "  panicThreshold: 200\n"),
    )
    .unwrap();
    let err = load_policies(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("a.yaml:6:3: document 1: spec.panicThreshold: "),
        "{err}"
    );
}

// The watch tests run on tokio's paused time: waits are virtual, and the watcher's poll (which sees
// every write made with `TempDir::write`) reports whatever notify did not already. Notify itself is
// tested on real time in `crate::watch`.

async fn changed(rx: &mut tokio::sync::watch::Receiver<Arc<PolicySet>>) -> Arc<PolicySet> {
    tokio::time::timeout(SOON, rx.changed())
        .await
        .expect("no policy set sent in time")
        .expect("sender dropped");
    rx.borrow_and_update().clone()
}

async fn unchanged(rx: &mut tokio::sync::watch::Receiver<Arc<PolicySet>>) {
    tokio::time::sleep(QUIET).await;
    assert!(!rx.has_changed().unwrap(), "a policy set was sent");
}

#[tokio::test(start_paused = true)]
async fn watching_a_directory_updates_files_independently() {
    let dir = TempDir::new("policy-watch-dir");
    dir.write("a.yaml", with_factor("a", "pa", 110));
    dir.write("b.yaml", with_factor("b", "pb", 120));
    let initial = load_policies(dir.path()).unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(initial));
    let (status_tx, status) = tokio::sync::watch::channel(PolicyStatus::default());
    let _handle =
        watch_policies_with_status(dir.path().to_path_buf(), tx, Some(status_tx)).unwrap();
    unchanged(&mut rx).await;

    // A valid edit of one file.
    dir.write("a.yaml", with_factor("a", "pa", 111));
    let set = changed(&mut rx).await;
    assert_eq!((factor_of(&set, "a"), factor_of(&set, "b")), (111, 120));

    // a.yaml turns invalid: it keeps its last good policy while b.yaml updates.
    dir.write("a.yaml", with_factor("a", "pa", 1));
    unchanged(&mut rx).await;
    let rejected = status.borrow().files.clone();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].source.ends_with("a.yaml"), "{rejected:?}");
    assert!(
        rejected[0].error.contains("overprovisioningFactor"),
        "{rejected:?}"
    );
    dir.replace("b.yaml", &with_factor("b", "pb", 121));
    let set = changed(&mut rx).await;
    assert_eq!((factor_of(&set, "a"), factor_of(&set, "b")), (111, 121));

    // A new file claiming a's scope is rejected; a's policy stays.
    dir.write("c.yaml", with_factor("a", "pc", 130));
    unchanged(&mut rx).await;

    // a.yaml moves to another namespace: the held-back c.yaml now fits and is accepted too.
    dir.write("a.yaml", with_factor("z", "pa", 140));
    let set = changed(&mut rx).await;
    assert_eq!((factor_of(&set, "a"), factor_of(&set, "z")), (130, 140));
    assert!(status.borrow().files.is_empty(), "{:?}", status.borrow());

    // A deleted file's policies go away.
    std::fs::remove_file(dir.join("b.yaml")).unwrap();
    let set = changed(&mut rx).await;
    assert_eq!(factor_of(&set, "b"), 140 /* the built-in default */);
    assert_eq!(set.entries.len(), 2);
    assert_eq!(factor_of(&set, "a"), 130);
}

#[tokio::test(start_paused = true)]
async fn watching_a_single_file_keeps_it_when_deleted() {
    let dir = TempDir::new("policy-watch-file");
    let path = dir.join("policy.yaml");
    dir.write("policy.yaml", with_factor("a", "p", 110));
    let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(load_policies(&path).unwrap()));
    let _handle = watch_policies(path.clone(), tx).unwrap();
    unchanged(&mut rx).await;

    dir.replace("policy.yaml", &with_factor("a", "p", 115));
    let set = changed(&mut rx).await;
    assert_eq!(factor_of(&set, "a"), 115);
    assert_eq!(set.entries.len(), 1);

    std::fs::remove_file(&path).unwrap();
    unchanged(&mut rx).await;
    dir.write("policy.yaml", "");
    unchanged(&mut rx).await;
    dir.write("policy.yaml", with_factor("a", "p", 116));
    let set = changed(&mut rx).await;
    assert_eq!(factor_of(&set, "a"), 116);
}

#[test]
fn backup_cycles_are_refused_naming_both_policies() {
    // In one file: the second document closes the cycle.
    let text = format!("{}---\n{}", backing_up("a", "b"), backing_up("b", "a"));
    let (document, line, field, reason, _) = invalid(&text);
    assert_eq!((document, field.as_str()), (2, "spec.backups[0]"));
    assert_eq!(line, Some(15));
    assert!(reason.contains("shop/b → shop/a → shop/b"), "{reason}");
    assert!(
        reason.contains("policy shop/a (p.yaml, document 1, line 6) backs up to shop/b"),
        "{reason}"
    );

    // Across files, a longer cycle: the file that closes it is rejected.
    let dir = TempDir::new("policy-backup-cycle");
    std::fs::write(dir.join("a.yaml"), backing_up("a", "b")).unwrap();
    std::fs::write(dir.join("b.yaml"), backing_up("b", "c")).unwrap();
    std::fs::write(dir.join("c.yaml"), backing_up("c", "a")).unwrap();
    let err = load_policies(dir.path()).unwrap_err();
    assert!(err.file().ends_with("c.yaml"), "{err}");
    assert!(
        err.reason().contains("shop/c → shop/a → shop/b → shop/c"),
        "{err}"
    );
    assert!(err.reason().contains("policy shop/b ("), "{err}");

    // Not a cycle: a backs up to b, b to c.
    std::fs::write(dir.join("c.yaml"), doc("shop", "c", "  service: c\n")).unwrap();
    assert_eq!(load_policies(dir.path()).unwrap().entries.len(), 3);
}
