//! [`TokenVerifier`] over the Kubernetes TokenReview API (`--token-auth`): the API server says whose
//! a bearer token is; a ServiceAccount `system:serviceaccount:NS:NAME` becomes the SPIFFE ID
//! `spiffe://TRUST_DOMAIN/ns/NS/sa/NAME`.
//!
//! - **Audience.** Every review asks for one audience (`--token-audience`, default
//!   [`DEFAULT_AUDIENCE`]) in `spec.audiences`, and the answer must name it in `status.audiences`
//!   (an API server that does not echo it is not audience-aware, so its "authenticated" proves
//!   nothing about the audience). A token minted for another audience (the API server's own, say) is
//!   refused: a token a workload gives to someone else cannot be replayed here.
//! - **Fail closed.** An API error, a refused call (RBAC: the server needs `create` on
//!   `authentication.k8s.io/tokenreviews`) or no answer within the timeout is
//!   [`TokenRejected::Unavailable`]: the stream is refused, never served unauthenticated.
//! - **Verdict cache**, keyed by the SHA-256 of the token (the token itself is never stored or
//!   logged): a valid token for [`POSITIVE_TTL`], a refused one for [`NEGATIVE_TTL`], API failures
//!   never (the next stream asks again). At most [`MAX_CACHED`] verdicts: when full, expired ones go
//!   first, then the one that expires soonest, so clients sending endless distinct tokens cannot
//!   grow it. A revoked token therefore keeps working for new streams for up to [`POSITIVE_TTL`];
//!   an open stream is never re-checked (the token is checked when a stream opens).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use kube::Api;
use tokio::time::Instant;
use tracing::{debug, warn};
use xds_core::model::SpiffeId;

use super::workload::{TokenRejected, TokenVerifier};

/// The audience asked for when `--token-audience` is not given: the server's own name, so a token
/// projected for it is good for nothing else (see docs/security.md, "Token authentication").
pub const DEFAULT_AUDIENCE: &str = "xds-server";

/// How long one TokenReview may take before the stream is refused as `Unavailable`.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a valid token's verdict is reused.
pub const POSITIVE_TTL: Duration = Duration::from_secs(60);

/// How long a refused token's verdict is reused (garbage, expired, another audience, not a
/// ServiceAccount): short, so a fixed token is soon taken, long enough that a client retrying in a
/// loop does not become a TokenReview loop.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Most verdicts kept.
pub const MAX_CACHED: usize = 10_000;

/// Longest token sent for review; longer ones are refused without asking (ServiceAccount tokens are
/// about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What the verifier is configured with.
#[derive(Debug, Clone)]
pub struct TokenReviewSettings {
    /// `--token-audience`.
    pub audience: String,
    /// `--trust-domain`.
    pub trust_domain: String,
    pub timeout: Duration,
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    pub max_cached: usize,
}

impl TokenReviewSettings {
    /// The documented defaults for an audience and trust domain.
    pub fn new(audience: &str, trust_domain: &str) -> Self {
        TokenReviewSettings {
            audience: audience.to_string(),
            trust_domain: trust_domain.to_string(),
            timeout: REVIEW_TIMEOUT,
            positive_ttl: POSITIVE_TTL,
            negative_ttl: NEGATIVE_TTL,
            max_cached: MAX_CACHED,
        }
    }
}

type TokenHash = [u8; 32];

