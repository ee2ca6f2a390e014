//! Criterion benches for the per-change hot paths: the translator (priorities, encoding), the snapshot
//! rebuild after one endpoint change, and what each connected client costs the server per change.
//!
//! Scenario of issue 4: 500 services × 12 endpoints over 3 regions × 3 zones.
//! Run: `cargo bench -p xds-server --bench hot_paths`.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use envoy_types::pb::envoy::config::core::v3::{Locality as EnvoyLocality, Node};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::util::pack_any;
use prost::bytes::Bytes;
use prost::Message;

use xds_core::model::{
    ClientInfo, Endpoint, Health, Locality, Registry, Service, ServiceId, ServicePort,
};
use xds_core::policy::{FailoverPolicy, PolicySet};
use xds_core::protocol::delta::DeltaConnection;
use xds_core::protocol::sotw::{AdsConnection, SotwRequest};
use xds_core::snapshot::{ResourceType, Snapshot, TranslateSettings, CLUSTER_TYPE, ENDPOINT_TYPE};
use xds_core::translate::input::ClusterInput;
use xds_core::translate::{self, resources, LocalityClass};

const SERVICES: usize = 500;
const ENDPOINTS: usize = 12;
const REGIONS: usize = 3;
const ZONES: usize = 3;

fn locality(i: usize) -> Locality {
    let region = i % REGIONS;
    let zone = (i / REGIONS) % ZONES;
    Locality::new(&format!("r{region}"), &format!("r{region}-z{zone}"), "")
}

fn service(s: usize, salt: u8) -> Service {
    Service {
        id: ServiceId::new("bench", format!("svc-{s}")),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 8080,
        }],
        endpoints: (0..ENDPOINTS)
            .map(|e| Endpoint {
                address: std::net::Ipv4Addr::new(
                    10,
                    (s / 256) as u8,
                    (s % 256) as u8,
                    e as u8 + salt,
                )
                .into(),
                port_overrides: BTreeMap::new(),
                locality: locality(e),
                labels: BTreeMap::new(),
                health: Health::Healthy,
                identity: None,
            })
            .collect(),
        traffic_distribution: None,
        identity: None,
    }
}

fn registry(changed: Option<usize>) -> Arc<Registry> {
    Arc::new(Registry::from_services(
        (0..SERVICES).map(|s| service(s, if Some(s) == changed { 100 } else { 1 })),
    ))
}

fn client(i: usize) -> ClientInfo {
    ClientInfo {
        node_id: format!("envoy-{i}"),
        locality: locality(i),
        ..ClientInfo::default()
    }
}

fn node(i: usize) -> Node {
    let c = client(i);
    Node {
        id: c.node_id,
        locality: Some(EnvoyLocality {
            region: c.locality.region,
            zone: c.locality.zone,
            sub_zone: String::new(),
        }),
        ..Node::default()
    }
}

fn cluster_names() -> Vec<String> {
    (0..SERVICES)
        .map(|s| format!("svc-{s}.bench:8080"))
        .collect()
}

fn translator(c: &mut Criterion) {
    let policy = FailoverPolicy::default();
    let svc = service(7, 1);
    let class = LocalityClass::of(&client(4), &policy);
    let port = svc.ports[0].clone();
    let input = ClusterInput::plain(Arc::new(svc), &port);
    c.bench_function("priorities: 12 endpoints, 9 localities", |b| {
        b.iter(|| translate::priorities(black_box(&class), black_box(&input), &policy))
    });
    let plan = translate::priorities(&class, &input, &policy);
    c.bench_function("load_assignment: build + encode one CLA", |b| {
        b.iter(|| {
            let cla =
                resources::load_assignment("svc-7.bench:8080", &input, &class, &plan, &policy);
            black_box(pack_any(cla))
        })
    });
    c.bench_function("LocalityClass::of", |b| {
        b.iter(|| LocalityClass::of(black_box(&client(4)), &policy))
    });
}

fn snapshot_rebuild(c: &mut Criterion) {
    let policies: Arc<PolicySet> = Arc::default();
    let settings = TranslateSettings::default();
    let names: BTreeSet<String> = cluster_names().into_iter().collect();
    c.bench_function(
        "snapshot: rebuild after one endpoint change (500 services)",
        |b| {
            b.iter_batched(
                || {
                    let first =
                        Snapshot::build(None, registry(None), policies.clone(), settings.clone());
                    // Warm the memo for all 9 classes, as a running server has it.
                    for i in 0..REGIONS * ZONES {
                        first.resources_for(ResourceType::Endpoint, &client(i), Some(&names));
                    }
                    (first, registry(Some(42)))
                },
                |(first, next)| {
                    black_box(Snapshot::build(
                        Some(&first),
                        next,
                        policies.clone(),
                        settings.clone(),
                    ))
                },
                BatchSize::LargeInput,
            )
        },
    );
    c.bench_function(
        "snapshot: full EDS answer for a new class (500 CLAs)",
        |b| {
            b.iter_batched(
                || Snapshot::build(None, registry(None), policies.clone(), settings.clone()),
                |snap| {
                    black_box(snap.resources_for(ResourceType::Endpoint, &client(0), Some(&names)))
                },
                BatchSize::LargeInput,
            )
        },
    );
}

