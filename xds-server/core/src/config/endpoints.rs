//! The endpoints file: the embedded default source, used with no Kubernetes cluster at all.
//!
//! ```yaml
//! services:
//! - name: checkout                 # DNS-1123 label
//!   namespace: shop                # DNS-1123 label
//!   ports: [{name: http, port: 8080}]
//!   trafficDistribution: PreferSameZone   # optional, as Kubernetes' Service field: PreferSameZone,
//!                                  # PreferClose (its alias) or PreferSameNode (by the endpoints' and
//!                                  # clients' `kubernetes.io/hostname` labels, then by zone)
//!   identity: spiffe://cluster.local/ns/shop/sa/checkout   # optional: the SPIFFE ID its endpoints'
//!                                  # certificates carry (secure naming, with `mtls: STRICT`)
//!   endpoints:                     # optional (a service may have none)
//!   - address: 127.0.0.1           # an IP address
//!     port: 9001                   # optional; only for single-port services: the target port
//!     ports: {http: 9001}          # optional; per service-port-name target port
//!     locality: {region: us-east1, zone: us-east1-b, subzone: rack-1}   # optional, every level optional
//!     labels: {topology.istio.io/cluster: east}                        # optional
//!     ready: true                  # optional, default true; false → Health::Unhealthy (kept)
//!     draining: false              # optional, default false; true → Health::Draining (wins over ready)
//!     identity: spiffe://cluster.local/ns/shop/sa/checkout-canary   # optional; overrides the service's
//! gateways:                        # optional: the east-west gateway of each network (split horizon)
//! - network: n2                    # an endpoint's `topology.istio.io/network` label value
//!   address: 127.0.0.1             # an IP address (Envoy's EDS takes no hostnames)
//!   port: 15443
//! ```
//!
//! JSON is YAML too, so a generated file may be written as JSON (one object with the same fields); it
//! is read several times faster (see `docs/benchmarks.md`) and checked the same way.
//!
//! A file is accepted whole or not at all: every error names the file, the line (where known), the
//! field path and the reason. An empty file or document is an error, never an empty registry; an
//! explicit `services: []` is valid.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::config::error::{Document, Invalid};
use crate::config::scalar::port_number;
use crate::config::yaml::{self, FieldPath, UniqueKeys};
use crate::config::{FileError, FileKind};
use crate::model::{
    labels, Endpoint, Health, Locality, NetworkGateway, Registry, Service, ServiceId, ServicePort,
    SpiffeId, TrafficDistribution,
};

/// The words of an endpoints file's `Read` and `Empty` errors.
pub const ENDPOINTS_FILE: FileKind = FileKind {
    what: "the endpoints file",
    needs: "an endpoints file needs `services:` (write `services: []` to declare no services)",
};

/// Why an endpoints file was rejected: a [`FileError`] without document numbers. `Display` is
/// `FILE[:LINE[:COLUMN]]: [FIELD: ]REASON`, e.g.
/// `endpoints.yaml:9:5: services[0].endpoints[1].port: port 0 is out of range (1-65535)`.
pub type EndpointsFileError = FileError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(deserialize_with = "non_null_list")]
    services: Vec<RawService>,
    #[serde(default, deserialize_with = "non_null_list")]
    gateways: Vec<RawGateway>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    network: String,
    address: String,
    port: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    namespace: String,
    #[serde(deserialize_with = "non_null_list")]
    ports: Vec<RawPort>,
    #[serde(default, deserialize_with = "non_null_list")]
    endpoints: Vec<RawEndpoint>,
    #[serde(rename = "trafficDistribution")]
    traffic_distribution: Option<String>,
    identity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: String,
    port: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    address: String,
    port: Option<i64>,
    ports: Option<UniqueKeys<i64>>,
    locality: Option<RawLocality>,
    #[serde(default)]
    labels: UniqueKeys<String>,
    ready: Option<bool>,
    draining: Option<bool>,
    identity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocality {
    #[serde(default)]
    region: String,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    subzone: String,
}

