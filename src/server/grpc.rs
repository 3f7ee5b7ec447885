//! The `SessionService` handlers: decode and validate (convert), call the lifecycle service,
//! encode. No rule and no SQL lives here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::{AccessDenied, Caller};
use super::convert;
use crate::metrics::SweepTrigger;
use crate::proto::{self, session_service_server::SessionService};
use crate::service::Lifecycle;
use crate::sweeper::SweepScope;

/// Checks the namespace against the caller's token; without a tokens file there is no caller
/// and every namespace is open.
pub(super) fn authorize(caller: Option<&Caller>, namespace: &str) -> Result<(), AccessDenied> {
    match caller {
        Some(caller) if !caller.may_access(namespace) => Err(AccessDenied {
            caller: caller.name.to_string(),
            what: format!("namespace {namespace:?}"),
        }),
        _ => Ok(()),
    }
}

/// A sweep of every namespace needs a token that covers every namespace.
fn authorize_sweep(caller: Option<&Caller>, scope: &SweepScope) -> Result<(), AccessDenied> {
    match (caller, &scope.namespace) {
        (Some(caller), None) if !caller.covers_all() => Err(AccessDenied {
            caller: caller.name.to_string(),
            what: "every namespace (set a namespace filter)".into(),
        }),
        (caller, Some(namespace)) => authorize(caller, namespace),
        _ => Ok(()),
    }
}

#[derive(Debug, Clone)]
pub struct SessionApi {
    lifecycle: Arc<Lifecycle>,
}

impl SessionApi {
    pub fn new(lifecycle: Arc<Lifecycle>) -> Self {
        SessionApi { lifecycle }
    }
}

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn get(&self, request: Request<proto::GetRequest>) -> Result<Response<proto::GetResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let request = request.into_inner();
        let key = convert::session_key(request.key)?;
        authorize(caller.as_ref(), key.namespace())?;
        let binding = convert::binding(request.binding)?;
        let transcript_project_key = convert::optional_project_key(&request.transcript_project_key)?;
        let answer = self
            .lifecycle
            .get(&key, &binding, transcript_project_key.as_deref())
            .await?;
        Ok(Response::new(convert::get_response(answer)))
    }

    async fn report_result(
        &self,
        request: Request<proto::ReportResultRequest>,
    ) -> Result<Response<proto::ReportResultResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let report = convert::report(request.into_inner())?;
        authorize(caller.as_ref(), report.key.namespace())?;
        let outcome = self.lifecycle.report(report).await?;
        Ok(Response::new(convert::report_response(outcome)))
    }

    async fn sweep(&self, request: Request<proto::SweepRequest>) -> Result<Response<proto::SweepResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let request = request.into_inner();
        let scope = convert::sweep_scope(&request)?;
        authorize_sweep(caller.as_ref(), &scope)?;
        let summary = self.lifecycle.sweep(&scope, request.dry_run, SweepTrigger::Rpc).await?;
        Ok(Response::new(convert::sweep_response(summary)))
    }

    async fn inspect(
        &self,
        request: Request<proto::InspectRequest>,
    ) -> Result<Response<proto::InspectResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let key = convert::session_key(request.into_inner().key)?;
        authorize(caller.as_ref(), key.namespace())?;
        let inspection = self.lifecycle.inspect(&key).await?;
        Ok(Response::new(convert::inspect_response(inspection)))
    }

    async fn forget(&self, request: Request<proto::ForgetRequest>) -> Result<Response<proto::ForgetResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let key = convert::session_key(request.into_inner().key)?;
        authorize(caller.as_ref(), key.namespace())?;
        let forgotten = self.lifecycle.forget(&key).await?;
        Ok(Response::new(convert::forget_response(forgotten)))
    }
}
