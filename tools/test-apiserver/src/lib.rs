//! A test Kubernetes API server: the real list/watch HTTP protocol, in memory, on 127.0.0.1.
//!
//! No kube-apiserver can run here, so the Kubernetes source of `xds-server` is tested against this
//! one instead, through the real `kube` client (a kubeconfig written by
//! [`ApiServer::write_kubeconfig`]). It keeps objects as JSON, per kind, with one global
//! resourceVersion counter (as etcd does), and answers:
//!
//! - `GET` collection: a `<Kind>List` with `metadata.resourceVersion`, `limit`/`continue` paging,
//!   `labelSelector` (`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`) and
//!   `fieldSelector` (`path=value`, `path!=value` on any dotted field, e.g. `metadata.name`).
//! - `GET` collection with `watch=true`: a chunked stream of newline-delimited
//!   `{"type":..,"object":..}` events after `resourceVersion`, replayed from a bounded per-kind
//!   history, then live; ends after `timeoutSeconds`. A `resourceVersion` older than the compaction
//!   point gets one `ERROR` event holding a 410 `Expired` Status, and the stream ends (as the real
//!   server does). `resourceVersion` unset or `"0"` starts with synthetic `ADDED` events for every
//!   current object. `sendInitialEvents=true` is honoured too (initial `ADDED` events, then a
//!   `BOOKMARK` annotated `k8s.io/initial-events-end`). An object that stops (starts) matching the
//!   watch's selectors is sent as `DELETED` (`ADDED`), as the real server does.
//! - Metadata-only requests (`Accept: ...;as=PartialObjectMetadata[List]`, what kube's
//!   `metadata_watcher` sends): `PartialObjectMetadata` objects in lists and watch events.
//! - `GET`/`PUT`/`PATCH`/`DELETE` `.../{name}`, `POST` collection, and `GET`/`PUT`/`PATCH`
//!   `.../{name}/status`. Patches: JSON merge patch, strategic merge patch (treated as a merge patch),
//!   server-side apply (the JSON body merged in, good enough here) and JSON patch. A `PUT` whose
//!   `metadata.resourceVersion` is stale gets 409 Conflict.
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews`: the TokenReview API for tokens registered
//!   with [`ApiServer::add_token`] (audiences, expiry and revocation as Kubernetes has them; see
//!   [`token_review`]). Tests can make it fail or freeze ([`ApiServer::set_token_review_fault`]) and
//!   count the reviews it got ([`ApiServer::token_reviews_received`]).
//! - `coordination.k8s.io/v1` Leases, as any kind (a `PUT` with a stale resourceVersion gets 409),
//!   for leader election. Status writes are recorded with the client's bearer token and can be
//!   delayed or left unanswered ([`ApiServer::set_status_write_fault`], [`ApiServer::status_writes`],
//!   [`status_writes`]).
//! - `/version`, `/healthz`, `/livez`, `/readyz`, and discovery (`/api`, `/api/v1`, `/apis`,
//!   `/apis/{group}/{version}`) for the registered kinds. Anything else: 404 with a Status body.
//!
//! Tests change the world with [`ApiServer::apply`] and [`ApiServer::delete`], simulate outages
//! with [`ApiServer::stop`] / [`ApiServer::restart`] (same port, same state), force relists with
//! [`ApiServer::expire_history`], and check what the client did with [`ApiServer::requests`].
//!
//! The server runs on its own thread with its own tokio runtime, so every method is synchronous
//! and can be called from plain `#[test]` functions as well as from async tests.
//!
//! What a kube client test should know:
//! - `kube::runtime::watcher::Config::default()` works as is (paged LIST with `limit=500`, then a
//!   WATCH from the list's resourceVersion with `allowWatchBookmarks=true&timeoutSeconds=290`);
//!   `.streaming_lists()` works too. Bookmarks are sent when a test calls
//!   [`ApiServer::send_bookmarks`], and on a timer once it calls [`ApiServer::send_bookmarks_every`]
//!   (the real server sends one about every minute).
//! - [`ApiServer::freeze_watches`] makes every open watch silent without closing its connection (a
//!   server that vanished in a network partition); new requests are answered as usual.
//! - Give watchers a backoff (`.default_backoff()`): during [`ApiServer::stop`] every request is
//!   refused at once, and a watcher without backoff retries in a hot loop. With kube's default
//!   backoff the first retry (and so the relist after a 410) comes about 0.8 s later (jittered).
//! - A watcher that reconnects after [`ApiServer::restart`] resumes from its last resourceVersion
//!   and gets the missed events replayed (no relist). To force a relist, call
//!   [`ApiServer::expire_history`] (while running or while stopped).
//! - kube's client retries 429/503/504 answers itself; see [`ApiServer::fail_requests`].
//! - Namespaced kinds: [`ApiServer::delete`] and [`ApiServer::get`] with `namespace: None` mean
//!   `default`. Cluster-scoped kinds ignore the namespace.
//! - Objects are not validated beyond apiVersion/kind/name, so tests can serve malformed objects
//!   (e.g. a wrong field type) to check that the client survives them.
//! - Finalizers and graceful deletion are not modelled: a delete removes the object at once.