/// A list that must not be written as a bare `key:` (null): serde would read that as an empty list, and
/// a file cut short after `services:` must not become an empty registry.
fn non_null_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    use serde::de::{Error, SeqAccess, Visitor};

    struct List<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for List<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
        fn visit_unit<E: Error>(self) -> Result<Vec<T>, E> {
            Err(E::custom(
                "is empty (null); write `[]` for an empty list, or list the items",
            ))
        }
        fn visit_none<E: Error>(self) -> Result<Vec<T>, E> {
            self.visit_unit()
        }
    }
    // `deserialize_any` (not `deserialize_option`) so the error carries this value's line and path.
    d.deserialize_any(List(std::marker::PhantomData))
}

/// Parses and validates endpoints-file text. `source_name` (usually the path) names the file in errors.
pub fn parse_endpoints(source_name: &str, text: &str) -> Result<Registry, FileError> {
    let doc = Document {
        file: source_name,
        text,
        number: None,
    };
    let empty = || FileError::Empty {
        kind: ENDPOINTS_FILE,
        file: source_name.to_string(),
    };

    // The usual file is good: one parse. Every free-form mapping in the format refuses duplicate
    // keys itself (`UniqueKeys`) and serde refuses duplicate fields and a second document, so a
    // file that deserializes whole passes the first pass below; anything else takes the passes in
    // order, so that the error is the one they give.
    //
    // A generated file is often JSON, which is YAML too. serde_json reads it several times faster
    // than the YAML loader, which first collects every event of the file in one growing list (on a
    // 500-service file most of a reload's CPU). Only a file it takes whole goes this way; any other
    // goes through the YAML passes, so an error reads the same whichever way the file is written.
    if looks_like_json(text) {
        if let Ok(raw) = serde_json::from_str::<RawFile>(text) {
            return build(raw).map_err(|e| doc.invalid(e));
        }
    }
    if let Ok(raw) = serde_yaml_ng::from_str::<RawFile>(text) {
        return build(raw).map_err(|e| doc.invalid(e));
    }

    // Pass 1: well-formed YAML without duplicate keys, exactly one non-empty document.
    let mut documents = serde_yaml_ng::Deserializer::from_str(text);
    let Some(first) = documents.next() else {
        return Err(empty());
    };
    let is_null = yaml::probe(first).map_err(|e| doc.probe_error(&e))?;
    if let Some(second) = documents.next() {
        yaml::probe(second).map_err(|e| doc.probe_error(&e))?;
        return Err(FileError::Invalid {
            file: source_name.to_string(),
            document: None,
            line: None,
            column: None,
            field: String::new(),
            reason: "more than one YAML document (`---`); the endpoints file holds exactly one"
                .to_string(),
        });
    }
    if is_null {
        return Err(empty());
    }

    // Pass 2: the schema (unknown fields, missing fields, types), positions from serde_yaml_ng.
    let raw: RawFile = serde_yaml_ng::from_str(text).map_err(|e| doc.schema_error(&e))?;

    // Pass 3: meaning, positions found by walking the document to the offending field.
    build(raw).map_err(|e| doc.invalid(e))
}

