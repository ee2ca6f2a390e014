//! The HTTP side: accept loop, routing, list/watch/get/write handlers, response bodies.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Sleep;

use crate::status_writes;
use crate::store::{ListQuery, PatchType, Store, WatchQuery};
use crate::token_review::TokenReviewFault;
use crate::util::{self, ApiError};
use crate::{KindInfo, RequestRecord};

/// The TokenReview collection (create only, like the real one).
const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const TOKEN_REVIEW_PLURAL: &str = "tokenreviews";

/// A watch without `timeoutSeconds` lasts this long (the real server picks 30 to 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Accepts connections until `stop` fires (or its sender is dropped), then closes the listener
/// and every connection (open watches included) and reports on `stopped`.
pub async fn serve(
    listener: std::net::TcpListener,
    store: Arc<Mutex<Store>>,
    mut stop: oneshot::Receiver<()>,
    stopped: std_mpsc::Sender<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("apiserver: cannot listen: {e}");
            let _ = stopped.send(());
            return;
        }
    };
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((sock, _)) = accepted else { continue };
                let _ = sock.set_nodelay(true);
                let store = store.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(store.clone(), req));
                    let _ = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
    let _ = stopped.send(());
}

/// A response body: a whole JSON document, or a watch stream of event lines that ends when the
/// watch is closed by the store or its timeout passes.
pub enum RespBody {
    Full(Option<Bytes>),
    Watch {
        rx: UnboundedReceiver<Bytes>,
        deadline: Pin<Box<Sleep>>,
    },
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Watch { rx, deadline } => {
                if let Poll::Ready(line) = rx.poll_recv(cx) {
                    return Poll::Ready(line.map(|b| Ok(Frame::data(b))));
                }
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, RespBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RespBody::Full(None) => SizeHint::with_exact(0),
            RespBody::Watch { .. } => SizeHint::default(),
        }
    }
}

fn json_response(code: u16, v: &Value) -> Response<RespBody> {
    let body = serde_json::to_vec(v).expect("serialize response");
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(CONTENT_TYPE, "application/json")
        .body(RespBody::Full(Some(Bytes::from(body))))
        .expect("response")
}

fn error_response(e: &ApiError) -> Response<RespBody> {
    json_response(e.code, &e.status())
}

fn text_response(text: &'static str) -> Response<RespBody> {
    Response::builder()
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(RespBody::Full(Some(Bytes::from_static(text.as_bytes()))))
        .expect("response")
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

fn header(req: &Request<Incoming>, name: hyper::header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// What a handler needs of a request.
struct Req {
    method: Method,
    path: String,
    params: Vec<(String, String)>,
    accept: String,
    content_type: String,
    body: Bytes,
}

impl Req {
    fn param(&self, key: &str) -> Option<String> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.param(key).as_deref(), Some("true" | "1"))
    }

    fn metadata_only(&self) -> bool {
        self.accept.contains("as=PartialObjectMetadata")
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.body)
            .or_else(|_| serde_yaml_ng::from_slice(&self.body))
            .map_err(|e| ApiError::bad_request(format!("cannot decode the request body: {e}")))
    }
}

async fn handle(
    store: Arc<Mutex<Store>>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let record = RequestRecord {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or("").to_string(),
        accept: header(&req, ACCEPT),
    };
    lock(&store).requests.push(record.clone());
    let content_type = header(&req, CONTENT_TYPE);
    let authorization = header(&req, AUTHORIZATION);
    let method = req.method().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(error_response(&ApiError::bad_request(format!(
                "cannot read the request body: {e}"
            ))))
        }
    };
    let req = Req {
        method,
        params: util::query_pairs(&record.query),
        path: record.path,
        accept: record.accept,
        content_type,
        body,
    };
    if req.path.trim_end_matches('/') == TOKEN_REVIEW_PATH {
        return Ok(token_review(&store, &req).await);
    }
    let token = status_writes::bearer(&authorization);
    if let Some(write) = status_writes::status_write(req.method.as_str(), &req.path, token) {
        status_writes::arrive(&store, |st: &mut Store| &mut st.status_writes, write).await;
    }
    Ok(route(&store, &req).unwrap_or_else(|e| error_response(&e)))
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    )
}

