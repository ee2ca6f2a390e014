//! The xds-server admin API's generated types, client and server (`proto/xds_admin.proto`, package
//! `xds.admin.v1`), and its file descriptor set for gRPC server reflection. Shared by the server
//! (`xds_server::admin::proto`) and its CLI, `xdsctl`.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("xds.admin.v1");

/// The encoded `FileDescriptorSet` of `xds_admin.proto`, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("xds_admin_descriptor");

/// The fully qualified gRPC service name, as reflection lists it.
pub const SERVICE_NAME: &str = "xds.admin.v1.Admin";

/// The default admin address: xds-server's `--admin-addr` and xdsctl's `--admin-addr`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:18001";

/// `serialize_with` helpers for `xdsctl -o json`: enum fields as their proto names, not numbers.
pub mod json {
    use serde::Serializer;

    pub fn sync_status<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            super::SyncStatus::try_from(*value)
                .map_or("SYNC_STATUS_UNSPECIFIED", |v| v.as_str_name()),
        )
    }

    pub fn protocol<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            super::Protocol::try_from(*value).map_or("PROTOCOL_UNSPECIFIED", |v| v.as_str_name()),
        )
    }

    pub fn client_kind<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            super::ClientKind::try_from(*value)
                .map_or("CLIENT_KIND_UNSPECIFIED", |v| v.as_str_name()),
        )
    }
}

impl SyncStatus {
    /// As `xdsctl` and `istioctl proxy-status` print it.
    pub fn label(self) -> &'static str {
        match self {
            SyncStatus::Synced => "SYNCED",
            SyncStatus::Stale => "STALE",
            SyncStatus::Nacked => "NACKED",
            SyncStatus::NotSent | SyncStatus::Unspecified => "NOT SENT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_enum_names_and_descriptor_set_names_the_service() {
        let t = TypeStatus {
            short_name: "CDS".into(),
            status: SyncStatus::Nacked as i32,
            ..TypeStatus::default()
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["status"], "NACKED");
        assert_eq!(v["short_name"], "CDS");
        let c = Client {
            protocol: Protocol::Delta as i32,
            ..Client::default()
        };
        assert_eq!(serde_json::to_value(&c).unwrap()["protocol"], "DELTA");
        assert!(FILE_DESCRIPTOR_SET
            .windows(b"xds.admin.v1".len())
            .any(|w| w == b"xds.admin.v1"));
        assert_eq!(SyncStatus::NotSent.label(), "NOT SENT");
    }
}
