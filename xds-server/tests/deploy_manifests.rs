//! The Kubernetes manifests in `deploy/kubernetes` must be what they claim to be.
//!
//! Every directory there has a `kustomization.yaml` listing each of its manifests (an unlisted one would
//! silently not be applied). Every document of every listed file is deserialised into its typed object
//! (k8s-openapi, or our `FailoverPolicy`) by `kind`, and since k8s-openapi ignores unknown fields, the
//! typed object is serialised again and must equal the document: a misspelt or misplaced field
//! (`contaners:`, `readOnlyRootFileSystem:`) fails here instead of being dropped by the API server.
//! On top of that: RBAC grants exactly what the server needs, the pod runs locked down, the ConfigMap only
//! holds variables the binary reads (and values it accepts), and the sidecar bootstrap reaches the Service.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use xds_server::sources::policy::crd::FailoverPolicy;

const DEPLOY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes");
/// Where the binary's flags (`app::Args`) are declared.
const MAIN_RS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/app.rs");
/// Every file that declares flags: `app::Args` and the argument groups it flattens in.
const FLAG_SOURCES: [&str; 3] = [
    MAIN_RS,
    concat!(env!("CARGO_MANIFEST_DIR"), "/src/tls.rs"),
    concat!(env!("CARGO_MANIFEST_DIR"), "/src/grpc/transport.rs"),
];
const LEASE_RS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/sources/kubernetes/lease.rs"
);

/// The ConfigMap deployment.yaml takes the server's flags from, and the sidecar bootstrap one.
const SERVER_CONFIG: &str = "xds-server-config";
const SIDECAR_BOOTSTRAP: &str = "envoy-sidecar-bootstrap";
const SIDECAR_BOOTSTRAP_KEY: &str = "envoy.yaml";
const XDS_PORT: i32 = 18000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Kustomization {
    api_version: String,
    kind: String,
    resources: Vec<String>,
}

#[derive(Debug)]
enum Object {
    Namespace(Box<Namespace>),
    ServiceAccount(Box<ServiceAccount>),
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    Role(Box<Role>),
    RoleBinding(Box<RoleBinding>),
    Deployment(Box<Deployment>),
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    Service(Box<Service>),
    ConfigMap(Box<ConfigMap>),
    CustomResourceDefinition(Box<CustomResourceDefinition>),
    FailoverPolicy(Box<FailoverPolicy>),
    PodMonitor(Box<PodMonitor>),
}

/// The Prometheus Operator's PodMonitor, as far as our manifest uses it (k8s-openapi has no type for
/// it; unknown fields fail the round trip like everywhere else).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodMonitor {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: PodMonitorSpec,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodMonitorSpec {
    selector: LabelSelector,
    pod_metrics_endpoints: Vec<PodMetricsEndpoint>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodMetricsEndpoint {
    port: String,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
}

/// One parsed document: where it came from (`deployment.yaml#2`) and what it is.
#[derive(Debug)]
struct Manifest {
    origin: String,
    object: Object,
}

#[derive(Debug, Default)]
struct Manifests {
    all: Vec<Manifest>,
    /// Relative path → file text, for the checks that look at a file as written.
    texts: BTreeMap<String, String>,
}

