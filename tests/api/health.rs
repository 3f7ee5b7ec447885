//! Health, reflection (v1 and v1alpha) and probes; an unreachable store answers UNAVAILABLE fast and is not ready
//! while liveness stays up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessionkeeper::domain::Policy;
use sessionkeeper::proto;
use sessionkeeper::store::postgres::{PostgresSettings, PostgresStore};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{StoreHandle, TestApp};
use crate::support::Backend;
use crate::support::fixtures::key;

async fn health_reports_liveness_readiness_and_not_found_for_unknown_services(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.service_status("").await.unwrap(), ServingStatus::Serving);
    assert_eq!(
        app.service_status(proto::SERVICE_NAME).await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        app.service_status(proto::TRANSCRIPT_SERVICE_NAME).await.unwrap(),
        ServingStatus::Serving,
        "the transcripts are served by the same store"
    );
    let err = app.service_status("no.such.Service").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(app.http_get("/livez").await.0, 200);
    assert_eq!(app.http_get("/readyz").await.0, 200);
}

/// Lists the services and fetches the contract's file through one reflection version, with that
/// version's own client (grpcurl before 1.8.8, Postman and k6 speak only v1alpha).
macro_rules! reflect {
    ($version:ident, $channel:expr) => {{
        use prost::Message as _;
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;

        let mut client = ServerReflectionClient::new($channel);
        let requests = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol(proto::SERVICE_NAME.to_owned()),
            MessageRequest::FileContainingSymbol(proto::TRANSCRIPT_SERVICE_NAME.to_owned()),
        ]
        .map(|message_request| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message_request),
        });
        let mut responses = client
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", stringify!($version)))
            .into_inner();
        let mut services = Vec::new();
        let mut files = Vec::new();
        while let Some(response) = responses.message().await.unwrap() {
            match response.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    services.extend(list.service.into_iter().map(|s| s.name));
                }
                Some(MessageResponse::FileDescriptorResponse(found)) => {
                    for bytes in found.file_descriptor_proto {
                        files.push(
                            prost_types::FileDescriptorProto::decode(&bytes[..])
                                .unwrap()
                                .name()
                                .to_owned(),
                        );
                    }
                }
                other => panic!("{}: unexpected reflection response {other:?}", stringify!($version)),
            }
        }
        services.sort();
        (services, files)
    }};
}

async fn reflection_v1_and_v1alpha_list_the_same_services(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let expected = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        proto::SERVICE_NAME,
        proto::TRANSCRIPT_SERVICE_NAME,
    ];
    let (v1_services, v1_files) = reflect!(v1, app.channel.clone());
    let (v1alpha_services, v1alpha_files) = reflect!(v1alpha, app.channel.clone());
    assert_eq!(v1_services, expected, "through grpc.reflection.v1");
    assert_eq!(v1alpha_services, expected, "through grpc.reflection.v1alpha");
    for files in [v1_files, v1alpha_files] {
        assert!(
            files.contains(&"sessionkeeper/v1/session.proto".to_owned()),
            "the contract's file describes the service: {files:?}"
        );
        assert!(
            files.contains(&"sessionkeeper/v1/transcript.proto".to_owned()),
            "the transcript contract's file describes its service: {files:?}"
        );
    }
}

crate::on_both_stores!(
    health_reports_liveness_readiness_and_not_found_for_unknown_services,
    reflection_v1_and_v1alpha_list_the_same_services,
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
        ..PostgresSettings::new("")
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
                ..Default::default()
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