/// What one connected client costs per endpoint change: the state machine's work on the new snapshot
/// (the EDS answer itself is shared and already encoded). Measured for both protocols.
fn per_client_push(c: &mut Criterion) {
    let policies: Arc<PolicySet> = Arc::default();
    let settings = TranslateSettings::default();
    let first = Snapshot::build(None, registry(None), policies.clone(), settings.clone());
    let second = Snapshot::build(Some(&first), registry(Some(42)), policies, settings);
    let names = cluster_names();

    let sotw = || {
        let mut conn = AdsConnection::new();
        for (type_url, names) in [(CLUSTER_TYPE, vec![]), (ENDPOINT_TYPE, names.clone())] {
            let req = DiscoveryRequest {
                node: Some(node(1)),
                type_url: type_url.into(),
                resource_names: names,
                ..DiscoveryRequest::default()
            };
            conn.on_request(&(&req).into(), &first).unwrap();
        }
        conn.on_snapshot(&first);
        conn
    };
    c.bench_function("sotw client: on_snapshot after one endpoint change", |b| {
        b.iter_batched(
            sotw,
            |mut conn| {
                // Return the connection so dropping it is not timed.
                let out = conn.on_snapshot(&second);
                (conn, out)
            },
            BatchSize::LargeInput,
        )
    });
    let delta = || {
        let mut conn = DeltaConnection::new();
        for (type_url, names) in [(CLUSTER_TYPE, vec![]), (ENDPOINT_TYPE, names.clone())] {
            let req = DeltaDiscoveryRequest {
                node: Some(node(1)),
                type_url: type_url.into(),
                resource_names_subscribe: names,
                ..DeltaDiscoveryRequest::default()
            };
            let (_, out) = conn.on_request(&req, &first).unwrap();
            let ack = DeltaDiscoveryRequest {
                type_url: type_url.into(),
                response_nonce: out[0].nonce.clone(),
                ..DeltaDiscoveryRequest::default()
            };
            conn.on_request(&ack, &first).unwrap();
        }
        conn.on_snapshot(&first);
        conn
    };
    c.bench_function("delta client: on_snapshot after one endpoint change", |b| {
        b.iter_batched(
            delta,
            |mut conn| {
                // Return the connection so dropping it is not timed.
                let out = conn.on_snapshot(&second);
                (conn, out)
            },
            BatchSize::LargeInput,
        )
    });
    c.bench_function(
        "sotw client: first full config (CDS + 500 CLAs, warm cache)",
        |b| b.iter(|| black_box(sotw())),
    );
    c.bench_function(
        "delta client: first full config (CDS + 500 CLAs, warm cache)",
        |b| b.iter(|| black_box(delta())),
    );

    // Every SotW ACK repeats the whole subscription: 500 EDS names per client per push.
    let mut conn = sotw();
    let pushed = conn.on_snapshot(&second);
    let eds = pushed
        .iter()
        .find(|r| r.type_url == ENDPOINT_TYPE)
        .expect("an EDS push");
    let ack = Bytes::from(
        DiscoveryRequest {
            version_info: eds.version_info.clone(),
            type_url: ENDPOINT_TYPE.into(),
            response_nonce: eds.nonce.clone(),
            resource_names: names.clone(),
            ..DiscoveryRequest::default()
        }
        .encode_to_vec(),
    );
    c.bench_function(
        "sotw ACK of 500 EDS names: decode as DiscoveryRequest",
        |b| b.iter(|| DiscoveryRequest::decode(black_box(ack.clone())).expect("valid")),
    );
    c.bench_function("sotw ACK of 500 EDS names: decode as SotwRequest", |b| {
        b.iter(|| SotwRequest::decode(black_box(ack.clone())).expect("valid"))
    });
    c.bench_function(
        "sotw ACK of 500 EDS names: decode as SotwRequest + on_request",
        |b| {
            b.iter(|| {
                let req = SotwRequest::decode(black_box(ack.clone())).expect("valid");
                let (_, out) = conn.on_request(&req, &second).expect("an ACK");
                assert!(out.is_empty(), "a plain ACK is not answered");
            })
        },
    );
}

/// The endpoints file of the load benchmark's mesh (the format `xds-load` writes), parsed and
/// validated: on the file source this is most of the time from a rename to a published snapshot.
fn endpoints_file(c: &mut Criterion) {
    use std::fmt::Write;
    let mut text = String::from("services:\n");
    for s in 0..SERVICES {
        let _ = writeln!(
            text,
            "- name: svc-{s}\n  namespace: bench\n  ports: [{{name: http, port: 8080}}]\n  endpoints:"
        );
        for e in 0..ENDPOINTS {
            let (r, z) = (e % REGIONS, (e / REGIONS) % ZONES);
            let _ = writeln!(
                text,
                "  - {{address: 10.{}.{}.{}, locality: {{region: r{r}, zone: r{r}-z{z}}}}}",
                s / 256,
                s % 256,
                e + 1
            );
        }
    }
    c.bench_function("endpoints file: parse 500 services × 12 endpoints", |b| {
        b.iter(|| {
            xds_core::config::endpoints::parse_endpoints("bench.yaml", black_box(&text))
                .expect("valid")
        })
    });
    // The same file as JSON (a generated file may be written so): read by serde_json, not libyaml.
    let value: serde_json::Value = serde_yaml_ng::from_str(&text).expect("valid YAML");
    let json = serde_json::to_string(&value).expect("serializable");
    c.bench_function(
        "endpoints file: parse 500 services × 12 endpoints, as JSON",
        |b| {
            b.iter(|| {
                xds_core::config::endpoints::parse_endpoints("bench.json", black_box(&json))
                    .expect("valid")
            })
        },
    );
}

criterion_group!(
    benches,
    translator,
    snapshot_rebuild,
    per_client_push,
    endpoints_file
);
criterion_main!(benches);