macro_rules! all_of {
    ($manifests:expr, $variant:ident) => {
        $manifests
            .all
            .iter()
            .filter_map(|m| match &m.object {
                Object::$variant(o) => Some((m.origin.as_str(), o.as_ref())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
}

/// The one object of a kind (panics if there are none or several).
macro_rules! the_one {
    ($manifests:expr, $variant:ident) => {{
        let found = all_of!($manifests, $variant);
        assert_eq!(
            found.len(),
            1,
            "expected exactly one {} in deploy/kubernetes, found {:?}",
            stringify!($variant),
            found.iter().map(|(origin, _)| *origin).collect::<Vec<_>>()
        );
        found[0].1
    }};
}

fn deploy_dir() -> PathBuf {
    Path::new(DEPLOY_DIR)
        .canonicalize()
        .expect("deploy/kubernetes exists")
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Every directory under `root` (itself included), sorted.
fn directories(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        let mut children: Vec<PathBuf> = std::fs::read_dir(&dirs[i])
            .unwrap_or_else(|e| panic!("reading {}: {e}", dirs[i].display()))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|p| p.is_dir())
            .collect();
        children.sort();
        dirs.extend(children);
        i += 1;
    }
    dirs
}

/// The YAML documents of a file, as JSON values; empty documents (e.g. before a leading `---`) are skipped,
/// as kubectl does.
fn documents(origin: &str, text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .enumerate()
        .map(|(i, doc)| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{origin}: document {}: not YAML: {e}", i + 1))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// What k8s-openapi would also drop without changing the meaning: `null` fields (kubectl's
/// `creationTimestamp: null`).
fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), normalize(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// The paths where `written` and `typed` differ, with what happened there.
fn differences(path: &str, written: &Value, typed: &Value, out: &mut Vec<String>) {
    match (written, typed) {
        (Value::Object(w), Value::Object(t)) => {
            for (key, wv) in w {
                let here = format!("{path}.{key}");
                match t.get(key) {
                    Some(tv) => differences(&here, wv, tv, out),
                    None => out.push(format!(
                        "{here}: not a field of the typed object (misspelt or misplaced?)"
                    )),
                }
            }
            for key in t.keys().filter(|k| !w.contains_key(*k)) {
                out.push(format!("{path}.{key}: added by the typed object"));
            }
        }
        (Value::Array(w), Value::Array(t)) if w.len() == t.len() => {
            for (i, (wv, tv)) in w.iter().zip(t).enumerate() {
                differences(&format!("{path}[{i}]"), wv, tv, out);
            }
        }
        _ if written == typed => {}
        _ => out.push(format!(
            "{path}: written {written}, typed object has {typed}"
        )),
    }
}

/// Deserialises `doc` into `T` and insists that nothing was lost or changed on the way.
fn typed<T: DeserializeOwned + Serialize>(origin: &str, doc: &Value) -> T {
    let written = normalize(doc);
    let object: T = serde_json::from_value(written.clone())
        .unwrap_or_else(|e| panic!("{origin}: not a valid {}: {e}", std::any::type_name::<T>()));
    let again = serde_json::to_value(&object).expect("typed objects serialise");
    let mut diffs = Vec::new();
    differences("", &written, &again, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{origin}: the manifest does not survive a round trip through {}:\n  {}",
        std::any::type_name::<T>(),
        diffs.join("\n  ")
    );
    object
}

fn parse(origin: &str, doc: &Value) -> Object {
    let field = |name: &str| {
        doc.get(name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{origin}: no `{name}`"))
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    match kind {
        "Namespace" => Object::Namespace(Box::new(typed(origin, doc))),
        "ServiceAccount" => Object::ServiceAccount(Box::new(typed(origin, doc))),
        "ClusterRole" => Object::ClusterRole(Box::new(typed(origin, doc))),
        "ClusterRoleBinding" => Object::ClusterRoleBinding(Box::new(typed(origin, doc))),
        "Role" => Object::Role(Box::new(typed(origin, doc))),
        "RoleBinding" => Object::RoleBinding(Box::new(typed(origin, doc))),
        "Deployment" => Object::Deployment(Box::new(typed(origin, doc))),
        "PodDisruptionBudget" => Object::PodDisruptionBudget(Box::new(typed(origin, doc))),
        "Service" => Object::Service(Box::new(typed(origin, doc))),
        "ConfigMap" => Object::ConfigMap(Box::new(typed(origin, doc))),
        "CustomResourceDefinition" => {
            Object::CustomResourceDefinition(Box::new(typed(origin, doc)))
        }
        "FailoverPolicy" => {
            // k8s-openapi types check apiVersion and kind themselves; the kube derive does not.
            let expected = format!("{}/v1alpha1", xds_server::sources::policy::crd::GROUP);
            assert_eq!(api_version, expected, "{origin}: apiVersion");
            Object::FailoverPolicy(Box::new(typed(origin, doc)))
        }
        "PodMonitor" => {
            assert_eq!(
                api_version, "monitoring.coreos.com/v1",
                "{origin}: apiVersion"
            );
            Object::PodMonitor(Box::new(typed(origin, doc)))
        }
        other => panic!(
            "{origin}: kind {other} ({api_version}) is not known to this test; \
             add it to `parse` with its k8s-openapi type"
        ),
    }
}

/// Every manifest under deploy/kubernetes, checked against the kustomizations as it is read.
fn load() -> Manifests {
    let root = deploy_dir();
    let mut manifests = Manifests::default();
    for dir in directories(&root) {
        let relative = |p: &Path| {
            p.strip_prefix(&root)
                .expect("under deploy/kubernetes")
                .display()
                .to_string()
        };
        let mut yaml_files: BTreeSet<String> = std::fs::read_dir(&dir)
            .expect("readable directory")
            .map(|entry| entry.expect("directory entry").path())
            .filter(|p| p.is_file() && is_yaml(p))
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let kustomization_path = dir.join("kustomization.yaml");
        if !yaml_files.remove("kustomization.yaml") {
            assert!(
                yaml_files.is_empty(),
                "{}/ has manifests {yaml_files:?} but no kustomization.yaml listing them",
                relative(&dir)
            );
            continue;
        }
        let kustomization: Kustomization = serde_yaml_ng::from_str(
            &std::fs::read_to_string(&kustomization_path).expect("readable kustomization.yaml"),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", kustomization_path.display()));
        assert_eq!(kustomization.api_version, "kustomize.config.k8s.io/v1beta1");
        assert_eq!(kustomization.kind, "Kustomization");

        let mut listed = BTreeSet::new();
        for resource in &kustomization.resources {
            let path = dir.join(resource);
            assert!(
                listed.insert(resource.clone()),
                "{}: {resource} is listed twice",
                relative(&kustomization_path)
            );
            if path.is_dir() {
                // A base or component; it is checked as a directory of its own.
                continue;
            }
            assert!(
                path.is_file(),
                "{}: lists {resource}, which does not exist",
                relative(&kustomization_path)
            );
            let origin = relative(&path);
            let text = std::fs::read_to_string(&path).expect("readable manifest");
            let docs = documents(&origin, &text);
            assert!(!docs.is_empty(), "{origin}: no document");
            let many = docs.len() > 1;
            for (i, doc) in docs.iter().enumerate() {
                let origin = if many {
                    format!("{origin}#{}", i + 1)
                } else {
                    origin.clone()
                };
                let object = parse(&origin, doc);
                manifests.all.push(Manifest { origin, object });
            }
            manifests.texts.insert(relative(&path), text);
        }
        let unlisted: Vec<_> = yaml_files.difference(&listed).collect();
        assert!(
            unlisted.is_empty(),
            "{}: does not list {unlisted:?}; kubectl apply -k would skip them",
            relative(&kustomization_path)
        );
    }
    manifests
}

#[test]
fn every_manifest_is_listed_and_parses_into_its_typed_object() {
    let manifests = load();
    let kinds: BTreeSet<&str> = manifests
        .all
        .iter()
        .map(|m| match m.object {
            Object::Namespace(_) => "Namespace",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::ClusterRole(_) => "ClusterRole",
            Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Object::Role(_) => "Role",
            Object::RoleBinding(_) => "RoleBinding",
            Object::Deployment(_) => "Deployment",
            Object::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Object::Service(_) => "Service",
            Object::ConfigMap(_) => "ConfigMap",
            Object::CustomResourceDefinition(_) => "CustomResourceDefinition",
            Object::FailoverPolicy(_) => "FailoverPolicy",
            Object::PodMonitor(_) => "PodMonitor",
        })
        .collect();
    let expected = BTreeSet::from([
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "PodMonitor",
        "PodDisruptionBudget",
        "Service",
        "ConfigMap",
        "CustomResourceDefinition",
        "FailoverPolicy",
    ]);
    assert_eq!(kinds, expected);
    assert!(
        manifests.texts.contains_key("crd.yaml"),
        "the generated CRD is part of the kustomization"
    );
    // The example policies are objects of the CRD that is applied.
    let crd = the_one!(manifests, CustomResourceDefinition);
    for (origin, policy) in all_of!(manifests, FailoverPolicy) {
        let api_version = <FailoverPolicy as kube::Resource>::api_version(&());
        let (group, version) = api_version.split_once('/').unwrap();
        assert_eq!(crd.spec.group, group, "{origin}");
        assert!(
            crd.spec
                .versions
                .iter()
                .any(|v| v.name == version && v.served),
            "{origin}: {version} is not served by the CRD"
        );
        assert_eq!(
            crd.spec.names.kind,
            <FailoverPolicy as kube::Resource>::kind(&()),
            "{origin}"
        );
        assert!(policy.metadata.namespace.is_some(), "{origin}: namespaced");
    }
}

#[test]
fn a_misspelt_field_is_caught() {
    // The round trip is what makes the other checks meaningful; make sure it does catch typos.
    let doc = normalize(
        &serde_yaml_ng::from_str::<Value>(
            "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  selectr: {app: x}\n  ports: [{port: 1}]\n",
        )
        .unwrap(),
    );
    let result = std::panic::catch_unwind(|| typed::<Service>("typo.yaml", &doc));
    let message = *result
        .expect_err("a misspelt field must fail")
        .downcast::<String>()
        .unwrap();
    assert!(message.contains(".spec.selectr"), "{message}");
}

/// `(api group, resource)` → verbs.
fn grants(role: &ClusterRole) -> BTreeMap<(String, String), BTreeSet<String>> {
    rule_grants(role.rules.as_deref().unwrap_or_default())
}

fn rule_grants(rules: &[PolicyRule]) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut grants: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in rules {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "unexpected rule {rule:?}"
        );
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                grants
                    .entry((group.clone(), resource.clone()))
                    .or_default()
                    .extend(rule.verbs.iter().cloned());
            }
        }
    }
    grants
}

/// The Role named `name` and the RoleBinding of the same name, which must give it to the server's
/// ServiceAccount in the Role's namespace.
fn role_bound_to_the_server<'a>(manifests: &'a Manifests, name: &str) -> &'a Role {
    let roles: Vec<&Role> = all_of!(manifests, Role)
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.metadata.name.as_deref() == Some(name))
        .collect();
    assert_eq!(roles.len(), 1, "exactly one Role {name}");
    let role = roles[0];
    let bindings: Vec<&RoleBinding> = all_of!(manifests, RoleBinding)
        .into_iter()
        .map(|(_, b)| b)
        .filter(|b| b.role_ref.name == name)
        .collect();
    assert_eq!(
        bindings.len(),
        1,
        "exactly one RoleBinding of the Role {name}"
    );
    let binding = bindings[0];
    let account = the_one!(manifests, ServiceAccount);
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.metadata.namespace, role.metadata.namespace);
    let subjects = binding.subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(Some(&subjects[0].name), account.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, account.metadata.namespace);
    role
}

