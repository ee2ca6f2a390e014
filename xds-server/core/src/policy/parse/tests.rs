use super::validate::parse_pattern;
use super::*;
use crate::model::labels;
use crate::policy::testing::{backing_up, doc, invalid};
use std::time::Duration;

const FULL: &str = "\
apiVersion: failover.example.com/v1alpha1
kind: FailoverPolicy
metadata: {name: checkout, namespace: shop}
spec:
  service: checkout
  failoverPriority: [topology.kubernetes.io/region, topology.kubernetes.io/zone]
  failover: [{from: us-east1, to: us-west1}]
  backups: [{service: checkout-dr, cluster: west}, {service: checkout, namespace: shop-dr}]
  outlierDetection: {consecutive5xx: 3, consecutiveGatewayFailure: 4, interval: 2s, baseEjectionTime: 1m, maxEjectionPercent: 50}
  overprovisioningFactor: 200
  panicThreshold: 10
  mtls: STRICT
";

fn parse(text: &str) -> Result<Vec<PolicyEntry>, FileError> {
    parse_policies("p.yaml", text)
}

fn spec_error(spec: &str) -> (Option<usize>, String, String) {
    let (_, line, field, reason, _) = invalid(&doc("shop", "p", spec));
    (line, field, reason)
}

#[test]
fn parses_every_field() {
    let entries = parse(FULL).unwrap();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(
        e.scope,
        PolicyScope::Service(ServiceId::new("shop", "checkout"))
    );
    assert_eq!(
        e.origin,
        PolicyOrigin::Named {
            namespace: "shop".into(),
            name: "checkout".into(),
            source: "p.yaml".into()
        }
    );
    let expected = FailoverPolicy {
        failover_priority: vec![labels::REGION.into(), labels::ZONE.into()],
        prefer_own_cluster: false,
        failover: vec![RegionFailover {
            from: "us-east1".into(),
            to: "us-west1".into(),
        }],
        backups: vec![
            BackupService {
                service: ServiceId::new("shop", "checkout-dr"),
                cluster: Some("west".into()),
            },
            BackupService {
                service: ServiceId::new("shop-dr", "checkout"),
                cluster: None,
            },
        ],
        outlier_detection: Some(OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_failure: 4,
            interval: Duration::from_secs(2),
            base_ejection_time: Duration::from_secs(60),
            max_ejection_percent: 50,
        }),
        overprovisioning_factor: 200,
        panic_threshold: 10,
        mtls: MtlsMode::Strict,
        ..FailoverPolicy::default()
    };
    assert_eq!(*e.policy, expected);
}

#[test]
fn absent_fields_take_the_defaults_and_scopes_follow_metadata() {
    let text = format!(
        "{}---\n{}",
        doc(
            "shop",
            "ns-default",
            "  outlierDetection: {consecutive5xx: 7}\n"
        ),
        doc("*", "mesh", "  {}\n")
    );
    let entries = parse(&text).unwrap();
    assert_eq!(entries[0].scope, PolicyScope::Namespace("shop".into()));
    assert_eq!(
        *entries[0].policy,
        FailoverPolicy {
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx: 7,
                ..OutlierDetection::default()
            }),
            ..FailoverPolicy::default()
        }
    );
    assert_eq!(entries[1].scope, PolicyScope::Mesh);
    assert_eq!(*entries[1].policy, FailoverPolicy::default());
}

#[test]
fn empty_documents_are_skipped_but_an_empty_file_is_an_error() {
    let text = format!(
        "---\n{}---\n---\n",
        doc("shop", "a", "  panicThreshold: 1\n")
    );
    assert_eq!(parse(&text).unwrap().len(), 1);
    for empty in ["", "# nothing\n", "---\n", "---\n---\n", "~\n"] {
        let err = parse(empty).unwrap_err();
        assert!(matches!(err, FileError::Empty { .. }), "{empty:?}: {err:?}");
        assert!(err.to_string().contains("file is empty"), "{err}");
    }
}

#[test]
fn syntax_errors_name_document_and_line() {
    let text = format!("{}---\nkind: [\n", doc("shop", "a", "  {}\n"));
    let err = parse(&text).unwrap_err();
    assert!(matches!(err, FileError::Syntax { .. }), "{err:?}");
    assert_eq!(err.document(), Some(2));
    assert!(err.line().unwrap() >= 7, "{err}");
    assert!(err.to_string().starts_with("p.yaml:"), "{err}");
    assert!(
        err.to_string().contains("document 2: invalid YAML"),
        "{err}"
    );
}

#[test]
fn duplicate_keys_are_rejected() {
    let (document, line, field, reason, _) = invalid(&format!(
        "{}---\n{}",
        doc("a", "x", "  {}\n"),
        doc("b", "y", "  panicThreshold: 1\n  panicThreshold: 2\n")
    ));
    assert_eq!((document, line), (2, Some(14)));
    assert_eq!(field, "spec.panicThreshold");
    assert!(reason.starts_with("duplicate key"), "{reason}");
}