fn token_hash(token: &str) -> TokenHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// The first bytes of a token's hash, to tell tokens apart in logs without showing them.
fn fingerprint(hash: &TokenHash) -> String {
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Verdicts by token hash, bounded; see the module docs.
#[derive(Debug)]
pub struct VerdictCache {
    entries: HashMap<TokenHash, (Result<SpiffeId, TokenRejected>, Instant)>,
    max: usize,
}

impl VerdictCache {
    pub fn new(max: usize) -> Self {
        VerdictCache {
            entries: HashMap::new(),
            max: max.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The verdict for `hash` if it has not expired.
    fn get(&mut self, hash: &TokenHash, now: Instant) -> Option<Result<SpiffeId, TokenRejected>> {
        match self.entries.get(hash) {
            Some((verdict, until)) if *until > now => Some(verdict.clone()),
            Some(_) => {
                self.entries.remove(hash);
                None
            }
            None => None,
        }
    }

    fn insert(
        &mut self,
        hash: TokenHash,
        verdict: Result<SpiffeId, TokenRejected>,
        until: Instant,
        now: Instant,
    ) {
        if !self.entries.contains_key(&hash) && self.entries.len() >= self.max {
            self.entries.retain(|_, (_, t)| *t > now);
            if self.entries.len() >= self.max {
                // O(n) at the bound only, and each miss costs a TokenReview anyway.
                if let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(k, _)| *k)
                {
                    self.entries.remove(&soonest);
                }
            }
        }
        self.entries.insert(hash, (verdict, until));
    }
}

/// Asks the TokenReview API ([`Api::<TokenReview>::create`]) whose a token is; see the module docs.
pub struct TokenReviewVerifier {
    api: Api<TokenReview>,
    settings: TokenReviewSettings,
    cache: Mutex<VerdictCache>,
}

impl TokenReviewVerifier {
    pub fn new(client: kube::Client, settings: TokenReviewSettings) -> Self {
        TokenReviewVerifier {
            api: Api::all(client),
            cache: Mutex::new(VerdictCache::new(settings.max_cached)),
            settings,
        }
    }

    pub fn settings(&self) -> &TokenReviewSettings {
        &self.settings
    }

    /// Verdicts cached now (expired ones included until they are looked up or evicted).
    pub fn cached(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VerdictCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One TokenReview, with the timeout.
    async fn review(&self, token: &str) -> Result<SpiffeId, TokenRejected> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.settings.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let answer = tokio::time::timeout(
            self.settings.timeout,
            self.api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| {
            TokenRejected::Unavailable(format!(
                "no answer from the API server within {:?}",
                self.settings.timeout
            ))
        })?
        .map_err(|e| TokenRejected::Unavailable(describe_api_error(&e)))?;
        judge(answer.status.unwrap_or_default(), &self.settings)
    }
}

/// What a failed TokenReview call says, with the likely fix for a refusal.
fn describe_api_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.code == 403 => format!(
            "{error} (the server's ServiceAccount needs `create` on authentication.k8s.io tokenreviews)"
        ),
        _ => error.to_string(),
    }
}

/// The verdict of a TokenReview's status.
fn judge(
    status: TokenReviewStatus,
    settings: &TokenReviewSettings,
) -> Result<SpiffeId, TokenRejected> {
    if status.authenticated != Some(true) {
        let reason = status
            .error
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "the API server did not authenticate it".to_string());
        return Err(TokenRejected::Invalid(reason));
    }
    let audiences = status.audiences.unwrap_or_default();
    if !audiences.contains(&settings.audience) {
        return Err(TokenRejected::Invalid(format!(
            "the API server did not confirm the audience `{}` (status.audiences: {audiences:?})",
            settings.audience
        )));
    }
    let username = status
        .user
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| TokenRejected::Invalid("the TokenReview names no user".to_string()))?;
    SpiffeId::from_service_account_user(&settings.trust_domain, &username)
        .ok_or(TokenRejected::NotServiceAccount(username))
}

impl TokenVerifier for TokenReviewVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<SpiffeId, TokenRejected>> {
        Box::pin(async move {
            if token.is_empty() {
                return Err(TokenRejected::Invalid(
                    "the bearer token is empty".to_string(),
                ));
            }
            if token.len() > MAX_TOKEN_BYTES {
                return Err(TokenRejected::Invalid(format!(
                    "the bearer token is longer than {MAX_TOKEN_BYTES} bytes"
                )));
            }
            let hash = token_hash(token);
            let token_id = fingerprint(&hash);
            if let Some(verdict) = self.lock().get(&hash, Instant::now()) {
                debug!(token_sha256 = %token_id, ok = verdict.is_ok(), "token verdict from the cache");
                return verdict;
            }
            let verdict = self.review(token).await;
            let ttl = match &verdict {
                Ok(id) => {
                    debug!(token_sha256 = %token_id, identity = %id, "TokenReview: authenticated");
                    Some(self.settings.positive_ttl)
                }
                Err(TokenRejected::Unavailable(reason)) => {
                    warn!(token_sha256 = %token_id, %reason, "TokenReview failed; the stream is refused (fail closed)");
                    None
                }
                Err(rejected) => {
                    debug!(token_sha256 = %token_id, reason = %rejected, "TokenReview: refused");
                    Some(self.settings.negative_ttl)
                }
            };
            if let Some(ttl) = ttl {
                let now = Instant::now();
                self.lock().insert(hash, verdict.clone(), now + ttl, now);
            }
            verdict
        })
    }
}

#[cfg(test)]
mod tests;
