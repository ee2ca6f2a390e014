//! The verdict cache and the reading of TokenReview answers, in paused time. The API server here is
//! a tower service answering kube's HTTP requests with TokenReview JSON (the real HTTP protocol
//! against the test API server is covered end to end in `e2e/tests/token_auth.rs`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use k8s_openapi::api::authentication::v1::UserInfo;
use serde_json::{json, Value};
use tonic::codegen::http;

use super::*;

const TD: &str = "cluster.local";

/// What the fake API server answers.
#[derive(Clone, Debug)]
enum Answer {
    /// Authenticated as this user, echoing the audiences asked for.
    User(&'static str),
    /// `authenticated` absent, with this error.
    Refused(&'static str),
    /// This HTTP code and a Status body.
    Http(u16),
    /// Never answers.
    Hang,
}

#[derive(Clone)]
struct FakeApi {
    answer: Arc<Mutex<Answer>>,
    calls: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl FakeApi {
    fn new(answer: Answer) -> Self {
        FakeApi {
            answer: Arc::new(Mutex::new(answer)),
            calls: Arc::default(),
            bodies: Arc::default(),
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn verifier(&self) -> TokenReviewVerifier {
        let client = kube::Client::new(self.clone(), "default");
        TokenReviewVerifier::new(client, TokenReviewSettings::new(DEFAULT_AUDIENCE, TD))
    }
}

impl tower::Service<http::Request<kube::client::Body>> for FakeApi {
    type Response = http::Response<kube::client::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            assert_eq!(req.method(), http::Method::POST);
            assert_eq!(
                req.uri().path(),
                "/apis/authentication.k8s.io/v1/tokenreviews"
            );
            let body = req.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            this.calls.fetch_add(1, Ordering::SeqCst);
            this.bodies.lock().unwrap().push(body.clone());
            let answer = this.answer.lock().unwrap().clone();
            let (code, value) = match answer {
                Answer::User(user) => (
                    201,
                    json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                        "metadata": {}, "spec": body["spec"],
                        "status": {"authenticated": true, "user": {"username": user},
                                   "audiences": body["spec"]["audiences"]}}),
                ),
                Answer::Refused(error) => (
                    201,
                    json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                        "metadata": {}, "spec": body["spec"], "status": {"user": {}, "error": error}}),
                ),
                Answer::Http(code) => (
                    code,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "injected", "reason": "InternalError", "code": code}),
                ),
                Answer::Hang => std::future::pending().await,
            };
            Ok(http::Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(
                    serde_json::to_vec(&value).unwrap(),
                ))
                .unwrap())
        })
    }
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::for_service_account(TD, ns, sa).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_valid_token_is_cached_for_the_positive_ttl_and_asked_again_after() {
    let api = FakeApi::new(Answer::User("system:serviceaccount:bank:ledger"));
    let verifier = api.verifier();
    assert_eq!(verifier.verify("tok-a").await, Ok(id("bank", "ledger")));
    // The review asked for our audience, with the token.
    let body = api.bodies.lock().unwrap()[0].clone();
    assert_eq!(body["spec"]["audiences"], json!([DEFAULT_AUDIENCE]));
    assert_eq!(body["spec"]["token"], "tok-a");
    // Revoked at the API server: the cache still says yes until the TTL is over.
    api.set(Answer::Refused("invalid bearer token"));
    tokio::time::advance(POSITIVE_TTL - Duration::from_secs(1)).await;
    assert_eq!(verifier.verify("tok-a").await, Ok(id("bank", "ledger")));
    assert_eq!(api.calls(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(matches!(
        verifier.verify("tok-a").await,
        Err(TokenRejected::Invalid(e)) if e.contains("invalid bearer token")
    ));
    assert_eq!(api.calls(), 2);
    // Another token is its own entry.
    api.set(Answer::User("system:serviceaccount:bank:teller"));
    assert_eq!(verifier.verify("tok-b").await, Ok(id("bank", "teller")));
    assert_eq!(api.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn refusals_are_cached_briefly_and_api_failures_never() {
    let api = FakeApi::new(Answer::Refused(
        "[invalid bearer token, service account token has expired]",
    ));
    let verifier = api.verifier();
    for _ in 0..3 {
        assert!(matches!(
            verifier.verify("old").await,
            Err(TokenRejected::Invalid(e)) if e.contains("expired")
        ));
    }
    assert_eq!(api.calls(), 1, "a refusal is cached");
    api.set(Answer::User("system:serviceaccount:bank:ledger"));
    tokio::time::advance(NEGATIVE_TTL + Duration::from_millis(1)).await;
    assert_eq!(verifier.verify("old").await, Ok(id("bank", "ledger")));
    assert_eq!(api.calls(), 2);

    // A person's token: refused as not a ServiceAccount, and cached like any refusal.
    api.set(Answer::User("alice@example.com"));
    assert_eq!(
        verifier.verify("alice").await,
        Err(TokenRejected::NotServiceAccount("alice@example.com".into()))
    );
    assert_eq!(api.calls(), 3);

    // API failures: fail closed, never cached.
    api.set(Answer::Http(500));
    for n in 0..2 {
        assert!(matches!(
            verifier.verify("new").await,
            Err(TokenRejected::Unavailable(_))
        ));
        assert_eq!(api.calls(), 4 + n);
    }
    api.set(Answer::Http(403));
    assert!(matches!(
        verifier.verify("new").await,
        Err(TokenRejected::Unavailable(e)) if e.contains("tokenreviews")
    ));
    // No answer: Unavailable once the timeout is over, not before.
    api.set(Answer::Hang);
    let started = Instant::now();
    assert!(matches!(
        verifier.verify("new").await,
        Err(TokenRejected::Unavailable(e)) if e.contains("no answer")
    ));
    assert_eq!(started.elapsed(), REVIEW_TIMEOUT);
    api.set(Answer::User("system:serviceaccount:bank:ledger"));
    assert_eq!(verifier.verify("new").await, Ok(id("bank", "ledger")));
    // Tokens refused without asking.
    let calls = api.calls();
    assert!(matches!(
        verifier.verify("").await,
        Err(TokenRejected::Invalid(_))
    ));
    let long = "x".repeat(MAX_TOKEN_BYTES + 1);
    assert!(
        matches!(verifier.verify(&long).await, Err(TokenRejected::Invalid(e)) if e.contains("longer"))
    );
    assert_eq!(api.calls(), calls);
}

#[tokio::test(start_paused = true)]
async fn the_cache_is_bounded_expired_entries_go_first_then_the_soonest_to_expire() {
    let mut cache = VerdictCache::new(3);
    let now = Instant::now();
    let ok = |sa| Ok(id("ns", sa));
    let h = |n: u8| [n; 32];
    cache.insert(h(1), ok("a"), now + Duration::from_secs(10), now);
    cache.insert(h(2), ok("b"), now + Duration::from_secs(1), now);
    cache.insert(h(3), ok("c"), now + Duration::from_secs(20), now);
    // Full: the one expiring soonest (2) makes room.
    cache.insert(h(4), ok("d"), now + Duration::from_secs(30), now);
    assert_eq!(cache.len(), 3);
    assert!(cache.get(&h(2), now).is_none());
    assert_eq!(cache.get(&h(1), now), Some(ok("a")));
    // Later, 1 has expired: it goes, and nothing else does.
    let later = now + Duration::from_secs(15);
    cache.insert(h(5), ok("e"), later + Duration::from_secs(5), later);
    assert_eq!(cache.len(), 3);
    assert!(cache.get(&h(1), later).is_none());
    for (n, sa) in [(3, "c"), (4, "d"), (5, "e")] {
        assert_eq!(cache.get(&h(n), later), Some(ok(sa)), "{n}");
    }
    // Replacing a present key never evicts.
    cache.insert(h(3), ok("c2"), later + Duration::from_secs(1), later);
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.get(&h(4), later), Some(ok("d")));

    // Through the verifier: many distinct tokens never grow it past its bound.
    let api = FakeApi::new(Answer::Refused("invalid bearer token"));
    let client = kube::Client::new(api.clone(), "default");
    let settings = TokenReviewSettings {
        max_cached: 50,
        ..TokenReviewSettings::new(DEFAULT_AUDIENCE, TD)
    };
    let verifier = TokenReviewVerifier::new(client, settings);
    for n in 0..200 {
        let _ = verifier.verify(&format!("garbage-{n}")).await;
    }
    assert_eq!(verifier.cached(), 50);
    assert_eq!(api.calls(), 200);
}

#[test]
fn answers_are_judged_by_authenticated_audience_and_user() {
    let settings = TokenReviewSettings::new("xds-server", TD);
    let user = |name: &str| {
        Some(UserInfo {
            username: Some(name.to_string()),
            ..UserInfo::default()
        })
    };
    let ok = TokenReviewStatus {
        authenticated: Some(true),
        audiences: Some(vec!["other".into(), "xds-server".into()]),
        user: user("system:serviceaccount:bank:ledger"),
        error: None,
    };
    assert_eq!(judge(ok.clone(), &settings), Ok(id("bank", "ledger")));
    // An API server that does not echo the audience is not trusted with it.
    let no_audience = TokenReviewStatus {
        audiences: None,
        ..ok.clone()
    };
    assert!(matches!(
        judge(no_audience, &settings),
        Err(TokenRejected::Invalid(e)) if e.contains("did not confirm the audience `xds-server`")
    ));
    let not_authenticated = TokenReviewStatus {
        authenticated: None,
        error: None,
        ..ok.clone()
    };
    assert!(matches!(
        judge(not_authenticated, &settings),
        Err(TokenRejected::Invalid(e)) if e.contains("did not authenticate")
    ));
    let node = TokenReviewStatus {
        user: user("system:node:worker-1"),
        ..ok.clone()
    };
    assert_eq!(
        judge(node, &settings),
        Err(TokenRejected::NotServiceAccount(
            "system:node:worker-1".into()
        ))
    );
    let nobody = TokenReviewStatus { user: None, ..ok };
    assert!(matches!(
        judge(nobody, &settings),
        Err(TokenRejected::Invalid(_))
    ));
}

#[test]
fn tokens_are_keyed_by_their_sha256() {
    let hash = token_hash("abc");
    // SHA-256("abc"), FIPS 180-2's example.
    assert_eq!(
        fingerprint(&hash),
        "ba7816bf8f01",
        "the fingerprint is the hash's first 6 bytes"
    );
    assert_ne!(token_hash("abc"), token_hash("abd"));
}