mod http;
mod select;
pub mod status_writes;
mod store;
pub mod token_review;
mod util;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::sync::oneshot;

pub use status_writes::{lease_kind, StatusWrite, StatusWriteFault};
use store::Store;
pub use token_review::{TokenReviewFault, API_SERVER_AUDIENCES};

/// How many events each kind keeps for watches that resume from an older resourceVersion. Older
/// resourceVersions get 410 Expired, as after an etcd compaction.
pub const HISTORY_PER_KIND: usize = 10_000;

/// A resource kind the server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindInfo {
    /// API group, `""` for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Service`.
    pub kind: String,
    /// Plural resource name used in paths, e.g. `services`.
    pub plural: String,
    /// Namespaced (`true`) or cluster-scoped (`false`).
    pub namespaced: bool,
}

impl KindInfo {
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> KindInfo {
        KindInfo {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            namespaced,
        }
    }

    /// Our `FailoverPolicy` custom resource (`failover.xds.dev/v1alpha1`, namespaced), as the CRD in
    /// `deploy/kubernetes/crd.yaml` defines it.
    pub fn failover_policy() -> KindInfo {
        KindInfo::new(
            "failover.xds.dev",
            "v1alpha1",
            "FailoverPolicy",
            "failoverpolicies",
            true,
        )
    }

    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// One HTTP request the server received, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The raw (still percent-encoded) query string, `""` if none.
    pub query: String,
    /// The `Accept` header, `""` if none.
    pub accept: String,
}

impl RequestRecord {
    /// A decoded query parameter.
    pub fn param(&self, key: &str) -> Option<String> {
        util::query_pairs(&self.query)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// `?watch=true` (or `1`).
    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch").as_deref(), Some("true" | "1"))
    }

    /// A `GET` that is not a watch, on a collection path ending with `/{plural}`.
    pub fn is_list_of(&self, plural: &str) -> bool {
        self.method == "GET" && !self.is_watch() && self.path.ends_with(&format!("/{plural}"))
    }

    /// A watch on a collection path ending with `/{plural}`.
    pub fn is_watch_of(&self, plural: &str) -> bool {
        self.method == "GET" && self.is_watch() && self.path.ends_with(&format!("/{plural}"))
    }
}

/// The kinds every server starts with.
pub fn builtin_kinds() -> Vec<KindInfo> {
    vec![
        KindInfo::new("", "v1", "Service", "services", true),
        KindInfo::new("", "v1", "Pod", "pods", true),
        KindInfo::new("", "v1", "Node", "nodes", false),
        KindInfo::new("", "v1", "Namespace", "namespaces", false),
        KindInfo::new("", "v1", "Secret", "secrets", true),
        KindInfo::new(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
        ),
        lease_kind(),
    ]
}

/// A running listener: how to stop it and learn that it has stopped.
struct Serving {
    stop: oneshot::Sender<()>,
    stopped: std_mpsc::Receiver<()>,
}