/// `--secrets-namespace`: read access to Secrets in one namespace only (a Role, never in the
/// ClusterRole), bound to the server's ServiceAccount.
#[test]
fn secrets_are_readable_in_one_namespace_only() {
    let manifests = load();
    let role = role_bound_to_the_server(&manifests, "xds-server-secrets");
    let read = BTreeSet::from(["get", "list", "watch"].map(String::from));
    assert_eq!(
        rule_grants(role.rules.as_deref().unwrap_or_default()),
        BTreeMap::from([(("".to_string(), "secrets".to_string()), read)])
    );
    let cluster_role = the_one!(manifests, ClusterRole);
    assert!(
        !grants(cluster_role).keys().any(|(_, r)| r == "secrets"),
        "Secrets must not be readable cluster-wide"
    );
    let roles = all_of!(manifests, Role);
    assert_eq!(
        roles
            .iter()
            .filter(|(_, r)| rule_grants(r.rules.as_deref().unwrap_or_default())
                .keys()
                .any(|(_, resource)| resource == "secrets"))
            .count(),
        1,
        "one Role grants Secrets"
    );
}

/// The status writer's election: get, create and update on Leases in the server's own namespace
/// (where `--status-lease-namespace` defaults to: `--mesh-namespace`, xds-system), never cluster-wide;
/// the pod's name reaches the server as `POD_NAME`, its identity in the Lease.
#[test]
fn the_status_lease_can_be_taken_in_the_servers_namespace_only() {
    let manifests = load();
    let role = role_bound_to_the_server(&manifests, "xds-server-status-lease");
    let deployment = the_one!(manifests, Deployment);
    assert_eq!(role.metadata.namespace, deployment.metadata.namespace);
    assert_eq!(role.metadata.namespace.as_deref(), Some("xds-system"));
    assert_eq!(
        rule_grants(role.rules.as_deref().unwrap_or_default()),
        BTreeMap::from([(
            ("coordination.k8s.io".to_string(), "leases".to_string()),
            BTreeSet::from(["get", "create", "update"].map(String::from))
        )])
    );
    let cluster_role = the_one!(manifests, ClusterRole);
    assert!(
        !grants(cluster_role).keys().any(|(_, r)| r == "leases"),
        "Leases must not be writable cluster-wide"
    );
    let server = &pod_spec(deployment).containers[0];
    let pod_name = server
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.name == "POD_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(
        pod_name,
        Some("metadata.name"),
        "POD_NAME from the downward API"
    );
    let source = std::fs::read_to_string(LEASE_RS).expect("lease.rs");
    assert!(source.contains("\"POD_NAME\""), "{LEASE_RS} reads POD_NAME");
}