/// A JSON object: the whole text is one (YAML allows a comment or `---` before a document, JSON not).
fn looks_like_json(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

pub fn parse_bytes(file: &str, bytes: &[u8]) -> Result<Registry, FileError> {
    parse_endpoints(file, FileError::text(ENDPOINTS_FILE, file, bytes)?)
}

fn build(raw: RawFile) -> Result<Registry, Invalid> {
    let root = FieldPath::root().key("services");
    let mut services = BTreeMap::new();
    let mut first_index: BTreeMap<ServiceId, usize> = BTreeMap::new();
    for (i, raw_service) in raw.services.into_iter().enumerate() {
        let path = root.index(i);
        let service = build_service(raw_service, &path)?;
        if let Some(first) = first_index.get(&service.id) {
            return Err((
                path.key("name"),
                format!(
                    "duplicate service {} (already defined at services[{first}])",
                    service.id
                ),
            ));
        }
        first_index.insert(service.id.clone(), i);
        services.insert(service.id.clone(), service);
    }
    let mut gateways: BTreeMap<String, NetworkGateway> = BTreeMap::new();
    let mut first_gateway: BTreeMap<String, usize> = BTreeMap::new();
    for (i, raw) in raw.gateways.into_iter().enumerate() {
        let path = FieldPath::root().key("gateways").index(i);
        let network = raw.network.trim();
        if network.is_empty() || network.contains(char::is_whitespace) {
            return Err((
                path.key("network"),
                format!(
                    "{:?} is not a network name (the value of endpoints' {} label)",
                    raw.network,
                    labels::NETWORK
                ),
            ));
        }
        if let Some(first) = first_gateway.get(network) {
            return Err((
                path.key("network"),
                format!(
                    "duplicate gateway for network {network} (already defined at gateways[{first}]); \
                     a network has one gateway address"
                ),
            ));
        }
        let address: IpAddr = raw.address.trim().parse().map_err(|_| {
            (
                path.key("address"),
                format!(
                    "{:?} is not an IP address (Envoy's EDS takes IP addresses only)",
                    raw.address
                ),
            )
        })?;
        let port = port_number(raw.port).map_err(|r| (path.key("port"), r))?;
        first_gateway.insert(network.to_string(), i);
        gateways.insert(network.to_string(), NetworkGateway::new(address, port));
    }
    Ok(Registry { services, gateways })
}

fn build_service(raw: RawService, path: &FieldPath) -> Result<Service, Invalid> {
    yaml::check_dns_label(&raw.name, "service name").map_err(|r| (path.key("name"), r))?;
    yaml::check_dns_label(&raw.namespace, "namespace").map_err(|r| (path.key("namespace"), r))?;
    let id = ServiceId::new(raw.namespace, raw.name);
    // Unlike Kubernetes, which may add values and so ignores unknown ones, this file is ours: an
    // unknown value is a typo, rejected like any other.
    let traffic_distribution = match &raw.traffic_distribution {
        None => None,
        Some(value) => Some(TrafficDistribution::parse(value).ok_or_else(|| {
            let known = TrafficDistribution::ALL.map(|d| d.as_str());
            let hint = yaml::hint(value, &known);
            (
                path.key("trafficDistribution"),
                format!(
                    "unknown trafficDistribution `{value}`, expected one of {}{hint}",
                    known.join(", ")
                ),
            )
        })?),
    };

    let identity = raw
        .identity
        .as_deref()
        .map(|text| spiffe_id(text, &path.key("identity")))
        .transpose()?;

    if raw.ports.is_empty() {
        return Err((
            path.key("ports"),
            "a service needs at least one port".to_string(),
        ));
    }
    let mut ports: Vec<ServicePort> = Vec::with_capacity(raw.ports.len());
    for (j, raw_port) in raw.ports.into_iter().enumerate() {
        let port_path = path.key("ports").index(j);
        yaml::check_dns_label(&raw_port.name, "port name")
            .map_err(|r| (port_path.key("name"), r))?;
        let number = port_number(raw_port.port).map_err(|r| (port_path.key("port"), r))?;
        if let Some(k) = ports.iter().position(|p| p.name == raw_port.name) {
            return Err((
                port_path.key("name"),
                format!("duplicate port name `{}` (also ports[{k}])", raw_port.name),
            ));
        }
        if let Some(k) = ports.iter().position(|p| p.port == number) {
            return Err((
                port_path.key("port"),
                format!("duplicate port number {number} (also ports[{k}])"),
            ));
        }
        ports.push(ServicePort {
            name: raw_port.name,
            port: number,
        });
    }

    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(raw.endpoints.len());
    for (k, raw_endpoint) in raw.endpoints.into_iter().enumerate() {
        let ep_path = path.key("endpoints").index(k);
        let endpoint = build_endpoint(raw_endpoint, &ports, identity.as_ref(), &ep_path)?;
        let targets =
            |e: &Endpoint| -> Vec<u16> { ports.iter().map(|p| e.target_port(p)).collect() };
        if let Some(other) = endpoints
            .iter()
            .position(|e| e.address == endpoint.address && targets(e) == targets(&endpoint))
        {
            return Err((
                ep_path.key("address"),
                format!(
                    "duplicate endpoint {} (same address and ports as endpoints[{other}])",
                    endpoint.address
                ),
            ));
        }
        endpoints.push(endpoint);
    }
    Ok(Service {
        traffic_distribution,
        id,
        ports,
        endpoints,
        identity,
    })
}

/// An `identity:` value: a full SPIFFE ID (`spiffe://TRUST_DOMAIN/PATH`).
fn spiffe_id(text: &str, path: &FieldPath) -> Result<SpiffeId, Invalid> {
    SpiffeId::parse(text).map_err(|e| (path.clone(), e.to_string()))
}

/// `service_identity`: the service's `identity`, which an endpoint without its own carries.
fn build_endpoint(
    raw: RawEndpoint,
    ports: &[ServicePort],
    service_identity: Option<&SpiffeId>,
    path: &FieldPath,
) -> Result<Endpoint, Invalid> {
    let address: IpAddr = raw.address.trim().parse().map_err(|_| {
        (
            path.key("address"),
            format!(
                "{:?} is not an IP address (hostnames are not supported)",
                raw.address
            ),
        )
    })?;

    let mut port_overrides = BTreeMap::new();
    if let Some(port) = raw.port {
        if raw.ports.is_some() {
            return Err((
                path.key("port"),
                "set either `port` or `ports`, not both".to_string(),
            ));
        }
        if ports.len() != 1 {
            let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
            return Err((
                path.key("port"),
                format!(
                    "`port` is only valid when the service has exactly one port; this one has {} ({}), \
                     so use `ports: {{{}: PORT, ...}}`",
                    ports.len(),
                    names.join(", "),
                    names[0]
                ),
            ));
        }
        let number = port_number(port).map_err(|r| (path.key("port"), r))?;
        port_overrides.insert(ports[0].name.clone(), number);
    }
    for (name, port) in raw.ports.into_iter().flatten() {
        let port_path = path.key("ports").key(&name);
        if !ports.iter().any(|p| p.name == name) {
            let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
            let hint = yaml::hint(&name, &names);
            return Err((
                port_path,
                format!(
                    "`{name}` is not a port of this service (its ports: {}){hint}",
                    names.join(", ")
                ),
            ));
        }
        let number = port_number(port).map_err(|r| (port_path.clone(), r))?;
        port_overrides.insert(name, number);
    }

    if let Some(key) = raw.labels.0.keys().find(|k| k.trim().is_empty()) {
        return Err((
            path.key("labels").key(key),
            "label keys must not be empty".to_string(),
        ));
    }

    let locality = raw
        .locality
        .map(|l| Locality {
            region: l.region,
            zone: l.zone,
            subzone: l.subzone,
        })
        .unwrap_or_default();
    let identity = match raw.identity.as_deref() {
        Some(text) => Some(spiffe_id(text, &path.key("identity"))?),
        None => service_identity.cloned(),
    };
    let health = if raw.draining.unwrap_or(false) {
        Health::Draining
    } else if raw.ready.unwrap_or(true) {
        Health::Healthy
    } else {
        Health::Unhealthy
    };
    Ok(Endpoint {
        address,
        port_overrides,
        locality,
        labels: raw.labels.0,
        health,
        identity,
    })
}

#[cfg(test)]
mod tests;
