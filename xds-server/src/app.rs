//! Wires the stages: sources (endpoints file or Kubernetes, policies, secrets) → snapshot publishing
//! → the xDS, admin and metrics servers. `main.rs` parses the arguments and calls [`run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admin::api::AdminService;
use crate::admin::csds::CsdsService;
use crate::grpc::AdsService;
use crate::registry::ClientRegistry;
use crate::sources::endpoints_file;
use crate::sources::kubernetes::{self, convert::ConvertSettings, KubeSourceSettings};
use crate::sources::policy::files as policy_load;
use crate::sources::secrets::SecretSet;
use crate::supervise;
use xds_core::model::LocalityLookup;
use xds_core::model::Registry;
use xds_core::policy::{PolicySet, PolicyStatus};
use xds_core::snapshot::TranslateSettings;

mod fleet;
mod publish;

async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
    context: Option<String>,
    watch_idle_timeout: std::time::Duration,
    source: &str,
) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            let options = kube::config::KubeConfigOptions {
                context,
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster config and no usable kubeconfig (pass --kubeconfig)")?,
    };
    kubernetes::watch_idle::client(config, watch_idle_timeout, source)
        .context("building the Kubernetes client")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// A local endpoints file (`--endpoints`); no cluster needed.
    File,
    /// The Kubernetes API (in-cluster config, or `--kubeconfig`).
    Kubernetes,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Envoy xDS control plane with locality-priority failover.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// Print the FailoverPolicy CustomResourceDefinition (YAML) and exit; `deploy/kubernetes/crd.yaml` is
    /// this output.
    #[arg(long, exclusive = true)]
    pub print_crd: bool,

    /// Validate a policy file or directory and exit: prints every problem (file, line, field, reason)
    /// and exits 1, or lists the policies and exits 0. Nothing is started.
    #[arg(long, exclusive = true, value_name = "PATH")]
    pub check_policies: Option<PathBuf>,

    /// Where services and endpoints come from.
    #[arg(long, env = "XDS_SOURCE", value_enum, default_value = "file")]
    pub source: SourceKind,

    /// Endpoints file (YAML) to serve with `--source file`; watched, edits reach Envoy within a second.
    #[arg(long, env = "XDS_ENDPOINTS")]
    pub endpoints: Option<PathBuf>,

    /// Kubeconfig for `--source kubernetes` (default: in-cluster config, then $KUBECONFIG / ~/.kube/config).
    #[arg(long, env = "XDS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use (default: the current context).
    #[arg(long, env = "XDS_KUBE_CONTEXT", requires = "kubeconfig")]
    pub context: Option<String>,

    /// Watch several clusters: `NAME=KUBECONFIG[,context=CTX][,network=NET][,gateway=HOST:PORT]`,
    /// repeatable (in the environment, separate clusters with `;`). Implies the Kubernetes source; the
    /// first cluster also holds the FailoverPolicy custom resources.
    #[arg(long = "cluster", env = "XDS_CLUSTERS", value_delimiter = ';')]
    pub clusters: Vec<kubernetes::clusters::ClusterSpec>,

    /// Server config file (YAML): `clusters:` (like `--cluster`) and `staleAfter:`.
    #[arg(long, env = "XDS_CONFIG")]
    pub config: Option<PathBuf>,

    /// With several clusters: how long a cluster's API server may not answer before its endpoints are
    /// stale (sent UNHEALTHY where another cluster has healthy ones); also how long startup waits for a
    /// cluster that has not listed. `never` keeps last known endpoints as they are and waits for all.
    #[arg(long, env = "XDS_STALE_AFTER", value_parser = kubernetes::clusters::parse_stale_after)]
    pub stale_after: Option<kubernetes::clusters::StaleAfter>,

    /// How often a `gateway=HOST:PORT` host name is resolved again (sooner after a failure); every
    /// address it resolves to is a gateway host in EDS.
    #[arg(long, env = "XDS_GATEWAY_REFRESH", default_value = "30s",
          value_parser = parse_at_least_a_second)]
    pub gateway_refresh: std::time::Duration,

    /// A Kubernetes watch that receives nothing (no event, no bookmark; the API server sends a
    /// bookmark about once a minute) for this long is taken for a dead connection and restarted
    /// from where it was.
    #[arg(long, env = "XDS_KUBE_WATCH_IDLE_TIMEOUT", default_value = "2m",
          value_parser = parse_at_least_a_second)]
    pub kube_watch_idle_timeout: std::time::Duration,

    /// FailoverPolicy objects without `service` in this namespace are the mesh-wide default
    /// (`--source kubernetes`).
    #[arg(long, env = "XDS_MESH_NAMESPACE", default_value = "xds-system")]
    pub mesh_namespace: String,

    /// Namespace of the Lease that elects the one replica writing FailoverPolicy status (default:
    /// `--mesh-namespace`). Every replica needs get, create and update on leases there.
    #[arg(long, env = "XDS_STATUS_LEASE_NAMESPACE")]
    pub status_lease_namespace: Option<String>,

    /// Name of that Lease.
    #[arg(
        long,
        env = "XDS_STATUS_LEASE_NAME",
        default_value = "xds-server-status-writer"
    )]
    pub status_lease_name: String,

    /// `leaseDurationSeconds` of the status Lease (whole seconds): a replica takes the Lease over once
    /// its holder has not renewed it for this long. The holder renews every third of it.
    #[arg(long, env = "XDS_STATUS_LEASE_DURATION", default_value = "15s",
          value_parser = parse_lease_duration)]
    pub status_lease_duration: std::time::Duration,

    /// How long one FailoverPolicy status write may take before it is abandoned and retried.
    #[arg(long, env = "XDS_STATUS_WRITE_TIMEOUT", default_value = "10s",
          value_parser = xds_core::config::scalar::parse_duration)]
    pub status_write_timeout: std::time::Duration,

    /// Node label that holds an endpoint's subzone (`--source kubernetes`).
    #[arg(long, env = "XDS_SUBZONE_LABEL", default_value = xds_core::model::labels::SUBZONE)]
    pub subzone_label: String,

    /// Failover policy file, or a directory of *.yaml / *.yml policy files; watched.
    #[arg(long, env = "XDS_POLICIES")]
    pub policies: Option<PathBuf>,

    /// Workload certificates served over SDS: `DIR/ca.crt` (trust bundle) and, per identity,
    /// `DIR/IDENTITY/tls.crt` + `DIR/IDENTITY/tls.key`; watched, rotations reach Envoy without restarts.
    #[arg(long, env = "XDS_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,

    /// Workload certificates served over SDS from this namespace's `kubernetes.io/tls` Secrets (identity =
    /// Secret name) and the `ca.crt` of its Secret `xds-trust-bundle`; needs the Kubernetes source.
    #[arg(long, env = "XDS_SECRETS_NAMESPACE", conflicts_with = "secrets_dir")]
    pub secrets_namespace: Option<String>,

    /// SPIFFE trust domain of workload identities: a ServiceAccount NS/NAME is
    /// `spiffe://TRUST_DOMAIN/ns/NS/sa/NAME` (token authentication, secure naming from Kubernetes).
    #[arg(long, env = "XDS_TRUST_DOMAIN", default_value = xds_core::model::identity::DEFAULT_TRUST_DOMAIN,
          value_parser = parse_trust_domain)]
    pub trust_domain: String,

    /// Authenticate xDS streams by Kubernetes ServiceAccount token (`authorization: Bearer TOKEN`,
    /// checked with the TokenReview API; needs the Kubernetes source).
    #[arg(long, env = "XDS_TOKEN_AUTH")]
    pub token_auth: bool,

    /// The audience tokens must be issued for (`--token-auth`): project them with this audience.
    #[arg(long, env = "XDS_TOKEN_AUDIENCE", default_value = crate::auth::token_review::DEFAULT_AUDIENCE,
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub token_audience: String,

    /// Address the ADS gRPC server listens on.
    #[arg(long, env = "XDS_ADDR", default_value = "0.0.0.0:18000")]
    pub xds_addr: SocketAddr,

    /// Address of the admin gRPC API (xdsctl, Envoy CSDS, health, reflection). Port 0 picks a free port.
    #[arg(long, env = "XDS_ADMIN_ADDR", default_value = crate::admin::api::DEFAULT_ADDR)]
    pub admin_addr: SocketAddr,

    /// Address of the Prometheus endpoint (`/metrics`, `/healthz`, `/readyz`). Port 0 picks a free port.
    #[arg(long, env = "XDS_METRICS_ADDR", default_value = "127.0.0.1:9090")]
    pub metrics_addr: SocketAddr,

    /// How often clients report their load (LRS `load_reporting_interval`, sent to every client that
    /// opens a load reporting stream).
    #[arg(long, env = "XDS_LOAD_REPORT_INTERVAL", default_value = "5s",
          value_parser = parse_at_least_a_second)]
    pub load_report_interval: std::time::Duration,

    /// How far back observed rates and error ratios look (`xdsctl top`, metrics). Default: six report
    /// intervals. At least one interval.
    #[arg(long, env = "XDS_LOAD_WINDOW", value_parser = parse_at_least_a_second)]
    pub load_window: Option<std::time::Duration>,

    /// Port of the generated outbound HTTP listener (a client may override it in its node metadata).
    #[arg(long, env = "XDS_LISTENER_PORT", default_value_t = 15001)]
    pub listener_port: u16,

    /// Address of the generated outbound HTTP listener.
    #[arg(long, env = "XDS_LISTENER_ADDRESS", default_value = "0.0.0.0")]
    pub listener_address: std::net::IpAddr,

    /// Build and encode every client's answer on its own instead of sharing one per locality class.
    /// Only for measuring what sharing saves (the load benchmark's baseline); never in production.
    #[arg(long, env = "XDS_NO_SHARED_CACHE")]
    pub no_shared_cache: bool,

    #[command(flatten)]
    pub security: crate::tls::SecurityArgs,

    #[command(flatten)]
    pub transport: crate::grpc::TransportSettings,

    /// Log format on stderr. Filter with RUST_LOG (default: info).
    #[arg(long, env = "XDS_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Args {
    /// `--load-report-interval` and `--load-window` (six intervals unless given; never shorter than
    /// one interval, which would hold no complete report).
    pub fn load_settings(&self) -> crate::grpc::lrs::LoadSettings {
        let interval = self.load_report_interval;
        crate::grpc::lrs::LoadSettings {
            interval,
            window: self.load_window.unwrap_or(interval * 6).max(interval),
        }
    }
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: log files and collectors get plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Feeds an always-complete source (a file) into a channel whose `None` means "not complete yet".
fn forward<T: Send + Sync + 'static>(
    what: &str,
    mut from: watch::Receiver<Arc<T>>,
    to: watch::Sender<Option<Arc<T>>>,
) {
    to.send_replace(Some(from.borrow_and_update().clone()));
    supervise::spawn(format!("forward {what}"), async move {
        while from.changed().await.is_ok() {
            let latest = from.borrow_and_update().clone();
            to.send_replace(Some(latest));
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutting down");
}

/// `--check-policies PATH`.
fn check_policies(path: &std::path::Path) -> anyhow::Result<()> {
    match policy_load::check_policies(path) {
        Ok(set) => {
            println!("{}: {} valid policies", path.display(), set.entries.len());
            for entry in &set.entries {
                if let xds_core::policy::PolicyOrigin::Named {
                    namespace,
                    name,
                    source,
                } = &entry.origin
                {
                    println!(
                        "  {namespace}/{name}: {} ({source})",
                        xds_core::policy::files::describe_scope(&entry.scope)
                    );
                }
            }
            Ok(())
        }
        Err(errors) => {
            for err in &errors {
                eprintln!("{err}");
            }
            // A plain exit: the errors above are the whole message (no anyhow chain or backtrace).
            eprintln!("{}: {} problem(s) found", path.display(), errors.len());
            std::process::exit(1)
        }
    }
}

/// The FailoverPolicy status writer and the Lease election that picks the one replica running it.
/// Returns the sender the policy source hands its verdicts to.
fn start_status_writer(
    args: &Args,
    client: &kube::Client,
) -> watch::Sender<Arc<Vec<crate::sources::policy::status::StatusTarget>>> {
    use crate::sources::kubernetes::lease;
    use crate::sources::policy::status;
    let (targets_tx, targets_rx) = watch::channel(Arc::new(Vec::new()));
    let (leader_tx, leader_rx) = watch::channel(false);
    let lease_settings = lease::LeaseSettings {
        namespace: args
            .status_lease_namespace
            .clone()
            .unwrap_or_else(|| args.mesh_namespace.clone()),
        name: args.status_lease_name.clone(),
        identity: lease::default_identity(),
        duration: args.status_lease_duration,
    };
    let writer_settings = status::StatusWriterSettings {
        write_timeout: args.status_write_timeout,
        ..status::StatusWriterSettings::default()
    };
    supervise::spawn(
        "status lease election",
        lease::run(client.clone(), lease_settings, leader_tx),
    );
    supervise::spawn(
        "FailoverPolicy status writer",
        status::run(client.clone(), writer_settings, targets_rx, leader_rx),
    );
    targets_tx
}

/// Secrets hand out private keys, and only to clients that prove who they are: with secrets
/// configured, the xDS port must verify client certificates or ServiceAccount tokens.
fn refuse_unauthenticated_secrets(args: &Args) -> anyhow::Result<()> {
    let flag = match (&args.secrets_dir, &args.secrets_namespace) {
        (Some(_), _) => "--secrets-dir",
        (None, Some(_)) => "--secrets-namespace",
        (None, None) => return Ok(()),
    };
    let certificates = args.security.tls_client_ca.is_some();
    // Tokens, like the keys they unlock, must not cross the network in clear text.
    let tokens = args.token_auth && args.security.tls_cert.is_some();
    anyhow::ensure!(
        certificates || tokens,
        "{flag} serves workload private keys, so the xDS port must authenticate its clients: set \
         --tls-cert, --tls-key and --tls-client-ca (mutual TLS: a client is the SPIFFE ID in its \
         certificate) or --tls-cert, --tls-key and --token-auth (Kubernetes ServiceAccount tokens)"
    );
    Ok(())
}

/// Runs the server until a shutdown signal (or prints the CRD / checks policies and returns).
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.print_crd {
        print!("{}", crate::sources::policy::crd::crd_yaml());
        return Ok(());
    }
    if let Some(path) = &args.check_policies {
        return check_policies(path);
    }
    refuse_unauthenticated_secrets(&args)?;
    // Before anything is spawned: every background task reports its end to it.
    let mut supervisor =
        supervise::Supervisor::install().context("the server runs once per process")?;
    // One shutdown for every server, so a task ending because of it is not taken for a failure.
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown_signal()));
    // TLS for the xDS and admin ports and the admin token, checked before anything starts.
    let security = crate::tls::Security::start(&args.security, args.admin_addr)?;

    // Startup refuses bad input outright: there is no last good state to fall back to yet.
    let policies = match &args.policies {
        Some(path) => policy_load::load_policies(path)
            .with_context(|| format!("loading policies from {}", path.display()))?,
        None => PolicySet::default(),
    };
    let (policy_tx, file_policy_rx) = watch::channel(Arc::new(policies));
    // Policies not in force and why (bad files, refused custom resources), for the admin API.
    let (policy_status_tx, policy_status_rx) = watch::channel(PolicyStatus::default());
    let _policy_watch = match &args.policies {
        Some(path) => Some(
            policy_load::watch_policies_with_status(
                path.clone(),
                policy_tx,
                Some(policy_status_tx.clone()),
            )
            .context("watching the policies")?,
        ),
        None => None,
    };

    // Where services come from: `--cluster` / `clusters:` (several Kubernetes clusters), else --source.
    let server_config = match &args.config {
        Some(path) => kubernetes::clusters::ServerConfig::load(path)?,
        None => kubernetes::clusters::ServerConfig::default(),
    };
    let clusters: Vec<_> = server_config
        .clusters
        .iter()
        .chain(&args.clusters)
        .cloned()
        .collect();
    kubernetes::clusters::validate_set(&clusters)?;
    let stale_after = args
        .stale_after
        .or(server_config.stale_after)
        .unwrap_or_default()
        .0;
    let source = if clusters.is_empty() {
        args.source
    } else {
        anyhow::ensure!(
            args.endpoints.is_none() && args.kubeconfig.is_none(),
            "--cluster (or `clusters:` in --config) replaces --endpoints and --kubeconfig: use one or the other"
        );
        SourceKind::Kubernetes
    };

    anyhow::ensure!(
        !args.token_auth || source == SourceKind::Kubernetes,
        "--token-auth needs the Kubernetes source (--source kubernetes or --cluster): tokens are checked with its TokenReview API"
    );

    // Policies in force: the file policies, merged with FailoverPolicy custom resources in Kubernetes.
    let (merged_policy_tx, policy_rx) = watch::channel(None::<Arc<PolicySet>>);
    if source == SourceKind::File {
        forward(
            "policy files",
            file_policy_rx.clone(),
            merged_policy_tx.clone(),
        );
    }

    let (registry_tx, registry_rx) = watch::channel(None::<Arc<Registry>>);
    let services_source = match source {
        SourceKind::File => format!(
            "file:{}",
            args.endpoints
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        ),
        SourceKind::Kubernetes if clusters.is_empty() => "kubernetes".to_string(),
        SourceKind::Kubernetes => format!(
            "kubernetes:{}",
            clusters
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    let mut locator: Option<Arc<dyn LocalityLookup>> = None;
    // Changes whenever `locator` may answer differently: clients waiting for their pod look again.
    let mut locator_changes: Option<watch::Receiver<u64>> = None;
    // The (first) cluster's client, for --secrets-namespace.
    let mut secrets_client: Option<kube::Client> = None;
    let _endpoints_watch = match source {
        SourceKind::File => {
            let path = args
                .endpoints
                .clone()
                .context("--endpoints is required with --source file")?;
            let registry = endpoints_file::load_endpoints_file(&path)
                .with_context(|| format!("loading endpoints file {}", path.display()))?;
            info!(endpoints_file = %path.display(), services = registry.services.len(), "loaded endpoints file");
            let (file_tx, file_rx) = watch::channel(Arc::new(registry));
            forward("endpoints file", file_rx, registry_tx);
            Some(
                endpoints_file::watch_endpoints_file(path, file_tx)
                    .context("watching the endpoints file")?,
            )
        }
        SourceKind::Kubernetes => {
            let mut members = Vec::new();
            for spec in &clusters {
                let client = kube_client(
                    spec.kubeconfig.as_deref(),
                    spec.context.clone(),
                    args.kube_watch_idle_timeout,
                    &format!("kubernetes:{}", spec.name),
                )
                .await
                .with_context(|| format!("cluster {:?}", spec.name))?;
                members.push(kubernetes::clusters::Member {
                    spec: spec.clone(),
                    client,
                });
            }
            let client = match members.first() {
                Some(first) => first.client.clone(),
                None => {
                    kube_client(
                        args.kubeconfig.as_deref(),
                        args.context.clone(),
                        args.kube_watch_idle_timeout,
                        "kubernetes",
                    )
                    .await?
                }
            };
            secrets_client = Some(client.clone());
            let status_targets_tx = start_status_writer(&args, &client);
            supervise::spawn(
                "FailoverPolicy custom resources",
                crate::sources::policy::kube::run(
                    client.clone(),
                    args.mesh_namespace.clone(),
                    file_policy_rx.clone(),
                    merged_policy_tx.clone(),
                    Some(policy_status_tx.clone()),
                    Some(status_targets_tx),
                ),
            );
            let settings = KubeSourceSettings {
                convert: ConvertSettings {
                    subzone_label: args.subzone_label.clone(),
                    // Endpoint identities; every cluster's in the same trust domain.
                    trust_domain: args.trust_domain.clone(),
                    ..ConvertSettings::default()
                },
            };
            if members.is_empty() {
                info!("watching Kubernetes; xDS answers wait until the initial lists are complete");
                let pods = kubernetes::start(client, settings, registry_tx);
                locator_changes = Some(pods.changes());
                locator = Some(pods);
            } else {
                // Host names are resolved in the background, again and again: a DNS failure
                // never stops the server (see `clusters::gateways`).
                let gateways = kubernetes::clusters::gateways::keep_resolved(
                    kubernetes::clusters::gateways::specs(&clusters)?,
                    Arc::new(kubernetes::clusters::gateways::SystemResolver),
                    args.gateway_refresh,
                );
                info!(clusters = ?clusters.iter().map(|c| &c.name).collect::<Vec<_>>(),
                    stale_after = ?stale_after,
                    "watching Kubernetes clusters; xDS answers wait until they have listed");
                let pods = kubernetes::clusters::start(
                    members,
                    settings,
                    gateways,
                    stale_after,
                    registry_tx,
                );
                locator_changes = Some(pods.changes());
                locator = Some(pods);
            }
            None
        }
    };

    let settings = TranslateSettings {
        listener_address: args.listener_address.to_string(),
        listener_port: args.listener_port,
        shared_cache: !args.no_shared_cache,
    };
    if args.no_shared_cache {
        warn!("--no-shared-cache: every client's answer is built on its own (benchmark baseline)");
    }
    // Token authentication: TokenReview through the (first) cluster's client.
    let token_verifier: Option<Arc<dyn crate::auth::workload::TokenVerifier>> = if args.token_auth {
        let client = secrets_client
            .clone()
            .context("--token-auth: no Kubernetes client")?;
        let settings = crate::auth::token_review::TokenReviewSettings::new(
            &args.token_audience,
            &args.trust_domain,
        );
        info!(audience = %settings.audience, trust_domain = %settings.trust_domain, "xDS streams authenticate with ServiceAccount tokens (TokenReview)");
        if args.security.tls_cert.is_none() {
            warn!("--token-auth without --tls-cert: ServiceAccount tokens reach the xDS port in clear text");
        }
        Some(Arc::new(
            crate::auth::token_review::TokenReviewVerifier::new(client, settings),
        ))
    } else {
        None
    };
    // Secrets for SDS: read (and refused if invalid) at startup, then watched; from Kubernetes,
    // nothing is published before the Secrets are listed (`None`). Without secrets the sender stays
    // here, unused, so the snapshot loop keeps running.
    let (secrets_tx, secrets_rx) = watch::channel(None::<Arc<SecretSet>>);
    let (_secrets_watch, _secrets_tx) = match (&args.secrets_dir, &args.secrets_namespace) {
        (Some(dir), _) => {
            let set = crate::sources::secrets::files::load_secrets_dir(dir)
                .with_context(|| format!("loading secrets from {}", dir.display()))?;
            info!(secrets_dir = %dir.display(), identities = ?set.identities.iter().map(|(name, id)| format!("{name}={}", id.spiffe_id)).collect::<Vec<_>>(), "loaded secrets");
            let (dir_tx, dir_rx) = watch::channel(Arc::new(set));
            forward("secrets directory", dir_rx, secrets_tx);
            let watch = crate::sources::secrets::files::watch_secrets_dir(dir.clone(), dir_tx)
                .context("watching the secrets directory")?;
            (Some(watch), None)
        }
        (None, Some(namespace)) => {
            let client = secrets_client.context(
                "--secrets-namespace needs the Kubernetes source (--source kubernetes or --cluster)",
            )?;
            info!(secrets_namespace = %namespace, "watching kubernetes.io/tls Secrets for SDS; nothing is served before they are listed");
            supervise::spawn(
                "kubernetes Secrets",
                crate::sources::secrets::kube::run(client, namespace.clone(), secrets_tx),
            );
            (None, None)
        }
        (None, None) => {
            secrets_tx.send_replace(Some(Arc::default()));
            (None, Some(secrets_tx))
        }
    };
    let (snapshot_tx, snapshot_rx) = watch::channel(None);
    supervise::spawn(
        "cache statistics log",
        publish::log_cache_stats(snapshot_rx.clone()),
    );
    // The fleet verdict's ejected localities are the publisher's fourth input (`fleet` fills it).
    let (ejections_tx, ejections_rx) = watch::channel(Arc::default());
    let (fleet_report_tx, fleet_report_rx) = watch::channel(Arc::default());
    supervise::spawn(
        "snapshot publisher",
        publish::publish_snapshots(
            publish::PublishInputs {
                registry: registry_rx,
                policies: policy_rx,
                secrets: secrets_rx,
                ejections: ejections_rx,
            },
            snapshot_tx,
            settings,
        ),
    );

    // Standard gRPC health (Kubernetes `grpc` probes, grpc-health-probe): NOT_SERVING until the sources
    // have a complete view and the first snapshot exists, SERVING after.
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    {
        let mut snapshots = snapshot_rx.clone();
        let health = health.clone();
        tokio::spawn(async move {
            if snapshots.wait_for(Option::is_some).await.is_ok() {
                info!("first complete snapshot built; reporting SERVING");
                health
                    .set_service_status("", tonic_health::ServingStatus::Serving)
                    .await;
            }
        });
    }
    // The admin API (xdsctl), CSDS, health and reflection read the same client registry the ADS
    // streams report to.
    let clients = ClientRegistry::new();
    // One book of observed load: written by the LRS streams, read by the admin API, the metrics and
    // the fleet verdict.
    let load_settings = args.load_settings();
    let load_book = load_settings.new_book();
    supervise::spawn(
        "observed load",
        crate::grpc::lrs::watch_load(
            load_book.clone(),
            snapshot_rx.clone(),
            clients.clone(),
            load_settings,
        ),
    );
    supervise::spawn(
        "fleet verdict",
        fleet::evaluate_fleet(
            load_book.clone(),
            snapshot_rx.clone(),
            fleet::FleetOutputs {
                ejections: ejections_tx,
                report: fleet_report_tx,
                events: clients.clone(),
            },
            fleet::EVALUATION_PERIOD,
        ),
    );
    let admin_listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding the admin address {}", args.admin_addr))?;
    info!(admin_addr = %admin_listener.local_addr()?, "admin API listening (xdsctl, CSDS, health, reflection)");
    let admin = crate::admin::api::router(
        AdminService::new(
            snapshot_rx.clone(),
            clients.clone(),
            policy_status_rx,
            services_source,
        )
        .with_load(load_book.clone(), load_settings)
        .with_fleet_verdicts(fleet_report_rx),
        CsdsService::new(snapshot_rx.clone(), clients.clone()),
        security.admin_auth(),
    )?;
    let incoming = security.admin_incoming(admin_listener);
    supervise::spawn("admin API server", admin.serve_with_incoming(incoming));
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {}", args.metrics_addr))?;
    info!(metrics_addr = %metrics_listener.local_addr()?, "metrics listening (/metrics, /healthz, /readyz)");
    supervise::spawn(
        "metrics server",
        crate::metrics::serve(metrics_listener, snapshot_rx.clone(), shutdown.clone()),
    );
    // The xDS port last: once it accepts, the admin and metrics ports already do.
    let listener = tokio::net::TcpListener::bind(args.xds_addr)
        .await
        .with_context(|| format!("binding the xDS address {}", args.xds_addr))?;
    info!(xds_addr = %listener.local_addr()?, "xDS server listening (ADS, state of the world and incremental)");
    // Transport settings and the ADS request limits live in `server` so the tests serve the same.
    let ads = AdsService::new(snapshot_rx)
        .with_first_request_timeout(args.transport.first_request_timeout)
        .with_clients(clients)
        .with_lookup(locator)
        .with_lookup_changes(locator_changes)
        .with_token_verifier(token_verifier);
    let serving = crate::grpc::Transport::new(args.transport.clone())
        .add_service(health_service)
        .add_service(
            crate::grpc::lrs::LrsService::new(ads.clone(), load_book, load_settings.interval)
                .into_server(),
        )
        .add_service(ads.clone().into_sds_server())
        .add_service(ads.into_server())
        .serve_with_incoming_shutdown(security.xds_incoming(listener), shutdown.clone());
    let mut serving = std::pin::pin!(serving);
    loop {
        tokio::select! {
            served = &mut serving => {
                served.context("serving xDS")?;
                return Ok(());
            }
            ended = supervisor.task_ended() => {
                if shutdown.peek().is_some() {
                    continue; // stopping anyway: servers end on the shutdown signal
                }
                // Envoys keep their last configuration while Kubernetes restarts us; serving on
                // with a dead stage would mean a configuration that silently stopped changing.
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                crate::metrics::metrics().ready.set(0);
                error!(task = %ended.task, ending = %ended.ending,
                       "a background task stopped; exiting so the process is restarted");
                return Err(anyhow::anyhow!("{ended}"));
            }
        }
    }
}

fn parse_at_least_a_second(text: &str) -> Result<std::time::Duration, String> {
    let timeout = xds_core::config::scalar::parse_duration(text).map_err(|e| e.to_string())?;
    if timeout < std::time::Duration::from_secs(1) {
        return Err("must be at least 1s".to_string());
    }
    Ok(timeout)
}

fn parse_lease_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::sources::kubernetes::lease::check_duration(xds_core::config::scalar::parse_duration(
        text,
    )?)
}

fn parse_trust_domain(text: &str) -> Result<String, String> {
    xds_core::model::identity::check_trust_domain(text).map_err(str::to_string)?;
    Ok(text.to_string())
}