#[test]
fn kind_is_checked_first() {
    let (document, line, field, reason, display) =
        invalid("kind: Deployment\nmetadata: {name: x}\nspec: {replicas: 3}\n");
    assert_eq!((document, line, field.as_str()), (1, Some(1), "kind"));
    assert!(reason.contains("unsupported kind `Deployment`"), "{reason}");
    assert_eq!(display, format!("p.yaml:1:1: document 1: kind: {reason}"));
    let (_, _, _, reason, _) = invalid("kind: failoverpolicy\nmetadata: {}\nspec: {}\n");
    assert!(
        reason.contains("did you mean `FailoverPolicy`?"),
        "{reason}"
    );
    let (_, _, field, reason, _) = invalid("metadata: {name: a, namespace: b}\nspec: {}\n");
    assert_eq!(field, "kind");
    assert!(reason.contains("missing field `kind`"), "{reason}");
    let (_, _, field, _, _) = invalid("- kind: FailoverPolicy\n");
    assert_eq!(field, "");
}

#[test]
fn metadata_is_required_and_checked() {
    let (_, line, field, reason, _) =
        invalid("kind: FailoverPolicy\nmetadata: {name: a}\nspec: {}\n");
    assert_eq!((line, field.as_str()), (Some(2), "metadata.namespace"));
    assert!(reason.contains("\"*\""), "{reason}");
    let (_, _, field, _, _) = invalid("kind: FailoverPolicy\nmetadata: {namespace: a}\nspec: {}\n");
    assert_eq!(field, "metadata.name");
    let (_, _, field, reason, _) = invalid("kind: FailoverPolicy\nspec: {}\n");
    assert_eq!(field, "metadata");
    assert!(reason.contains("missing field `metadata`"), "{reason}");
    let (_, _, field, _, _) =
        invalid("kind: FailoverPolicy\nmetadata: {name: a, namespace: Shop}\nspec: {}\n");
    assert_eq!(field, "metadata.namespace");
    let (_, _, field, _, _) =
        invalid("kind: FailoverPolicy\nmetadata: {name: a, namespace: shop}\n");
    assert_eq!(field, "spec");
}

#[test]
fn unknown_fields_suggest_the_known_one() {
    let (document, line, field, reason, display) = invalid(&format!(
        "{}---\n{}",
        doc("a", "x", "  {}\n"),
        doc("b", "y", "  failoverPriorty: [a]\n")
    ));
    assert_eq!((document, line), (2, Some(13)));
    assert_eq!(field, "spec.failoverPriorty");
    assert!(
        reason.contains("did you mean `failoverPriority`?"),
        "{reason}"
    );
    assert!(
        display.starts_with("p.yaml:13:3: document 2: spec.failoverPriorty: unknown field"),
        "{display}"
    );
    let (_, field, reason) = spec_error("  outlierDetection: {consecutive_5xx: 1}\n");
    assert_eq!(field, "spec.outlierDetection.consecutive_5xx");
    assert!(
        reason.contains("did you mean `consecutive5xx`?"),
        "{reason}"
    );
    let (_, _, field, _, _) = invalid(&format!("extra: 1\n{}", doc("a", "x", "  {}\n")));
    assert_eq!(field, "extra");
}

#[test]
fn mesh_default_cannot_name_a_service() {
    let (_, line, field, reason, _) = invalid(&doc("*", "m", "  service: checkout\n"));
    assert_eq!((line, field.as_str()), (Some(6), "spec.service"));
    assert!(reason.contains("mesh default"), "{reason}");
}

#[test]
fn failover_rules_are_checked() {
    let (line, field, reason) =
        spec_error("  failover:\n  - {from: a, to: b}\n  - {from: c, to: c}\n");
    assert_eq!((line, field.as_str()), (Some(8), "spec.failover[1]"));
    assert!(reason.contains("cannot fail over to itself"), "{reason}");
    let (_, field, reason) =
        spec_error("  failover:\n  - {from: a, to: b}\n  - {from: a, to: b}\n");
    assert_eq!(field, "spec.failover[1]");
    assert!(
        reason.contains("duplicate rule a → b (also failover[0])"),
        "{reason}"
    );
    let (_, field, _) = spec_error("  failover: [{from: '', to: b}]\n");
    assert_eq!(field, "spec.failover[0].from");
    let (_, field, reason) = spec_error("  failover: [{from: a}]\n");
    assert_eq!(field, "spec.failover[0].to");
    assert!(reason.contains("missing field"), "{reason}");
    // Several targets for one region are fine (preference order).
    parse(&doc(
        "shop",
        "p",
        "  failover: [{from: a, to: b}, {from: a, to: c}]\n",
    ))
    .unwrap();
}

#[test]
fn failover_priority_is_checked() {
    let (line, field, reason) = spec_error("  failoverPriority:\n  - a\n  - b\n  - a\n");
    assert_eq!(
        (line, field.as_str()),
        (Some(9), "spec.failoverPriority[2]")
    );
    assert!(reason.contains("duplicate label key `a`"), "{reason}");
    let (_, field, reason) = spec_error("  failoverPriority: [a, '']\n");
    assert_eq!(field, "spec.failoverPriority[1]");
    assert!(reason.contains("empty"), "{reason}");
    let (_, field, reason) = spec_error("  failoverPriority: []\n");
    assert_eq!(field, "spec.failoverPriority");
    assert!(reason.contains("omit it"), "{reason}");
}