fn route(store: &Mutex<Store>, req: &Req) -> Result<Response<RespBody>, ApiError> {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => Ok(json_response(
            200,
            &json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-e2e",
                "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
                "goVersion": "", "compiler": "gc", "platform": "linux/amd64",
            }),
        )),
        ["healthz" | "livez" | "readyz"] => Ok(text_response("ok")),
        ["api"] => Ok(json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        )),
        ["api", "v1"] => Ok(json_response(200, &resource_list(&lock(store), "", "v1")?)),
        ["apis"] => Ok(json_response(200, &group_list(&lock(store)))),
        ["apis", group] => {
            let list = group_list(&lock(store));
            let g = list["groups"]
                .as_array()
                .and_then(|gs| gs.iter().find(|g| g["name"] == *group).cloned())
                .ok_or_else(|| not_found(&req.path))?;
            let mut g = g;
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            Ok(json_response(200, &g))
        }
        ["apis", group, version] => Ok(json_response(
            200,
            &resource_list(&lock(store), group, version)?,
        )),
        ["api", "v1", rest @ ..] => resource(store, req, "", "v1", rest),
        ["apis", group, version, rest @ ..] => resource(store, req, group, version, rest),
        _ => Err(not_found(&req.path)),
    }
}

fn resource_list(store: &Store, group: &str, version: &str) -> Result<Value, ApiError> {
    let kinds: Vec<&KindInfo> = store
        .kinds()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() && !group.is_empty() {
        return Err(not_found(&format!("/apis/{group}/{version}")));
    }
    let mut resources = Vec::new();
    for k in kinds {
        resources.push(json!({
            "name": k.plural, "singularName": k.kind.to_lowercase(), "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }));
        resources.push(json!({
            "name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced,
            "kind": k.kind, "verbs": ["get", "patch", "update"],
        }));
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
        "resources": resources,
    }))
}

fn group_list(store: &Store) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for k in store.kinds().filter(|k| !k.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == k.group) {
            Some((_, vs)) if !vs.contains(&k.version) => vs.push(k.version.clone()),
            Some(_) => {}
            None => groups.push((k.group.clone(), vec![k.version.clone()])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource(
    store: &Mutex<Store>,
    req: &Req,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Response<RespBody>, ApiError> {
    let mut st = lock(store);
    let namespaced_form = rest.len() >= 3
        && rest[0] == "namespaces"
        && st
            .kind_by_plural(group, version, rest[2])
            .is_some_and(|k| st.info(k).namespaced);
    let (ns, rest) = if namespaced_form {
        (Some(rest[1]), &rest[2..])
    } else {
        (None, rest)
    };
    let Some(plural) = rest.first() else {
        return Err(not_found(&req.path));
    };
    let k = st
        .kind_by_plural(group, version, plural)
        .ok_or_else(|| not_found(&req.path))?;
    if let Some(&code) = st.failures.get(*plural) {
        return Err(injected_failure(code, plural));
    }
    if st.info(k).namespaced && ns.is_none() && rest.len() > 1 {
        return Err(not_found(&req.path));
    }
    let metadata_only = req.metadata_only();
    let wrap = |v: Value| {
        if metadata_only {
            util::partial_metadata(&v)
        } else {
            v
        }
    };
    match (rest, &req.method) {
        ([_], &Method::GET) if req.flag("watch") => {
            let q = WatchQuery {
                label_selector: req.param("labelSelector"),
                field_selector: req.param("fieldSelector"),
                resource_version: req.param("resourceVersion"),
                bookmarks: req.flag("allowWatchBookmarks"),
                send_initial_events: req.flag("sendInitialEvents"),
            };
            let timeout =
                match req.param("timeoutSeconds") {
                    Some(t) => Duration::from_secs(t.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid timeoutSeconds {t:?}"))
                    })?),
                    None => DEFAULT_WATCH_TIMEOUT,
                };
            let rx = st.watch(k, ns, &q, metadata_only)?;
            drop(st);
            Ok(Response::builder()
                .header(CONTENT_TYPE, "application/json")
                .body(RespBody::Watch {
                    rx,
                    deadline: Box::pin(tokio::time::sleep(timeout)),
                })
                .expect("response"))
        }
        ([_], &Method::GET) => {
            let limit = match req.param("limit") {
                Some(l) => Some(
                    l.parse()
                        .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
                ),
                None => None,
            };
            let q = ListQuery {
                label_selector: req.param("labelSelector"),
                field_selector: req.param("fieldSelector"),
                limit,
                continue_token: req.param("continue"),
                resource_version: req.param("resourceVersion"),
                resource_version_match: req.param("resourceVersionMatch"),
            };
            Ok(json_response(200, &st.list(k, ns, &q, metadata_only)?))
        }
        ([_], &Method::POST) => {
            let body = req.json_body()?;
            Ok(json_response(201, &wrap(st.create(k, ns, body)?)))
        }
        ([_, name], &Method::GET) => Ok(json_response(200, &wrap(st.get(k, ns, name)?))),
        ([_, name], &Method::PUT) => {
            let body = req.json_body()?;
            Ok(json_response(
                200,
                &wrap(st.replace(k, ns, name, body, false)?),
            ))
        }
        ([_, name], &Method::PATCH) => {
            let (typ, body) = patch_body(req)?;
            Ok(json_response(
                200,
                &wrap(st.patch(k, ns, name, typ, body, false)?),
            ))
        }
        ([_, name], &Method::DELETE) => Ok(json_response(200, &wrap(st.delete(k, ns, name)?))),
        ([_, name, "status"], &Method::GET) => Ok(json_response(200, &wrap(st.get(k, ns, name)?))),
        ([_, name, "status"], &Method::PUT) => {
            let body = req.json_body()?;
            Ok(json_response(
                200,
                &wrap(st.replace(k, ns, name, body, true)?),
            ))
        }
        ([_, name, "status"], &Method::PATCH) => {
            let (typ, body) = patch_body(req)?;
            Ok(json_response(
                200,
                &wrap(st.patch(k, ns, name, typ, body, true)?),
            ))
        }
        ([_] | [_, _] | [_, _, "status"], _) => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({} {})",
                req.method, req.path
            ),
        )),
        _ => Err(not_found(&req.path)),
    }
}

