//! Who is on the other end of an xDS stream, as the connection proves it: the URI SAN of the client
//! certificate (mutual TLS), or a Kubernetes ServiceAccount token (`authorization: Bearer …`) that a
//! [`TokenVerifier`] has the API server vouch for. Node metadata never decides identity.

use futures::future::BoxFuture;
use xds_core::model::SpiffeId;

/// Checks a bearer token and says whose it is. Implemented over the Kubernetes TokenReview API
/// ([`super::token_review`]).
pub trait TokenVerifier: Send + Sync + 'static {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<SpiffeId, TokenRejected>>;
}

/// Why a token did not prove an identity. `Unavailable` fails closed: the stream is refused, never
/// let through unauthenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejected {
    /// The API server says the token is not valid (expired, revoked, another audience, garbage).
    #[error("the ServiceAccount token is not valid: {0}")]
    Invalid(String),
    /// Valid, but not a ServiceAccount's (a person's or a node's token).
    #[error("the token authenticates `{0}`, which is not a ServiceAccount")]
    NotServiceAccount(String),
    /// The TokenReview call failed (API server unreachable, forbidden, timed out).
    #[error("cannot verify the token with the Kubernetes TokenReview API: {0}")]
    Unavailable(String),
}