#[test]
fn mtls_is_strict_or_disable() {
    let (_, field, reason) = spec_error("  mtls: permissive\n");
    assert_eq!(field, "spec.mtls");
    assert_eq!(reason, "must be STRICT or DISABLE, got \"permissive\"");
    let entries = parse(&doc("shop", "a", "  mtls: disable\n")).unwrap();
    assert_eq!(entries[0].policy.mtls, MtlsMode::Disable);
}

#[test]
fn numbers_are_range_checked() {
    let cases = [
        ("  panicThreshold: 101\n", "spec.panicThreshold"),
        ("  panicThreshold: -1\n", "spec.panicThreshold"),
        (
            "  overprovisioningFactor: 99\n",
            "spec.overprovisioningFactor",
        ),
        (
            "  overprovisioningFactor: 100001\n",
            "spec.overprovisioningFactor",
        ),
        (
            "  outlierDetection: {maxEjectionPercent: 101}\n",
            "spec.outlierDetection.maxEjectionPercent",
        ),
        (
            "  outlierDetection: {maxEjectionPercent: 0}\n",
            "spec.outlierDetection.maxEjectionPercent",
        ),
        (
            "  outlierDetection: {consecutive5xx: -2}\n",
            "spec.outlierDetection.consecutive5xx",
        ),
    ];
    for (spec, expected) in cases {
        let (line, field, _) = spec_error(spec);
        assert_eq!(field, expected, "{spec}");
        assert_eq!(line, Some(6), "{spec}");
    }
    let (_, _, reason) = spec_error("  overprovisioningFactor: 50\n");
    assert!(reason.contains("spill traffic"), "{reason}");
    for ok in [
        "  overprovisioningFactor: 100\n",
        "  overprovisioningFactor: 100000\n",
        "  panicThreshold: 100\n",
        "  outlierDetection: {maxEjectionPercent: 1}\n",
    ] {
        parse(&doc("shop", "p", ok)).unwrap();
    }
}

#[test]
fn outlier_detection_that_cannot_eject_is_rejected() {
    let (line, field, reason) = spec_error(
        "  outlierDetection:\n    consecutive5xx: 0\n    consecutiveGatewayFailure: 0\n",
    );
    assert_eq!((line, field.as_str()), (Some(6), "spec.outlierDetection"));
    assert!(reason.contains("could never fail over"), "{reason}");
    // One of them is enough (the other keeps its default or is set).
    parse(&doc(
        "shop",
        "p",
        "  outlierDetection: {consecutive5xx: 0}\n",
    ))
    .unwrap();
    parse(&doc(
        "shop",
        "p",
        "  outlierDetection: {consecutiveGatewayFailure: 0}\n",
    ))
    .unwrap();
}

#[test]
fn durations() {
    let (line, field, reason) = spec_error("  outlierDetection:\n    interval: 5\n");
    assert_eq!(
        (line, field.as_str()),
        (Some(7), "spec.outlierDetection.interval")
    );
    assert!(reason.contains("no unit"), "{reason}");
    let (_, field, reason) = spec_error("  outlierDetection: {baseEjectionTime: -3s}\n");
    assert_eq!(field, "spec.outlierDetection.baseEjectionTime");
    assert!(reason.contains("negative"), "{reason}");
}

#[test]
fn the_same_scope_twice_in_a_file_is_an_error_naming_both() {
    let text = format!(
        "{}---\n{}",
        doc("shop", "first", "  service: checkout\n"),
        doc("shop", "second", "  service: checkout\n")
    );
    let (document, line, field, reason, _) = invalid(&text);
    assert_eq!((document, line), (2, Some(13)));
    assert_eq!(field, "spec.service");
    assert!(reason.contains("shop/second"), "{reason}");
    assert!(
        reason.contains("shop/first (p.yaml, document 1, line 6)"),
        "{reason}"
    );
    assert!(reason.contains("service shop/checkout"), "{reason}");

    let text = format!(
        "{}---\n{}",
        doc("*", "a", "  {}\n"),
        doc("*", "b", "  {}\n")
    );
    let (_, _, field, reason, _) = invalid(&text);
    assert_eq!(field, "metadata.namespace");
    assert!(reason.contains("mesh default"), "{reason}");
    // A namespace default and a service policy in it are different scopes.
    parse(&format!(
        "{}---\n{}",
        doc("shop", "a", "  {}\n"),
        doc("shop", "b", "  service: cart\n")
    ))
    .unwrap();
}

