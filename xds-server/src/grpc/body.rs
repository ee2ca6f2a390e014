//! The HTTP side of an xDS method: requests decoded by tonic's [`Streaming`], responses written by our
//! own body, [`ResponseBody`].
//!
//! tonic's encoder copies every response into a per-stream `BytesMut` that keeps the capacity of the
//! largest message the stream ever sent: the initial CDS and EDS answers, hundreds of KB each, held for
//! the stream's life and growing with the mesh. Our responses already point at the cache's encoded
//! resources ([`wire`](xds_core::protocol::wire)), so the body hands the transport those shared
//! `Bytes` directly, chunk by chunk ([`GrpcChunks`]); nothing per stream outlives the response being
//! sent. h2 queues DATA payloads of 256 bytes or more as they are (it chains them behind the frame
//! header), so the shared bytes are not copied there either.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tonic::codec::{Codec, Streaming};
use tonic::codegen::http;
use tonic::server::StreamingService;
use tonic::{Request, Status};
use xds_core::protocol::wire::{GrpcChunks, GrpcPieces};

use super::{ResponseStream, MAX_REQUEST_BYTES};

const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// gRPC's compression header: we accept uncompressed requests only (as tonic does with no
/// compression enabled), and say so the same way.
const ENCODING_HEADER: &str = "grpc-encoding";
const ACCEPT_ENCODING_HEADER: &str = "grpc-accept-encoding";

/// Serves one streaming call of `method`: what `tonic::server::Grpc::streaming` does, with
/// [`ResponseBody`] in place of tonic's encoder.
pub(super) async fn serve_streaming<S, Req, Resp, B>(
    mut method: S,
    req: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    S: StreamingService<Req, Response = Resp, ResponseStream = ResponseStream<Resp>>,
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + GrpcPieces + Unpin + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    if let Some(encoding) = req.headers().get(ENCODING_HEADER) {
        if encoding.as_bytes() != b"identity" {
            let mut status = Status::unimplemented(format!(
                "Content is compressed with `{}` which isn't supported",
                String::from_utf8_lossy(encoding.as_bytes())
            ));
            status.metadata_mut().insert(
                ACCEPT_ENCODING_HEADER,
                tonic::metadata::MetadataValue::from_static("identity"),
            );
            return status.into_http();
        }
    }
    let decoder = tonic_prost::ProstCodec::<Resp, Req>::default().decoder();
    let request =
        req.map(|body| Streaming::new_request(decoder, body, None, Some(MAX_REQUEST_BYTES)));
    let responses = match method.call(Request::from_http(request)).await {
        Ok(response) => response,
        Err(status) => return status.into_http(),
    };
    let (metadata, responses, extensions) = responses.into_parts();
    let mut http = http::Response::new(tonic::body::Body::new(ResponseBody::new(responses)));
    *http.headers_mut() = metadata.into_headers();
    *http.extensions_mut() = extensions;
    http.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(GRPC_CONTENT_TYPE),
    );
    http
}

/// The response stream of one xDS call as gRPC messages, each sent as the chunks of
/// [`GrpcChunks`], then the call's status as trailers (`grpc-status`, and `grpc-message` for an
/// error), as tonic writes them.
pub(super) struct ResponseBody<R> {
    responses: ResponseStream<R>,
    /// The response being sent; dropped as soon as its last chunk is handed out.
    sending: Option<GrpcChunks<R>>,
    ended: bool,
}

impl<R> ResponseBody<R> {
    pub(super) fn new(responses: ResponseStream<R>) -> Self {
        Self {
            responses,
            sending: None,
            ended: false,
        }
    }
}

fn trailers(status: &Status) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
    let mut headers = http::HeaderMap::with_capacity(3);
    Poll::Ready(Some(
        status
            .add_header(&mut headers)
            .map(|()| Frame::trailers(headers)),
    ))
}

impl<R: GrpcPieces + Unpin + Send + 'static> http_body::Body for ResponseBody<R> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            if let Some(chunks) = &mut this.sending {
                if let Some(chunk) = chunks.next() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                this.sending = None;
            }
            match ready!(this.responses.as_mut().poll_next(cx)) {
                Some(Ok(response)) => this.sending = Some(GrpcChunks::new(response)),
                Some(Err(status)) => {
                    this.ended = true;
                    return trailers(&status);
                }
                None => {
                    this.ended = true;
                    return trailers(&Status::ok(""));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}
