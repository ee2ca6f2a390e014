use super::*;
use crate::watch::testutil::{TempDir, QUIET, SOON};
use xds_core::model::ServiceId;

#[test]
fn load_reports_unreadable_files() {
    let dir = TempDir::new("endpoints-load");
    let err = load_endpoints_file(&dir.join("missing.yaml")).unwrap_err();
    assert!(matches!(err, FileError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.yaml"), "{err}");
    std::fs::write(dir.join("bin.yaml"), [0xff, 0xfe, 0x00]).unwrap();
    let err = load_endpoints_file(&dir.join("bin.yaml")).unwrap_err();
    assert!(err.to_string().contains("UTF-8"), "{err}");
    std::fs::write(dir.join("ok.yaml"), "services: []\n").unwrap();
    assert_eq!(
        load_endpoints_file(&dir.join("ok.yaml")).unwrap(),
        Registry::default()
    );
}

fn registry_yaml(port: u16) -> String {
    format!(
        "services:\n- name: echo\n  namespace: demo\n  ports: [{{name: http, port: 80}}]\n  \
             endpoints:\n  - address: 127.0.0.1\n    port: {port}\n"
    )
}

fn port_of(registry: &Registry) -> u16 {
    let svc = &registry.services[&ServiceId::new("demo", "echo")];
    svc.endpoints[0].target_port(&svc.ports[0])
}

// The watch tests run on tokio's paused time: waits are virtual, and the watcher's poll (which sees
// every write made with `TempDir::write`) reports whatever notify did not already. Notify itself is
// tested on real time in `crate::watch`.

async fn changed(rx: &mut tokio::sync::watch::Receiver<Arc<Registry>>) -> Arc<Registry> {
    tokio::time::timeout(SOON, rx.changed())
        .await
        .expect("no registry sent in time")
        .expect("sender dropped");
    rx.borrow_and_update().clone()
}

async fn unchanged(rx: &mut tokio::sync::watch::Receiver<Arc<Registry>>) {
    tokio::time::sleep(QUIET).await;
    assert!(!rx.has_changed().unwrap(), "a registry was sent");
}

#[tokio::test(start_paused = true)]
async fn watcher_sends_valid_edits_and_keeps_the_last_good_state() {
    let dir = TempDir::new("endpoints-watch");
    let path = dir.join("endpoints.yaml");
    dir.write("endpoints.yaml", registry_yaml(9001));
    let initial = load_endpoints_file(&path).unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(initial));
    let _handle = watch_endpoints_file(path.clone(), tx).unwrap();
    // The initial scan finds what was loaded: nothing new to send.
    unchanged(&mut rx).await;

    // 1. An in-place edit.
    dir.write("endpoints.yaml", registry_yaml(9002));
    let got = changed(&mut rx).await;
    assert_eq!(port_of(&got), 9002);

    // 2. An invalid edit is not sent; neither is a half-written file; the next valid edit is.
    dir.write("endpoints.yaml", registry_yaml(0));
    unchanged(&mut rx).await;
    dir.write(
        "endpoints.yaml",
        "services:\n- name: echo\n  namespace: demo\n  ports: [{name: ht",
    );
    unchanged(&mut rx).await;
    dir.write("endpoints.yaml", "");
    unchanged(&mut rx).await;
    dir.write("endpoints.yaml", registry_yaml(9003));
    assert_eq!(port_of(&*changed(&mut rx).await), 9003);

    // 3. Deleted: the last good state stays; recreated: the new content is sent.
    std::fs::remove_file(&path).unwrap();
    unchanged(&mut rx).await;
    dir.write("endpoints.yaml", registry_yaml(9004));
    assert_eq!(port_of(&*changed(&mut rx).await), 9004);

    // 4. Replaced by rename, as editors do.
    dir.replace("endpoints.yaml", &registry_yaml(9005));
    assert_eq!(port_of(&*changed(&mut rx).await), 9005);

    // 5. A semantically identical rewrite (comments only) sends nothing.
    dir.write(
        "endpoints.yaml",
        format!("# comment\n{}", registry_yaml(9005)),
    );
    unchanged(&mut rx).await;
}

#[tokio::test(start_paused = true)]
async fn watcher_picks_up_a_file_created_after_start() {
    let dir = TempDir::new("endpoints-watch-late");
    let path = dir.join("endpoints.yaml");
    let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(Registry::default()));
    let _handle = watch_endpoints_file(path.clone(), tx).unwrap();
    tokio::time::sleep(QUIET).await;
    dir.replace("endpoints.yaml", &registry_yaml(9100));
    assert_eq!(port_of(&*changed(&mut rx).await), 9100);
}

#[tokio::test]
async fn watching_a_file_in_a_missing_directory_fails() {
    let dir = TempDir::new("endpoints-watch-missing");
    let (tx, _rx) = tokio::sync::watch::channel(Arc::new(Registry::default()));
    assert!(watch_endpoints_file(dir.join("nope/endpoints.yaml"), tx).is_err());
}
