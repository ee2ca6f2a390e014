//! Workload identity: a SPIFFE ID (`spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME`), and who proved it
//! on a stream ([`PeerIdentity`]). Identity is always proven by the connection (a client certificate's
//! URI SAN, or a Kubernetes ServiceAccount token the API server vouches for), never read from what a
//! client says about itself.

use super::shown;
use std::fmt;

/// The trust domain SPIFFE IDs are made in when nothing else is configured (`--trust-domain`).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Longest SPIFFE ID taken (the SPIFFE spec's limit for the URI).
pub const MAX_SPIFFE_ID_BYTES: usize = 2048;

/// Longest trust domain (the spec's limit: a DNS name).
pub const MAX_TRUST_DOMAIN_BYTES: usize = 255;

/// A validated SPIFFE ID. Compared as text: the spec makes trust domains lower case and forbids
/// anything that would let two spellings name one workload (no `.` or `..` segments, no empty ones,
/// no query, fragment, port or user info).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId(String);

/// Why a text is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}` is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH): {reason}", shown(.text, 120))]
pub struct SpiffeIdError {
    pub text: String,
    pub reason: &'static str,
}

fn is_trust_domain_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'_')
}

fn is_path_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_')
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID as the SPIFFE spec defines it.
    pub fn parse(text: &str) -> Result<SpiffeId, SpiffeIdError> {
        let err = |reason| SpiffeIdError {
            text: text.to_string(),
            reason,
        };
        if text.len() > MAX_SPIFFE_ID_BYTES {
            return Err(err("longer than 2048 bytes"));
        }
        let rest = text
            .strip_prefix("spiffe://")
            .ok_or_else(|| err("the scheme is not `spiffe://`"))?;
        let (domain, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        check_trust_domain(domain).map_err(err)?;
        if path.is_empty() {
            return Err(err(
                "no path: a workload's ID names it after the trust domain",
            ));
        }
        for segment in path[1..].split('/') {
            if segment.is_empty() {
                return Err(err("empty path segment (`//` or a trailing `/`)"));
            }
            if segment == "." || segment == ".." {
                return Err(err("`.` and `..` segments are not allowed"));
            }
            if !segment.bytes().all(is_path_char) {
                return Err(err(
                    "path characters are letters, digits, `.`, `-` and `_` (no query, fragment or escapes)",
                ));
            }
        }
        Ok(SpiffeId(text.to_string()))
    }

    /// The ID of a Kubernetes ServiceAccount: `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME`.
    pub fn for_service_account(
        trust_domain: &str,
        namespace: &str,
        name: &str,
    ) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::parse(&format!("spiffe://{trust_domain}/ns/{namespace}/sa/{name}"))
    }

    /// The ID of a Kubernetes user name from a TokenReview, `system:serviceaccount:NAMESPACE:NAME`;
    /// `None` for any other user (a person, a node): only service accounts are workloads.
    pub fn from_service_account_user(trust_domain: &str, user: &str) -> Option<SpiffeId> {
        let rest = user.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        if namespace.is_empty() || name.is_empty() || name.contains(':') {
            return None;
        }
        SpiffeId::for_service_account(trust_domain, namespace, name).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn trust_domain(&self) -> &str {
        let rest = &self.0["spiffe://".len()..];
        rest.split('/').next().unwrap_or(rest)
    }

    /// `(namespace, service account)` for an ID of the Kubernetes form `/ns/NS/sa/NAME`.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        let rest = &self.0["spiffe://".len()..];
        let path = &rest[rest.find('/')?..];
        let mut parts = path[1..].split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }
}

/// Checks a trust domain name (`--trust-domain`): lower-case letters, digits, `.`, `-`, `_`.
pub fn check_trust_domain(domain: &str) -> Result<(), &'static str> {
    if domain.is_empty() {
        return Err("the trust domain is empty");
    }
    if domain.len() > MAX_TRUST_DOMAIN_BYTES {
        return Err("the trust domain is longer than 255 bytes");
    }
    if !domain.bytes().all(is_trust_domain_char) {
        return Err(
            "trust domain characters are lower-case letters, digits, `.`, `-` and `_` (no port or user info)",
        );
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

/// How a stream's client proved its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proof {
    /// The client certificate of the mutual-TLS connection, by its URI SAN.
    Certificate,
    /// A Kubernetes ServiceAccount token, verified with the TokenReview API.
    Token,
}

impl Proof {
    pub fn as_str(self) -> &'static str {
        match self {
            Proof::Certificate => "certificate",
            Proof::Token => "token",
        }
    }
}

/// The identity the connection proved for a stream's client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    pub id: SpiffeId,
    pub proof: Proof,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_ids_round_trip() {
        let id = SpiffeId::for_service_account("cluster.local", "bank", "ledger").unwrap();
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/bank/sa/ledger");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.service_account(), Some(("bank", "ledger")));
        assert_eq!(
            SpiffeId::from_service_account_user("td", "system:serviceaccount:bank:ledger"),
            Some(SpiffeId::parse("spiffe://td/ns/bank/sa/ledger").unwrap())
        );
        for user in [
            "system:node:n1",
            "alice",
            "system:serviceaccount:bank",
            "system:serviceaccount::x",
            "system:serviceaccount:a:b:c",
        ] {
            assert_eq!(
                SpiffeId::from_service_account_user("td", user),
                None,
                "{user}"
            );
        }
        let other = SpiffeId::parse("spiffe://example.org/workload/web").unwrap();
        assert_eq!(other.service_account(), None);
    }

    #[test]
    fn malformed_ids_are_refused_with_a_reason() {
        for (text, reason) in [
            ("https://cluster.local/ns/a/sa/b", "scheme"),
            ("spiffe://", "trust domain is empty"),
            ("spiffe://cluster.local", "no path"),
            ("spiffe://Cluster.Local/ns/a", "lower-case"),
            ("spiffe://td:443/ns/a", "lower-case"),
            ("spiffe://user@td/ns/a", "lower-case"),
            ("spiffe://td/ns//sa/b", "empty path segment"),
            ("spiffe://td/ns/a/", "empty path segment"),
            ("spiffe://td/ns/../sa/b", "`..`"),
            ("spiffe://td/ns/a?x=1", "query"),
            ("spiffe://td/ns/a%20b", "escapes"),
        ] {
            let e = SpiffeId::parse(text).unwrap_err();
            assert!(e.to_string().contains(reason), "{text}: {e}");
        }
        let long = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_BYTES));
        let e = SpiffeId::parse(&long).unwrap_err();
        assert!(
            e.to_string().contains("2048") && e.to_string().len() < 300,
            "{e}"
        );
    }
}