#[test]
fn cluster_role_grants_exactly_what_the_server_needs() {
    let manifests = load();
    let role = the_one!(manifests, ClusterRole);
    let read = || BTreeSet::from(["get", "list", "watch"].map(String::from));
    let status = BTreeSet::from(["get", "patch", "update"].map(String::from));
    let grant = |group: &str, resource: &str| (group.to_string(), resource.to_string());
    let expected = BTreeMap::from([
        (grant("", "services"), read()),
        (grant("", "pods"), read()),
        (grant("", "nodes"), read()),
        (grant("discovery.k8s.io", "endpointslices"), read()),
        (grant("failover.xds.dev", "failoverpolicies"), read()),
        (grant("failover.xds.dev", "failoverpolicies/status"), status),
        // --token-auth: TokenReview (a question, nothing stored).
        (
            grant("authentication.k8s.io", "tokenreviews"),
            BTreeSet::from(["create".to_string()]),
        ),
    ]);
    assert_eq!(grants(role), expected);

    // The binding gives that role to the ServiceAccount the Deployment runs as.
    let binding = the_one!(manifests, ClusterRoleBinding);
    let account = the_one!(manifests, ServiceAccount);
    let deployment = the_one!(manifests, Deployment);
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), account.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, account.metadata.namespace);
    assert_eq!(
        pod_spec(deployment).service_account_name,
        account.metadata.name
    );
    assert_eq!(account.metadata.namespace, deployment.metadata.namespace);
}

fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("the Deployment has a pod spec")
}

/// Whether `selector` (matchLabels only) selects `labels`.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    assert!(selector.match_expressions.is_none(), "matchLabels only");
    let wanted = selector.match_labels.clone().unwrap_or_default();
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn deployment_runs_two_locked_down_replicas_spread_over_zones() {
    let manifests = load();
    let deployment = the_one!(manifests, Deployment);
    let namespace = the_one!(manifests, Namespace);
    assert_eq!(deployment.metadata.namespace, namespace.metadata.name);
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert!(selects(&spec.selector, &pod_labels));

    let pod = pod_spec(deployment);
    let pod_security = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(65532));
    assert_eq!(
        pod_security
            .seccomp_profile
            .as_ref()
            .map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    let spread = pod
        .topology_spread_constraints
        .as_deref()
        .unwrap_or_default();
    assert!(
        spread
            .iter()
            .any(|c| c.topology_key == "topology.kubernetes.io/zone"
                && c.label_selector
                    .as_ref()
                    .is_some_and(|s| selects(s, &pod_labels))),
        "replicas are spread over zones: {spread:?}"
    );

    let containers: Vec<_> = pod
        .containers
        .iter()
        .chain(pod.init_containers.as_deref().unwrap_or_default())
        .collect();
    for container in &containers {
        let name = &container.name;
        let security = container
            .security_context
            .as_ref()
            .unwrap_or_else(|| panic!("container {name}: no securityContext"));
        assert_eq!(security.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(security.allow_privilege_escalation, Some(false), "{name}");
        assert_ne!(security.privileged, Some(true), "{name}");
        assert_ne!(security.run_as_non_root, Some(false), "{name}");
        assert!(
            matches!(security.run_as_user, None | Some(65532)),
            "{name}: runAsUser"
        );
        let capabilities = security.capabilities.as_ref();
        assert_eq!(
            capabilities.and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()]),
            "{name}: drops all capabilities"
        );
        assert!(
            capabilities.and_then(|c| c.add.as_ref()).is_none(),
            "{name}: adds no capabilities"
        );
        let resources = container
            .resources
            .as_ref()
            .unwrap_or_else(|| panic!("container {name}: no resources"));
        for key in ["cpu", "memory"] {
            assert!(
                resources
                    .requests
                    .as_ref()
                    .is_some_and(|r| r.contains_key(key)),
                "{name}: requests {key}"
            );
        }
        assert!(
            resources
                .limits
                .as_ref()
                .is_some_and(|r| r.contains_key("memory")),
            "{name}: memory limit"
        );
    }

    let server = &pod.containers[0];
    assert_eq!(pod.containers.len(), 1);
    assert!(
        server.args.is_none() && server.command.is_none(),
        "flags come from the ConfigMap, not args"
    );
    let config = the_one_config_map(&manifests, SERVER_CONFIG);
    let env_from = server.env_from.as_deref().unwrap_or_default();
    assert!(
        env_from
            .iter()
            .any(|e| e.config_map_ref.as_ref().map(|r| r.name.as_str()) == Some(SERVER_CONFIG)),
        "envFrom the {SERVER_CONFIG} ConfigMap: {env_from:?}"
    );
    assert_eq!(config.metadata.namespace, deployment.metadata.namespace);
    let port = server
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.container_port == XDS_PORT)
        .expect("the container exposes the xDS port");
    assert_eq!(port.name.as_deref(), Some("grpc-xds"));
    for (which, probe) in [
        ("readiness", &server.readiness_probe),
        ("liveness", &server.liveness_probe),
    ] {
        let probe = probe.as_ref().unwrap_or_else(|| panic!("{which} probe"));
        let probed = match (&probe.tcp_socket, &probe.grpc) {
            (Some(tcp), None) => tcp.port.clone(),
            (None, Some(grpc)) => IntOrString::Int(grpc.port),
            other => panic!("{which} probe: tcpSocket or grpc, got {other:?}"),
        };
        assert!(
            probed == IntOrString::Int(XDS_PORT)
                || probed == IntOrString::String("grpc-xds".into()),
            "{which} probe checks the xDS port: {probed:?}"
        );
    }

    // Readiness follows the gRPC health service, which reports SERVING only after the initial sync.
    let readiness = server.readiness_probe.as_ref().expect("readiness probe");
    assert!(
        readiness.grpc.is_some(),
        "readiness must use the gRPC health service: {readiness:?}"
    );

    // At least one replica survives voluntary disruptions.
    let budget = the_one!(manifests, PodDisruptionBudget);
    assert_eq!(budget.metadata.namespace, deployment.metadata.namespace);
    let budget = budget.spec.as_ref().unwrap();
    assert_eq!(budget.min_available, Some(IntOrString::Int(1)));
    assert!(selects(budget.selector.as_ref().unwrap(), &pod_labels));
}

