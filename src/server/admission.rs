//! Overload protection: a global limit on SessionService calls in flight. A call over the limit
//! is answered at once with `RESOURCE_EXHAUSTED` instead of queueing (queueing only adds latency
//! when the database is the bottleneck). Health and reflection calls are never shed, so probes
//! keep answering under overload.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::codegen::http;

use crate::proto::SERVICE_NAME;

#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    permits: Arc<Semaphore>,
}

impl AdmissionLayer {
    pub fn new(max_in_flight: usize) -> Self {
        AdmissionLayer {
            permits: Arc::new(Semaphore::new(max_in_flight)),
        }
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            permits: self.permits.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Admission<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

fn is_session_call(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .is_some_and(|(service, _)| service == SERVICE_NAME)
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Admission<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !is_session_call(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let shed =
                tonic::Status::resource_exhausted("server overloaded: too many calls in flight, retry with backoff");
            return Box::pin(std::future::ready(Ok(shed.into_http())));
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_session_service_calls_are_limited() {
        assert!(is_session_call("/sessionkeeper.v1.SessionService/Get"));
        assert!(!is_session_call("/grpc.health.v1.Health/Check"));
        assert!(!is_session_call(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
    }
}
