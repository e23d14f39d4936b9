//! QUIC and TLS settings shared by nodes and participants.
//!
//! A node makes a fresh self-signed certificate at start and registers it
//! with the control plane, which hands it to each joining participant with
//! the join token. Participants trust exactly that certificate: trust is
//! anchored in the control plane, as a WebRTC fingerprint is in signalling.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ClientConfig, ServerConfig, TransportConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The name in every node certificate and the one clients check.
pub const SERVER_NAME: &str = "fjord-media-node";
/// ALPN of a participant's connection.
pub const ALPN_MEDIA: &[u8] = b"fjord-media/1";
/// ALPN of a node-to-node cascade link.
pub const ALPN_LINK: &[u8] = b"fjord-link/1";
/// Without a packet for this long a connection is dead: participants then
/// join again (and are re-placed if the node is gone), links are re-dialled.
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Keep-alives well inside the idle timeout, so a quiet but healthy
/// connection never times out.
pub const KEEP_ALIVE: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate not usable as a trust anchor: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    #[error("QUIC crypto: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Datagram buffers sized for a few hundred ms of video at fan-out.
fn transport(keep_alive: bool) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .expect("1.5 s is a valid idle timeout"),
    ));
    if keep_alive {
        t.keep_alive_interval(Some(KEEP_ALIVE));
    }
    t.datagram_receive_buffer_size(Some(4 << 20));
    t.datagram_send_buffer_size(4 << 20);
    Arc::new(t)
}

pub struct NodeIdentity {
    pub certificate: Vec<u8>,
    pub server_config: ServerConfig,
}

/// The node's QUIC identity. Participants present no certificate; a node
/// dialling a cascade link presents its cluster node certificate, verified
/// here against the cluster CA (`client_verifier`), and the link is refused
/// unless that certificate names the node the hello claims.
pub fn node_identity(
    client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Result<NodeIdentity, TlsError> {
    let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])?;
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(vec![cert.clone()], key)?;
    tls.alpn_protocols = vec![ALPN_MEDIA.to_vec(), ALPN_LINK.to_vec()];
    let mut server_config = ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    // Links dial out from the same endpoint and need keep-alives; idle
    // participants keep themselves alive.
    server_config.transport_config(transport(false));
    Ok(NodeIdentity {
        certificate: cert.to_vec(),
        server_config,
    })
}

/// A participant's configuration: trusts only `node_certificate`.
pub fn client_config(node_certificate: &[u8]) -> Result<ClientConfig, TlsError> {
    dial_config(node_certificate, ALPN_MEDIA, None)
}

/// A cascade link's configuration: trusts only the peer's certificate (as
/// the control plane registered it) and presents this node's certificate.
pub fn link_config(
    peer_certificate: &[u8],
    own: Arc<dyn rustls::client::ResolvesClientCert>,
) -> Result<ClientConfig, TlsError> {
    dial_config(peer_certificate, ALPN_LINK, Some(own))
}

fn dial_config(
    certificate: &[u8],
    alpn: &[u8],
    own: Option<Arc<dyn rustls::client::ResolvesClientCert>>,
) -> Result<ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(certificate.to_vec()))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut tls = match own {
        Some(own) => builder.with_client_cert_resolver(own),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let mut c = ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    c.transport_config(transport(true));
    Ok(c)
}
