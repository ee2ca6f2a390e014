//! The networks' gateways (`gateway=HOST:PORT` of `--cluster`), resolved and kept resolved.
//!
//! EDS endpoints must be IP addresses, so a gateway given by host name is resolved by the server, and
//! not once: a gateway's addresses change (a cloud load balancer's do), so every gateway is resolved
//! again every `refresh`, and sooner after a failure (from 1 s, doubling up to `refresh`). Every
//! address it resolves to is a host in EDS. A DNS failure never stops the server:
//!
//! * a gateway that has never resolved is no gateway: its network's endpoints are left out of what
//!   clients on other networks are sent (as for a network without a gateway), and the rest of the
//!   configuration is served; they arrive once it resolves;
//! * a gateway that resolved before keeps its last addresses while resolution fails: a DNS outage
//!   is not a reason to cut a network off.
//!
//! Either way the failure is logged, and `xds_gateway_resolved{source="gateway:NETWORK"}` is 0 until
//! resolution succeeds again.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{split_host_port, ClusterSpec, ClusterSpecError};
use xds_core::model::NetworkGateway;

/// How often a gateway host name is resolved again (`--gateway-refresh`).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);
/// The first retry after a failure; doubled after each further one, up to the refresh period.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Every network's gateway, by network: what the merged registry carries.
pub type Gateways = BTreeMap<String, NetworkGateway>;

/// Resolves a host name to its addresses: the system resolver, or a test's.
pub trait Resolver: Send + Sync + 'static {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>>;
}

/// The system's resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host, port))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// One network's gateway as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySpec {
    pub network: String,
    pub host: String,
    pub port: u16,
}

impl GatewaySpec {
    /// The gateway at once, when the host is an IP address (nothing to resolve).
    fn literal(&self) -> Option<NetworkGateway> {
        let ip = self.host.parse::<IpAddr>().ok()?;
        Some(NetworkGateway::new(ip, self.port))
    }
}

/// The gateways of a set of clusters (checked: [`super::validate_set`] allows one per network).
pub fn specs(clusters: &[ClusterSpec]) -> Result<Vec<GatewaySpec>, ClusterSpecError> {
    let mut out: Vec<GatewaySpec> = Vec::new();
    for spec in clusters {
        let Some(gateway) = &spec.gateway else {
            continue;
        };
        let (host, port) =
            split_host_port(gateway).map_err(|reason| spec.invalid("gateway", reason))?;
        if out.iter().any(|g| g.network == spec.network) {
            continue;
        }
        out.push(GatewaySpec {
            network: spec.network.clone(),
            host: host.to_string(),
            port,
        });
    }
    Ok(out)
}

/// What a resolution leaves a gateway at: its new addresses, or, when it failed or found none, the
/// ones it had (`None` if it never resolved). Pure, for the rules in the module docs.
pub fn after_resolution(
    previous: Option<&NetworkGateway>,
    resolved: &std::io::Result<Vec<IpAddr>>,
    port: u16,
) -> Option<NetworkGateway> {
    match resolved {
        Ok(addresses) => {
            NetworkGateway::at(addresses.iter().copied(), port).or_else(|| previous.cloned())
        }
        Err(_) => previous.cloned(),
    }
}

/// Resolves every gateway now and again (see the module docs); the receiver holds the gateways known
/// at each moment. IP addresses are there from the start; host names once they resolve.
pub fn keep_resolved(
    specs: Vec<GatewaySpec>,
    resolver: Arc<dyn Resolver>,
    refresh: Duration,
) -> watch::Receiver<Gateways> {
    let literal: Gateways = specs
        .iter()
        .filter_map(|g| Some((g.network.clone(), g.literal()?)))
        .collect();
    let (tx, rx) = watch::channel(literal);
    let tx = Arc::new(tx);
    for spec in specs.into_iter().filter(|g| g.literal().is_none()) {
        tokio::spawn(resolve_forever(spec, resolver.clone(), refresh, tx.clone()));
    }
    rx
}

/// Gateways that never change (IP addresses only, or none): for tests and callers that resolved
/// them already.
pub fn fixed(gateways: Gateways) -> watch::Receiver<Gateways> {
    watch::channel(gateways).1
}

async fn resolve_forever(
    spec: GatewaySpec,
    resolver: Arc<dyn Resolver>,
    refresh: Duration,
    tx: Arc<watch::Sender<Gateways>>,
) {
    let metric = crate::metrics::metrics()
        .gateway_resolved
        .get_or_create(&crate::metrics::source_label(&format!(
            "gateway:{}",
            spec.network
        )))
        .clone();
    let mut retry = FIRST_RETRY.min(refresh);
    let mut failing = false;
    loop {
        let resolved = resolver.resolve(&spec.host, spec.port).await;
        let found = resolved.as_ref().is_ok_and(|a| !a.is_empty());
        metric.set(i64::from(found));
        let changed = tx.send_if_modified(|gateways| {
            let next = after_resolution(gateways.get(&spec.network), &resolved, spec.port);
            let changed = next.as_ref() != gateways.get(&spec.network);
            match next {
                Some(gateway) => gateways.insert(spec.network.clone(), gateway),
                None => gateways.remove(&spec.network),
            };
            changed
        });
        let known = tx.borrow().get(&spec.network).cloned();
        match (&resolved, found) {
            (_, true) => {
                if changed || failing {
                    info!(network = %spec.network, host = %spec.host,
                          addresses = ?known.map(|g| g.addresses).unwrap_or_default(),
                          "gateway resolved");
                }
                failing = false;
                retry = FIRST_RETRY.min(refresh);
            }
            (result, false) => {
                let error = match result {
                    Err(e) => e.to_string(),
                    Ok(_) => "no address".to_string(),
                };
                match &known {
                    Some(g) => warn!(network = %spec.network, host = %spec.host, %error,
                        kept = ?g.addresses, retry_in = ?retry,
                        "cannot resolve the gateway; keeping its last known addresses"),
                    None => warn!(network = %spec.network, host = %spec.host, %error,
                        retry_in = ?retry,
                        "cannot resolve the gateway; its network's endpoints are left out for clients on other networks until it resolves"),
                }
                failing = true;
            }
        }
        if tx.is_closed() {
            return;
        }
        let wait = if failing { retry } else { refresh };
        if failing {
            retry = (retry * 2).min(refresh);
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests;