#[test]
fn backups_are_checked() {
    let cases: &[(&str, &str, &str)] = &[
        // (spec, field, part of the reason)
        (
            "  service: checkout\n  backups: [{namespace: shop}]\n",
            "spec.backups[0].service",
            "missing field `service`",
        ),
        (
            "  service: checkout\n  backups: [{service: dr, clustr: west}]\n",
            "spec.backups[0].clustr",
            "did you mean `cluster`?",
        ),
        (
            "  service: checkout\n  backups: [{service: checkout}]\n",
            "spec.backups[0].service",
            "shop/checkout cannot back itself up",
        ),
        (
            "  service: checkout\n  backups: [{service: dr}, {service: dr, namespace: shop}]\n",
            "spec.backups[1]",
            "duplicate backup (also backups[0])",
        ),
        (
            "  service: checkout\n  backups: [{service: Dr}]\n",
            "spec.backups[0].service",
            "service name",
        ),
        (
            "  service: checkout\n  backups: [{service: dr, cluster: \"\"}]\n",
            "spec.backups[0].cluster",
            "must name a cluster",
        ),
        // a namespace default would make every service (the backup too) back itself up
        (
            "  backups: [{service: dr}]\n",
            "spec.backups",
            "set spec.service",
        ),
    ];
    for (spec, field, reason_part) in cases {
        let (line, got_field, reason) = spec_error(spec);
        assert_eq!(got_field, *field, "{spec}");
        assert!(reason.contains(reason_part), "{spec}: {reason}");
        assert!(line.is_some(), "{spec}: no line");
    }
}

#[test]
fn a_port_policy_is_its_own_scope_and_its_port_is_checked() {
    let text = format!(
        "{}---\n{}---\n{}---\n{}",
        doc("shop", "web", "  service: web\n"),
        doc("shop", "web-http", "  service: web\n  port: http\n"),
        doc("shop", "web-9090", "  service: web\n  port: 9090\n"),
        doc(
            "shop",
            "web-quoted",
            "  service: web\n  port: \"8443\"\n  backups: [{service: dr}]\n"
        ),
    );
    let entries = parse(&text).unwrap();
    let web = ServiceId::new("shop", "web");
    let scopes: Vec<&PolicyScope> = entries.iter().map(|e| &e.scope).collect();
    assert_eq!(
        scopes,
        [
            &PolicyScope::Service(web.clone()),
            &PolicyScope::ServicePort(web.clone(), "http".into()),
            &PolicyScope::ServicePort(web.clone(), "9090".into()),
            &PolicyScope::ServicePort(web.clone(), "8443".into()),
        ]
    );
    assert_eq!(
        entries[3].policy.backups[0].service,
        ServiceId::new("shop", "dr"),
        "a port policy may have backups"
    );

    // The same port twice is a conflict, reported at spec.port.
    let text = format!(
        "{}---\n{}",
        doc("shop", "a", "  service: web\n  port: http\n"),
        doc("shop", "b", "  service: web\n  port: http\n"),
    );
    let (document, _, field, reason, _) = invalid(&text);
    assert_eq!((document, field.as_str()), (2, "spec.port"));
    assert!(reason.contains("service shop/web port http"), "{reason}");

    for (spec, reason_part) in [
        ("  port: http\n", "set spec.service too"),
        ("  service: web\n  port: 0\n", "between 1 and 65535"),
        ("  service: web\n  port: 70000\n", "between 1 and 65535"),
        ("  service: web\n  port: -1\n", "between 1 and 65535"),
        ("  service: web\n  port: HTTP\n", "port name"),
        ("  service: web\n  port: a-very-long-port-name\n", "15"),
        ("  service: web\n  port: [80]\n", "port"),
    ] {
        let (line, field, reason) = spec_error(spec);
        assert_eq!(field, "spec.port", "{spec}: {reason}");
        assert!(reason.contains(reason_part), "{spec}: {reason}");
        assert!(line.is_some(), "{spec}");
    }
}

#[test]
fn a_port_policy_closing_a_backup_cycle_is_refused() {
    let text = format!(
        "{}---\n{}",
        doc(
            "shop",
            "a-http",
            "  service: a\n  port: http\n  backups: [{service: b}]\n"
        ),
        backing_up("b", "a"),
    );
    let (document, _, field, reason, _) = invalid(&text);
    assert_eq!((document, field.as_str()), (2, "spec.backups[0]"));
    assert!(reason.contains("shop/b → shop/a → shop/b"), "{reason}");
    assert!(reason.contains("policy shop/a-http ("), "{reason}");
}

