//! The command line: clap's types, and the `explain` client given by hand (`--locality`, `--label`),
//! checked before anything connects.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use xds_admin_api::{self as pb, DEFAULT_ADDR};

use crate::failure::Failure;

/// Client of the xds-server admin API: sync status, per-Envoy config, services, priority explanations,
/// policies, and a live event stream.
#[derive(Debug, Parser)]
#[command(name = "xdsctl", version, about)]
pub struct Cli {
    /// The server's admin address (`--admin-addr` of xds-server).
    #[arg(long, global = true, env = "XDS_ADMIN_ADDR", default_value = DEFAULT_ADDR)]
    pub admin_addr: String,

    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    pub output: Output,

    /// CA certificate (PEM) that signed the server's certificate; connects with TLS (as does an
    /// `https://` address).
    #[arg(long, global = true, env = "XDSCTL_CA")]
    pub ca: Option<PathBuf>,

    /// Client certificate (PEM) for a server that requires one (`--tls-client-ca`); needs --key.
    #[arg(long, global = true, env = "XDSCTL_CERT", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(long, global = true, env = "XDSCTL_KEY", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Bearer token for a server with `--admin-token-file`.
    #[arg(
        long,
        global = true,
        env = "XDSCTL_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,

    /// File holding the bearer token.
    #[arg(long, global = true, env = "XDSCTL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every connected Envoy and whether it is in sync, per resource type (like `istioctl proxy-status`).
    Status,
    /// The resources one Envoy was sent, decoded.
    Config {
        /// The Envoy's node id.
        node: String,
        /// Only one resource type.
        #[arg(long = "type", value_enum)]
        kind: Option<Kind>,
        /// Only the resource with this name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Services with their endpoints, locality, health and source.
    Services,
    /// The priority levels a client gets for a service, the rule behind each, and the expected load.
    Explain(ExplainArgs),
    /// Active failover policies, the services each decides, and rejected policies with their errors.
    Policies,
    /// Observed traffic (what clients report over LRS) per service port, client class, locality and
    /// priority, with error ratios and the serving priority; refreshed every report interval, like
    /// `top`. `-o json`: one object per refresh, one per line.
    Top {
        /// Only this service: `NAME.NAMESPACE` or `NAME.NAMESPACE:PORT`.
        service: Option<String>,
        /// Print once and exit (with `-o json`: one pretty JSON document).
        #[arg(long)]
        once: bool,
    },
    /// Tail xDS events: connects, disconnects, pushes, ACKs and NACKs. `-o json`: one object per line.
    Events {
        /// Only events of this node.
        #[arg(long)]
        node: Option<String>,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Cds,
    Eds,
    Lds,
    Rds,
}

#[derive(Debug, ClapArgs)]
pub struct ExplainArgs {
    /// `NAMESPACE/NAME`, `NAME.NAMESPACE`, a cluster `NAME.NAMESPACE:PORT`, or a unique `NAME`.
    pub service: String,
    /// A connected Envoy's node id.
    #[arg(long, conflicts_with_all = ["locality", "label"], required_unless_present = "locality")]
    pub node: Option<String>,
    /// A client locality given by hand: `REGION[/ZONE[/SUBZONE]]` (`-` for unknown).
    #[arg(long)]
    pub locality: Option<String>,
    /// A client label `KEY=VALUE` (repeatable), for policies that prioritise on other labels.
    #[arg(long, requires = "locality")]
    pub label: Vec<String>,
    /// Only this service port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Explain for a proxyless gRPC client at `--locality` (a connected one is known by `--node`).
    #[arg(long, requires = "locality")]
    pub grpc: bool,
}

pub fn explain_client(a: &ExplainArgs) -> Result<pb::explain_priorities_request::Client, Failure> {
    use pb::explain_priorities_request::Client;
    if let Some(node) = &a.node {
        return Ok(Client::NodeId(node.clone()));
    }
    let text = a.locality.as_deref().unwrap_or_default();
    let locality = parse_locality(text).map_err(Failure::Usage)?;
    let mut labels = BTreeMap::new();
    for l in &a.label {
        let (k, v) = l
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Failure::Usage(format!("--label `{l}`: expected KEY=VALUE")))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let kind = if a.grpc {
        pb::ClientKind::Grpc
    } else {
        pb::ClientKind::Envoy
    };
    Ok(Client::Manual(pb::ManualClient {
        locality: Some(locality),
        labels,
        kind: kind as i32,
    }))
}

/// `REGION[/ZONE[/SUBZONE]]`, `-` or empty for an unknown level.
fn parse_locality(text: &str) -> Result<pb::Locality, String> {
    let parts: Vec<&str> = text.split('/').collect();
    if parts.len() > 3 || text.trim().is_empty() {
        return Err(format!(
            "--locality `{text}`: expected REGION[/ZONE[/SUBZONE]]"
        ));
    }
    let part = |i: usize| {
        parts
            .get(i)
            .map(|s| s.trim())
            .filter(|s| *s != "-")
            .unwrap_or("")
            .to_string()
    };
    Ok(pb::Locality {
        region: part(0),
        zone: part(1),
        sub_zone: part(2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::locality_text;

    #[test]
    fn localities_parse_with_unknown_levels() {
        let l = parse_locality("us-east1/-/rack-1").unwrap();
        assert_eq!(
            (l.region.as_str(), l.zone.as_str(), l.sub_zone.as_str()),
            ("us-east1", "", "rack-1")
        );
        assert_eq!(parse_locality("us-east1").unwrap().zone, "");
        assert!(parse_locality("a/b/c/d").is_err());
        assert!(parse_locality("").is_err());
        assert_eq!(locality_text(Some(&l)), "us-east1/-/rack-1");
    }
}