/// The test API server. See the module docs. Dropping it stops it.
pub struct ApiServer {
    addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    runtime: tokio::runtime::Handle,
    serving: Mutex<Option<Serving>>,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The timer of [`ApiServer::send_bookmarks_every`], if one runs.
    bookmark_timer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ApiServer {
    /// Starts a server on `127.0.0.1:0` with the built-in kinds (v1 Service, Pod, Node, Namespace,
    /// discovery.k8s.io/v1 EndpointSlice).
    pub fn start() -> ApiServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (handle_tx, handle_rx) = std_mpsc::channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("apiserver-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                handle_tx.send(rt.handle().clone()).expect("send handle");
                rt.block_on(async move {
                    let _ = shutdown_rx.await;
                });
                // Dropping the runtime cancels every task: listener and connections close.
            })
            .expect("spawn apiserver thread");
        let runtime = handle_rx.recv().expect("apiserver runtime");
        let server = ApiServer {
            addr,
            store: Arc::new(Mutex::new(Store::new(builtin_kinds()))),
            runtime,
            serving: Mutex::new(None),
            shutdown: Mutex::new(Some(shutdown_tx)),
            thread: Mutex::new(Some(thread)),
            bookmark_timer: Mutex::new(None),
        };
        server.serve(listener);
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address (stays the same across [`ApiServer::restart`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes a kubeconfig for this server: cluster, user and context all named `test`, no TLS,
    /// no auth, `current-context: test`, default namespace `default`.
    pub fn write_kubeconfig(&self, path: &Path) {
        std::fs::write(path, self.kubeconfig_yaml())
            .unwrap_or_else(|e| panic!("write kubeconfig {}: {e}", path.display()));
    }

    /// Like [`ApiServer::write_kubeconfig`], with a bearer token: the server accepts any, and
    /// records it with each status write ([`ApiServer::status_writes`]) to tell clients apart.
    pub fn write_kubeconfig_with_token(&self, path: &Path, token: &str) {
        let text = self
            .kubeconfig_yaml()
            .replace("  user: {}\n", &format!("  user:\n    token: {token}\n"));
        std::fs::write(path, text)
            .unwrap_or_else(|e| panic!("write kubeconfig {}: {e}", path.display()));
    }

    /// Makes every status write (`PUT`/`PATCH .../status`) slow or hang, or, with `None`, normal
    /// again. Writes already held keep their fault.
    pub fn set_status_write_fault(&self, fault: Option<StatusWriteFault>) {
        self.lock().status_writes.fault = fault;
    }

    /// Every status write received so far (answered or not), in order.
    pub fn status_writes(&self) -> Vec<StatusWrite> {
        self.lock().status_writes.received.clone()
    }

    /// The kubeconfig text [`ApiServer::write_kubeconfig`] writes.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {url}
users:
- name: test
  user: {{}}
contexts:
- name: test
  context:
    cluster: test
    user: test
    namespace: default
current-context: test
preferences: {{}}
",
            url = self.url()
        )
    }

    /// Creates or replaces an object, keyed by (apiVersion, kind, namespace, name). Sets
    /// `metadata.resourceVersion`, `uid`, `creationTimestamp` and `generation` (kept on replace;
    /// `generation` is bumped when anything but metadata and status changes), defaults
    /// `metadata.namespace` to `default` for namespaced kinds. Emits `ADDED` or `MODIFIED`.
    /// Returns the stored object. Panics if the kind is not registered or the object has no name.
    pub fn apply(&self, obj: Value) -> Value {
        self.lock()
            .apply(obj)
            .unwrap_or_else(|e| panic!("apply: {e}"))
    }

