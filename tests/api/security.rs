//! Access and transport security through the real thing: bearer tokens per namespace, TLS and
//! mutual TLS with certificates generated here (rcgen), and SIGHUP reloads of both on the real
//! binary without dropping connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use sessionkeeper::app::Application;
use sessionkeeper::clock::ManualClock;
use sessionkeeper::config::Settings;
use sessionkeeper::domain::Policy;
use sessionkeeper::proto::session_service_client::SessionServiceClient;
use sessionkeeper::proto::{self, Decision};
use sessionkeeper::server::auth::token_digest;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::binary::Server;
use crate::helpers::{new_store, test_config_with};
use crate::support::Backend;
use crate::support::fixtures::{key, report_request, success};
use crate::support::wait::wait_until;

const ACME_TOKEN: &str = "tok-acme-0a1b2c3d";
const OPS_TOKEN: &str = "tok-ops-9z8y7x";

fn write_tokens(path: &Path, tokens: &[(&str, &str, &[&str])]) {
    let mut text = String::new();
    for (name, token, namespaces) in tokens {
        let namespaces: Vec<String> = namespaces.iter().map(|n| format!("{n:?}")).collect();
        text.push_str(&format!(
            "[[tokens]]\nname = {name:?}\nsha256 = {:?}\nnamespaces = [{}]\n\n",
            token_digest(token),
            namespaces.join(", ")
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// Starts the real application with `extra` settings; returns its gRPC address.
async fn serve(extra: Settings) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let handle = new_store(Backend::Sqlite).await;
    let config = test_config_with(&handle, Policy::default(), extra);
    let clock = Arc::new(ManualClock::new(crate::support::t0()));
    let app = Application::build(config, handle.store.clone(), clock)
        .await
        .expect("build");
    let addr = app.grpc_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _keep_dir = handle.dir;
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
    });
    (addr, stop)
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {token}")).unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn get_request(namespace: &str) -> proto::GetRequest {
    proto::GetRequest {
        key: Some(proto::SessionKey {
            namespace: namespace.into(),
            ..key("c")
        }),
        binding: None,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_limit_each_caller_to_its_namespaces_and_health_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    write_tokens(
        &tokens,
        &[("acme-prod", ACME_TOKEN, &["acme"]), ("ops", OPS_TOKEN, &["*"])],
    );
    let (addr, _stop) = serve(Settings {
        auth_tokens: Some(tokens),
        ..Settings::default()
    })
    .await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = SessionServiceClient::new(channel.clone());

    let code = |r: Result<tonic::Response<proto::GetResponse>, tonic::Status>| {
        r.map(|_| Code::Ok).unwrap_or_else(|s| s.code())
    };
    assert_eq!(
        code(client.get(with_token(get_request("acme"), None)).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(client.get(with_token(get_request("acme"), Some("nope"))).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(client.get(with_token(get_request("acme"), Some(ACME_TOKEN))).await),
        Code::Ok
    );
    assert_eq!(
        code(client.get(with_token(get_request("globex"), Some(ACME_TOKEN))).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(client.get(with_token(get_request(""), Some(ACME_TOKEN))).await),
        Code::PermissionDenied,
        "an empty namespace is \"default\" before the access check"
    );
    assert_eq!(
        code(client.get(with_token(get_request("globex"), Some(OPS_TOKEN))).await),
        Code::Ok
    );

    // Writes are checked the same way, and a refused report stores nothing.
    let mut report = report_request(
        &proto::SessionKey {
            namespace: "globex".into(),
            ..key("c")
        },
        "",
        success("s1", 1),
        "",
    );
    let err = client
        .report_result(with_token(report.clone(), Some(ACME_TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("acme-prod") && !err.message().contains(ACME_TOKEN),
        "{}",
        err.message()
    );
    let d = client
        .get(with_token(get_request("globex"), Some(OPS_TOKEN)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.decision(), Decision::StartFresh);
    report.key.as_mut().unwrap().namespace = "acme".into();
    client
        .report_result(with_token(report, Some(ACME_TOKEN)))
        .await
        .unwrap();

    let forget = proto::ForgetRequest {
        key: Some(proto::SessionKey {
            namespace: "globex".into(),
            ..key("c")
        }),
    };
    assert_eq!(
        client
            .forget(with_token(forget, Some(ACME_TOKEN)))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // Inspect: the same namespace rule (issue 19).
    let inspect = |namespace: &str| proto::InspectRequest {
        key: Some(proto::SessionKey {
            namespace: namespace.into(),
            ..key("c")
        }),
    };
    assert_eq!(
        client
            .inspect(with_token(inspect("globex"), Some(ACME_TOKEN)))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        client
            .inspect(with_token(inspect("acme"), None))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let seen = client
        .inspect(with_token(inspect("acme"), Some(ACME_TOKEN)))
        .await
        .expect("inspect in the token's namespace")
        .into_inner();
    assert!(seen.session.is_some(), "the row the report above stored");

    // A sweep of every namespace needs a token for every namespace.
    let all = proto::SweepRequest::default();
    assert_eq!(
        client
            .sweep(with_token(all.clone(), Some(ACME_TOKEN)))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let acme_only = proto::SweepRequest {
        namespace: "acme".into(),
        ..Default::default()
    };
    client.sweep(with_token(acme_only, Some(ACME_TOKEN))).await.unwrap();
    client.sweep(with_token(all, Some(OPS_TOKEN))).await.unwrap();

    // Probes need no token.
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: proto::SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, 1, "SERVING without a token");
}

/// A CA, and leaf certificates it signs (files in `dir`).
struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test ca"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), ca.pem()).unwrap();
        Pki {
            dir: dir.to_owned(),
            ca,
        }
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// Writes `<name>.pem` and `<name>.key` for the names, signed by this CA.
    fn leaf(&self, name: &str, subject_alt_names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(subject_alt_names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<(&Path, &Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn get_works(channel: Channel) -> Result<(), tonic::Status> {
    SessionServiceClient::new(channel)
        .get(get_request("acme"))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_trusting_clients_and_mutual_tls_refuses_clients_without_a_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server_pki = Pki::new(dir.path(), "server");
    let (cert, key_file) = server_pki.leaf("server", &["localhost", "127.0.0.1"]);
    let client_pki = Pki::new(dir.path(), "clients");
    let (client_cert, client_key) = client_pki.leaf("orchestrator", &["orchestrator"]);
    let rogue_pki = Pki::new(dir.path(), "rogue");
    let (rogue_cert, rogue_key) = rogue_pki.leaf("rogue", &["rogue"]);

    // TLS only.
    let (addr, _stop) = serve(Settings {
        tls_cert: Some(cert.clone()),
        tls_key: Some(key_file.clone()),
        ..Settings::default()
    })
    .await;
    get_works(tls_channel(addr, &server_pki.ca_pem(), None).await.unwrap())
        .await
        .unwrap();
    let plaintext = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await;
    if let Ok(channel) = plaintext {
        assert!(
            get_works(channel).await.is_err(),
            "a plaintext client is not served on a TLS port"
        );
    }

    // Mutual TLS.
    let (addr, _stop) = serve(Settings {
        tls_cert: Some(cert),
        tls_key: Some(key_file),
        tls_client_ca: Some(dir.path().join("clients-ca.pem")),
        ..Settings::default()
    })
    .await;
    get_works(
        tls_channel(addr, &server_pki.ca_pem(), Some((&client_cert, &client_key)))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    for identity in [None, Some((rogue_cert.as_path(), rogue_key.as_path()))] {
        let refused = match tls_channel(addr, &server_pki.ca_pem(), identity).await {
            Ok(channel) => get_works(channel).await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "a client with {identity:?} is refused");
    }
}

/// SIGHUP re-reads the tokens file and the certificate; established connections stay up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_tokens_and_certificates_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::new(dir.path(), "first");
    let (cert, key_file) = first.leaf("server", &["localhost", "127.0.0.1"]);
    let tokens = dir.path().join("tokens.toml");
    write_tokens(&tokens, &[("before", "tok-before", &["*"])]);
    let data = dir.path().join("data");
    let server = Server::start("sighup", |c| {
        c.arg("--data-dir")
            .arg(&data)
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key_file);
        c.arg("--auth-tokens").arg(&tokens);
    });
    server.wait_ready(crate::binary::READY_WITHIN).await;
    let addr = server.grpc;
    let established = tls_channel(addr, &first.ca_pem(), None).await.unwrap();
    let mut client = SessionServiceClient::new(established.clone());
    client
        .get(with_token(get_request("acme"), Some("tok-before")))
        .await
        .unwrap();

    // New tokens and a certificate from another CA, then SIGHUP.
    write_tokens(&tokens, &[("after", "tok-after", &["*"])]);
    let second = Pki::new(dir.path(), "second");
    let (new_cert, new_key) = second.leaf("server-2", &["localhost", "127.0.0.1"]);
    std::fs::copy(new_cert, &cert).unwrap();
    std::fs::copy(new_key, &key_file).unwrap();
    server.signal("-HUP");
    wait_until(
        Duration::from_secs(5),
        "the new token working after SIGHUP, on the connection opened before it",
        || {
            let mut client = client.clone();
            async move {
                client
                    .get(with_token(get_request("acme"), Some("tok-after")))
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    let err = client
        .get(with_token(get_request("acme"), Some("tok-before")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "the old token is gone");

    // New connections get the new certificate: they trust the second CA, not the first.
    let fresh = tls_channel(addr, &second.ca_pem(), None).await.unwrap();
    SessionServiceClient::new(fresh)
        .get(with_token(get_request("acme"), Some("tok-after")))
        .await
        .unwrap();
    let old_trust = match tls_channel(addr, &first.ca_pem(), None).await {
        Ok(channel) => get_works(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(old_trust, "a client trusting only the old CA no longer connects");

    // The token's name is logged with the call, the token never.
    let report = report_request(&key("logged"), "", success("s1", 1), "");
    client
        .report_result(with_token(report, Some("tok-after")))
        .await
        .unwrap();
    server
        .wait_for_log(Duration::from_secs(5), "the applied report", |e| {
            e["message"] == "report applied"
        })
        .await;
    let logs = server.log_events();
    let applied = logs
        .iter()
        .find(|e| e["message"] == "report applied")
        .expect("a report log line");
    let rpc = applied["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|s| s["name"] == "rpc"))
        .unwrap();
    assert_eq!(rpc["caller"], "after", "{applied}");
    let text: String = logs.iter().map(|e| e.to_string()).collect();
    assert!(text.contains("tokens file reloaded"));
    assert!(
        !text.contains("tok-before") && !text.contains("tok-after"),
        "tokens never appear in logs"
    );
}

/// A SIGHUP that finds the tokens file emptied (a truncated deploy, `tokens = []`) refuses it with
/// a WARN naming the file; the tokens in force keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_an_empty_tokens_file_is_refused_and_the_tokens_in_force_stay() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    write_tokens(&tokens, &[("ops", OPS_TOKEN, &["*"])]);
    let data = dir.path().join("data");
    let server = Server::start("empty-tokens-reload", |c| {
        c.arg("--data-dir").arg(&data).arg("--auth-tokens").arg(&tokens);
    });
    server.wait_ready(crate::binary::READY_WITHIN).await;
    let mut client = server.client().await;
    for (round, empty) in ["", "tokens = []\n"].into_iter().enumerate() {
        std::fs::write(&tokens, empty).unwrap();
        server.signal("-HUP");
        let file = tokens.display().to_string();
        let refused = || {
            server
                .log_events()
                .iter()
                .filter(|e| {
                    e["message"] == "tokens file reload failed; the previous tokens stay in force"
                        && e["level"] == "WARN"
                        && e["file"] == file.as_str()
                        && e["error"].as_str().is_some_and(|t| t.contains("lists no tokens"))
                })
                .count()
        };
        wait_until(
            Duration::from_secs(5),
            "a WARN naming the file for each refused reload",
            || {
                let count = refused();
                async move { count == round + 1 }
            },
        )
        .await;
        client
            .get(with_token(get_request("acme"), Some(OPS_TOKEN)))
            .await
            .expect("the token in force before the reload still works");
    }
    assert!(!server.logged("tokens file reloaded"), "nothing was reloaded");
    server.stop().await;
}

/// With neither tokens, TLS nor a configuration file there is nothing to reload, and SIGHUP's
/// default action would end the process: it is handled, logged, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_nothing_to_reload_keeps_the_server_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start("sighup-bare", |c| {
        c.arg("--data-dir").arg(&data);
    });
    server.wait_ready(crate::binary::READY_WITHIN).await;
    let mut client = server.client().await;
    server.signal("-HUP");
    server
        .wait_for_log(Duration::from_secs(5), "the handled SIGHUP", |e| {
            e["message"] == "SIGHUP: nothing to reload (no tokens file, TLS or configuration file)"
        })
        .await;
    assert_eq!(server.exit_status(), None, "SIGHUP does not end the process");
    client
        .get(with_token(get_request("acme"), None))
        .await
        .expect("a Get after SIGHUP, on the connection opened before it");
    assert_eq!(server.readyz().await, 200);
    server.stop().await;
}
