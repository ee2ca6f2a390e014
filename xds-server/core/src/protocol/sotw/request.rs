//! A state-of-the-world `DiscoveryRequest` as the server reads it off the wire.
//!
//! Every SotW ACK repeats the client's whole subscription: an Envoy subscribed to 500 clusters sends
//! 500 EDS names (~15 KB) after each push, 5,000 Envoys 75 MB per endpoint change. Decoded as
//! `DiscoveryRequest`, that is one `String` allocation per name per ACK, which profiles showed as a
//! fifth of the server's CPU during a push. [`SotwRequest`] decodes the same message but keeps the
//! names as they came, a slice of the message ([`ResourceNames`]), so the common case (the same names
//! as last time, recognised by a digest of the list) copies and allocates nothing per name.

use bytes::{Buf, BufMut, Bytes};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::rpc::Status;
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::protocol::wire::{bytes_field_len, put_bytes_field, put_string, string_len};
use std::hash::BuildHasher;

/// `DiscoveryRequest`'s field numbers (envoy/service/discovery/v3/discovery.proto).
mod tag {
    pub const VERSION_INFO: u32 = 1;
    pub const NODE: u32 = 2;
    pub const RESOURCE_NAMES: u32 = 3;
    pub const TYPE_URL: u32 = 4;
    pub const RESPONSE_NONCE: u32 = 5;
    pub const ERROR_DETAIL: u32 = 6;
}

/// The fields of a `DiscoveryRequest` the server uses, decoded from the same wire format. Fields it
/// never reads (`resource_locators`) are skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SotwRequest {
    pub version_info: String,
    pub node: Option<Node>,
    pub resource_names: ResourceNames,
    pub type_url: String,
    pub response_nonce: String,
    pub error_detail: Option<Status>,
}

/// A request's resource names, in the order sent, as they came on the wire: each name's length
/// (a varint) and bytes, one name after the other with the field's key byte between them. Decoded
/// from a `Bytes` message this is a slice of the message itself: an ACK of 500 names is one walk
/// over its bytes (lengths, UTF-8, what the limits and the wildcard test need), no copy and no
/// allocation. What the limits and the wildcard test need is noted while decoding, so the common
/// ACK never looks at the names again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceNames {
    /// `len name (KEY len name)*`, each name checked to be UTF-8 when taken.
    wire: Bytes,
    count: usize,
    /// Bytes of all names together (without their lengths and keys).
    total: usize,
    longest: usize,
    wildcard: bool,
}

/// What one walk over a run of names found.
#[derive(Default)]
struct RunStats {
    count: usize,
    total: usize,
    longest: usize,
    wildcard: bool,
}

impl RunStats {
    fn note(&mut self, name: &[u8]) {
        self.count += 1;
        self.total += name.len();
        self.longest = self.longest.max(name.len());
        self.wildcard |= name == b"*";
    }
}

/// The varint at the start of `bytes` (prost's decoder): its value and how many bytes it took, or
/// `None` when it is cut off or malformed.
fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut rest = bytes;
    let value = encoding::decode_varint(&mut rest).ok()?;
    Some((value, bytes.len() - rest.len()))
}

/// Appends one name to a run being built (`len name (KEY len name)*`) and notes it.
fn push_name(run: &mut Vec<u8>, stats: &mut RunStats, name: &[u8]) {
    if stats.count > 0 {
        run.push(NAME_KEY);
    }
    encoding::encode_varint(name.len() as u64, run);
    run.extend_from_slice(name);
    stats.note(name);
}

/// The run of names at the start of `chunk` (the first name's key already read), if every name in
/// it is whole and UTF-8: its length in bytes and what it holds. `None` sends the caller to the
/// name-by-name path, which reports what is wrong the way prost would.
fn scan_run(chunk: &[u8]) -> Option<(usize, RunStats)> {
    let mut stats = RunStats::default();
    let mut at = 0;
    loop {
        let (len, n) = read_varint(&chunk[at..])?;
        let start = at + n;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        let name = chunk.get(start..end)?;
        // Names are nearly always ASCII, which is checked several times faster than UTF-8.
        if !name.is_ascii() && std::str::from_utf8(name).is_err() {
            return None;
        }
        stats.note(name);
        at = end;
        if chunk.get(at) != Some(&NAME_KEY) {
            return Some((at, stats));
        }
        at += 1;
    }
}

impl ResourceNames {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of all names together.
    pub fn total_bytes(&self) -> usize {
        self.total
    }

