//! The HTTP side of an xDS method: requests decoded by [`RequestStream`], responses written by
//! [`ResponseBody`]; both in place of tonic's codec, whose buffers keep the size of the largest
//! message a stream ever carried.
//!
//! tonic's encoder copies every response into a per-stream `BytesMut` that keeps the capacity of the
//! largest message the stream ever sent: the initial CDS and EDS answers, hundreds of KB each, held for
//! the stream's life and growing with the mesh. Our responses already point at the cache's encoded
//! resources ([`wire`](xds_core::protocol::wire)), so the body hands the transport those shared
//! `Bytes` directly, chunk by chunk ([`GrpcChunks`]); nothing per stream outlives the response being
//! sent. h2 queues DATA payloads of 256 bytes or more as they are (it chains them behind the frame
//! header), so the shared bytes are not copied there either.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body as _, Frame};
use tonic::codegen::http;
use tonic::{Request, Response, Status};
use xds_core::protocol::wire::{GrpcChunks, GrpcPieces};

use super::{ResponseStream, MAX_REQUEST_BYTES};

const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// gRPC's compression header: we accept uncompressed requests only (as tonic does with no
/// compression enabled), and say so the same way.
const ENCODING_HEADER: &str = "grpc-encoding";
const ACCEPT_ENCODING_HEADER: &str = "grpc-accept-encoding";

/// One xDS method (SotW or Delta): opens the stream's task for a request stream.
pub(super) trait XdsMethod: Send + 'static {
    type Req: prost::Message + Default + Send + 'static;
    type Resp: GrpcPieces + Unpin + Send + 'static;
    fn call(
        self,
        request: Request<RequestStream<Self::Req>>,
    ) -> tonic::codegen::BoxFuture<Response<ResponseStream<Self::Resp>>, Status>;
}

/// Serves one streaming call of `method`: what `tonic::server::Grpc::streaming` does, with
/// [`RequestStream`] and [`ResponseBody`] in place of tonic's codec.
pub(super) async fn serve_streaming<S, B>(
    method: S,
    req: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    S: XdsMethod,
    B: http_body::Body<Data = Bytes> + Send + 'static,
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
    let request = req.map(|body| RequestStream::new(tonic::body::Body::new(body)));
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

/// gRPC's message prefix: a compression flag and a big-endian length.
const PREFIX_BYTES: usize = 5;

/// The requests of one xDS call, decoded from the request body's gRPC messages, at most
/// [`MAX_REQUEST_BYTES`] each (tonic's refusals and statuses for a bad message). Between messages
/// nothing is kept: the buffer a message was gathered in goes with it, so one large request (an ACK
/// listing every name) does not leave its size behind for the stream's life.
pub(super) struct RequestStream<T> {
    /// In a `Mutex` only to be `Sync` (the request is borrowed across awaits before the stream's task
    /// takes it); only ever reached through `get_mut`, which does not lock.
    body: std::sync::Mutex<tonic::body::Body>,
    buf: BytesMut,
    ended: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T> RequestStream<T> {
    pub(super) fn new(body: tonic::body::Body) -> Self {
        Self {
            body: std::sync::Mutex::new(body),
            buf: BytesMut::new(),
            ended: false,
            _message: PhantomData,
        }
    }
}

impl<T: prost::Message + Default> RequestStream<T> {
    /// The next whole message in the buffer, if there is one.
    fn decode_next(&mut self) -> Result<Option<T>, Status> {
        if self.buf.len() < PREFIX_BYTES {
            return Ok(None);
        }
        match self.buf[0] {
            0 => {}
            1 => {
                return Err(Status::internal(
                    "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                ))
            }
            flag => {
                return Err(Status::internal(format!(
                    "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1) while receiving request"
                )))
            }
        }
        let len =
            u32::from_be_bytes(self.buf[1..PREFIX_BYTES].try_into().expect("4 bytes")) as usize;
        if len > MAX_REQUEST_BYTES {
            return Err(Status::out_of_range(format!(
                "Error, decoded message length too large: found {len} bytes, the limit is: {MAX_REQUEST_BYTES} bytes"
            )));
        }
        if self.buf.len() < PREFIX_BYTES + len {
            self.buf.reserve(PREFIX_BYTES + len - self.buf.len());
            return Ok(None);
        }
        let mut message = self.buf.split_to(PREFIX_BYTES + len);
        if self.buf.is_empty() {
            // Let the allocation go with `message` (see the type's comment).
            self.buf = BytesMut::new();
        }
        message.advance(PREFIX_BYTES);
        T::decode(message.freeze())
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl<T: prost::Message + Default> futures::Stream for RequestStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.decode_next() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(status) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
            }
            let body = this.body.get_mut().unwrap_or_else(|e| e.into_inner());
            match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(status)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
                None => {
                    this.ended = true;
                    if !this.buf.is_empty() {
                        return Poll::Ready(Some(Err(Status::internal(
                            "Unexpected EOF decoding stream.",
                        ))));
                    }
                }
            }
        }
    }
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
