//! Health, reflection and probes; an unreachable store answers UNAVAILABLE fast and is not ready
//! while liveness stays up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessionkeeper::domain::Policy;
use sessionkeeper::proto;
use sessionkeeper::store::postgres::{PostgresSettings, PostgresStore};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{Backend, StoreHandle, TestApp, key};

async fn health_reports_liveness_readiness_and_not_found_for_unknown_services(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.service_status("").await.unwrap(), ServingStatus::Serving);
    assert_eq!(
        app.service_status(proto::SERVICE_NAME).await.unwrap(),
        ServingStatus::Serving
    );
    let err = app.service_status("no.such.Service").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(app.http_get("/livez").await.0, 200);
    assert_eq!(app.http_get("/readyz").await.0, 200);
}

async fn reflection_lists_the_session_service(backend: Backend) {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let app = TestApp::spawn(backend).await;
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().expect("a reflection response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&proto::SERVICE_NAME.to_string()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");
}

crate::on_both_stores!(
    health_reports_liveness_readiness_and_not_found_for_unknown_services,
    reflection_lists_the_session_service,
);

/// Postgres down (nothing listens on the port): every call is UNAVAILABLE within 2 s, readiness
/// is off, liveness stays on (pods must not be restarted for a database outage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_is_unavailable_within_2_seconds_and_not_ready_but_live() {
    let url = "postgres://postgres@127.0.0.1:1/sessionkeeper".to_string();
    let store = PostgresStore::connect_lazy(&PostgresSettings {
        url: url.clone(),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(1),
    })
    .unwrap();
    let handle = StoreHandle {
        store: Arc::new(store),
        dir: None,
        database_url: Some(url),
        backend: Backend::Postgres,
    };
    let app = TestApp::start(handle, Policy::default(), crate::support::t0()).await;
    for _ in 0..3 {
        let started = Instant::now();
        let err = app
            .client
            .clone()
            .get(proto::GetRequest {
                key: Some(key("down")),
                binding: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        assert!(
            !err.message().contains("127.0.0.1"),
            "no internal detail leaks: {}",
            err.message()
        );
    }
    assert_eq!(app.service_status("").await.unwrap(), ServingStatus::Serving);
    assert_eq!(
        app.service_status(proto::SERVICE_NAME).await.unwrap(),
        ServingStatus::NotServing
    );
    assert_eq!(app.http_get("/livez").await.0, 200);
    assert_eq!(app.http_get("/readyz").await.0, 503);
}
