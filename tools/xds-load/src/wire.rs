//! The bytes on the wire, kept cheap: the load generator shares two cores with the server it measures,
//! so its clients must not spend them decoding 2.5 million load assignments.
//!
//! * [`RawCodec`]: a gRPC codec that sends pre-encoded requests and hands back each response's bytes
//!   untouched (their length is what the server sent).
//! * [`SotwResponse`] / [`DeltaResponse`]: the response envelopes with only the fields a client reads;
//!   each resource stays a zero-copy slice of the received buffer.
//! * [`string_field`]: one top-level string field of an encoded message (a resource's name is field 1
//!   of `Cluster`, `ClusterLoadAssignment`, `Listener` and `RouteConfiguration`).
//! * [`address_needle`] / [`contains`]: whether an encoded `ClusterLoadAssignment` holds an endpoint with
//!   a given IP address, by searching for the address's encoded `SocketAddress.address` field.
//!
//! The unit tests check all of this against the real envoy-types messages.

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// gRPC method paths of the aggregated discovery service.
pub const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
pub const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// A request as encoded protobuf, in two parts so a large constant part (the EDS subscription's names)
/// is shared between clients instead of copied per request.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub head: Bytes,
    pub tail: Bytes,
}

impl Outgoing {
    pub fn new(head: impl Into<Bytes>) -> Self {
        Outgoing {
            head: head.into(),
            tail: Bytes::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sends [`Outgoing`] as is, receives each message as its raw bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Outgoing;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        dst.put_slice(&item.head);
        dst.put_slice(&item.tail);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

/// `google.protobuf.Any` with only its value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawAny {
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `DiscoveryResponse`, the fields a client reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SotwResponse {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<RawAny>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// `DeltaDiscoveryResponse`, the fields a client reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaResponse {
    #[prost(string, tag = "1")]
    pub system_version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<RawDeltaResource>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
}

/// `envoy.service.discovery.v3.Resource`, the fields a client reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawDeltaResource {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(message, optional, tag = "2")]
    pub resource: Option<RawAny>,
    #[prost(string, tag = "3")]
    pub name: String,
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The first top-level length-delimited field `field` of an encoded message (a string's bytes), or
/// `None` if absent or the bytes are malformed.
pub fn string_field(mut buf: &[u8], field: u32) -> Option<&[u8]> {
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (number, wire_type) = ((key >> 3) as u32, key & 7);
        match wire_type {
            0 => {
                varint(&mut buf)?;
            }
            1 => buf = buf.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let value = buf.get(..len)?;
                if number == field {
                    return Some(value);
                }
                buf = &buf[len..];
            }
            5 => buf = buf.get(4..)?,
            _ => return None,
        }
    }
    None
}

/// The encoded `SocketAddress.address` field (field 2) holding `ip`: tag, length, bytes. Found in an
/// encoded `ClusterLoadAssignment` only if an endpoint has exactly that address (the length byte rules
/// out prefixes; string bytes are ASCII and never equal the tag byte).
pub fn address_needle(ip: &str) -> Vec<u8> {
    assert!(ip.len() < 128, "an IP address fits a one-byte length");
    let mut needle = Vec::with_capacity(ip.len() + 2);
    needle.push((2 << 3) | 2);
    needle.push(ip.len() as u8);
    needle.extend_from_slice(ip.as_bytes());
    needle
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut at = 0;
    while let Some(pos) = haystack[at..].iter().position(|&b| b == first) {
        let start = at + pos + 1;
        if haystack[start..].starts_with(rest) {
            return true;
        }
        at = start;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{
        address, socket_address, Address, SocketAddress,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::{
        lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
    };
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource,
    };
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    fn cla(name: &str, ips: &[&str]) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: ips
                    .iter()
                    .map(|ip| LbEndpoint {
                        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                            address: Some(Address {
                                address: Some(address::Address::SocketAddress(SocketAddress {
                                    address: ip.to_string(),
                                    port_specifier: Some(socket_address::PortSpecifier::PortValue(
                                        8080,
                                    )),
                                    ..Default::default()
                                })),
                            }),
                            ..Default::default()
                        })),
                        ..Default::default()
                    })
                    .collect(),
                priority: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn finds_cluster_name_and_exact_addresses() {
        let bytes = cla("svc-0001.load:8080", &["10.0.1.1", "11.0.0.17"]).encode_to_vec();
        assert_eq!(string_field(&bytes, 1), Some(&b"svc-0001.load:8080"[..]));
        assert!(contains(&bytes, &address_needle("11.0.0.17")));
        assert!(contains(&bytes, &address_needle("10.0.1.1")));
        assert!(!contains(&bytes, &address_needle("11.0.0.1")), "a prefix");
        assert!(!contains(&bytes, &address_needle("1.0.0.17")), "a suffix");
        assert!(!contains(&bytes, &address_needle("11.0.0.18")));
        assert_eq!(string_field(&bytes, 9), None);
        assert_eq!(string_field(&bytes[..5], 1), None, "truncated");
    }

    #[test]
    fn envelopes_decode_real_responses() {
        let value = cla("a", &["10.0.0.1"]).encode_to_vec();
        let sotw = DiscoveryResponse {
            version_info: "v1".into(),
            resources: vec![Any {
                type_url: ENDPOINT_TYPE.into(),
                value: value.clone(),
            }],
            type_url: ENDPOINT_TYPE.into(),
            nonce: "7".into(),
            ..Default::default()
        };
        let got = SotwResponse::decode(Bytes::from(sotw.encode_to_vec())).unwrap();
        assert_eq!((got.version_info.as_str(), got.nonce.as_str()), ("v1", "7"));
        assert_eq!(got.type_url, ENDPOINT_TYPE);
        assert_eq!(got.resources[0].value, value);

        let delta = DeltaDiscoveryResponse {
            system_version_info: "3".into(),
            resources: vec![Resource {
                name: "a".into(),
                version: "00ff".into(),
                resource: Some(Any {
                    type_url: ENDPOINT_TYPE.into(),
                    value: value.clone(),
                }),
                ..Default::default()
            }],
            type_url: ENDPOINT_TYPE.into(),
            removed_resources: vec!["b".into()],
            nonce: "9".into(),
            ..Default::default()
        };
        let got = DeltaResponse::decode(Bytes::from(delta.encode_to_vec())).unwrap();
        assert_eq!(got.nonce, "9");
        assert_eq!(got.removed_resources, vec!["b".to_string()]);
        assert_eq!(got.resources[0].name, "a");
        assert_eq!(got.resources[0].resource.as_ref().unwrap().value, value);
    }
}
