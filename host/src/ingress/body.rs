//! The request body as the guest reads it, cut off at the app's `max_body`.
//! When the limit is passed the guest's read fails and the shared flag is set, so
//! the ingress answers 413 whatever the guest does next; a body that breaks its
//! framing (a malformed chunk) likewise makes the answer 400, not whatever the
//! guest made of the part it got.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, SizeHint};
use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll},
};

pub struct LimitedBody {
    inner: BoxBody<Bytes, hyper::Error>,
    remaining: u64,
    fault: BodyFault,
}

/// What went wrong with a request body, shared with the ingress.
#[derive(Clone, Default)]
pub struct BodyFault(Arc<AtomicU8>);

const TOO_LARGE: u8 = 1;
const MALFORMED: u8 = 2;

impl BodyFault {
    fn set(&self, fault: u8) {
        let _ = self
            .0
            .compare_exchange(0, fault, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The host's answer when the body went wrong, whatever the guest answered.
    pub fn response(&self) -> Option<super::invoke::Response> {
        match self.0.load(Ordering::Acquire) {
            TOO_LARGE => Some(super::invoke::plain(413, "request body too large\n")),
            MALFORMED => Some(super::invoke::plain(400, "malformed request body\n")),
            _ => None,
        }
    }
}

impl LimitedBody {
    pub fn new(inner: BoxBody<Bytes, hyper::Error>, limit: u64) -> (Self, BodyFault) {
        let fault = BodyFault::default();
        (
            Self {
                inner,
                remaining: limit,
                fault: fault.clone(),
            },
            fault,
        )
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.remaining {
                        self.fault.set(TOO_LARGE);
                        return Poll::Ready(Some(Err(
                            wasmtime_wasi_http::Error::HttpRequestBodySize(None),
                        )));
                    }
                    self.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                // A client gone mid-body gets no answer anyway; anything else
                // (a bad chunk size, a missing CRLF) is the client's error.
                if !err.is_incomplete_message() {
                    self.fault.set(MALFORMED);
                }
                Poll::Ready(Some(Err(err.into())))
            }
            other => other.map(|_| None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Bodies up to this size are sent in one piece when the guest finishes them
/// within [`COALESCE_WAIT`].
const COALESCE_LIMIT: usize = 64 * 1024;
/// How long the head may wait for a small body: long enough for a guest that
/// writes its body right after the head, short enough to be invisible for a
/// streaming response (server-sent events, long polls).
const COALESCE_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

type OutgoingBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Sends a small, promptly finished guest body in one write with a
/// `Content-Length`, instead of head, chunk and end-of-body separately; any other
/// body is streamed on unchanged, with what was read so far in front.
pub async fn coalesce(response: hyper::Response<OutgoingBody>) -> hyper::Response<OutgoingBody> {
    use http_body_util::BodyExt as _;
    let (mut parts, mut body) = response.into_parts();
    let mut buffered = bytes::BytesMut::new();
    let mut pending = None;
    let wait = tokio::time::sleep(COALESCE_WAIT);
    tokio::pin!(wait);
    loop {
        tokio::select! {
            // The body first: when it is already complete (the usual case) the
            // timer is never polled, so never registered.
            biased;
            frame = body.frame() => match frame {
                None => {
                    let status = parts.status.as_u16();
                    let bodiless = status == 204 || status == 304 || status < 200;
                    if !bodiless && !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
                        parts.headers.insert(http::header::CONTENT_LENGTH, buffered.len().into());
                    }
                    let full = http_body_util::Full::new(buffered.freeze()).map_err(|never| match never {});
                    return hyper::Response::from_parts(parts, full.boxed_unsync());
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        buffered.extend_from_slice(&data);
                        if buffered.len() > COALESCE_LIMIT {
                            break;
                        }
                    }
                    Err(trailers) => {
                        pending = Some(Ok(trailers));
                        break;
                    }
                },
                Some(Err(err)) => {
                    pending = Some(Err(err));
                    break;
                }
            },
            () = &mut wait => break,
        }
    }
    let mut prefix = Vec::with_capacity(2);
    if !buffered.is_empty() {
        prefix.push(Ok(Frame::data(buffered.freeze())));
    }
    prefix.extend(pending);
    let rest = http_body_util::BodyStream::new(body);
    let stream = futures::stream::StreamExt::chain(futures::stream::iter(prefix), rest);
    hyper::Response::from_parts(
        parts,
        http_body_util::StreamBody::new(stream).boxed_unsync(),
    )
}
