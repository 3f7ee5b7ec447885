//! `--max-connection-age`: the server closes client connections after this age (gracefully), so
//! clients reconnect and rebalance across replicas after scaling.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use sessionkeeper::domain::Policy;
use sessionkeeper::proto::session_service_client::SessionServiceClient;
use tonic::transport::Endpoint;

use crate::helpers::{TestApp, new_store, test_config};
use crate::support::Backend;
use crate::support::fixtures::key;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_older_than_max_connection_age_are_recycled_without_failing_calls() {
    let handle = new_store(Backend::Sqlite).await;
    let mut config = test_config(&handle, Policy::default());
    config.max_connection_age = Some(Duration::from_millis(500));
    let app = TestApp::start_with_config(handle, config, crate::support::t0()).await;
    app.wait_until_ready().await;

    // A channel that counts the TCP connections it opens.
    let opened = Arc::new(AtomicUsize::new(0));
    let addr = app.grpc_addr;
    let counter = opened.clone();
    let channel = Endpoint::from_static("http://sessionkeeper.test")
        .connect_with_connector(tower::service_fn(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { tokio::net::TcpStream::connect(addr).await.map(TokioIo::new) }
        }))
        .await
        .unwrap();
    let mut client = SessionServiceClient::new(channel);
    let get = || sessionkeeper::proto::GetRequest {
        key: Some(key("aged")),
        binding: None,
        ..Default::default()
    };
    for _ in 0..20 {
        client
            .get(get())
            .await
            .expect("calls never fail while connections are recycled");
        // Measures time passing: calls spread over two seconds, so that connections age out.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connections = opened.load(Ordering::SeqCst);
    assert!(
        connections >= 3,
        "2 s of calls with a 500 ms age opened {connections} connections"
    );
}
