//! When an API call is handled, for `grpc_server_handled_total`: a trailers-only response (every
//! error a handler returns) carries its status in the headers and is handled when it starts; any
//! other response is handled when its body sends the trailers with `grpc-status` (a unary reply
//! after its message, a LoadTranscript stream after its last chunk or the status of a page that
//! failed). A body dropped before its trailers (the client went away) counts as `CANCELLED`.
//! The observer is called exactly once either way.

use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Code;
use tonic::body::Body;
use tonic::codegen::{Bytes, http};

/// The `grpc-status` of a header or trailer map, if it has one.
pub(crate) fn status_in(map: &http::HeaderMap) -> Option<Code> {
    map.get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
}

/// Calls `handled` with the call's status once it is known: now, or when the body ends.
pub(crate) fn on_handled<F>(response: http::Response<Body>, handled: F) -> http::Response<Body>
where
    F: FnOnce(Code) + Send + Unpin + 'static,
{
    if let Some(code) = status_in(response.headers()) {
        handled(code);
        return response;
    }
    if http_body::Body::is_end_stream(response.body()) {
        // No status and nothing to come: the client sees UNKNOWN.
        handled(Code::Unknown);
        return response;
    }
    response.map(|body| {
        Body::new(Watched {
            body,
            handled: Some(handled),
        })
    })
}

/// A response body that reports the status in its trailers.
struct Watched<F: FnOnce(Code)> {
    body: Body,
    /// Taken when the status is reported: it is reported once.
    handled: Option<F>,
}

impl<F: FnOnce(Code)> Watched<F> {
    fn report(&mut self, code: Code) {
        if let Some(handled) = self.handled.take() {
            handled(code);
        }
    }
}

impl<F: FnOnce(Code) + Unpin> http_body::Body for Watched<F> {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    // Trailers without a status break the protocol: the client sees UNKNOWN.
                    this.report(status_in(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(status))) => this.report(status.code()),
            Poll::Ready(None) => this.report(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<F: FnOnce(Code)> Drop for Watched<F> {
    fn drop(&mut self) {
        self.report(Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;

    use super::*;

    fn recorder() -> (Arc<Mutex<Vec<Code>>>, impl FnOnce(Code) + Send + Unpin + 'static) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        (seen, move |code| sink.lock().unwrap().push(code))
    }

    #[tokio::test]
    async fn a_trailers_only_response_is_handled_when_it_starts() {
        let (seen, record) = recorder();
        let response = on_handled(tonic::Status::unavailable("down").into_http(), record);
        assert_eq!(*seen.lock().unwrap(), [Code::Unavailable]);
        drop(response);
        assert_eq!(*seen.lock().unwrap(), [Code::Unavailable], "once");
    }

    #[tokio::test]
    async fn a_streamed_response_is_handled_with_the_status_of_its_trailers() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
        let frames = vec![
            Ok::<_, tonic::Status>(http_body::Frame::data(Bytes::from_static(b"chunk"))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        let body = Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)));
        let (seen, record) = recorder();
        let response = on_handled(http::Response::new(body), record);
        assert!(seen.lock().unwrap().is_empty(), "not before the stream ends");
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
        assert_eq!(*seen.lock().unwrap(), [Code::Unavailable]);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_trailers_is_cancelled() {
        let frames = vec![Ok::<_, tonic::Status>(http_body::Frame::data(Bytes::from_static(
            b"chunk",
        )))];
        let body = Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)));
        let (seen, record) = recorder();
        let mut body = on_handled(http::Response::new(body), record).into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(*seen.lock().unwrap(), [Code::Cancelled]);
    }
}