#[test]
fn service_exposes_the_xds_port_of_the_server_pods() {
    let manifests = load();
    let service = the_one!(manifests, Service);
    let deployment = the_one!(manifests, Deployment);
    assert_eq!(service.metadata.namespace, deployment.metadata.namespace);
    let spec = service.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let pod_labels = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let selector = spec.selector.clone().unwrap_or_default();
    assert!(!selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    let ports = spec.ports.as_deref().unwrap_or_default();
    assert_eq!(ports.len(), 1);
    let port = &ports[0];
    assert_eq!(port.port, XDS_PORT);
    assert_eq!(port.name.as_deref(), Some("grpc-xds"));
    assert_eq!(port.app_protocol.as_deref(), Some("grpc"));
    let container_ports = pod_spec(deployment).containers[0]
        .ports
        .clone()
        .unwrap_or_default();
    let target = port
        .target_port
        .clone()
        .unwrap_or(IntOrString::Int(port.port));
    assert!(
        container_ports.iter().any(|p| match &target {
            IntOrString::Int(n) => p.container_port == *n,
            IntOrString::String(name) => p.name.as_ref() == Some(name),
        }),
        "targetPort {target:?} is a port of the server container"
    );
}

/// Prometheus finds every replica's metrics: the ConfigMap binds them on all interfaces, the container
/// names that port `metrics`, the pod annotations and the PodMonitor point at it.
#[test]
fn every_replica_exposes_its_metrics_to_prometheus() {
    let manifests = load();
    let config = the_one_config_map(&manifests, SERVER_CONFIG);
    let addr: std::net::SocketAddr = config.data.as_ref().unwrap()["XDS_METRICS_ADDR"]
        .parse()
        .expect("XDS_METRICS_ADDR is an address");
    assert!(
        addr.ip().is_unspecified(),
        "metrics bound on {addr}: not reachable from Prometheus"
    );
    let deployment = the_one!(manifests, Deployment);
    let ports = pod_spec(deployment).containers[0]
        .ports
        .clone()
        .unwrap_or_default();
    let metrics = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("a container port named metrics");
    assert_eq!(metrics.container_port, i32::from(addr.port()));
    let template = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap();
    let annotations = template.annotations.clone().unwrap_or_default();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], addr.port().to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    let monitor = the_one!(manifests, PodMonitor);
    assert_eq!(monitor.metadata.namespace, deployment.metadata.namespace);
    assert!(selects(
        &monitor.spec.selector,
        template.labels.as_ref().unwrap()
    ));
    assert!(monitor
        .spec
        .pod_metrics_endpoints
        .iter()
        .any(|e| e.port == "metrics" && e.path == "/metrics"));
}

