use super::*;
use xds_core::snapshot::CLUSTER_TYPE;

#[test]
fn type_names_and_origins_read_as_users_write_them() {
    assert_eq!(parse_type("CDS"), Ok(ResourceType::Cluster));
    assert_eq!(parse_type("endpoints"), Ok(ResourceType::Endpoint));
    assert_eq!(parse_type(CLUSTER_TYPE), Ok(ResourceType::Cluster));
    assert_eq!(parse_type("SDS"), Ok(ResourceType::Secret));
    assert!(parse_type("xds")
        .unwrap_err()
        .contains("cds, eds, lds, rds, sds"));
    assert_eq!(
        origin_text(&PolicyOrigin::Named {
            namespace: "shop".into(),
            name: "p".into(),
            source: "kubernetes".into()
        }),
        "kubernetes:shop/p"
    );
}
