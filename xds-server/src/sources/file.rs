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
//!   endpoints:                     # optional (a service may have none)
//!   - address: 127.0.0.1           # an IP address
//!     port: 9001                   # optional; only for single-port services: the target port
//!     ports: {http: 9001}          # optional; per service-port-name target port
//!     locality: {region: us-east1, zone: us-east1-b, subzone: rack-1}   # optional, every level optional
//!     labels: {topology.istio.io/cluster: east}                        # optional
//!     ready: true                  # optional, default true; false → Health::Unhealthy (kept)
//!     draining: false              # optional, default false; true → Health::Draining (wins over ready)
//! gateways:                        # optional: the east-west gateway of each network (split horizon)
//! - network: n2                    # an endpoint's `topology.istio.io/network` label value
//!   address: 127.0.0.1             # an IP address (Envoy's EDS takes no hostnames)
//!   port: 15443
//! ```
//!
//! A file is accepted whole or not at all: every error names the file, the line (where known), the
//! field path and the reason. An empty file or document is an error, never an empty registry; an
//! explicit `services: []` is valid.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tracing::{error, info, warn};

use crate::model::{
    labels, Endpoint, Health, Locality, NetworkGateway, Registry, Service, ServiceId, ServicePort,
    TrafficDistribution,
};
use crate::sources::watch::{self, FileChange};
use crate::sources::yaml::{self, FieldPath};

pub use crate::sources::watch::WatchHandle;

/// Why an endpoints file was rejected. `Display` is `FILE[:LINE[:COLUMN]]: [FIELD: ]REASON`, e.g.
/// `endpoints.yaml:9:5: services[0].endpoints[1].port: port 0 is out of range (1-65535)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointsFileError {
    /// The file could not be read (missing, permissions, not UTF-8).
    #[error("{}", yaml::located(file, None, None, None, "", &format!("cannot read the endpoints file: {reason}")))]
    Read { file: String, reason: String },
    /// No YAML document at all, or only an empty one (`services: []` declares "no services").
    #[error("{}", yaml::located(file, None, None, None, "", "file is empty; an endpoints file needs `services:` (write `services: []` to declare no services)"))]
    Empty { file: String },
    /// The YAML itself is malformed.
    #[error("{}", yaml::located(file, *line, *column, None, "", &format!("invalid YAML: {reason}")))]
    Syntax {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        reason: String,
    },
    /// Well-formed YAML with a wrong, missing, unknown or inconsistent field.
    #[error("{}", yaml::located(file, *line, *column, None, field, reason))]
    Invalid {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        /// Like `services[0].endpoints[1].port`; empty for the document as a whole.
        field: String,
        reason: String,
    },
}

impl EndpointsFileError {
    pub fn file(&self) -> &str {
        match self {
            Self::Read { file, .. }
            | Self::Empty { file }
            | Self::Syntax { file, .. }
            | Self::Invalid { file, .. } => file,
        }
    }

