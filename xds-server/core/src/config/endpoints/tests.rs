use super::*;
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

fn parse(text: &str) -> Result<Registry, FileError> {
    parse_endpoints("endpoints.yaml", text)
}

fn invalid(text: &str) -> (Option<usize>, String, String, String) {
    match parse(text) {
        Err(err @ FileError::Invalid { .. }) => (
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
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/endpoints.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let registry = parse_endpoints(&path.display().to_string(), &text).unwrap();
    assert!(!registry.services.is_empty());
}

#[test]
fn explicit_empty_services_is_valid_but_an_empty_file_is_not() {
    assert_eq!(parse("services: []\n").unwrap(), Registry::default());
    for empty in ["", "\n\n", "# only a comment\n", "---\n", "~\n", "null\n"] {
        let err = parse(empty).unwrap_err();
        assert!(matches!(err, FileError::Empty { .. }), "{empty:?}: {err:?}");
        assert!(err.to_string().contains("file is empty"), "{err}");
        assert!(err.to_string().starts_with("endpoints.yaml: "), "{err}");
    }
}

#[test]
fn yaml_syntax_errors_carry_file_and_line() {
    // The half-written file of the e2e test.
    let err = parse("services:\n- name: echo\n  namespace: demo\n  ports: [{name: http, port: 80")
        .unwrap_err();
    assert!(matches!(err, FileError::Syntax { .. }), "{err:?}");
    assert!(err.line().is_some());
    let text = err.to_string();
    assert!(text.starts_with("endpoints.yaml:"), "{text}");
    assert!(text.contains("invalid YAML"), "{text}");

    let err = parse("services:\n  - a\n b: c\n").unwrap_err();
    assert!(matches!(err, FileError::Syntax { .. }), "{err:?}");
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
    let (_, field, reason, _) = invalid(&one_service(
        "  - address: 10.0.0.1\n    ports:\n      http: 81\n      http: 82\n",
    ));
    assert_eq!(field, "services[0].endpoints[0].ports.http");
    assert!(reason.starts_with("duplicate key `http`"), "{reason}");
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
                NetworkGateway::new("127.0.0.1".parse().unwrap(), 15443)
            ),
            (
                "n3".to_string(),
                NetworkGateway::new("fd00::3".parse().unwrap(), 443)
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
        display.starts_with("endpoints.yaml:7:5: services[0].endpoints[0].adress: unknown field"),
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

    let (line, field, reason, _) = invalid(&one_service("  - address: 10.0.0.1\n    port: http\n"));
    assert_eq!(
        (line, field.as_str()),
        (Some(7), "services[0].endpoints[0].port")
    );
    assert!(reason.contains("invalid type"), "{reason}");

    let (_, field, _, _) = invalid(&one_service("  - address: 10.0.0.1\n    ready: maybe\n"));
    assert_eq!(field, "services[0].endpoints[0].ready");

    let (_, _, reason, _) = invalid(&one_service("  - address: 10.0.0.1\n    lables: {a: b}\n"));
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
    let (line, field, _, _) =
        invalid("services:\n- name: a\n  namespace: b\n  ports:\n  - name: http\n    port: 0\n");
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
    let (_, field, _, _) = invalid(&one_service("  - address: 10.0.0.1\n    labels: {'': x}\n"));
    assert_eq!(field, "services[0].endpoints[0].labels[\"\"]");
}

#[test]
fn identities_per_service_and_per_endpoint_the_endpoints_own_winning() {
    let text = "\
services:
- name: ledger
  namespace: bank
  identity: spiffe://cluster.local/ns/bank/sa/ledger
  ports: [{name: http, port: 8080}]
  endpoints:
  - address: 10.0.0.1
  - address: 10.0.0.2
    identity: spiffe://cluster.local/ns/bank/sa/ledger-canary
- name: web
  namespace: bank
  ports: [{name: http, port: 8080}]
  endpoints:
  - address: 10.0.1.1
";
    let registry = parse(text).unwrap();
    let text_of = |id: Option<&SpiffeId>| id.map(|i| i.as_str().to_string());
    let ledger = &registry.services[&ServiceId::new("bank", "ledger")];
    assert_eq!(
        text_of(ledger.identity.as_ref()).as_deref(),
        Some("spiffe://cluster.local/ns/bank/sa/ledger")
    );
    let endpoint_ids: Vec<Option<String>> = ledger
        .endpoints
        .iter()
        .map(|e| text_of(e.identity.as_ref()))
        .collect();
    assert_eq!(
        endpoint_ids,
        [
            Some("spiffe://cluster.local/ns/bank/sa/ledger".to_string()),
            Some("spiffe://cluster.local/ns/bank/sa/ledger-canary".to_string()),
        ]
    );
    let web = &registry.services[&ServiceId::new("bank", "web")];
    assert_eq!(web.identity, None);
    assert_eq!(
        web.endpoints[0].identity, None,
        "no identity: none invented"
    );
    assert!(web.identities().is_empty());
}

#[test]
fn a_bad_identity_names_the_file_line_field_and_reason() {
    let (line, field, reason, display) = invalid(&one_service(
        "  - address: 10.0.0.1\n    identity: spiffe://cluster.local/ns/bank//sa/x\n",
    ));
    assert_eq!(line, Some(7));
    assert_eq!(field, "services[0].endpoints[0].identity");
    assert!(reason.contains("empty path segment"), "{reason}");
    assert!(
        display.starts_with("endpoints.yaml:7:") && display.contains("not a SPIFFE ID"),
        "{display}"
    );
    let (_, field, reason, _) = invalid(
        "services:\n- name: a\n  namespace: b\n  identity: ledger\n  ports: [{name: http, port: 80}]\n",
    );
    assert_eq!(field, "services[0].identity");
    assert!(reason.contains("the scheme is not `spiffe://`"), "{reason}");
}

/// The file as JSON (a YAML document converted, so the two hold the same).
fn as_json(yaml: &str) -> String {
    let value: serde_json::Value = serde_yaml_ng::from_str(yaml).expect("valid YAML");
    serde_json::to_string_pretty(&value).expect("serializable")
}

#[test]
fn a_json_file_is_read_by_the_json_parser_and_means_the_same() {
    let json = as_json(EXAMPLE);
    assert!(super::looks_like_json(&json));
    // The fast path takes it whole (else it would be the YAML passes that read it).
    serde_json::from_str::<super::RawFile>(&json).expect("the JSON parser reads the whole file");
    assert_eq!(parse(&json).unwrap(), parse(EXAMPLE).unwrap());
    assert!(!super::looks_like_json(EXAMPLE));
    assert!(!super::looks_like_json("# generated\n{\"services\": []}"));
}

#[test]
fn a_bad_json_file_gets_the_same_error_as_the_same_yaml() {
    let yaml = one_service("  - {address: 10.0.0.1, port: 0}\n");
    let json = as_json(&yaml);
    let (_, yaml_field, yaml_reason, _) = invalid(&yaml);
    let (line, field, reason, display) = invalid(&json);
    assert_eq!(
        (field.as_str(), reason.as_str()),
        (yaml_field.as_str(), yaml_reason.as_str())
    );
    assert_eq!(field, "services[0].endpoints[0].port");
    // Positions are the JSON text's own: the line of `"port": 0`.
    let port_line = json
        .lines()
        .position(|l| l.contains("\"port\": 0"))
        .unwrap()
        + 1;
    assert_eq!(line, Some(port_line), "{display}");

    // A repeated key is refused whichever parser reads the file.
    let duplicate = "{\"services\": [{\"name\": \"a\", \"namespace\": \"b\", \
                     \"ports\": [{\"name\": \"http\", \"port\": 80}], \
                     \"endpoints\": [{\"address\": \"10.0.0.1\", \
                     \"labels\": {\"k\": \"1\", \"k\": \"2\"}}]}]}";
    let err = parse(duplicate).unwrap_err().to_string();
    assert!(
        err.contains("duplicate") || err.contains("more than once"),
        "{err}"
    );
}
