//! ADS responses written straight from the cache's encoded resources.
//!
//! The cache encodes each resource once (as a `google.protobuf.Any`, see [`Resource::encoded`]).
//! Building an envoy-types `DiscoveryResponse` would copy those bytes into a fresh `Any` per client
//! and hold the copy until the client's transport takes it; with thousands of clients receiving the
//! same 500 answers that is most of the server's memory and much of its CPU. These message types carry
//! `Arc`s to the shared resources instead and write the bytes only when the transport encodes the
//! response. On the wire they are exactly `DiscoveryResponse` / `DeltaDiscoveryResponse` (field numbers
//! from envoy's `discovery.proto`); tests decode them as such.

use std::sync::Arc;

use bytes::{Buf, BufMut};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use prost::encoding::{
    encode_key, encode_varint, encoded_len_varint, key_len, skip_field, string, DecodeContext,
    WireType,
};
use prost::Message;

use crate::snapshot::Resource;

/// `DiscoveryResponse` (state of the world).
#[derive(Debug, Clone, Default)]
pub struct SotwResponse {
    pub version_info: String,
    pub resources: Vec<Arc<Resource>>,
    pub type_url: String,
    pub nonce: String,
}

/// One entry of `DeltaDiscoveryResponse.resources` (`envoy.service.discovery.v3.Resource`).
#[derive(Debug, Clone)]
pub struct DeltaEntry {
    pub name: String,
    pub version: String,
    pub resource: Arc<Resource>,
}

/// `DeltaDiscoveryResponse` (incremental).
#[derive(Debug, Clone, Default)]
pub struct DeltaResponse {
    pub system_version_info: String,
    pub resources: Vec<DeltaEntry>,
    pub type_url: String,
    pub removed_resources: Vec<String>,
    pub nonce: String,
}

fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        string::encoded_len(tag, &s.to_string())
    }
}

fn put_string(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.put_slice(s.as_bytes());
    }
}

/// A length-delimited field holding an already encoded message.
fn bytes_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_bytes_field(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

impl Message for SotwResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_string(1, &self.version_info, buf);
        for r in &self.resources {
            put_bytes_field(2, &r.encoded, buf);
        }
        put_string(4, &self.type_url, buf);
        put_string(5, &self.nonce, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever encoded by the server; decode as `DiscoveryResponse`.
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        string_len(1, &self.version_info)
            + self
                .resources
                .iter()
                .map(|r| bytes_field_len(2, r.encoded.len()))
                .sum::<usize>()
            + string_len(4, &self.type_url)
            + string_len(5, &self.nonce)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl DeltaEntry {
    fn body_len(&self) -> usize {
        string_len(1, &self.version)
            + bytes_field_len(2, self.resource.encoded.len())
            + string_len(3, &self.name)
    }
}

impl Message for DeltaResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_string(1, &self.system_version_info, buf);
        for e in &self.resources {
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(e.body_len() as u64, buf);
            put_string(1, &e.version, buf);
            put_bytes_field(2, &e.resource.encoded, buf);
            put_string(3, &e.name, buf);
        }
        put_string(4, &self.type_url, buf);
        put_string(5, &self.nonce, buf);
        for name in &self.removed_resources {
            // Repeated strings are written even when empty.
            encode_key(6, WireType::LengthDelimited, buf);
            encode_varint(name.len() as u64, buf);
            buf.put_slice(name.as_bytes());
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        string_len(1, &self.system_version_info)
            + self
                .resources
                .iter()
                .map(|e| bytes_field_len(2, e.body_len()))
                .sum::<usize>()
            + string_len(4, &self.type_url)
            + string_len(5, &self.nonce)
            + self
                .removed_resources
                .iter()
                .map(|n| bytes_field_len(6, n.len()))
                .sum::<usize>()
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl SotwResponse {
    /// The same response as envoy-types decodes it (tests, diagnostics).
    pub fn to_proto(&self) -> DiscoveryResponse {
        DiscoveryResponse::decode(self.encode_to_vec().as_slice())
            .expect("we encode valid protobuf")
    }
}

impl DeltaResponse {
    pub fn to_proto(&self) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse::decode(self.encode_to_vec().as_slice())
            .expect("we encode valid protobuf")
    }
}

#[cfg(test)]
mod tests;
