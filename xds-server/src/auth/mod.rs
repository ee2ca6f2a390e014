//! Authentication: who a workload on the xDS port is ([`workload`]; ServiceAccount tokens checked with
//! the TokenReview API by [`token_review`]), and the bearer token check for
//! the admin port (below).
//!
//! Bearer token check for the admin port (`--admin-token-file`): a tower layer over every admin
//! service (admin API, CSDS, reflection). gRPC health stays open so Kubernetes probes and load
//! balancers need no secret; it tells nothing but SERVING.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use subtle::ConstantTimeEq;
use tonic::codegen::http;
use tonic::Status;
use tracing::{error, info};

use crate::watch::WatchHandle;
use workload::{ConnInfo, PeerCertificate};
use xds_core::model::SpiffeId;

pub mod token_review;
pub mod workload;

/// Requests to these gRPC services pass without a token.
const OPEN_PREFIXES: &[&str] = &["/grpc.health.v1.Health/"];

/// Why the token file did not load.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{}: cannot read the admin token: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the admin token file is empty", path.display())]
    Empty { path: PathBuf },
    #[error("{}: the admin token must be one line of visible ASCII (no spaces or control characters)", path.display())]
    NotPrintable { path: PathBuf },
}

/// The token of an `authorization: Bearer TOKEN` value (the scheme in any case, surrounding whitespace
/// dropped), for the admin port and for xDS streams alike.
pub fn bearer_token(value: &[u8]) -> Result<&[u8], Status> {
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => Ok(value[7..].trim_ascii()),
        _ => Err(Status::unauthenticated(
            "the authorization header is not `Bearer TOKEN`",
        )),
    }
}

/// The token from `--admin-token-file`, re-read when the file changes.
#[derive(Debug)]
pub struct AdminToken {
    path: PathBuf,
    token: RwLock<Vec<u8>>,
}

fn read_token(path: &Path) -> Result<Vec<u8>, TokenError> {
    let text = std::fs::read(path).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // `echo TOKEN > file` leaves a newline; surrounding whitespace is never part of a token.
    let token = text.trim_ascii();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::NotPrintable {
            path: path.to_path_buf(),
        });
    }
    Ok(token.to_vec())
}

impl AdminToken {
    pub fn load(path: PathBuf) -> Result<Arc<AdminToken>, TokenError> {
        let token = read_token(&path)?;
        Ok(Arc::new(AdminToken {
            path,
            token: RwLock::new(token),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file: `Ok(true)` if the token changed; on error the old token stays.
    pub fn reload(&self) -> Result<bool, TokenError> {
        let token = read_token(&self.path)?;
        let mut current = self.token.write().unwrap_or_else(|e| e.into_inner());
        if *current == token {
            return Ok(false);
        }
        *current = token;
        Ok(true)
    }

    /// Reloads the token whenever its file changes.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<Vec<WatchHandle>> {
        let this = self.clone();
        crate::watch::watch_paths(std::slice::from_ref(&self.path), move || {
            match this.reload() {
                Ok(true) => info!(token_file = %this.path.display(), "admin token reloaded"),
                Ok(false) => {}
                Err(error) => {
                    error!(%error, "admin token file changed but does not load; the last good token stays")
                }
            }
        })
    }

    /// Checks an `authorization` header value.
    pub fn check(&self, header: Option<&http::HeaderValue>) -> Result<(), Status> {
        let Some(value) = header else {
            return Err(Status::unauthenticated(
                "missing bearer token (send `authorization: Bearer TOKEN`; xdsctl: --token or --token-file)",
            ));
        };
        let presented = bearer_token(value.as_bytes())?;
        let token = self.token.read().unwrap_or_else(|e| e.into_inner());
        // Constant time in the content; only the length can be told apart, which says little.
        if bool::from(presented.ct_eq(token.as_slice())) {
            Ok(())
        } else {
            Err(Status::unauthenticated("wrong bearer token"))
        }
    }
}

/// Which client certificates may use the admin API, beyond the TLS handshake's CA check: workloads
/// must not read every client's configuration just because their certificates share the client CA.
#[derive(Debug, Clone, Default)]
pub struct AdminAdmission {
    /// `--admin-allow-id`: when not empty, only certificates with one of these SPIFFE IDs.
    pub allowed: BTreeSet<SpiffeId>,
    /// `--admin-client-ca`: the admin port has a CA of its own, which signs no workloads.
    pub own_ca: bool,
}

impl AdminAdmission {
    /// Whether a connection whose client certificate proves `certificate` may call the admin API.
    pub fn check(&self, certificate: Option<&PeerCertificate>) -> Result<(), Status> {
        let id = certificate.and_then(PeerCertificate::identity);
        if !self.allowed.is_empty() {
            return match id {
                Some(id) if self.allowed.contains(id) => Ok(()),
                Some(id) => Err(Status::permission_denied(format!(
                    "{id} is not allowed on the admin API (see --admin-allow-id)"
                ))),
                None => Err(Status::permission_denied(
                    "the admin API takes only certificates whose SPIFFE ID is listed in --admin-allow-id",
                )),
            };
        }
        match id {
            Some(id) if !self.own_ca => Err(Status::permission_denied(format!(
                "{id} is a workload identity: workload certificates may not use the admin API \
                 (use an operator certificate, or list it in --admin-allow-id)"
            ))),
            _ => Ok(()),
        }
    }
}

/// The admin port's checks: which client certificates may call it ([`AdminAdmission`]) and the bearer
/// token; without a token or client certificates it lets everything through.
#[derive(Debug, Clone, Default)]
pub struct AdminAuthLayer {
    token: Option<Arc<AdminToken>>,
    admission: Arc<AdminAdmission>,
}

impl AdminAuthLayer {
    pub fn new(token: Option<Arc<AdminToken>>, admission: AdminAdmission) -> Self {
        Self {
            token,
            admission: Arc::new(admission),
        }
    }
}

impl<S> tower::Layer<S> for AdminAuthLayer {
    type Service = AdminAuth<S>;

    fn layer(&self, inner: S) -> AdminAuth<S> {
        AdminAuth {
            inner,
            token: self.token.clone(),
            admission: self.admission.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminAuth<S> {
    inner: S,
    token: Option<Arc<AdminToken>>,
    admission: Arc<AdminAdmission>,
}

impl<S, B> tower::Service<http::Request<B>> for AdminAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        std::future::Ready<Result<http::Response<tonic::body::Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        if !OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
            let certificate = req
                .extensions()
                .get::<ConnInfo>()
                .and_then(|c| c.certificate.as_deref());
            let checked = self
                .admission
                .check(certificate)
                .and_then(|()| match &self.token {
                    Some(token) => token.check(req.headers().get(http::header::AUTHORIZATION)),
                    None => Ok(()),
                });
            if let Err(status) = checked {
                tracing::debug!(path, message = status.message(), "admin request refused");
                return futures::future::Either::Right(std::future::ready(Ok(status.into_http())));
            }
        }
        futures::future::Either::Left(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests;