    /// Bytes of the longest name.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// Whether one of the names is `*`.
    pub fn has_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The names in the order the client sent them.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let wire = &self.wire[..];
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= wire.len() {
                return None;
            }
            if at > 0 {
                at += 1; // the key between two names
            }
            let (len, n) = read_varint(&wire[at..]).expect("checked when taken");
            let start = at + n;
            at = start + len as usize;
            Some(std::str::from_utf8(&wire[start..at]).expect("checked to be UTF-8 when taken"))
        })
    }

    /// Equal for equal lists (same names in the same order); two different lists share one only by
    /// a 64-bit hash collision. It only ever compares a stream's request with the same stream's
    /// previous one, so a fixed-seed fast hash is enough: a client that crafted a collision would
    /// only confuse its own subscription, which it can change openly anyway. (A client spelling a
    /// length with a longer varint than needed gets a different digest for the same list, and is
    /// only compared name by name.)
    pub fn digest(&self) -> u64 {
        foldhash::fast::FixedState::default().hash_one(&self.wire[..])
    }

    /// Adds a run of names (`len name (KEY len name)*`, checked) after those held.
    fn append_run(&mut self, run: Bytes, stats: RunStats) {
        if self.wire.is_empty() {
            self.wire = run;
        } else {
            // Names split by another field: rare, so joined by copying.
            let mut joined = Vec::with_capacity(self.wire.len() + 1 + run.len());
            joined.extend_from_slice(&self.wire);
            joined.push(NAME_KEY);
            joined.extend_from_slice(&run);
            self.wire = joined.into();
        }
        self.count += stats.count;
        self.total += stats.total;
        self.longest = self.longest.max(stats.longest);
        self.wildcard |= stats.wildcard;
    }

    fn merge(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
        // Clients send the names one after the other: the whole run is taken at once (from a
        // `Bytes` message, as a slice of it), without a round through prost's field loop per name.
        if let Some((len, stats)) = scan_run(buf.chunk()) {
            let run = buf.copy_to_bytes(len);
            self.append_run(run, stats);
            return Ok(());
        }
        // A name cut off or not UTF-8 (an error, said as prost says it), or a message that is not
        // in one piece: name by name.
        let mut run = Vec::new();
        let mut stats = RunStats::default();
        loop {
            take_name(buf, ctx.clone(), &mut run, &mut stats)?;
            if buf.chunk().first() != Some(&NAME_KEY) {
                break;
            }
            buf.advance(1);
        }
        self.append_run(run.into(), stats);
        Ok(())
    }
}

/// One name (its length, then its bytes) from `buf` onto `run` ([`push_name`]).
fn take_name(
    buf: &mut impl Buf,
    ctx: DecodeContext,
    run: &mut Vec<u8>,
    stats: &mut RunStats,
) -> Result<(), DecodeError> {
    let len = encoding::decode_varint(buf)?;
    if len > buf.remaining() as u64 {
        // prost's own error for a length past the end.
        let mut short = Vec::new();
        encoding::encode_varint(1, &mut short);
        return encoding::skip_field(
            WireType::LengthDelimited,
            tag::RESOURCE_NAMES,
            &mut short.as_slice(),
            ctx,
        );
    }
    let len = len as usize;
    let mut name = vec![0; len];
    buf.copy_to_slice(&mut name);
    if std::str::from_utf8(&name).is_err() {
        // prost's own error for a string field that is not UTF-8.
        let mut again = Vec::with_capacity(len + 10);
        encoding::encode_varint(len as u64, &mut again);
        again.extend_from_slice(&name);
        let mut ignored = String::new();
        return encoding::string::merge(
            WireType::LengthDelimited,
            &mut ignored,
            &mut again.as_slice(),
            ctx,
        );
    }
    push_name(run, stats, &name);
    Ok(())
}

/// The key of one `resource_names` entry: field 3, length-delimited (one byte, as the field number
/// is below 16).
const NAME_KEY: u8 = ((tag::RESOURCE_NAMES as u8) << 3) | WireType::LengthDelimited as u8;

impl<S: AsRef<str>> FromIterator<S> for ResourceNames {
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Self {
        let mut run = Vec::new();
        let mut stats = RunStats::default();
        for name in names {
            push_name(&mut run, &mut stats, name.as_ref().as_bytes());
        }
        let mut out = ResourceNames::default();
        out.append_run(run.into(), stats);
        out
    }
}