    /// 1-based line, where known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Syntax { line, .. } | Self::Invalid { line, .. } => *line,
            Self::Read { .. } | Self::Empty { .. } => None,
        }
    }

    /// The field path (empty if the problem is not one field's).
    pub fn field(&self) -> &str {
        match self {
            Self::Invalid { field, .. } => field,
            _ => "",
        }
    }

    /// The reason alone, without file, line or field.
    pub fn reason(&self) -> String {
        match self {
            Self::Read { reason, .. } => format!("cannot read the endpoints file: {reason}"),
            Self::Empty { .. } => "file is empty".to_string(),
            Self::Syntax { reason, .. } => format!("invalid YAML: {reason}"),
            Self::Invalid { reason, .. } => reason.clone(),
        }
    }
}

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
    ports: Option<BTreeMap<String, i64>>,
    locality: Option<RawLocality>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    ready: Option<bool>,
    draining: Option<bool>,
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
pub fn parse_endpoints(source_name: &str, text: &str) -> Result<Registry, EndpointsFileError> {
    let file = source_name.to_string();
    let schema = |err: &serde_yaml_ng::Error| {
        let p = yaml::schema_problem(err);
        EndpointsFileError::Invalid {
            file: file.clone(),
            line: p.line,
            column: p.column,
            field: p.field,
            reason: p.reason,
        }
    };
    let probe_error = |err: &serde_yaml_ng::Error| {
        if yaml::is_duplicate_key(err) {
            return schema(err);
        }
        let p = yaml::syntax_problem(err);
        EndpointsFileError::Syntax {
            file: file.clone(),
            line: p.line,
            column: p.column,
            reason: p.reason,
        }
    };

    // Pass 1: well-formed YAML without duplicate keys, exactly one non-empty document.
    let mut documents = serde_yaml_ng::Deserializer::from_str(text);
    let Some(first) = documents.next() else {
        return Err(EndpointsFileError::Empty { file });
    };
    let is_null = yaml::probe(first).map_err(|e| probe_error(&e))?;
    if let Some(second) = documents.next() {
        yaml::probe(second).map_err(|e| probe_error(&e))?;
        return Err(EndpointsFileError::Invalid {
            file,
            line: None,
            column: None,
            field: String::new(),
            reason: "more than one YAML document (`---`); the endpoints file holds exactly one"
                .to_string(),
        });
    }
    if is_null {
        return Err(EndpointsFileError::Empty { file });
    }

    // Pass 2: the schema (unknown fields, missing fields, types), positions from serde_yaml_ng.
    let raw: RawFile = serde_yaml_ng::from_str(text).map_err(|e| schema(&e))?;

    // Pass 3: meaning, positions found by walking the document to the offending field.
    build(raw).map_err(|(path, reason)| {
        let pos = yaml::locate_nearest(text, 0, &path);
        EndpointsFileError::Invalid {
            file,
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            field: path.to_string(),
            reason,
        }
    })
}

/// Reads, parses and validates an endpoints file.
pub fn load_endpoints_file(path: &Path) -> Result<Registry, EndpointsFileError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|err| EndpointsFileError::Read {
        file: file.clone(),
        reason: err.to_string(),
    })?;
    parse_bytes(&file, &bytes)
}

fn parse_bytes(file: &str, bytes: &[u8]) -> Result<Registry, EndpointsFileError> {
    let text = std::str::from_utf8(bytes).map_err(|err| EndpointsFileError::Read {
        file: file.to_string(),
        reason: format!("not valid UTF-8: {err}"),
    })?;
    parse_endpoints(file, text)
}

type Invalid = (FieldPath, String);

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
        let port = check_port(raw.port).map_err(|r| (path.key("port"), r))?;
        first_gateway.insert(network.to_string(), i);
        gateways.insert(network.to_string(), NetworkGateway { address, port });
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
            let hint = yaml::did_you_mean(value, &known)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            (
                path.key("trafficDistribution"),
                format!(
                    "unknown trafficDistribution `{value}`, expected one of {}{hint}",
                    known.join(", ")
                ),
            )
        })?),
    };

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
        let number = check_port(raw_port.port).map_err(|r| (port_path.key("port"), r))?;
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
        let endpoint = build_endpoint(raw_endpoint, &ports, &ep_path)?;
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
    })
}

fn build_endpoint(
    raw: RawEndpoint,
    ports: &[ServicePort],
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
        let number = check_port(port).map_err(|r| (path.key("port"), r))?;
        port_overrides.insert(ports[0].name.clone(), number);
    }
    for (name, port) in raw.ports.into_iter().flatten() {
        let port_path = path.key("ports").key(&name);
        if !ports.iter().any(|p| p.name == name) {
            let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
            let hint = yaml::did_you_mean(&name, &names)
                .map(|n| format!("; did you mean `{n}`?"))
                .unwrap_or_default();
            return Err((
                port_path,
                format!(
                    "`{name}` is not a port of this service (its ports: {}){hint}",
                    names.join(", ")
                ),
            ));
        }
        let number = check_port(port).map_err(|r| (port_path.clone(), r))?;
        port_overrides.insert(name, number);
    }

    if let Some(key) = raw.labels.keys().find(|k| k.trim().is_empty()) {
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
        labels: raw.labels,
        health,
    })
}

fn check_port(port: i64) -> Result<u16, String> {
    match u16::try_from(port) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("port {port} is out of range (1-65535)")),
    }
}

