//! Compiles the admin API (`xds_admin.proto`, next to this file) with the protoc bundled by
//! `protoc-bin-vendored` (no system protoc needed) and writes its file descriptor set for gRPC server
//! reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build reads PROTOC from the environment (a build script is single-threaded).
    std::env::set_var("PROTOC", protoc);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let proto_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto = proto_dir.join("xds_admin.proto");
    println!("cargo:rerun-if-changed={}", proto.display());

    // `xdsctl -o json` serializes the generated messages; enums as their names, not numbers.
    let json = "crate::json";
    let mut builder = tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("xds_admin_descriptor.bin"))
        .btree_map(".")
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .type_attribute(".", "#[serde(rename_all = \"snake_case\")]");
    for (field, with) in [
        ("xds.admin.v1.Client.protocol", "protocol"),
        ("xds.admin.v1.Event.protocol", "protocol"),
        ("xds.admin.v1.TypeStatus.status", "sync_status"),
        ("xds.admin.v1.ClientResource.status", "sync_status"),
        ("xds.admin.v1.Client.kind", "client_kind"),
        ("xds.admin.v1.ManualClient.kind", "client_kind"),
        (
            "xds.admin.v1.ExplainPrioritiesResponse.client_kind",
            "client_kind",
        ),
    ] {
        builder = builder.field_attribute(
            field,
            format!("#[serde(serialize_with = \"{json}::{with}\")]"),
        );
    }
    builder.compile_protos(&[proto], &[proto_dir])?;
    Ok(())
}