const LANGUAGE: &str = "\
kind: FailoverPolicy
metadata: {name: web, namespace: shop}
spec:
  failoverPriority:
  - topology.kubernetes.io/region
  - topology.istio.io/network=net-a
  - topology.kubernetes.io/zone
  distribute:
  - from: eu-west4/eu-west4-a/*
    to:
      eu-west4/eu-west4-a/*: 50
      eu-west4/eu-west4-b/sz-1: 50
  - from: eu-west4/*
    to:
      eu-west4/eu-west4-c/*: 20
      eu-west4/eu-west4-b/*: 80
  - from: \"*\"
    to: {\"*\": 100}
  healthCheck:
    http: {path: /healthz, host: web.shop}
    interval: 10s
    timeout: 2s
    unhealthyThreshold: 4
    healthyThreshold: 1
  outlierDetection:
    enabled: false
  spillover: allOrNothing
  panicThreshold: 0
";

fn pattern(text: &str) -> LocalityPattern {
    parse_pattern(text).unwrap()
}

#[test]
fn parses_the_policy_language_fields() {
    let entries = parse(LANGUAGE).unwrap();
    let p = &entries[0].policy;
    assert_eq!(
        p.failover_priority,
        vec![
            PriorityKey::label(labels::REGION),
            PriorityKey::pinned("topology.istio.io/network", "net-a"),
            PriorityKey::label(labels::ZONE),
        ]
    );
    assert_eq!(
        p.distribute,
        vec![
            DistributeRule {
                from: pattern("eu-west4/eu-west4-a/*"),
                to: vec![
                    (pattern("eu-west4/eu-west4-a/*"), 50),
                    (pattern("eu-west4/eu-west4-b/sz-1"), 50),
                ],
            },
            DistributeRule {
                from: pattern("eu-west4/*"),
                // The order written, not sorted.
                to: vec![
                    (pattern("eu-west4/eu-west4-c/*"), 20),
                    (pattern("eu-west4/eu-west4-b/*"), 80),
                ],
            },
            DistributeRule {
                from: pattern("*"),
                to: vec![(pattern("*"), 100)],
            },
        ]
    );
    assert_eq!(
        p.health_check,
        Some(HealthCheck {
            protocol: HealthCheckProtocol::Http {
                path: "/healthz".into(),
                host: Some("web.shop".into()),
            },
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            unhealthy_threshold: 4,
            healthy_threshold: 1,
        })
    );
    assert_eq!(p.outlier_detection, None);
    assert_eq!(p.spillover, Spillover::AllOrNothing);
    assert_eq!(p.overprovisioning_factor, ALL_OR_NOTHING_FACTOR);
    assert_eq!(p.panic_threshold, 0);
}

#[test]
fn locality_patterns() {
    assert_eq!(
        pattern("eu/b/*"),
        LocalityPattern {
            segments: vec!["eu".into(), "b".into()],
            wildcard: true
        }
    );
    assert_eq!(
        pattern("eu/b/s"),
        LocalityPattern {
            segments: vec!["eu".into(), "b".into(), "s".into()],
            wildcard: false
        }
    );
    assert_eq!(pattern("*").segments, Vec::<String>::new());
    let cases = [
        ("eu-*", "only as the whole last segment"),
        ("*/b", "only as the whole last segment"),
        ("eu/*/s", "only as the whole last segment"),
        ("eu/b*", "only as the whole last segment"),
        ("eu-west4", "did you mean `eu-west4/*`?"),
        ("eu/b", "names a zone only"),
        ("eu/b", "did you mean `eu/b/*`?"),
        ("eu-west4/", "did you mean `eu-west4/*`?"),
        ("eu//s", "empty segment"),
        ("/eu/b/s", "empty segment"),
        ("", "empty locality pattern"),
        ("eu /b/*", "whitespace"),
        ("a/b/c/d", "more than 3 segments"),
        ("a/b/c/*", "did you mean `a/b/c`?"),
    ];
    for (text, expected) in cases {
        let reason = parse_pattern(text).unwrap_err();
        assert!(reason.contains(expected), "{text:?}: {reason}");
    }
}

#[test]
fn distribute_patterns_and_weights_are_checked_where_written() {
    let (line, field, reason) = spec_error("  distribute:\n  - from: eu-*\n    to: {\"*\": 100}\n");
    assert_eq!((line, field.as_str()), (Some(7), "spec.distribute[0].from"));
    assert!(reason.contains("whole last segment"), "{reason}");
    let (line, field, reason) = spec_error(
        "  distribute:\n  - from: eu/*\n    to:\n      eu/b/*: 60\n      eu-west4: 40\n",
    );
    assert_eq!(
        (line, field.as_str()),
        (Some(10), "spec.distribute[0].to.eu-west4")
    );
    assert!(reason.contains("did you mean `eu-west4/*`?"), "{reason}");
    for (weight, shown) in [
        ("0", "`0`"),
        ("101", "`101`"),
        ("1.5", "`1.5`"),
        ("lots", "`lots`"),
    ] {
        let (_, field, reason) = spec_error(&format!(
            "  distribute:\n  - from: eu/*\n    to: {{eu/b/*: {weight}}}\n"
        ));
        assert_eq!(field, "spec.distribute[0].to[\"eu/b/*\"]", "{weight}");
        assert!(reason.contains("from 1 to 100"), "{reason}");
        assert!(reason.contains(shown), "{reason}");
    }
    let (_, field, reason) = spec_error("  distribute:\n  - from: eu/*\n    to: {}\n");
    assert_eq!(field, "spec.distribute[0].to");
    assert!(reason.contains("at least one"), "{reason}");
    let (_, field, reason) = spec_error("  distribute:\n  - from: eu/*\n");
    assert_eq!(field, "spec.distribute[0].to");
    assert!(reason.contains("missing field `to`"), "{reason}");
    let (line, field, reason) =
        spec_error("  distribute:\n  - from: eu/*\n    to:\n      eu/b/*: 60\n      eu/c/*: 30\n");
    assert_eq!((line, field.as_str()), (Some(8), "spec.distribute[0].to"));
    assert_eq!(
        reason,
        "weights must add up to 100 (percent), they add up to 90 (eu/b/*: 60, eu/c/*: 30)"
    );
    let (line, field, reason) =
        spec_error("  distribute:\n  - from: eu/*\n    to:\n      eu/*: 50\n      eu/c/s: 50\n");
    assert_eq!(
        (line, field.as_str()),
        (Some(10), "spec.distribute[0].to[\"eu/c/s\"]")
    );
    assert!(reason.contains("`eu/c/s` overlaps `eu/*`"), "{reason}");
    // Disjoint siblings are fine, and `to` may name localities outside `from`.
    parse(&doc(
        "shop",
        "p",
        "  distribute:\n  - from: eu/b/*\n    to: {eu/b/*: 50, eu/c/s: 25, us/*: 25}\n",
    ))
    .unwrap();
}