/// The error a resource made to fail ([`crate::ApiServer::fail_requests`]) answers.
fn injected_failure(code: u16, plural: &str) -> ApiError {
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    ApiError::new(code, reason, format!("injected failure for {plural}"))
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews` ([`crate::token_review`]). Async because a
/// frozen endpoint reads the request and then never answers.
async fn token_review(store: &Mutex<Store>, req: &Req) -> Response<RespBody> {
    if req.method != Method::POST {
        return error_response(&ApiError::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({} {})",
                req.method, req.path
            ),
        ));
    }
    let fault = {
        let mut st = lock(store);
        st.token_reviews.received += 1;
        st.token_reviews.fault.or_else(|| {
            st.failures
                .get(TOKEN_REVIEW_PLURAL)
                .map(|&code| TokenReviewFault::Status(code))
        })
    };
    match fault {
        Some(TokenReviewFault::Frozen) => std::future::pending().await,
        Some(TokenReviewFault::Status(code)) => {
            error_response(&injected_failure(code, TOKEN_REVIEW_PLURAL))
        }
        None => {
            let answer = req
                .json_body()
                .and_then(|body| lock(store).token_reviews.review(&body));
            match answer {
                Ok(review) => json_response(201, &review),
                Err(e) => error_response(&e),
            }
        }
    }
}

fn patch_body(req: &Req) -> Result<(PatchType, Value), ApiError> {
    let ct = req.content_type.split(';').next().unwrap_or("").trim();
    let typ = match ct {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => PatchType::Merge,
        "application/json-patch+json" => PatchType::Json,
        "application/apply-patch+yaml" => PatchType::Apply,
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"),
            ))
        }
    };
    Ok((typ, req.json_body()?))
}
