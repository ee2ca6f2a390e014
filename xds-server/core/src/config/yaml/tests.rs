use super::*;
use serde::Deserialize;

const DOC: &str = "\
services:
- name: a
  ports: [{name: http, port: 80}]
  endpoints:
  - address: 10.0.0.1
    labels: {topology.istio.io/cluster: east}
  - address: 10.0.0.2
    port: 0
---
kind: Second
spec:
  x: 1
";

fn pos(line: usize, column: usize) -> Option<Pos> {
    Some(Pos { line, column })
}

#[test]
fn field_paths_display_like_yaml_accessors() {
    let p = FieldPath::root()
        .key("services")
        .index(0)
        .key("endpoints")
        .index(1)
        .key("port");
    assert_eq!(p.to_string(), "services[0].endpoints[1].port");
    let labels = FieldPath::root()
        .key("labels")
        .key("topology.istio.io/cluster");
    assert_eq!(labels.to_string(), "labels[\"topology.istio.io/cluster\"]");
    assert_eq!(FieldPath::root().to_string(), "");
}

#[test]
fn locate_finds_keys_values_and_elements() {
    let root = FieldPath::root();
    let services = root.key("services");
    assert_eq!(locate(DOC, 0, &services), pos(1, 1));
    let ep1 = services.index(0).key("endpoints").index(1);
    assert_eq!(locate(DOC, 0, &ep1), pos(7, 5));
    assert_eq!(locate(DOC, 0, &ep1.key("port")), pos(8, 5));
    let port = services.index(0).key("ports").index(0).key("port");
    assert_eq!(locate(DOC, 0, &port), pos(3, 24));
    let label = services
        .index(0)
        .key("endpoints")
        .index(0)
        .key("labels")
        .key("topology.istio.io/cluster");
    assert_eq!(locate(DOC, 0, &label), pos(6, 14));
    assert_eq!(locate(DOC, 1, &root.key("spec").key("x")), pos(12, 3));
    assert_eq!(locate(DOC, 1, &root.key("kind")), pos(10, 1));
    assert_eq!(locate(DOC, 0, &root), pos(1, 1));
}

#[test]
fn locate_misses_and_nearest_falls_back_to_an_ancestor() {
    let ep0 = FieldPath::root()
        .key("services")
        .index(0)
        .key("endpoints")
        .index(0);
    assert_eq!(locate(DOC, 0, &ep0.key("port")), None);
    assert_eq!(locate_nearest(DOC, 0, &ep0.key("port")), pos(5, 5));
    assert_eq!(
        locate(DOC, 0, &FieldPath::root().key("services").index(9)),
        None
    );
    assert_eq!(locate(DOC, 2, &FieldPath::root()), None);
    // A path through a scalar does not exist.
    assert_eq!(
        locate(DOC, 1, &FieldPath::root().key("kind").key("x")),
        None
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct Spec {
    failover_priority: Option<Vec<String>>,
    panic_threshold: Option<u32>,
    inner: Option<Inner>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Inner {
    required: String,
}

#[test]
fn schema_problems_name_the_field_and_suggest_a_known_one() {
    let err =
        serde_yaml_ng::from_str::<Spec>("panicThreshold: 1\nfailoverPriorty: [a]\n").unwrap_err();
    let p = schema_problem(&err);
    assert_eq!(p.line, Some(2));
    assert_eq!(p.field, "failoverPriorty");
    assert!(
        p.reason.starts_with("unknown field `failoverPriorty`"),
        "{p:?}"
    );
    assert!(
        p.reason.ends_with("did you mean `failoverPriority`?"),
        "{p:?}"
    );
    assert!(!p.reason.contains("line 2"), "{p:?}");

    let err = serde_yaml_ng::from_str::<Spec>("inner:\n  nope: 1\n").unwrap_err();
    let p = schema_problem(&err);
    assert_eq!((p.line, p.field.as_str()), (Some(2), "inner.nope"));
    assert!(!p.reason.contains("did you mean"), "{p:?}");

    let err = serde_yaml_ng::from_str::<Spec>("inner: {}\n").unwrap_err();
    let p = schema_problem(&err);
    assert_eq!(p.field, "inner.required");
    assert_eq!(p.reason, "missing field `required`");

    let err = serde_yaml_ng::from_str::<Spec>("panicThreshold: lots\n").unwrap_err();
    let p = schema_problem(&err);
    assert_eq!((p.line, p.field.as_str()), (Some(1), "panicThreshold"));
    assert!(p.reason.starts_with("invalid type: string"), "{p:?}");
}

#[test]
fn syntax_problems_carry_the_position() {
    let err = serde_yaml_ng::from_str::<serde_yaml_ng::Value>("a: [1, 2\nb: 3\n").unwrap_err();
    let p = syntax_problem(&err);
    assert!(p.line.is_some(), "{p:?}");
    assert_eq!(p.field, "");
    assert!(!p.reason.is_empty());
}

fn probe_str(text: &str) -> Result<bool, serde_yaml_ng::Error> {
    probe(serde_yaml_ng::Deserializer::from_str(text))
}

#[test]
fn probe_finds_empty_documents_and_duplicate_keys() {
    assert!(probe_str("~\n").unwrap());
    assert!(probe_str("null\n").unwrap());
    assert!(!probe_str("a: [1, {b: 2}, !tag x]\nc: 99999999999999999999999\n").unwrap());
    assert!(!probe_str("''\n").unwrap());

    let err = probe_str("a:\n  x: 1\n  y: 2\n  x: 3\n").unwrap_err();
    assert!(is_duplicate_key(&err));
    let p = schema_problem(&err);
    assert_eq!((p.line, p.column), (Some(4), Some(3)));
    assert_eq!(p.field, "a.x");
    assert!(p.reason.starts_with("duplicate key `x`"), "{p:?}");

    let err = probe_str("- {1: a, 1: b}\n").unwrap_err();
    assert_eq!(schema_problem(&err).field, "[0].1");

    let err = probe_str("a: [1, 2\n").unwrap_err();
    assert!(!is_duplicate_key(&err));
}

#[test]
fn did_you_mean_tolerates_case_separators_and_typos() {
    let known = ["failoverPriority", "failover", "panicThreshold"];
    assert_eq!(
        did_you_mean("failover_priority", &known),
        Some("failoverPriority")
    );
    assert_eq!(
        did_you_mean("panicthreshhold", &known),
        Some("panicThreshold")
    );
    assert_eq!(did_you_mean("failovr", &known), Some("failover"));
    assert_eq!(did_you_mean("zone", &known), None);
    assert_eq!(
        did_you_mean("lables", &["address", "labels"]),
        Some("labels")
    );
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("ab", "ba"), 1);
    assert_eq!(edit_distance("", "abc"), 3);
}

#[test]
fn dns_names() {
    assert!(check_dns_label("checkout-2", "name").is_ok());
    assert!(check_dns_label("", "name").unwrap_err().contains("empty"));
    for bad in ["Checkout", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
        assert!(check_dns_label(bad, "name").is_err(), "{bad}");
    }
    assert!(check_dns_subdomain("mesh.default-1", "name").is_ok());
    assert!(check_dns_subdomain("a..b", "name").is_err());
}