#[test]
fn distribute_rules_that_can_never_apply_are_refused() {
    let (line, field, reason) = spec_error(
        "  distribute:\n  - from: eu/*\n    to: {eu/b/*: 100}\n  - from: eu/*\n    to: {eu/c/*: 100}\n",
    );
    assert_eq!((line, field.as_str()), (Some(9), "spec.distribute[1].from"));
    assert!(
        reason.contains("distribute[0] has the same `from` (eu/*)"),
        "{reason}"
    );
    let (_, field, reason) = spec_error(
        "  distribute:\n  - from: eu/*\n    to: {eu/b/*: 100}\n  - from: eu/c/*\n    to: {eu/c/*: 100}\n",
    );
    assert_eq!(field, "spec.distribute[1].from");
    assert!(reason.contains("can never apply"), "{reason}");
    assert!(reason.contains("distribute[0] (from `eu/*`)"), "{reason}");
    assert!(
        reason.contains("put the more specific rule first"),
        "{reason}"
    );
    let (_, field, _) = spec_error(
        "  distribute:\n  - from: \"*\"\n    to: {eu/b/*: 100}\n  - from: eu/c/s\n    to: {eu/c/*: 100}\n",
    );
    assert_eq!(field, "spec.distribute[1].from");
    // Specific first is the right order.
    let entries = parse(&doc(
        "shop",
        "p",
        "  distribute:\n  - from: eu/c/*\n    to: {eu/c/*: 100}\n  - from: eu/*\n    to: {eu/b/*: 100}\n",
    ))
    .unwrap();
    assert_eq!(entries[0].policy.distribute.len(), 2);
}

#[test]
fn failover_priority_pins() {
    let entries = parse(&doc(
        "shop",
        "p",
        "  failoverPriority: [topology.istio.io/network=n1, topology.kubernetes.io/region]\n",
    ))
    .unwrap();
    assert_eq!(
        entries[0].policy.failover_priority,
        vec![
            PriorityKey::pinned("topology.istio.io/network", "n1"),
            PriorityKey::label(labels::REGION)
        ]
    );
    let cases = [
        ("[=n1]", "pins no label"),
        ("[net=]", "pins `net` to an empty value"),
        ("[net=a=b]", "more than one `=`"),
        ("['net= a']", "whitespace"),
    ];
    for (keys, expected) in cases {
        let (line, field, reason) = spec_error(&format!("  failoverPriority: {keys}\n"));
        assert_eq!(
            (line, field.as_str()),
            (Some(6), "spec.failoverPriority[0]")
        );
        assert!(reason.contains(expected), "{keys}: {reason}");
    }
    let (line, field, reason) =
        spec_error("  failoverPriority:\n  - region\n  - net=a\n  - net=b\n");
    assert_eq!(
        (line, field.as_str()),
        (Some(9), "spec.failoverPriority[2]")
    );
    assert!(
        reason.contains("duplicate label key `net` (also failoverPriority[1])"),
        "{reason}"
    );
    let (_, field, reason) = spec_error("  failoverPriority: [net, net=a]\n");
    assert_eq!(field, "spec.failoverPriority[1]");
    assert!(reason.contains("pinned (`net=VALUE`) or not"), "{reason}");
}

