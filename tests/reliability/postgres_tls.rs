//! TLS to Postgres (SPEC §5): a private cluster that accepts only TLS connections, and the store
//! connecting with `sslmode=require` and with `sslmode=verify-full` against a CA made here.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use sessionkeeper::store::SessionStore;
use sessionkeeper::store::postgres::{PostgresSettings, PostgresStore};

use crate::pg_cluster::PgCluster;

fn store(url: &str) -> PostgresStore {
    PostgresStore::connect_lazy(&PostgresSettings {
        url: url.to_owned(),
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(3),
        ..PostgresSettings::new("")
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_connects_to_a_tls_only_postgres_with_sslmode_require_and_verify_full() {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "postgres test ca");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    server_params.distinguished_name.push(DnType::CommonName, "localhost");
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

    let cluster = PgCluster::start().await;
    cluster
        .require_tls(&server_cert.pem(), &server_key.serialize_pem())
        .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let base = cluster.url();

    let plaintext = store(&format!("{base}?sslmode=disable"));
    let refused = plaintext.check_ready().await.unwrap_err().to_string();
    assert!(
        refused.contains("no encryption"),
        "a plaintext connection is refused: {refused}"
    );

    let required = store(&format!("{base}?sslmode=require"));
    required.migrate().await.expect("migrate over TLS (sslmode=require)");
    required.check_ready().await.expect("ready over TLS");

    let verified = store(&format!("{base}?sslmode=verify-full&sslrootcert={}", ca_file.display()));
    verified
        .check_ready()
        .await
        .expect("ready over TLS with the server's certificate verified");

    let wrong_ca = tempfile::NamedTempFile::new().unwrap();
    let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_ca = CertifiedIssuer::self_signed(other, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(wrong_ca.path(), other_ca.pem()).unwrap();
    let untrusted = store(&format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        wrong_ca.path().display()
    ));
    assert!(
        untrusted.check_ready().await.is_err(),
        "a server certificate from another CA is refused"
    );
}