impl Message for SotwRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_string(tag::VERSION_INFO, &self.version_info, buf);
        if let Some(node) = &self.node {
            encoding::message::encode(tag::NODE, node, buf);
        }
        for name in self.resource_names.iter() {
            // Repeated strings are written even when empty.
            put_bytes_field(tag::RESOURCE_NAMES, name.as_bytes(), buf);
        }
        put_string(tag::TYPE_URL, &self.type_url, buf);
        put_string(tag::RESPONSE_NONCE, &self.response_nonce, buf);
        if let Some(status) = &self.error_detail {
            encoding::message::encode(tag::ERROR_DETAIL, status, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            tag::VERSION_INFO => {
                encoding::string::merge(wire_type, &mut self.version_info, buf, ctx)
            }
            tag::NODE => encoding::message::merge(
                wire_type,
                self.node.get_or_insert_with(Node::default),
                buf,
                ctx,
            ),
            tag::RESOURCE_NAMES => self.resource_names.merge(wire_type, buf, ctx),
            tag::TYPE_URL => encoding::string::merge(wire_type, &mut self.type_url, buf, ctx),
            tag::RESPONSE_NONCE => {
                encoding::string::merge(wire_type, &mut self.response_nonce, buf, ctx)
            }
            tag::ERROR_DETAIL => encoding::message::merge(
                wire_type,
                self.error_detail.get_or_insert_with(Status::default),
                buf,
                ctx,
            ),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        string_len(tag::VERSION_INFO, &self.version_info)
            + self
                .node
                .as_ref()
                .map_or(0, |n| encoding::message::encoded_len(tag::NODE, n))
            + self
                .resource_names
                .iter()
                .map(|n| bytes_field_len(tag::RESOURCE_NAMES, n.len()))
                .sum::<usize>()
            + string_len(tag::TYPE_URL, &self.type_url)
            + string_len(tag::RESPONSE_NONCE, &self.response_nonce)
            + self
                .error_detail
                .as_ref()
                .map_or(0, |s| encoding::message::encoded_len(tag::ERROR_DETAIL, s))
    }

    fn clear(&mut self) {
        *self = SotwRequest::default();
    }
}

/// For callers that hold a decoded `DiscoveryRequest` (tests, tools): the same request.
impl From<&DiscoveryRequest> for SotwRequest {
    fn from(req: &DiscoveryRequest) -> Self {
        SotwRequest {
            version_info: req.version_info.clone(),
            node: req.node.clone(),
            resource_names: req.resource_names.iter().collect(),
            type_url: req.type_url.clone(),
            response_nonce: req.response_nonce.clone(),
            error_detail: req.error_detail.clone(),
        }
    }
}

