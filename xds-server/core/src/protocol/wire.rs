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

use bytes::{Buf, BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use prost::encoding::{
    encode_key, encode_varint, encoded_len_varint, key_len, skip_field, DecodeContext, WireType,
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
/// Name and version come from the resource itself, so an entry allocates nothing per client.
#[derive(Debug, Clone)]
pub struct DeltaEntry {
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

pub(crate) fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        bytes_field_len(tag, s.len())
    }
}

pub(crate) fn put_string(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.put_slice(s.as_bytes());
    }
}

/// A length-delimited field holding an already encoded message.
pub(crate) fn bytes_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

pub(crate) fn put_bytes_field(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
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
    pub fn name(&self) -> &str {
        &self.resource.name
    }

    /// The version the client is told: the content hash as 16 lowercase hex digits.
    pub fn version(&self) -> [u8; 16] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let hash = self.resource.hash;
        std::array::from_fn(|i| HEX[((hash >> (60 - 4 * i)) & 0xf) as usize])
    }

    fn body_len(&self) -> usize {
        bytes_field_len(1, 16)
            + bytes_field_len(2, self.resource.encoded.len())
            + string_len(3, self.name())
    }
}

impl Message for DeltaResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_string(1, &self.system_version_info, buf);
        for e in &self.resources {
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(e.body_len() as u64, buf);
            put_bytes_field(1, &e.version(), buf);
            put_bytes_field(2, &e.resource.encoded, buf);
            put_string(3, e.name(), buf);
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

/// A response as the pieces of one gRPC message (the 5-byte length prefix, then the protobuf), for a
/// transport that sends a list of buffers instead of one encoded copy per stream.
///
/// Each piece is a small header this response owns (the prefix, its own fields, the length prefixes
/// around each resource) followed by at most one resource's shared encoding. Resources of at least
/// [`SHARED_MIN_BYTES`] are handed out as clones of the cache's `Bytes` (no copy: every client's
/// answer points at the same memory); smaller ones are copied into the header, which gathers up to
/// [`CHUNK_BYTES`] before it is handed out, so a response of many small resources is a few frames,
/// not thousands. The transport bounds how many copied chunks a stream has queued at once.
pub trait GrpcPieces {
    /// The length of the protobuf encoding (what the gRPC prefix announces).
    fn message_len(&self) -> usize;
    /// Writes piece `index`'s own bytes to `head`, and returns the shared bytes that follow them
    /// (`Some(None)`: none); `None` once there is no piece `index`.
    fn write_piece(&self, index: usize, head: &mut BytesMut) -> Option<Option<Bytes>>;
}

/// Resources at least this long are sent as the cache's shared bytes; shorter ones are copied into
/// chunks of up to [`CHUNK_BYTES`]. Measured: one chunk per resource of ~700 bytes (an EDS answer
/// of 12 endpoints) cost more than the bytes it saved, because h2 queues every chunk as a frame in a
/// per-connection slab that never shrinks (hundreds of KiB per client at 500 services). A resource
/// of 2 KiB or more makes a frame whose bookkeeping is small beside its bytes.
pub const SHARED_MIN_BYTES: usize = 2048;

/// A chunk of copied bytes is handed out once it reaches this size (h2's default frame size).
pub const CHUNK_BYTES: usize = 16 * 1024;

/// The chunks of one gRPC message, in order; concatenated they are exactly the gRPC framing of the
/// message's protobuf encoding (uncompressed).
pub struct GrpcChunks<M> {
    message: M,
    next_piece: usize,
    prefixed: bool,
    /// Shared bytes that go out after the header just handed out.
    shared: Option<Bytes>,
}

impl<M: GrpcPieces> GrpcChunks<M> {
    pub fn new(message: M) -> Self {
        Self {
            message,
            next_piece: 0,
            prefixed: false,
            shared: None,
        }
    }

    pub fn message(&self) -> &M {
        &self.message
    }
}

impl<M: GrpcPieces> Iterator for GrpcChunks<M> {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if let Some(shared) = self.shared.take() {
            return Some(shared);
        }
        let mut head = BytesMut::new();
        if !self.prefixed {
            self.prefixed = true;
            let len = self.message.message_len();
            // gRPC caps messages at 4 GiB by its own framing; ours are far below any limit.
            let len = u32::try_from(len).expect("a response shorter than 4 GiB");
            head.reserve(5);
            head.put_u8(0); // not compressed
            head.put_u32(len);
        }
        while let Some(shared) = self.message.write_piece(self.next_piece, &mut head) {
            self.next_piece += 1;
            match shared {
                Some(bytes) if bytes.len() >= SHARED_MIN_BYTES => {
                    if head.is_empty() {
                        return Some(bytes);
                    }
                    self.shared = Some(bytes);
                    break;
                }
                Some(bytes) => head.extend_from_slice(&bytes),
                None => {}
            }
            if head.len() >= CHUNK_BYTES {
                break;
            }
        }
        (!head.is_empty()).then(|| head.freeze())
    }
}

impl GrpcPieces for SotwResponse {
    fn message_len(&self) -> usize {
        self.encoded_len()
    }

    /// Pieces: 0 the version; 1..=n a resource each; n+1 the type and the nonce.
    fn write_piece(&self, index: usize, head: &mut BytesMut) -> Option<Option<Bytes>> {
        let n = self.resources.len();
        if index == 0 {
            put_string(1, &self.version_info, head);
            Some(None)
        } else if index <= n {
            let encoded = &self.resources[index - 1].encoded;
            encode_key(2, WireType::LengthDelimited, head);
            encode_varint(encoded.len() as u64, head);
            Some(Some(encoded.clone()))
        } else if index == n + 1 {
            put_string(4, &self.type_url, head);
            put_string(5, &self.nonce, head);
            Some(None)
        } else {
            None
        }
    }
}

impl GrpcPieces for DeltaResponse {
    fn message_len(&self) -> usize {
        self.encoded_len()
    }

    /// Pieces: 0 the system version; 1..=n an entry each, up to and including its resource (the
    /// entry's name, written after the resource, starts the next piece); n+1 the last entry's name,
    /// the type, the nonce and the removed names.
    fn write_piece(&self, index: usize, head: &mut BytesMut) -> Option<Option<Bytes>> {
        let n = self.resources.len();
        if index > n + 1 {
            return None;
        }
        if index == 0 {
            put_string(1, &self.system_version_info, head);
            return Some(None);
        }
        if index >= 2 {
            put_string(3, self.resources[index - 2].name(), head);
        }
        if index <= n {
            let entry = &self.resources[index - 1];
            encode_key(2, WireType::LengthDelimited, head);
            encode_varint(entry.body_len() as u64, head);
            put_bytes_field(1, &entry.version(), head);
            let encoded = &entry.resource.encoded;
            encode_key(2, WireType::LengthDelimited, head);
            encode_varint(encoded.len() as u64, head);
            return Some(Some(encoded.clone()));
        }
        put_string(4, &self.type_url, head);
        put_string(5, &self.nonce, head);
        for name in &self.removed_resources {
            encode_key(6, WireType::LengthDelimited, head);
            encode_varint(name.len() as u64, head);
            head.put_slice(name.as_bytes());
        }
        Some(None)
    }
}

#[cfg(test)]
mod tests;
