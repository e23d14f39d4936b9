//! QUIC and TLS settings shared by nodes and participants.
//!
//! A node makes a fresh self-signed certificate at start and registers it
//! with the control plane, which hands it to each joining participant with
//! the join token. Participants trust exactly that certificate: trust is
//! anchored in the control plane, as a WebRTC fingerprint is in signalling.

use std::sync::Arc;
use std::time::Duration;

use quinn::{ClientConfig, ServerConfig, TransportConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The name in every node certificate and the one clients check.
pub const SERVER_NAME: &str = "fjord-media-node";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate not usable as a trust anchor: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// Datagram buffers sized for a few hundred ms of video at fan-out.
fn transport(keep_alive: bool) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(
        Duration::from_secs(10)
            .try_into()
            .expect("10 s is a valid idle timeout"),
    ));
    if keep_alive {
        t.keep_alive_interval(Some(Duration::from_secs(2)));
    }
    t.datagram_receive_buffer_size(Some(4 << 20));
    t.datagram_send_buffer_size(4 << 20);
    Arc::new(t)
}

pub struct NodeIdentity {
    pub certificate: Vec<u8>,
    pub server_config: ServerConfig,
}

pub fn node_identity() -> Result<NodeIdentity, TlsError> {
    let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])?;
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut server_config = ServerConfig::with_single_cert(vec![cert.clone()], key)?;
    server_config.transport_config(transport(false));
    Ok(NodeIdentity {
        certificate: cert.to_vec(),
        server_config,
    })
}

/// A client configuration that trusts only `node_certificate`.
pub fn client_config(node_certificate: &[u8]) -> Result<ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(node_certificate.to_vec()))?;
    let mut c = ClientConfig::with_root_certificates(Arc::new(roots))?;
    c.transport_config(transport(true));
    Ok(c)
}
