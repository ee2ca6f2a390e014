//! The committed CRD manifest must be exactly what the Rust types generate.

#[test]
fn committed_crd_manifest_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/crd.yaml");
    let committed = std::fs::read_to_string(path).expect("deploy/kubernetes/crd.yaml exists");
    let generated = xds_server::sources::policy::crd::crd_yaml();
    assert!(
        committed == generated,
        "deploy/kubernetes/crd.yaml is out of date; regenerate it with\n  \
         cargo run -p xds-server --bin xds-server -- --print-crd > deploy/kubernetes/crd.yaml"
    );
}