impl From<DiscoveryRequest> for SotwRequest {
    fn from(req: DiscoveryRequest) -> Self {
        SotwRequest::from(&req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::ResourceLocator;

    fn discovery_request(names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: "v1".into(),
            node: Some(Node {
                id: "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local".into(),
                ..Node::default()
            }),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            resource_locators: vec![ResourceLocator {
                name: "ignored".into(),
                ..ResourceLocator::default()
            }],
            type_url: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
            response_nonce: "7".into(),
            error_detail: Some(Status {
                code: 3,
                message: "refused".into(),
                ..Status::default()
            }),
        }
    }

    #[test]
    fn decodes_what_discovery_request_encodes() {
        let sent = discovery_request(&["outbound|80||a.ns", "outbound|80||zürich.ns"]);
        let got = SotwRequest::decode(Bytes::from(sent.encode_to_vec())).unwrap();
        assert_eq!(got, SotwRequest::from(&sent));
        assert_eq!(
            got.resource_names.iter().collect::<Vec<_>>(),
            ["outbound|80||a.ns", "outbound|80||zürich.ns"]
        );
        assert_eq!(got.error_detail.as_ref().unwrap().message, "refused");
    }

    #[test]
    fn encodes_what_discovery_request_decodes() {
        let sent = SotwRequest::from(discovery_request(&["x", "y"]));
        let back = DiscoveryRequest::decode(sent.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.resource_names, ["x", "y"]);
        assert_eq!(back.encoded_len(), back.encode_to_vec().len());
        assert_eq!(sent.encoded_len(), sent.encode_to_vec().len());
    }

    #[test]
    fn digest_is_the_list_in_its_order() {
        let digest = |names: &[&str]| names.iter().collect::<ResourceNames>().digest();
        assert_eq!(digest(&["a", "b"]), digest(&["a", "b"]));
        assert_ne!(digest(&["a", "b"]), digest(&["b", "a"]));
        assert_ne!(digest(&["ab"]), digest(&["a", "b"]));
        assert_ne!(digest(&["a", "a"]), digest(&[]));
        let wire = SotwRequest::decode(Bytes::from(discovery_request(&["a", "b"]).encode_to_vec()))
            .unwrap();
        assert_eq!(wire.resource_names.digest(), digest(&["a", "b"]));
    }

    #[test]
    fn a_name_that_is_not_utf8_is_a_decode_error() {
        let mut raw = Vec::new();
        encoding::bytes::encode(tag::RESOURCE_NAMES, &vec![0xff_u8, 0xfe], &mut raw);
        let err = SotwRequest::decode(Bytes::from(raw)).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn notes_what_the_limits_and_the_wildcard_test_need() {
        let names: ResourceNames = ["a.ns", "*", "longer.ns"].iter().collect();
        assert_eq!(names.len(), 3);
        assert_eq!(names.total_bytes(), 4 + 1 + 9);
        assert_eq!(names.longest(), 9);
        assert!(names.has_wildcard());
        assert!(!["a", "**"].iter().collect::<ResourceNames>().has_wildcard());
        assert!(ResourceNames::default().is_empty());
    }

    #[test]
    fn names_between_other_fields_and_bad_names_after_good_ones() {
        // Names split by another field keep their order; the run after the first name is taken in
        // one go, and a bad name in that run is the same error as a first bad name.
        let mut raw = Vec::new();
        encoding::string::encode(tag::RESOURCE_NAMES, &"a".to_string(), &mut raw);
        encoding::string::encode(tag::RESOURCE_NAMES, &"b".to_string(), &mut raw);
        encoding::string::encode(tag::TYPE_URL, &"t".to_string(), &mut raw);
        encoding::string::encode(tag::RESOURCE_NAMES, &"c".repeat(200), &mut raw);
        let got = SotwRequest::decode(Bytes::from(raw.clone())).unwrap();
        let c = "c".repeat(200);
        assert_eq!(
            got.resource_names.iter().collect::<Vec<_>>(),
            ["a", "b", c.as_str()]
        );
        assert_eq!(got.type_url, "t");
        assert_eq!(got.resource_names.longest(), 200);

        let mut bad = Vec::new();
        encoding::string::encode(tag::RESOURCE_NAMES, &"a".to_string(), &mut bad);
        encoding::bytes::encode(tag::RESOURCE_NAMES, &vec![0xff_u8], &mut bad);
        let err = SotwRequest::decode(Bytes::from(bad)).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");

        let mut short = Vec::new();
        encoding::string::encode(tag::RESOURCE_NAMES, &"a".to_string(), &mut short);
        short.push(NAME_KEY);
        encoding::encode_varint(10, &mut short);
        short.extend_from_slice(b"abc");
        assert!(SotwRequest::decode(short.as_slice()).is_err());
    }

    #[test]
    fn names_are_a_slice_of_the_message_they_came_in() {
        let long = "n".repeat(300); // a two-byte length
        let sent = discovery_request(&["a.ns", &long, "*"]);
        let raw = Bytes::from(sent.encode_to_vec());
        let got = SotwRequest::decode(raw.clone()).unwrap();
        let inside = raw.as_ptr_range();
        assert!(inside.contains(&got.resource_names.wire.as_ptr()), "copied");
        assert_eq!(
            got.resource_names.iter().collect::<Vec<_>>(),
            ["a.ns", long.as_str(), "*"]
        );
        assert_eq!(got.resource_names.longest(), 300);
        assert!(got.resource_names.has_wildcard());
        assert_eq!(got, SotwRequest::from(&sent));
    }

    #[test]
    fn a_message_in_pieces_decodes_the_same() {
        // A `Buf` whose names cross from one piece to the next takes the name-by-name path.
        let names: Vec<String> = (0..50)
            .map(|i| format!("outbound|80||svc-{i}.ns"))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let raw = discovery_request(&names).encode_to_vec();
        for cut in [1, 40, raw.len() / 2, raw.len() - 3] {
            let pieces = (&raw[..cut]).chain(&raw[cut..]);
            let got = SotwRequest::decode(pieces).unwrap();
            assert_eq!(got.resource_names.iter().collect::<Vec<_>>(), names);
            assert_eq!(got.resource_names.len(), 50);
            assert_eq!(
                got.resource_names.digest(),
                names.iter().collect::<ResourceNames>().digest()
            );
        }
    }

    #[test]
    fn a_name_past_the_end_is_a_decode_error() {
        let mut raw = Vec::new();
        encoding::encode_key(tag::RESOURCE_NAMES, WireType::LengthDelimited, &mut raw);
        encoding::encode_varint(10, &mut raw);
        raw.extend_from_slice(b"abc");
        assert!(SotwRequest::decode(raw.as_slice()).is_err());
    }
}
