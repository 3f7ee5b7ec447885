//! The `SessionService` handlers: decode and validate (convert), call the lifecycle service,
//! encode. No rule and no SQL lives here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::metrics::SweepTrigger;
use crate::proto::{self, session_service_server::SessionService};
use crate::service::Lifecycle;

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
        let request = request.into_inner();
        let key = convert::session_key(request.key)?;
        let binding = convert::binding(request.binding)?;
        let answer = self.lifecycle.get(&key, &binding).await?;
        Ok(Response::new(convert::get_response(answer)))
    }

    async fn report_result(
        &self,
        request: Request<proto::ReportResultRequest>,
    ) -> Result<Response<proto::ReportResultResponse>, Status> {
        let report = convert::report(request.into_inner())?;
        let outcome = self.lifecycle.report(report).await?;
        Ok(Response::new(convert::report_response(outcome)))
    }

    async fn sweep(&self, request: Request<proto::SweepRequest>) -> Result<Response<proto::SweepResponse>, Status> {
        let request = request.into_inner();
        let scope = convert::sweep_scope(&request)?;
        let summary = self.lifecycle.sweep(&scope, request.dry_run, SweepTrigger::Rpc).await?;
        Ok(Response::new(convert::sweep_response(summary)))
    }

    async fn forget(&self, request: Request<proto::ForgetRequest>) -> Result<Response<proto::ForgetResponse>, Status> {
        let key = convert::session_key(request.into_inner().key)?;
        let existed = self.lifecycle.forget(&key).await?;
        Ok(Response::new(proto::ForgetResponse { existed }))
    }
}
