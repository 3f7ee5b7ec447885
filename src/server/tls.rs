//! TLS for the gRPC port with rustls, and mutual TLS when a client CA is configured: a client
//! without a certificate that CA signed is refused during the handshake. The certificate, key and
//! CA are re-read on [`TlsReloader::reload`] (SIGHUP): new connections use the new material,
//! established ones are not dropped. The accept loop and the handshake deadline are in
//! `transport.rs`, shared with plaintext.

use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsSettings;

#[derive(Debug, Clone)]
pub struct TlsReloader {
    settings: TlsSettings,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(settings: &TlsSettings) -> anyhow::Result<ServerConfig> {
    let certs = CertificateDer::pem_file_iter(&settings.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "tls_cert {}: cannot read a PEM certificate chain",
                settings.cert.display()
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "tls_cert {}: no certificate in the file",
        settings.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .with_context(|| format!("tls_key {}: cannot read a PEM private key", settings.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &settings.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("tls_client_ca {}: cannot read PEM certificates", ca.display()))?
            {
                roots
                    .add(cert.with_context(|| format!("tls_client_ca {}: bad certificate", ca.display()))?)
                    .with_context(|| format!("tls_client_ca {}: unusable CA certificate", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .with_context(|| format!("tls_client_ca {}: cannot verify clients with it", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .with_context(|| format!("tls_key {}: does not match tls_cert", settings.key.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

impl TlsReloader {
    /// Reads and checks the certificate, key and CA now: a problem stops the start.
    pub fn load(settings: &TlsSettings) -> anyhow::Result<Self> {
        Ok(TlsReloader {
            current: Arc::new(RwLock::new(Arc::new(build(settings)?))),
            settings: settings.clone(),
        })
    }

    /// Re-reads the files; on error the material in force stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = build(&self.settings)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// An acceptor with the material in force now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}
