//! Restarting a watch whose connection went silent.
//!
//! A watch whose API server vanished without closing the connection (a network partition, a node
//! that died) stays open and says nothing: the client would notice only when the watch's own
//! timeout ends (kube's watcher gives up after `timeoutSeconds` + 5 s, about 5 minutes). A healthy
//! watch is never silent that long: the API server sends a `BOOKMARK` to every watch that asked for
//! them (kube's watcher does) about once a minute, and events whenever something changes.
//!
//! So this layer, on the kube client's HTTP stack, ends the body of a watch response that has
//! received no bytes for the idle timeout, with an [`IdleWatch`] error. kube's watcher then opens a
//! new watch from the last resourceVersion it saw (a relist only if that is too old), and the
//! reflectors keep what they know meanwhile: the server never publishes less than its last good
//! view because of this. Each restart is logged and counted (`xds_kube_watch_restarts`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};
use tracing::warn;

/// kube-apiserver's bookmark period (its watch cache sends each watch a bookmark about this often).
pub const BOOKMARK_PERIOD: Duration = Duration::from_secs(60);

/// The default idle timeout: two bookmark periods, so one late or lost bookmark is no restart.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A watch response body ended because it was silent for too long.
#[derive(Debug, thiserror::Error)]
#[error("watch {path} silent for {silent:?} (no event, no bookmark): restarting it")]
pub struct IdleWatch {
    pub path: String,
    pub silent: Duration,
}

/// Wraps the body of every watch response (`?watch=true`) in an idle timeout.
#[derive(Debug, Clone)]
pub struct WatchIdleLayer {
    timeout: Duration,
    /// The source label of the metric: `kubernetes`, or `kubernetes:CLUSTER`.
    source: String,
}

impl WatchIdleLayer {
    pub fn new(timeout: Duration, source: impl Into<String>) -> Self {
        Self {
            timeout,
            source: source.into(),
        }
    }
}

impl<S> Layer<S> for WatchIdleLayer {
    type Service = WatchIdle<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WatchIdle {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WatchIdle<S> {
    inner: S,
    layer: WatchIdleLayer,
}

/// Whether a request opens a watch (`watch=true` or `watch=1` in its query).
fn is_watch(uri: &http::Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1"))
    })
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for WatchIdle<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<IdleBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let watch = is_watch(request.uri()).then(|| Watched {
            path: request.uri().path().to_string(),
            timeout: self.layer.timeout,
            source: self.layer.source.clone(),
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| IdleBody::new(body, watch)))
        })
    }
}

#[derive(Debug)]
struct Watched {
    path: String,
    timeout: Duration,
    source: String,
}

pin_project_lite::pin_project! {
    /// A response body; for a watch, one that fails with [`IdleWatch`] once it has been silent for
    /// the timeout.
    pub struct IdleBody<B> {
        #[pin]
        inner: B,
        watch: Option<Watched>,
        #[pin]
        silence: Option<Sleep>,
        ended: bool,
    }
}

impl<B> IdleBody<B> {
    fn new(inner: B, watch: Option<Watched>) -> Self {
        let silence = watch.as_ref().map(|w| tokio::time::sleep(w.timeout));
        Self {
            inner,
            watch,
            silence,
            ended: false,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                if let (Some(watch), Some(silence)) =
                    (this.watch.as_ref(), this.silence.as_mut().as_pin_mut())
                {
                    silence.reset(Instant::now() + watch.timeout);
                }
                return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
            }
            Poll::Pending => {}
        }
        let (Some(watch), Some(silence)) = (this.watch.as_ref(), this.silence.as_pin_mut()) else {
            return Poll::Pending;
        };
        if silence.poll(cx).is_pending() {
            return Poll::Pending;
        }
        *this.ended = true;
        crate::metrics::metrics()
            .kube_watch_restarts
            .get_or_create(&crate::metrics::source_label(&watch.source))
            .inc();
        warn!(source = %watch.source, path = %watch.path, silent = ?watch.timeout,
              "Kubernetes watch silent (no event, no bookmark): restarting it");
        Poll::Ready(Some(Err(Box::new(IdleWatch {
            path: watch.path.clone(),
            silent: watch.timeout,
        }))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A kube client for `config` whose watches restart after `idle_timeout` of silence.
pub fn client(
    config: kube::Config,
    idle_timeout: Duration,
    source: &str,
) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&WatchIdleLayer::new(idle_timeout, source))
        .build())
}

#[cfg(test)]
mod tests;