fn the_one_config_map<'a>(manifests: &'a Manifests, name: &str) -> &'a ConfigMap {
    let found: Vec<_> = all_of!(manifests, ConfigMap)
        .into_iter()
        .filter(|(_, c)| c.metadata.name.as_deref() == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "exactly one ConfigMap {name}");
    found[0].1
}

/// The `env = "..."` names of the binary's flags, read from its source.
fn env_vars_of_the_binary() -> BTreeSet<String> {
    let names: BTreeSet<String> = FLAG_SOURCES
        .iter()
        .flat_map(|path| {
            let source = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            source
                .split("env = \"")
                .skip(1)
                .map(|rest| rest.split('"').next().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        names.contains("XDS_SOURCE") && names.contains("XDS_ADDR"),
        "flags are declared with `env = \"XDS_...\"` in {MAIN_RS}: {names:?}"
    );
    names
}

#[test]
fn server_config_holds_only_variables_the_binary_reads() {
    let manifests = load();
    let config = the_one_config_map(&manifests, SERVER_CONFIG);
    let data = config.data.clone().unwrap_or_default();
    assert!(config.binary_data.is_none());
    let mut accepted = env_vars_of_the_binary();
    // The log filter, read by tracing-subscriber's EnvFilter.
    let main_rs = std::fs::read_to_string(MAIN_RS).unwrap();
    assert!(main_rs.contains("EnvFilter::try_from_default_env"));
    accepted.insert("RUST_LOG".to_string());
    let unknown: Vec<_> = data.keys().filter(|k| !accepted.contains(*k)).collect();
    assert!(
        unknown.is_empty(),
        "{SERVER_CONFIG} sets {unknown:?}, which xds-server does not read (it reads {accepted:?})"
    );
    assert_eq!(
        data.get("XDS_SOURCE").map(String::as_str),
        Some("kubernetes")
    );
    assert_eq!(
        data.get("XDS_ADDR").map(String::as_str),
        Some(format!("0.0.0.0:{XDS_PORT}").as_str())
    );
    assert_eq!(data.get("XDS_LOG_FORMAT").map(String::as_str), Some("json"));
}

#[test]
fn the_binary_accepts_the_server_config() {
    // Run the real binary with exactly the ConfigMap's environment. Flag parsing must succeed; it then
    // fails on the kubeconfig we point at a missing file (so it never reaches a real cluster).
    let manifests = load();
    let config = the_one_config_map(&manifests, SERVER_CONFIG);
    let missing = std::env::temp_dir().join("xds-server-deploy-test-no-such-kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_xds-server"))
        .env_clear()
        .envs(config.data.clone().unwrap_or_default())
        .env("XDS_KUBECONFIG", &missing)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run xds-server");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("xds-server kept running with the ConfigMap's environment");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // clap exits with 2 on a usage error; a runtime error from main exits with 1.
    assert_eq!(
        output.status.code(),
        Some(1),
        "xds-server rejected the ConfigMap's environment:\n{stderr}"
    );
    assert!(stderr.contains("kubeconfig"), "{stderr}");
}

#[test]
fn sidecar_bootstrap_reaches_the_service_over_http2() {
    let manifests = load();
    let config = the_one_config_map(&manifests, SIDECAR_BOOTSTRAP);
    let text = config
        .data
        .as_ref()
        .and_then(|d| d.get(SIDECAR_BOOTSTRAP_KEY))
        .unwrap_or_else(|| panic!("{SIDECAR_BOOTSTRAP} has {SIDECAR_BOOTSTRAP_KEY}"));
    let bootstrap: Value = serde_yaml_ng::from_str(text)
        .unwrap_or_else(|e| panic!("{SIDECAR_BOOTSTRAP}/{SIDECAR_BOOTSTRAP_KEY}: not YAML: {e}"));

    let ads = &bootstrap["dynamic_resources"]["ads_config"];
    assert_eq!(ads["api_type"], "GRPC");
    let ads_cluster = ads["grpc_services"][0]["envoy_grpc"]["cluster_name"]
        .as_str()
        .expect("ADS over an Envoy gRPC cluster");
    let clusters = bootstrap["static_resources"]["clusters"]
        .as_array()
        .expect("static clusters");
    let xds = clusters
        .iter()
        .find(|c| c["name"] == ads_cluster)
        .unwrap_or_else(|| panic!("static cluster {ads_cluster}"));
    let options = &xds["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        options["@type"],
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    );
    assert!(
        options["explicit_http_config"]["http2_protocol_options"].is_object(),
        "the xDS cluster speaks HTTP/2 (gRPC); without it Envoy hangs at \"initializing cds\""
    );

    let service = the_one!(manifests, Service);
    let address = &xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    let expected_host = format!(
        "{}.{}.svc.cluster.local",
        service.metadata.name.as_deref().unwrap(),
        service.metadata.namespace.as_deref().unwrap()
    );
    assert_eq!(address["address"], expected_host.as_str());
    assert_eq!(address["port_value"], XDS_PORT);
    assert_eq!(
        address["address"],
        "xds-server.xds-system.svc.cluster.local"
    );
}

#[test]
fn example_failover_policy_is_accepted_by_the_server() {
    let manifests = load();
    let (origin, policy) = all_of!(manifests, FailoverPolicy)[0];
    assert_eq!(policy.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(policy.spec.service.as_deref(), Some("checkout"));
    // Beyond the types: the server's own validation (durations, ranges) accepts it.
    let text = &manifests.texts[origin];
    let entries =
        xds_core::policy::parse::parse_policies(origin, text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(entries.len(), 1);
}