#[test]
fn health_checks() {
    let check = |spec: &str| {
        parse(&doc("shop", "p", spec)).unwrap()[0]
            .policy
            .health_check
            .clone()
            .unwrap()
    };
    assert_eq!(
        check("  healthCheck: {tcp: {}}\n"),
        HealthCheck::new(HealthCheckProtocol::Tcp)
    );
    assert_eq!(
        check("  healthCheck:\n    tcp:\n").protocol,
        HealthCheckProtocol::Tcp
    );
    assert_eq!(
        check("  healthCheck: {grpc: {}}\n").protocol,
        HealthCheckProtocol::Grpc { service: None }
    );
    assert_eq!(
        check("  healthCheck: {grpc: {service: shop.Cart}}\n").protocol,
        HealthCheckProtocol::Grpc {
            service: Some("shop.Cart".into())
        }
    );
    assert_eq!(
        check("  healthCheck: {http: {path: /}, interval: 500ms, timeout: 100ms}\n"),
        HealthCheck {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(100),
            ..HealthCheck::new(HealthCheckProtocol::Http {
                path: "/".into(),
                host: None
            })
        }
    );
    let cases = [
        ("{interval: 5s}", "spec.healthCheck", "exactly one protocol"),
        (
            "{tcp: {}, http: {path: /}}",
            "spec.healthCheck",
            "`http` and `tcp` are all set",
        ),
        (
            "{http: {}}",
            "spec.healthCheck.http.path",
            "missing field `path`",
        ),
        (
            "{http: }",
            "spec.healthCheck.http.path",
            "missing field `path`",
        ),
        (
            "{http: {path: healthz}}",
            "spec.healthCheck.http.path",
            "did you mean `/healthz`?",
        ),
        (
            "{http: {path: '/a b'}}",
            "spec.healthCheck.http.path",
            "starting with `/` without whitespace",
        ),
        (
            "{http: {path: /, host: ''}}",
            "spec.healthCheck.http.host",
            "host name",
        ),
        (
            "{grpc: {service: ''}}",
            "spec.healthCheck.grpc.service",
            "omit it",
        ),
        (
            "{tcp: {}, timeout: 5s}",
            "spec.healthCheck.timeout",
            "timeout (5s) must be shorter than interval (5s)",
        ),
        (
            "{tcp: {}, interval: 1s}",
            "spec.healthCheck.interval",
            "timeout (1s) must be shorter than interval (1s)",
        ),
        (
            "{tcp: {}, interval: 5}",
            "spec.healthCheck.interval",
            "has no unit",
        ),
        (
            "{tcp: {}, unhealthyThreshold: 0}",
            "spec.healthCheck.unhealthyThreshold",
            "must be between 1 and 1000",
        ),
        (
            "{tcp: {}, healthyThreshold: 1001}",
            "spec.healthCheck.healthyThreshold",
            "must be between 1 and 1000",
        ),
        (
            "{htpp: {path: /}}",
            "spec.healthCheck.htpp",
            "did you mean `http`?",
        ),
        (
            "{tcp: {}, unhealthyTreshold: 2}",
            "spec.healthCheck.unhealthyTreshold",
            "did you mean `unhealthyThreshold`?",
        ),
        (
            "{http: {pth: /}}",
            "spec.healthCheck.http.pth",
            "did you mean `path`?",
        ),
        (
            "{tcp: {port: 80}}",
            "spec.healthCheck.tcp.port",
            "unknown field",
        ),
        (
            "{grpc: {servce: a}}",
            "spec.healthCheck.grpc.servce",
            "did you mean `service`?",
        ),
    ];
    for (hc, expected_field, expected) in cases {
        let (line, field, reason) = spec_error(&format!("  healthCheck: {hc}\n"));
        assert_eq!(field, expected_field, "{hc}");
        assert_eq!(line, Some(6), "{hc}");
        assert!(reason.contains(expected), "{hc}: {reason}");
    }
}

#[test]
fn outlier_detection_can_be_switched_off() {
    let policy = |spec: &str| parse(&doc("shop", "p", spec)).unwrap()[0].policy.clone();
    // Health checks alone, or nothing but Kubernetes readiness: both allowed.
    let p = policy("  outlierDetection: {enabled: false}\n  healthCheck: {tcp: {}}\n");
    assert_eq!(p.outlier_detection, None);
    assert!(p.health_check.is_some());
    assert_eq!(
        policy("  outlierDetection: {enabled: false}\n").outlier_detection,
        None
    );
    assert_eq!(
        policy("  outlierDetection: {enabled: true, consecutive5xx: 9}\n").outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx: 9,
            ..OutlierDetection::default()
        })
    );
    let (line, field, reason) =
        spec_error("  outlierDetection:\n    enabled: false\n    interval: 2s\n");
    assert_eq!(
        (line, field.as_str()),
        (Some(8), "spec.outlierDetection.interval")
    );
    assert!(
        reason.contains("`enabled: false` switches outlier detection off"),
        "{reason}"
    );
    let (_, field, reason) = spec_error("  outlierDetection: {enabled: no}\n");
    assert_eq!(field, "spec.outlierDetection.enabled");
    assert!(reason.contains("invalid type"), "{reason}");
    let (_, field, reason) = spec_error("  outlierDetection: {enable: false}\n");
    assert_eq!(field, "spec.outlierDetection.enable");
    assert!(reason.contains("did you mean `enabled`?"), "{reason}");
}

#[test]
fn spillover_values() {
    let policy = |spec: &str| parse(&doc("shop", "p", spec)).unwrap()[0].policy.clone();
    let p = policy("  spillover: Gradual\n  overprovisioningFactor: 100\n");
    assert_eq!(
        (p.spillover, p.overprovisioning_factor),
        (Spillover::Gradual, 100)
    );
    for v in ["allOrNothing", "allornothing", "ALLORNOTHING"] {
        let p = policy(&format!("  spillover: {v}\n"));
        assert_eq!(p.spillover, Spillover::AllOrNothing, "{v}");
        assert_eq!(p.overprovisioning_factor, ALL_OR_NOTHING_FACTOR);
    }
    for (v, hint) in [
        ("all-or-nothing", "did you mean `allOrNothing`?"),
        ("all_or_nothing", "did you mean `allOrNothing`?"),
        ("gradul", "did you mean `gradual`?"),
    ] {
        let (line, field, reason) = spec_error(&format!("  spillover: {v}\n"));
        assert_eq!((line, field.as_str()), (Some(6), "spec.spillover"));
        assert!(
            reason.contains("must be `gradual` (the default) or `allOrNothing`"),
            "{reason}"
        );
        assert!(reason.contains(hint), "{v}: {reason}");
    }
    let (_, _, reason) = spec_error("  spillover: sometimes\n");
    assert!(!reason.contains("did you mean"), "{reason}");
    let (_, field, reason) =
        spec_error("  overprovisioningFactor: 140\n  spillover: allOrNothing\n");
    assert_eq!(field, "spec.spillover");
    assert!(reason.contains("spec.overprovisioningFactor"), "{reason}");
    assert!(reason.contains("allOrNothing"), "{reason}");
}

