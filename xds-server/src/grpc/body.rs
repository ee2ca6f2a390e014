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

/// One xDS method (SotW or Delta): opens the stream's loop for a request stream.
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
    /// In a `Mutex` only to be `Sync` (the request is borrowed across awaits before the stream's loop
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

/// The length of the gRPC message at the start of `buf` (prefix included), once its prefix is
/// there: `Ok(None)` until then. A compressed or oversized message is refused as tonic refuses it.
fn message_len(buf: &[u8]) -> Result<Option<usize>, Status> {
    let Some(prefix) = buf.get(..PREFIX_BYTES) else {
        return Ok(None);
    };
    match prefix[0] {
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
    let len = u32::from_be_bytes(prefix[1..].try_into().expect("4 bytes")) as usize;
    if len > MAX_REQUEST_BYTES {
        return Err(Status::out_of_range(format!(
            "Error, decoded message length too large: found {len} bytes, the limit is: {MAX_REQUEST_BYTES} bytes"
        )));
    }
    Ok(Some(PREFIX_BYTES + len))
}

fn decode<T: prost::Message + Default>(mut message: Bytes) -> Result<T, Status> {
    message.advance(PREFIX_BYTES);
    T::decode(message).map_err(|e| Status::internal(e.to_string()))
}

impl<T: prost::Message + Default> RequestStream<T> {
    /// The next whole message in the buffer, if there is one.
    fn decode_next(&mut self) -> Result<Option<T>, Status> {
        let Some(len) = message_len(&self.buf)? else {
            return Ok(None);
        };
        if self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            return Ok(None);
        }
        let message = self.buf.split_to(len);
        if self.buf.is_empty() {
            // Let the allocation go with `message` (see the type's comment).
            self.buf = BytesMut::new();
        }
        decode(message.freeze()).map(Some)
    }

    /// A frame that starts with a whole message, when nothing is buffered (an ACK is usually one
    /// DATA frame): the message is decoded from the frame's own bytes, not copied first (the names
    /// of a SotW ACK then stay a slice of it, see `SotwRequest`). What follows it is buffered.
    fn decode_frame(&mut self, data: &mut Bytes) -> Result<Option<T>, Status> {
        if !self.buf.is_empty() {
            return Ok(None);
        }
        match message_len(data)? {
            Some(len) if data.len() >= len => decode(data.split_to(len)).map(Some),
            _ => Ok(None),
        }
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
            // A message from what is buffered, else from the next frame (decoded in place when it
            // holds one whole), else more to read; a refusal ends the stream.
            let step = match this.decode_next() {
                Ok(None) => {
                    let body = this.body.get_mut().unwrap_or_else(|e| e.into_inner());
                    match ready!(Pin::new(body).poll_frame(cx)) {
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(mut data) => {
                                let whole = this.decode_frame(&mut data);
                                this.buf.extend_from_slice(&data);
                                whole
                            }
                            Err(_) => Ok(None), // trailers
                        },
                        Some(Err(status)) => Err(status),
                        None => {
                            this.ended = true;
                            if this.buf.is_empty() {
                                Ok(None)
                            } else {
                                Err(Status::internal("Unexpected EOF decoding stream."))
                            }
                        }
                    }
                }
                decoded => decoded,
            };
            match step {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(status) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(status)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use futures::StreamExt;
    use prost::Message;
    use std::collections::VecDeque;

    /// A request body that hands out the given DATA frames, then ends.
    struct Frames(VecDeque<Bytes>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Status;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(|d| Ok(Frame::data(d))))
        }
    }

    fn grpc_message(nonce: &str) -> Vec<u8> {
        let body = DiscoveryRequest {
            response_nonce: nonce.into(),
            resource_names: (0..20).map(|i| format!("outbound|80||s{i}.ns")).collect(),
            ..DiscoveryRequest::default()
        }
        .encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    async fn decoded(frames: Vec<Vec<u8>>) -> Vec<Result<String, Status>> {
        let body = Frames(frames.into_iter().map(Bytes::from).collect());
        RequestStream::<DiscoveryRequest>::new(tonic::body::Body::new(body))
            .map(|r| r.map(|req| req.response_nonce))
            .collect()
            .await
    }

    #[tokio::test]
    async fn messages_whole_split_and_shared_between_frames_decode_in_order() {
        let (a, b, c, d) = (
            grpc_message("a"),
            grpc_message("b"),
            grpc_message("c"),
            grpc_message("d"),
        );
        // a and half of b in one frame, the rest of b, c whole, d in three pieces.
        let mut first = a.clone();
        first.extend_from_slice(&b[..b.len() / 2]);
        let frames = vec![
            first,
            b[b.len() / 2..].to_vec(),
            c.clone(),
            d[..3].to_vec(),
            d[3..10].to_vec(),
            d[10..].to_vec(),
        ];
        let got: Vec<String> = decoded(frames)
            .await
            .into_iter()
            .map(|r| r.expect("decodes"))
            .collect();
        assert_eq!(got, ["a", "b", "c", "d"]);
        // Two messages in one frame.
        let mut both = a.clone();
        both.extend_from_slice(&c);
        let got: Vec<String> = decoded(vec![both])
            .await
            .into_iter()
            .map(|r| r.expect("decodes"))
            .collect();
        assert_eq!(got, ["a", "c"]);
    }

    #[tokio::test]
    async fn a_cut_off_an_oversized_or_a_compressed_message_is_refused() {
        let a = grpc_message("a");
        let cut = decoded(vec![a[..a.len() - 1].to_vec()]).await;
        assert_eq!(cut.len(), 1);
        assert!(cut[0].as_ref().unwrap_err().message().contains("EOF"));

        let mut big = vec![0];
        big.extend_from_slice(&((MAX_REQUEST_BYTES + 1) as u32).to_be_bytes());
        let over = decoded(vec![big]).await;
        let status = over[0].as_ref().unwrap_err();
        assert_eq!(status.code(), tonic::Code::OutOfRange);
        assert!(status.message().contains(&MAX_REQUEST_BYTES.to_string()));

        let mut compressed = a.clone();
        compressed[0] = 1;
        let refused = decoded(vec![a.clone(), compressed]).await;
        assert_eq!(refused[0].as_ref().unwrap(), "a");
        assert!(refused[1]
            .as_ref()
            .unwrap_err()
            .message()
            .contains("compressed-flag"));
        assert_eq!(refused.len(), 2, "nothing after a refused message");
    }
}