/// Logs a rejected file with structured fields `file`, `line` (when known), `field` and `reason`.
fn log_rejected(err: &EndpointsFileError) {
    let m = crate::admin::metrics::metrics();
    m.source_errors
        .get_or_create(&crate::admin::metrics::source_label("file"))
        .inc();
    let (file, field, reason) = (err.file(), err.field(), err.reason());
    match err.line() {
        Some(line) => error!(
            file,
            line,
            field,
            %reason,
            "endpoints file rejected; keeping the last good state"
        ),
        None => error!(
            file,
            field,
            %reason,
            "endpoints file rejected; keeping the last good state"
        ),
    }
}

/// Spawns a task (needs a tokio runtime) that watches the file and sends each new *valid* Registry that
/// differs from the last one sent (the channel's current value); invalid content is logged
/// (`tracing::error!` with fields `file`, `line`, `field`, `reason`) and the last good state is kept.
/// A deleted file also keeps the last good state until it reappears. Dropping the handle stops
/// watching.
pub fn watch_endpoints_file(
    path: PathBuf,
    tx: tokio::sync::watch::Sender<Arc<Registry>>,
) -> anyhow::Result<WatchHandle> {
    let (dir, name) = watch::split_file_path(&path)?;
    let file = path.display().to_string();
    watch::watch_stable_files(
        dir,
        move |n| n == name,
        move |changes: Vec<FileChange>| {
            // One file, so at most one change.
            for change in changes {
                let Some(bytes) = change.content else {
                    warn!(
                        file = %file,
                        "endpoints file is gone; keeping the last good state until it reappears"
                    );
                    continue;
                };
                match parse_bytes(&file, &bytes) {
                    Ok(registry) => {
                        let services = registry.services.len();
                        let sent = tx.send_if_modified(|current| {
                            if **current == registry {
                                return false;
                            }
                            *current = Arc::new(registry);
                            true
                        });
                        if sent {
                            crate::admin::metrics::metrics()
                                .source_events
                                .get_or_create(&crate::admin::metrics::source_label("file"))
                                .inc();
                            info!(file = %file, services, "endpoints file reloaded");
                        }
                    }
                    Err(err) => log_rejected(&err),
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::watch::testutil::TempDir;
    use std::time::Duration;

    const EXAMPLE: &str = "\
services:
- name: checkout
  namespace: shop
  ports: [{name: http, port: 8080}]
  endpoints:
  - address: 127.0.0.1
    port: 9001
    locality: {region: us-east1, zone: us-east1-b, subzone: rack-1}
    labels: {topology.istio.io/cluster: east}
    ready: true
  - address: 10.0.0.2
    locality: {region: us-west1, zone: us-west1-a}
    ready: false
  - address: 'fd00::1'
    draining: true
  - address: 10.0.0.3
    ports: {http: 9003}
- name: multi
  namespace: shop
  ports: [{name: http, port: 80}, {name: grpc, port: 9090}]
  endpoints:
  - address: 10.1.0.1
    ports: {grpc: 19090}
- name: empty
  namespace: other
  ports: [{name: http, port: 80}]
";

    fn parse(text: &str) -> Result<Registry, EndpointsFileError> {
        parse_endpoints("endpoints.yaml", text)
    }

    fn invalid(text: &str) -> (Option<usize>, String, String, String) {
        match parse(text) {
            Err(err @ EndpointsFileError::Invalid { .. }) => (
                err.line(),
                err.field().to_string(),
                err.reason(),
                err.to_string(),
            ),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    fn one_service(endpoints: &str) -> String {
        format!(
            "services:\n- name: checkout\n  namespace: shop\n  ports: [{{name: http, port: 8080}}]\n  \
             endpoints:\n{endpoints}"
        )
    }

    #[test]
    fn parses_the_documented_format() {
        let registry = parse(EXAMPLE).unwrap();
        assert_eq!(registry.services.len(), 3);
        let checkout = &registry.services[&ServiceId::new("shop", "checkout")];
        let http = ServicePort {
            name: "http".into(),
            port: 8080,
        };
        assert_eq!(checkout.ports, vec![http.clone()]);
        let eps = &checkout.endpoints;
        assert_eq!(eps.len(), 4);
        assert_eq!(eps[0].address, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(eps[0].target_port(&http), 9001);
        assert_eq!(
            eps[0].locality,
            Locality::new("us-east1", "us-east1-b", "rack-1")
        );
        assert_eq!(eps[0].label("topology.istio.io/cluster"), Some("east"));
        assert_eq!(eps[0].health, Health::Healthy);
        assert_eq!(eps[1].target_port(&http), 8080);
        assert_eq!(eps[1].locality, Locality::new("us-west1", "us-west1-a", ""));
        assert_eq!(eps[1].health, Health::Unhealthy);
        assert_eq!(eps[2].address, "fd00::1".parse::<IpAddr>().unwrap());
        assert_eq!(eps[2].locality, Locality::default());
        assert_eq!(eps[2].health, Health::Draining);
        assert_eq!(eps[3].target_port(&http), 9003);

        let multi = &registry.services[&ServiceId::new("shop", "multi")];
        assert_eq!(multi.ports.len(), 2);
        assert_eq!(multi.endpoints[0].target_port(&multi.ports[0]), 80);
        assert_eq!(multi.endpoints[0].target_port(&multi.ports[1]), 19090);
        assert!(registry.services[&ServiceId::new("other", "empty")]
            .endpoints
            .is_empty());
    }

    #[test]
    fn traffic_distribution_is_read_and_typos_are_rejected() {
        let with = |value: &str| {
            format!(
                "services:\n- name: web\n  namespace: shop\n  ports: [{{name: http, port: 80}}]\n  \
                 trafficDistribution: {value}\n"
            )
        };
        let id = ServiceId::new("shop", "web");
        for (value, want) in [
            ("PreferSameZone", TrafficDistribution::PreferSameZone),
            ("PreferClose", TrafficDistribution::PreferClose),
            ("PreferSameNode", TrafficDistribution::PreferSameNode),
        ] {
            let registry = parse(&with(value)).unwrap();
            assert_eq!(registry.services[&id].traffic_distribution, Some(want));
        }
        let registry = parse(EXAMPLE).unwrap();
        assert!(registry
            .services
            .values()
            .all(|s| s.traffic_distribution.is_none()));
        let (line, field, reason, _) = invalid(&with("PreferSameZon"));
        assert_eq!(line, Some(5));
        assert_eq!(field, "services[0].trafficDistribution");
        assert!(
            reason.contains("did you mean `PreferSameZone`?"),
            "{reason}"
        );
    }

    #[test]
    fn the_shipped_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/endpoints.yaml");
        if path.exists() {
            let registry = load_endpoints_file(&path).unwrap();
            assert!(!registry.services.is_empty());
        }
    }

    #[test]
    fn explicit_empty_services_is_valid_but_an_empty_file_is_not() {
        assert_eq!(parse("services: []\n").unwrap(), Registry::default());
        for empty in ["", "\n\n", "# only a comment\n", "---\n", "~\n", "null\n"] {
            let err = parse(empty).unwrap_err();
            assert!(
                matches!(err, EndpointsFileError::Empty { .. }),
                "{empty:?}: {err:?}"
            );
            assert!(err.to_string().contains("file is empty"), "{err}");
            assert!(err.to_string().starts_with("endpoints.yaml: "), "{err}");
        }
    }

    #[test]
    fn yaml_syntax_errors_carry_file_and_line() {
        // The half-written file of the e2e test.
        let err =
            parse("services:\n- name: echo\n  namespace: demo\n  ports: [{name: http, port: 80")
                .unwrap_err();
        assert!(matches!(err, EndpointsFileError::Syntax { .. }), "{err:?}");
        assert!(err.line().is_some());
        let text = err.to_string();
        assert!(text.starts_with("endpoints.yaml:"), "{text}");
        assert!(text.contains("invalid YAML"), "{text}");

        let err = parse("services:\n  - a\n b: c\n").unwrap_err();
        assert!(matches!(err, EndpointsFileError::Syntax { .. }), "{err:?}");
        assert_eq!(err.line(), Some(3), "{err}");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let (line, field, reason, _) = invalid("services: []\nservices: []\n");
        assert_eq!((line, field.as_str()), (Some(2), "services"));
        assert!(reason.starts_with("duplicate key `services`"), "{reason}");
        // Also in maps, where serde alone would keep the last value.
        let (line, field, _, _) = invalid(&one_service(
            "  - address: 10.0.0.1\n    labels:\n      app: a\n      app: b\n",
        ));
        assert_eq!(line, Some(9));
        assert_eq!(field, "services[0].endpoints[0].labels.app");
    }

    #[test]
    fn a_second_document_is_rejected() {
        let (_, _, reason, _) = invalid("services: []\n---\nservices: []\n");
        assert!(reason.contains("more than one YAML document"), "{reason}");
    }

    #[test]
    fn gateways_are_read_and_checked() {
        let registry = parse(
            "services: []\ngateways:\n- {network: n2, address: 127.0.0.1, port: 15443}\n\
             - {network: n3, address: \"fd00::3\", port: 443}\n",
        )
        .unwrap();
        assert_eq!(
            registry.gateways,
            BTreeMap::from([
                (
                    "n2".to_string(),
                    NetworkGateway {
                        address: "127.0.0.1".parse().unwrap(),
                        port: 15443
                    }
                ),
                (
                    "n3".to_string(),
                    NetworkGateway {
                        address: "fd00::3".parse().unwrap(),
                        port: 443
                    }
                ),
            ])
        );
        // (gateways list, line, field, part of the reason)
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "- {network: n2, address: 127.0.0.1, port: 1}\n- {network: n2, address: 127.0.0.2, port: 1}\n",
                4,
                "gateways[1].network",
                "duplicate gateway for network n2 (already defined at gateways[0])",
            ),
            (
                "- {network: n2, address: gw.example.com, port: 1}\n",
                3,
                "gateways[0].address",
                "is not an IP address",
            ),
            (
                "- {network: n2, address: 127.0.0.1, port: 0}\n",
                3,
                "gateways[0].port",
                "out of range",
            ),
            (
                "- {network: \"\", address: 127.0.0.1, port: 1}\n",
                3,
                "gateways[0].network",
                "is not a network name",
            ),
            (
                "- {network: n2, adress: 127.0.0.1, port: 1}\n",
                3,
                "gateways[0].adress",
                "did you mean `address`?",
            ),
            (
                "- {network: n2, port: 1}\n",
                3,
                "gateways[0].address",
                "missing field `address`",
            ),
        ];
        for (list, line, field, reason_part) in cases {
            let (got_line, got_field, reason, display) =
                invalid(&format!("services: []\ngateways:\n{list}"));
            assert_eq!(got_field, *field, "{list}");
            assert_eq!(got_line, Some(*line), "{list}");
            assert!(reason.contains(reason_part), "{list}: {reason}");
            assert!(display.starts_with("endpoints.yaml:"), "{display}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected_with_a_hint() {
        let (line, field, reason, display) = invalid(&one_service(
            "  - address: 10.0.0.1\n    adress: 10.0.0.2\n",
        ));
        assert_eq!(line, Some(7));
        assert_eq!(field, "services[0].endpoints[0].adress");
        assert!(reason.contains("unknown field `adress`"), "{reason}");
        assert!(reason.contains("did you mean `address`?"), "{reason}");
        assert!(
            display
                .starts_with("endpoints.yaml:7:5: services[0].endpoints[0].adress: unknown field"),
            "{display}"
        );

        let (line, field, _, _) = invalid(&one_service(
            "  - address: 10.0.0.1\n    locality: {region: r, sub_zone: s}\n",
        ));
        assert_eq!(
            (line, field.as_str()),
            (Some(7), "services[0].endpoints[0].locality.sub_zone")
        );

        let (line, field, _, _) = invalid("services: []\nendpoints: []\n");
        assert_eq!((line, field.as_str()), (Some(2), "endpoints"));
    }

    #[test]
    fn missing_and_mistyped_fields() {
        // The e2e startup case: an endpoint without an address.
        let (line, field, reason, display) = invalid(&one_service(
            "  - port: 9001\n    locality: {region: r, zone: z}\n",
        ));
        assert_eq!(line, Some(6));
        assert_eq!(field, "services[0].endpoints[0].address");
        assert_eq!(reason, "missing field `address`");
        assert!(display.contains("endpoints.yaml") && display.contains("address"));

        let (_, field, reason, _) = invalid("services:\n- name: a\n  ports: []\n");
        assert_eq!(field, "services[0].namespace");
        assert!(reason.contains("missing field"), "{reason}");

        let (line, field, reason, _) =
            invalid(&one_service("  - address: 10.0.0.1\n    port: http\n"));
        assert_eq!(
            (line, field.as_str()),
            (Some(7), "services[0].endpoints[0].port")
        );
        assert!(reason.contains("invalid type"), "{reason}");

        let (_, field, _, _) = invalid(&one_service("  - address: 10.0.0.1\n    ready: maybe\n"));
        assert_eq!(field, "services[0].endpoints[0].ready");

        let (_, _, reason, _) =
            invalid(&one_service("  - address: 10.0.0.1\n    lables: {a: b}\n"));
        assert!(reason.contains("did you mean `labels`?"), "{reason}");

        let (_, field, _, _) = invalid("services: {}\n");
        assert_eq!(field, "services");
    }

    #[test]
    fn null_lists_are_not_empty_lists() {
        // A file cut short right after `services:` must not become an empty registry.
        let (line, field, reason, display) = invalid("services:\n");
        assert_eq!((line, field.as_str()), (Some(1), "services"));
        assert!(reason.contains("write `[]`"), "{reason}");
        assert!(display.starts_with("endpoints.yaml:1:"), "{display}");
        let (_, field, _, _) = invalid(&one_service(""));
        assert_eq!(field, "services[0].endpoints");
        let (_, field, _, _) = invalid("services:\n- {name: a, namespace: b, ports: }\n");
        assert_eq!(field, "services[0].ports");
    }

    #[test]
    fn addresses_must_be_ips() {
        let (line, field, reason, display) = invalid(&one_service(
            "  - address: 10.0.0.1\n  - address: backend.local\n",
        ));
        assert_eq!(line, Some(7));
        assert_eq!(field, "services[0].endpoints[1].address");
        assert!(
            reason.contains("\"backend.local\" is not an IP address"),
            "{reason}"
        );
        assert!(
            display.starts_with("endpoints.yaml:7:5: services[0].endpoints[1].address: "),
            "{display}"
        );
        let (_, _, reason, _) = invalid(&one_service("  - address: 10.0.0.300\n"));
        assert!(reason.contains("not an IP address"), "{reason}");
    }

    #[test]
    fn ports_must_be_in_range() {
        for (bad, value) in [("0", 0), ("65536", 65536), ("-1", -1)] {
            let (line, field, reason, display) = invalid(&one_service(&format!(
                "  - address: 10.0.0.1\n    port: {bad}\n"
            )));
            assert_eq!(line, Some(7), "{display}");
            assert_eq!(field, "services[0].endpoints[0].port");
            assert_eq!(reason, format!("port {value} is out of range (1-65535)"));
        }
        let (line, field, _, _) = invalid(
            "services:\n- name: a\n  namespace: b\n  ports:\n  - name: http\n    port: 0\n",
        );
        assert_eq!(
            (line, field.as_str()),
            (Some(6), "services[0].ports[0].port")
        );
        let (_, field, _, _) = invalid(&one_service(
            "  - address: 10.0.0.1\n    ports: {http: 70000}\n",
        ));
        assert_eq!(field, "services[0].endpoints[0].ports.http");
    }

    #[test]
    fn duplicate_services_and_ports() {
        let text = "services:\n- {name: a, namespace: x, ports: [{name: http, port: 80}]}\n\
                    - {name: b, namespace: x, ports: [{name: http, port: 80}]}\n\
                    - {name: a, namespace: y, ports: [{name: http, port: 80}]}\n\
                    - {name: a, namespace: x, ports: [{name: http, port: 81}]}\n";
        let (line, field, reason, _) = invalid(text);
        assert_eq!((line, field.as_str()), (Some(5), "services[3].name"));
        assert_eq!(
            reason,
            "duplicate service x/a (already defined at services[0])"
        );

        let (_, field, reason, _) = invalid(
            "services:\n- {name: a, namespace: x, ports: [{name: http, port: 80}, {name: http, port: 81}]}\n",
        );
        assert_eq!(field, "services[0].ports[1].name");
        assert!(reason.contains("duplicate port name `http`"), "{reason}");

        let (_, field, reason, _) = invalid(
            "services:\n- {name: a, namespace: x, ports: [{name: http, port: 80}, {name: web, port: 80}]}\n",
        );
        assert_eq!(field, "services[0].ports[1].port");
        assert!(reason.contains("duplicate port number 80"), "{reason}");

        let (_, field, reason, _) = invalid("services:\n- {name: a, namespace: x, ports: []}\n");
        assert_eq!(field, "services[0].ports");
        assert!(reason.contains("at least one port"), "{reason}");

        let (_, field, reason, _) = invalid(&one_service(
            "  - address: 10.0.0.1\n    port: 9001\n  - address: 10.0.0.1\n    ports: {http: 9001}\n",
        ));
        assert_eq!(field, "services[0].endpoints[1].address");
        assert!(reason.contains("duplicate endpoint 10.0.0.1"), "{reason}");
        // Same address, different port: fine (several local backends).
        parse(&one_service(
            "  - address: 10.0.0.1\n    port: 9001\n  - address: 10.0.0.1\n    port: 9002\n",
        ))
        .unwrap();
    }

    #[test]
    fn port_overrides_must_match_the_service_ports() {
        let multi = "services:\n- name: a\n  namespace: x\n  ports: [{name: http, port: 80}, {name: grpc, port: 90}]\n  endpoints:\n";
        let (line, field, reason, _) =
            invalid(&format!("{multi}  - address: 10.0.0.1\n    port: 8080\n"));
        assert_eq!(
            (line, field.as_str()),
            (Some(7), "services[0].endpoints[0].port")
        );
        assert!(reason.contains("exactly one port"), "{reason}");
        assert!(reason.contains("http, grpc"), "{reason}");

        let (line, field, reason, _) = invalid(&format!(
            "{multi}  - address: 10.0.0.1\n    ports: {{htp: 8080}}\n"
        ));
        assert_eq!(
            (line, field.as_str()),
            (Some(7), "services[0].endpoints[0].ports.htp")
        );
        assert!(
            reason.contains("`htp` is not a port of this service"),
            "{reason}"
        );
        assert!(reason.contains("did you mean `http`?"), "{reason}");

        let (_, field, reason, _) = invalid(&one_service(
            "  - address: 10.0.0.1\n    port: 1\n    ports: {http: 2}\n",
        ));
        assert_eq!(field, "services[0].endpoints[0].port");
        assert!(reason.contains("not both"), "{reason}");
    }

    #[test]
    fn names_must_be_dns_labels() {
        let (line, field, reason, _) = invalid(
            "services:\n- name: Checkout\n  namespace: shop\n  ports: [{name: http, port: 80}]\n",
        );
        assert_eq!((line, field.as_str()), (Some(2), "services[0].name"));
        assert!(reason.contains("DNS-1123"), "{reason}");
        let (_, field, reason, _) = invalid(
            "services:\n- name: checkout\n  namespace: ''\n  ports: [{name: http, port: 80}]\n",
        );
        assert_eq!(field, "services[0].namespace");
        assert!(reason.contains("must not be empty"), "{reason}");
        let (_, field, _, _) = invalid(
            "services:\n- name: checkout\n  namespace: shop\n  ports: [{name: HTTP_1, port: 80}]\n",
        );
        assert_eq!(field, "services[0].ports[0].name");
    }

    #[test]
    fn label_keys_must_not_be_empty() {
        let (_, field, _, _) =
            invalid(&one_service("  - address: 10.0.0.1\n    labels: {'': x}\n"));
        assert_eq!(field, "services[0].endpoints[0].labels[\"\"]");
    }

    #[test]
    fn load_reports_unreadable_files() {
        let dir = TempDir::new("endpoints-load");
        let err = load_endpoints_file(&dir.join("missing.yaml")).unwrap_err();
        assert!(matches!(err, EndpointsFileError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.yaml"), "{err}");
        std::fs::write(dir.join("bin.yaml"), [0xff, 0xfe, 0x00]).unwrap();
        let err = load_endpoints_file(&dir.join("bin.yaml")).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
        std::fs::write(dir.join("ok.yaml"), "services: []\n").unwrap();
        assert_eq!(
            load_endpoints_file(&dir.join("ok.yaml")).unwrap(),
            Registry::default()
        );
    }

    fn registry_yaml(port: u16) -> String {
        format!(
            "services:\n- name: echo\n  namespace: demo\n  ports: [{{name: http, port: 80}}]\n  \
             endpoints:\n  - address: 127.0.0.1\n    port: {port}\n"
        )
    }

    fn port_of(registry: &Registry) -> u16 {
        let svc = &registry.services[&ServiceId::new("demo", "echo")];
        svc.endpoints[0].target_port(&svc.ports[0])
    }

    async fn changed(
        rx: &mut tokio::sync::watch::Receiver<Arc<Registry>>,
        within: Duration,
    ) -> Arc<Registry> {
        tokio::time::timeout(within, rx.changed())
            .await
            .expect("no registry sent in time")
            .expect("sender dropped");
        rx.borrow_and_update().clone()
    }

    async fn unchanged(rx: &mut tokio::sync::watch::Receiver<Arc<Registry>>, for_: Duration) {
        tokio::time::sleep(for_).await;
        assert!(!rx.has_changed().unwrap(), "a registry was sent");
    }

    #[tokio::test]
    async fn watcher_sends_valid_edits_and_keeps_the_last_good_state() {
        let dir = TempDir::new("endpoints-watch");
        let path = dir.join("endpoints.yaml");
        std::fs::write(&path, registry_yaml(9001)).unwrap();
        let initial = load_endpoints_file(&path).unwrap();
        let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(initial));
        let _handle = watch_endpoints_file(path.clone(), tx).unwrap();
        // The initial scan finds what was loaded: nothing new to send.
        unchanged(&mut rx, Duration::from_millis(300)).await;

        // 1. An in-place edit arrives well within a second.
        let t0 = std::time::Instant::now();
        std::fs::write(&path, registry_yaml(9002)).unwrap();
        let got = changed(&mut rx, Duration::from_secs(1)).await;
        assert_eq!(port_of(&got), 9002);
        assert!(
            t0.elapsed() < Duration::from_millis(900),
            "{:?}",
            t0.elapsed()
        );

        // 2. An invalid edit is not sent; neither is a half-written file; the next valid edit is.
        std::fs::write(&path, registry_yaml(0)).unwrap();
        unchanged(&mut rx, Duration::from_millis(400)).await;
        std::fs::write(
            &path,
            "services:\n- name: echo\n  namespace: demo\n  ports: [{name: ht",
        )
        .unwrap();
        unchanged(&mut rx, Duration::from_millis(400)).await;
        std::fs::write(&path, "").unwrap();
        unchanged(&mut rx, Duration::from_millis(400)).await;
        std::fs::write(&path, registry_yaml(9003)).unwrap();
        assert_eq!(
            port_of(&*changed(&mut rx, Duration::from_secs(1)).await),
            9003
        );

        // 3. Deleted: the last good state stays; recreated: the new content is sent.
        std::fs::remove_file(&path).unwrap();
        unchanged(&mut rx, Duration::from_millis(400)).await;
        std::fs::write(&path, registry_yaml(9004)).unwrap();
        assert_eq!(
            port_of(&*changed(&mut rx, Duration::from_secs(1)).await),
            9004
        );

        // 4. Replaced by rename, as editors do.
        dir.replace("endpoints.yaml", &registry_yaml(9005));
        assert_eq!(
            port_of(&*changed(&mut rx, Duration::from_secs(1)).await),
            9005
        );

        // 5. A semantically identical rewrite (comments only) sends nothing.
        std::fs::write(&path, format!("# comment\n{}", registry_yaml(9005))).unwrap();
        unchanged(&mut rx, Duration::from_millis(400)).await;
    }

    #[tokio::test]
    async fn watcher_picks_up_a_file_created_after_start() {
        let dir = TempDir::new("endpoints-watch-late");
        let path = dir.join("endpoints.yaml");
        let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(Registry::default()));
        let _handle = watch_endpoints_file(path.clone(), tx).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        dir.replace("endpoints.yaml", &registry_yaml(9100));
        assert_eq!(
            port_of(&*changed(&mut rx, Duration::from_secs(1)).await),
            9100
        );
    }

    #[tokio::test]
    async fn watching_a_file_in_a_missing_directory_fails() {
        let dir = TempDir::new("endpoints-watch-missing");
        let (tx, _rx) = tokio::sync::watch::channel(Arc::new(Registry::default()));
        assert!(watch_endpoints_file(dir.join("nope/endpoints.yaml"), tx).is_err());
    }
}
