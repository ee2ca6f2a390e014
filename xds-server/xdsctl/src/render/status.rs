//! `xdsctl status`: every connected Envoy and its sync status per resource type.

use xds_admin_api::{self as pb, SyncStatus};

use super::{client_kind_text, locality_text, protocol_text, status_label, table};

pub fn status_table(r: &pb::ListClientsResponse) -> String {
    if r.clients.is_empty() {
        return "no Envoy connected\n".to_string();
    }
    // SDS only when some client uses it, so meshes without mTLS keep the proxy-status layout.
    let mut types = vec!["CDS", "EDS", "LDS", "RDS"];
    if r.clients
        .iter()
        .any(|c| c.types.iter().any(|t| t.short_name == "SDS"))
    {
        types.push("SDS");
    }
    // IDENTITY only when some client proved one: a mesh without workload identity keeps its layout.
    let identities = r.clients.iter().any(|c| !c.identity.is_empty());
    // KIND only when some client is a proxyless gRPC client: an Envoy-only mesh keeps its layout.
    let kinds = r
        .clients
        .iter()
        .any(|c| c.kind == pb::ClientKind::Grpc as i32);
    let rows: Vec<Vec<String>> = r
        .clients
        .iter()
        .map(|c| {
            let mut row = vec![
                c.node_id.clone(),
                c.cluster.clone(),
                locality_text(c.locality.as_ref()),
                protocol_text(c.protocol).to_string(),
            ];
            if kinds {
                row.insert(1, client_kind_text(c.kind).to_string());
            }
            if identities {
                row.push(if c.identity.is_empty() {
                    "none (no key)".to_string()
                } else {
                    format!("{} ({})", c.identity, c.identity_proof)
                });
            }
            for short in &types {
                let status = c
                    .types
                    .iter()
                    .find(|t| t.short_name == *short)
                    .map_or("NOT SENT", |t| status_label(t.status));
                row.push(status.to_string());
            }
            row
        })
        .collect();
    let mut header = vec!["NODE", "CLUSTER", "LOCALITY", "PROTOCOL"];
    if kinds {
        header.insert(1, "KIND");
    }
    if identities {
        header.push("IDENTITY");
    }
    header.extend(&types);
    let mut out = table(&header, &rows);
    // Why something is NACKED, right under the table.
    for c in &r.clients {
        for t in &c.types {
            if let Some(n) = t
                .last_nack
                .as_ref()
                .filter(|_| t.status == SyncStatus::Nacked as i32)
            {
                out.push_str(&format!(
                    "\n{} {} NACKED version {}: {}\n",
                    c.node_id, t.short_name, n.version, n.error
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn type_status(short: &str, status: SyncStatus) -> pb::TypeStatus {
        pb::TypeStatus {
            short_name: short.into(),
            status: status as i32,
            ..pb::TypeStatus::default()
        }
    }

    #[test]
    fn status_shows_every_type_like_proxy_status_and_explains_nacks() {
        let mut lds = type_status("LDS", SyncStatus::Nacked);
        lds.last_nack = Some(pb::Nack {
            version: "v7".into(),
            error: "cannot bind 127.0.0.1:15001".into(),
            at_unix_ms: 0,
        });
        let r = pb::ListClientsResponse {
            clients: vec![pb::Client {
                node_id: "envoy-1".into(),
                cluster: "web".into(),
                locality: Some(pb::Locality {
                    region: "us-east1".into(),
                    zone: "us-east1-b".into(),
                    sub_zone: String::new(),
                }),
                protocol: pb::Protocol::Delta as i32,
                types: vec![
                    type_status("CDS", SyncStatus::Synced),
                    type_status("EDS", SyncStatus::Stale),
                    lds,
                ],
                ..pb::Client::default()
            }],
        };
        let text = status_table(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NODE      CLUSTER   LOCALITY                PROTOCOL   CDS      EDS     LDS      RDS"
        );
        assert_eq!(
            lines[1],
            "envoy-1   web       us-east1/us-east1-b/-   Delta      SYNCED   STALE   NACKED   NOT SENT"
        );
        assert!(
            text.contains("envoy-1 LDS NACKED version v7: cannot bind 127.0.0.1:15001"),
            "{text}"
        );
        assert_eq!(
            status_table(&pb::ListClientsResponse::default()),
            "no Envoy connected\n"
        );
        // A client that uses SDS adds the column.
        let mut with_sds = r.clone();
        with_sds.clients[0]
            .types
            .push(type_status("SDS", SyncStatus::Synced));
        let text = status_table(&with_sds);
        assert!(
            text.lines().next().unwrap().ends_with("RDS        SDS"),
            "{text}"
        );
        assert!(
            text.lines().nth(1).unwrap().ends_with("NOT SENT   SYNCED"),
            "{text}"
        );
        // A client with a proven identity adds IDENTITY; one without says it gets no key.
        let mut with_ids = with_sds.clone();
        with_ids.clients.push(pb::Client {
            node_id: "envoy-2".into(),
            identity: "spiffe://cluster.local/ns/bank/sa/ledger".into(),
            identity_proof: "certificate".into(),
            ..with_ids.clients[0].clone()
        });
        let text = status_table(&with_ids);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("PROTOCOL   IDENTITY"), "{text}");
        assert!(lines[1].contains("none (no key)"), "{text}");
        assert!(
            lines[2].contains("spiffe://cluster.local/ns/bank/sa/ledger (certificate)"),
            "{text}"
        );
        // No KIND column while every client is an Envoy.
        assert!(!lines[0].contains("KIND"), "{text}");
    }

    #[test]
    fn grpc_clients_are_listed_beside_envoys_and_marked() {
        let client = |node: &str, kind: pb::ClientKind| pb::Client {
            node_id: node.into(),
            cluster: "bank".into(),
            protocol: pb::Protocol::Sotw as i32,
            kind: kind as i32,
            types: vec![
                type_status("CDS", SyncStatus::Synced),
                type_status("EDS", SyncStatus::Synced),
                type_status("LDS", SyncStatus::Synced),
                type_status("RDS", SyncStatus::Synced),
            ],
            ..pb::Client::default()
        };
        let r = pb::ListClientsResponse {
            clients: vec![
                client("envoy-1", pb::ClientKind::Envoy),
                client("ledger-client", pb::ClientKind::Grpc),
            ],
        };
        let text = status_table(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NODE            KIND    CLUSTER   LOCALITY   PROTOCOL   CDS      EDS      LDS      RDS"
        );
        assert!(
            lines[1].starts_with("envoy-1         envoy   bank"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("ledger-client   grpc    bank"),
            "{text}"
        );
    }
}