#[test]
fn typos_of_the_new_keys_suggest_them() {
    for (spec, field, hint) in [
        (
            "  healthcheck: {tcp: {}}\n",
            "spec.healthcheck",
            "healthCheck",
        ),
        ("  distrbute: []\n", "spec.distrbute", "distribute"),
        ("  spilover: gradual\n", "spec.spilover", "spillover"),
        (
            "  distribute: [{from: '*', too: {}}]\n",
            "spec.distribute[0].too",
            "to",
        ),
    ] {
        let (_, f, reason) = spec_error(spec);
        assert_eq!(f, field, "{spec}");
        assert!(
            reason.contains(&format!("did you mean `{hint}`?")),
            "{spec}: {reason}"
        );
    }
    let (_, _, reason) = spec_error("  mtls: strickt\n");
    assert!(reason.contains("did you mean `STRICT`?"), "{reason}");
}

#[test]
fn fleet_failover_is_off_unless_written_and_every_key_is_read() {
    let policy = |spec: &str| parse(&doc("shop", "p", spec)).unwrap()[0].policy.clone();
    assert_eq!(
        policy("  panicThreshold: 0\n").fleet_failover.mode,
        FleetMode::Off
    );
    let p = policy(
        "  fleetFailover: {mode: Enforce, minReporters: 3, minRequests: 50, errorRatio: 0.25, \
         window: 5s, ejectFor: 1m, maxEjectedPercent: 34}\n",
    );
    assert_eq!(
        p.fleet_failover,
        FleetFailover {
            mode: FleetMode::Enforce,
            min_reporters: 3,
            min_requests: 50,
            error_ratio: Ratio::new(0.25).unwrap(),
            window: Duration::from_secs(5),
            eject_for: Duration::from_secs(60),
            max_ejected_percent: 34,
        }
    );
    // Unset keys keep the defaults; `off` may keep its settings for later.
    let p = policy("  fleetFailover: {mode: observe}\n");
    assert_eq!(
        p.fleet_failover,
        FleetFailover {
            mode: FleetMode::Observe,
            ..FleetFailover::default()
        }
    );
    assert_eq!(
        policy("  fleetFailover: {mode: off, minReporters: 4}\n")
            .fleet_failover
            .min_reporters,
        4
    );
}

#[test]
fn fleet_failover_refuses_what_would_act_on_one_client_or_never_act() {
    for (spec, field, wanted) in [
        (
            "{mode: enforced}",
            "spec.fleetFailover.mode",
            "did you mean `enforce`?",
        ),
        (
            "{minReporters: 1}",
            "spec.fleetFailover.minReporters",
            "never acts on the reports of one client",
        ),
        (
            "{minRequests: 0}",
            "spec.fleetFailover.minRequests",
            "must be between 1 and",
        ),
        (
            "{errorRatio: 0}",
            "spec.fleetFailover.errorRatio",
            "above 0 and at most 1",
        ),
        (
            "{errorRatio: 1.5}",
            "spec.fleetFailover.errorRatio",
            "got 1.5",
        ),
        (
            "{window: 500ms}",
            "spec.fleetFailover.window",
            "at least 1s",
        ),
        (
            "{window: 1m}",
            "spec.fleetFailover.window",
            "must be at least window",
        ),
        (
            "{window: 20s, ejectFor: 10s}",
            "spec.fleetFailover.ejectFor",
            "old evidence",
        ),
        (
            "{maxEjectedPercent: 101}",
            "spec.fleetFailover.maxEjectedPercent",
            "between 0 and 100",
        ),
        (
            "{maxEjectedPercent: 0}",
            "spec.fleetFailover.maxEjectedPercent",
            "mode: observe",
        ),
        (
            "{ejectfor: 1m}",
            "spec.fleetFailover.ejectfor",
            "did you mean `ejectFor`?",
        ),
    ] {
        let (line, f, reason) = spec_error(&format!("  fleetFailover: {spec}\n"));
        assert_eq!((line, f.as_str()), (Some(6), field), "{spec}: {reason}");
        assert!(reason.contains(wanted), "{spec}: {reason}");
    }
}

#[test]
fn ratios_compare_exactly() {
    let half = Ratio::new(0.5).unwrap();
    assert!(half.reached_by(10, 20));
    assert!(!half.reached_by(9, 20));
    assert!(!half.reached_by(0, 0));
    assert!(Ratio::ONE.reached_by(3, 3));
    assert!(!Ratio::ONE.reached_by(2, 3));
    assert_eq!(Ratio::new(0.0), None);
    assert_eq!(Ratio::new(f64::NAN), None);
    assert_eq!(Ratio::new(1e-9), None);
    assert_eq!(half.value(), 0.5);
}
