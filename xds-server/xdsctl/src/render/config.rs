//! `xdsctl config NODE`: the resources one Envoy holds, each under a heading line.

use xds_admin_api as pb;

use super::status_label;

pub fn config_text(r: &pb::GetClientConfigResponse) -> String {
    if r.resources.is_empty() {
        return format!("{}: no resources (matching the filter) held\n", r.node_id);
    }
    let mut out = String::new();
    for res in &r.resources {
        out.push_str(&format!(
            "--- {} {} ({}, content hash {}",
            res.short_name,
            res.name,
            status_label(res.status),
            res.held_version
        ));
        if res.client_holds_older_version {
            if res.current_version.is_empty() {
                out.push_str("; client holds an older version, the server no longer has it");
            } else {
                out.push_str(&format!(
                    "; client holds an older version, shown below is the current one, {}",
                    res.current_version
                ));
            }
        }
        out.push_str(")\n");
        out.push_str(&res.text);
        out.push_str("\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use xds_admin_api::SyncStatus;

    use super::*;

    #[test]
    fn config_heads_each_resource_and_flags_older_versions() {
        let res = |name: &str, older: bool, current: &str| pb::ClientResource {
            short_name: "EDS".into(),
            name: name.into(),
            status: SyncStatus::Synced as i32,
            held_version: "aa".into(),
            current_version: current.into(),
            client_holds_older_version: older,
            text: "ClusterLoadAssignment {}".into(),
            ..pb::ClientResource::default()
        };
        let r = pb::GetClientConfigResponse {
            node_id: "envoy-1".into(),
            resources: vec![
                res("a", false, "aa"),
                res("b", true, "bb"),
                res("c", true, ""),
            ],
            ..pb::GetClientConfigResponse::default()
        };
        assert_eq!(
            config_text(&r),
            "--- EDS a (SYNCED, content hash aa)\nClusterLoadAssignment {}\n\n\
             --- EDS b (SYNCED, content hash aa; client holds an older version, shown below is the \
             current one, bb)\nClusterLoadAssignment {}\n\n\
             --- EDS c (SYNCED, content hash aa; client holds an older version, the server no longer \
             has it)\nClusterLoadAssignment {}\n\n"
        );
        assert_eq!(
            config_text(&pb::GetClientConfigResponse {
                node_id: "envoy-1".into(),
                ..Default::default()
            }),
            "envoy-1: no resources (matching the filter) held\n"
        );
    }
}
