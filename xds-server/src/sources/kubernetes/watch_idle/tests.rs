use super::*;
use http_body::Frame;

/// A body whose frames are sent by the test, one at a time.
struct Channel(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

impl Body for Channel {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn watched(timeout: Duration) -> Option<Watched> {
    Some(Watched {
        path: "/api/v1/pods".into(),
        timeout,
        source: "kubernetes".into(),
    })
}

async fn next(body: &mut Pin<Box<IdleBody<Channel>>>) -> Option<Result<Bytes, String>> {
    futures::future::poll_fn(|cx| body.as_mut().poll_frame(cx))
        .await
        .map(|f| f.map(|f| f.into_data().unwrap()).map_err(|e| e.to_string()))
}

#[test]
fn only_watch_requests_are_watches() {
    let uri = |s: &str| s.parse::<http::Uri>().unwrap();
    assert!(is_watch(&uri(
        "/api/v1/pods?allowWatchBookmarks=true&watch=true"
    )));
    assert!(is_watch(&uri("/api/v1/pods?watch=1")));
    assert!(!is_watch(&uri("/api/v1/pods?limit=500")));
    assert!(!is_watch(&uri("/api/v1/pods?watch=false")));
    assert!(!is_watch(&uri("/api/v1/pods")));
}

/// Bytes (events and bookmarks alike) keep a watch alive; silence for the timeout ends it with an
/// error, after which the body is over.
#[tokio::test(start_paused = true)]
async fn a_watch_body_fails_after_the_idle_timeout_and_every_frame_restarts_the_clock() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut body = Box::pin(IdleBody::new(Channel(rx), watched(Duration::from_secs(10))));
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(8)).await;
        tx.send(Bytes::from_static(b"{\"type\":\"BOOKMARK\"}\n"))
            .unwrap();
        assert!(matches!(next(&mut body).await, Some(Ok(_))));
    }
    let started = Instant::now();
    let ended = next(&mut body).await;
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    let error = ended.unwrap().unwrap_err();
    assert!(error.contains("silent for 10s"), "{error}");
    assert!(next(&mut body).await.is_none(), "over after the error");
    assert!(body.is_end_stream());
}

#[tokio::test(start_paused = true)]
async fn other_bodies_have_no_timeout() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut body = Box::pin(IdleBody::new(Channel(rx), None));
    let waited = tokio::time::timeout(Duration::from_secs(3600), next(&mut body)).await;
    assert!(waited.is_err(), "still waiting after an hour");
    tx.send(Bytes::from_static(b"{}")).unwrap();
    assert!(matches!(next(&mut body).await, Some(Ok(_))));
}
