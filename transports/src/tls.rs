//! Ready-made rustls configurations for TLS sessions, secure by default.
//!
//! A client verifies the server's certificate chain and name against the roots it is given
//! (the CA of a private deployment, or of a test). There is no "accept anything" switch
//! short of [`dangerous_client_config_accepting_any_server`], whose name says what it does.
//! Anything these helpers do not cover (ALPN, session resumption, key logging, versions)
//! is a field of the rustls configuration: build it with rustls and pass it to
//! `TcpServerBuilder::tls` / `TcpClientBuilder::tls`.
//!
//! ```
//! use getty_transports::tls;
//! let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
//! let (chain, key) = (ca.cert.pem(), ca.signing_key.serialize_pem());
//! let server = tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
//! let client = tls::client_config(chain.as_bytes()).unwrap();
//! # let _ = (server, client);
//! ```

use std::io;
use std::sync::Arc;

use getty_codec::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use getty_codec::rustls::pki_types::pem::PemObject;
use getty_codec::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use getty_codec::rustls::server::WebPkiClientVerifier;
use getty_codec::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
};

fn invalid(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"))
}

/// Every certificate in a PEM text.
fn certificates(pem: &[u8]) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate PEM", e))?;
    if certs.is_empty() {
        return Err(invalid("certificate PEM", "no certificate found"));
    }
    Ok(certs)
}

fn private_key(pem: &[u8]) -> io::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| invalid("private key PEM", e))
}

fn roots(ca_pem: &[u8]) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_pem)? {
        roots.add(cert).map_err(|e| invalid("CA certificate", e))?;
    }
    Ok(roots)
}

/// A server configuration from a PEM certificate chain (leaf first) and its PEM private
/// key; clients are not asked for certificates.
///
/// ```
/// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let config = getty_transports::tls::server_config(
///     cert.cert.pem().as_bytes(),
///     cert.signing_key.serialize_pem().as_bytes(),
/// ).unwrap();
/// assert!(getty_transports::tls::server_config(b"not pem", b"").is_err());
/// # let _ = config;
/// ```
pub fn server_config(chain_pem: &[u8], key_pem: &[u8]) -> io::Result<Arc<ServerConfig>> {
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certificates(chain_pem)?, private_key(key_pem)?)
        .map_err(|e| invalid("server certificate", e))?;
    Ok(Arc::new(config))
}

/// A server configuration that requires a client certificate (mutual TLS) issued by one of
/// the CAs in `client_ca_pem`; a client without one fails the handshake.
///
/// ```
/// let server = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let client_ca = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
/// let config = getty_transports::tls::server_config_with_client_auth(
///     server.cert.pem().as_bytes(),
///     server.signing_key.serialize_pem().as_bytes(),
///     client_ca.cert.pem().as_bytes(),
/// ).unwrap();
/// # let _ = config;
/// ```
pub fn server_config_with_client_auth(
    chain_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
) -> io::Result<Arc<ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots(client_ca_pem)?))
        .build()
        .map_err(|e| invalid("client CA", e))?;
    let config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates(chain_pem)?, private_key(key_pem)?)
        .map_err(|e| invalid("server certificate", e))?;
    Ok(Arc::new(config))
}

/// A client configuration that trusts the CAs in `ca_pem` (a private CA, or a test's
/// self-signed certificate) and checks the server's name.
///
/// ```
/// let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let config = getty_transports::tls::client_config(ca.cert.pem().as_bytes()).unwrap();
/// # let _ = config;
/// ```
pub fn client_config(ca_pem: &[u8]) -> io::Result<Arc<ClientConfig>> {
    let config = ClientConfig::builder()
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client configuration that trusts the CAs in `ca_pem` and presents a certificate of
/// its own (for servers that require mutual TLS).
///
/// ```
/// let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let me = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
/// let config = getty_transports::tls::client_config_with_certificate(
///     ca.cert.pem().as_bytes(),
///     me.cert.pem().as_bytes(),
///     me.signing_key.serialize_pem().as_bytes(),
/// ).unwrap();
/// # let _ = config;
/// ```
pub fn client_config_with_certificate(
    ca_pem: &[u8],
    chain_pem: &[u8],
    key_pem: &[u8],
) -> io::Result<Arc<ClientConfig>> {
    let config = ClientConfig::builder()
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certificates(chain_pem)?, private_key(key_pem)?)
        .map_err(|e| invalid("client certificate", e))?;
    Ok(Arc::new(config))
}

/// **Dangerous:** a client configuration that accepts any server certificate for any name,
/// so anyone on the path can read and change the traffic. Only for talking to a test peer
/// whose certificate cannot be known; it logs a warning each time it is made.
///
/// ```
/// let config = getty_transports::tls::dangerous_client_config_accepting_any_server();
/// # let _ = config;
/// ```
pub fn dangerous_client_config_accepting_any_server() -> Arc<ClientConfig> {
    log::warn!("TLS client configured to accept ANY server certificate: no authentication");
    let provider = rustls::crypto::ring::default_provider();
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let config = ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer {
            provider: Arc::new(provider),
            schemes,
        }))
        .with_no_client_auth();
    Arc::new(config)
}

/// Skips the chain and name checks, but still checks that the server holds the key of the
/// certificate it sent (the handshake signatures), so the connection is at least encrypted.
#[derive(Debug)]
struct AcceptAnyServer {
    provider: Arc<rustls::crypto::CryptoProvider>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}