    /// Deletes an object, emitting `DELETED` (whose object carries the deletion's
    /// resourceVersion). A missing object is a no-op. Panics if the kind is not registered.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) {
        self.lock()
            .delete_by_kind(api_version, kind, namespace, name)
            .unwrap_or_else(|e| panic!("delete: {e}"));
    }

    /// The stored object, e.g. to read a status written by the client.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.lock()
            .get_by_kind(api_version, kind, namespace, name)
            .unwrap_or_else(|e| panic!("get: {e}"))
    }

    /// Every stored object of a kind (all namespaces), in key order.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        self.lock()
            .list_by_kind(api_version, kind)
            .unwrap_or_else(|e| panic!("list: {e}"))
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version()
    }

    /// Closes the listener and every open connection (so every watch): clients then get
    /// "connection refused". State is kept. A no-op when already stopped.
    pub fn stop(&self) {
        let serving = self.serving.lock().unwrap().take();
        if let Some(serving) = serving {
            let _ = serving.stop.send(());
            let _ = serving.stopped.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Listens again on the same port, with the same state. A no-op when running.
    pub fn restart(&self) {
        if self.serving.lock().unwrap().is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match std::net::TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Whether the server is listening.
    pub fn is_running(&self) -> bool {
        self.serving.lock().unwrap().is_some()
    }

    /// Compaction: every resourceVersion up to now becomes too old. Every open watch gets an
    /// `ERROR` event with a 410 `Expired` Status and then ends; later watches (and lists with
    /// `resourceVersionMatch=Exact` or a `continue` token) from a resourceVersion older than the
    /// current one get 410 too. A watch from exactly the current resourceVersion (what a relist
    /// returns) is fine.
    pub fn expire_history(&self) {
        self.lock().expire_history();
    }

    /// Sends a `BOOKMARK` event at the current resourceVersion to every open watch that asked for
    /// `allowWatchBookmarks=true`. Returns how many watches got one.
    pub fn send_bookmarks(&self) -> usize {
        self.lock().send_bookmarks()
    }

    /// Sends bookmarks (as [`ApiServer::send_bookmarks`]) every `period` from now on, as the real
    /// server does about every minute; `None` stops it.
    pub fn send_bookmarks_every(&self, period: Option<Duration>) {
        let mut timer = self.bookmark_timer.lock().unwrap();
        if let Some(old) = timer.take() {
            old.abort();
        }
        let Some(period) = period else { return };
        let store = self.store.clone();
        *timer = Some(self.runtime.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                store
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .send_bookmarks();
            }
        }));
    }

    /// Freezes every open watch: its connection stays open, but it is sent nothing more (no event,
    /// no bookmark), as when the server vanished in a network partition without closing it. Watches
    /// opened afterwards work. Returns how many were frozen.
    pub fn freeze_watches(&self) -> usize {
        self.lock().freeze_watches()
    }

    /// How many watches are open now.
    pub fn open_watches(&self) -> usize {
        self.lock().open_watches()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Makes every new request on a resource (by plural, e.g. `endpointslices`; lists, watches,
    /// gets and writes alike) fail with this HTTP code and a Status body, until
    /// [`ApiServer::clear_failures`]. Open watches are not affected (see [`ApiServer::stop`] or
    /// [`ApiServer::expire_history`] to end them). For tests like "one resource cannot be listed".
    /// Note that kube's client retries 429, 503 and 504 itself (up to 15 times, backing off up to
    /// minutes) before the caller sees an error: use e.g. 500 or 403 for a prompt failure.
    pub fn fail_requests(&self, plural: &str, code: u16) {
        self.lock().failures.insert(plural.to_string(), code);
    }

    /// Undoes every [`ApiServer::fail_requests`].
    pub fn clear_failures(&self) {
        self.lock().failures.clear();
    }

    /// Registers a bearer token for the TokenReview API: it authenticates `username` (a
    /// ServiceAccount is `system:serviceaccount:NS:NAME`) for `audiences` until `expires_at`.
    /// Replaces an earlier registration of the same token.
    pub fn add_token(
        &self,
        token: &str,
        username: &str,
        audiences: &[&str],
        expires_at: SystemTime,
    ) {
        self.lock()
            .token_reviews
            .add(token, username, audiences, expires_at);
    }

    /// Forgets a token: TokenReviews of it say `invalid bearer token` from now on. Panics if unknown.
    pub fn revoke_token(&self, token: &str) {
        assert!(self.lock().token_reviews.revoke(token), "unknown token");
    }

    /// Makes a token expire now. Panics if unknown.
    pub fn expire_token(&self, token: &str) {
        assert!(
            self.lock()
                .token_reviews
                .set_expiry(token, SystemTime::now()),
            "unknown token"
        );
    }

    /// Makes every TokenReview fail (an HTTP code, or frozen: never answered), or, with `None`,
    /// work again. Reviews already frozen stay unanswered. [`ApiServer::fail_requests`] with
    /// `tokenreviews` works too (kube's client retries 429, 503 and 504 itself).
    pub fn set_token_review_fault(&self, fault: Option<TokenReviewFault>) {
        self.lock().token_reviews.fault = fault;
    }

    /// How many TokenReviews were received so far (answered or not).
    pub fn token_reviews_received(&self) -> u64 {
        self.lock().token_reviews.received
    }

    /// Serves another kind, e.g. a custom resource. Replaces a kind with the same group and kind.
    pub fn register_kind(&self, info: KindInfo) {
        self.lock().register_kind(info);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock (in a test thread) must not hide the real failure.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&self, listener: std::net::TcpListener) {
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let (stop_tx, stop_rx) = oneshot::channel();
        let (stopped_tx, stopped_rx) = std_mpsc::channel();
        let store = self.store.clone();
        self.runtime
            .spawn(http::serve(listener, store, stop_rx, stopped_tx));
        *self.serving.lock().unwrap() = Some(Serving {
            stop: stop_tx,
            stopped: stopped_rx,
        });
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(tx) = self.shutdown.lock().unwrap().take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.lock().unwrap().take() {
            let _ = thread.join();
        }
    }
}
