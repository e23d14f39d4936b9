//! rustls configurations for Fjord's gRPC channels, built from PEM files
//! that are re-read when they change (certificate rotation without restart,
//! as cert-manager does it on Kubernetes).
//!
//! ```text
//!  TlsFiles{ca, cert, key} ──> server_config(ClientAuth)   public port: client cert optional
//!                         │                                 peer port:   client cert required
//!                         └──> client_config()              ctl, nodes, replicas, participants
//! ```
//!
//! Every handshake asks a [`Watched`] value for the current certificate or
//! trust anchors; it looks at the files' modification times at most every
//! [`RELOAD_CHECK`] and loads them again when they changed. A file that
//! fails to load (half written, expired, wrong key) leaves the previous one
//! in use and is reported once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::identity::{Identity, IdentityError};

/// How often a handshake may look at the files' modification times.
pub const RELOAD_CHECK: Duration = Duration::from_millis(500);

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: no certificate in the file")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no usable CA certificate in the file")]
    NoTrustAnchor { path: PathBuf },
    #[error("{path}: certificate expired at {not_after} (UTC)")]
    Expired { path: PathBuf, not_after: String },
    #[error("{path}: certificate not valid before {not_before} (UTC)")]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("{cert} and {key} do not belong together: {reason}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{path}: {source}")]
    Identity {
        path: PathBuf,
        source: IdentityError,
    },
    #[error(
        "a certificate needs its key: give both --cert and --key (or FJORD_CERT and FJORD_KEY)"
    )]
    CertWithoutKey,
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn read_err(path: &Path, e: impl fmt::Display) -> TlsError {
    TlsError::Read {
        path: path.into(),
        reason: e.to_string(),
    }
}

/// The certificates in a PEM file, leaf first.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| read_err(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| read_err(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| read_err(path, e))
}

/// Trust anchors: every certificate in a PEM bundle.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(read_certs(path)?);
    if added == 0 {
        return Err(TlsError::NoTrustAnchor { path: path.into() });
    }
    Ok(roots)
}

fn fmt_time(t: x509_parser::time::ASN1Time) -> String {
    t.to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Refuses a certificate outside its validity period with the dates, so an
/// operator reads "expired at ..." instead of a TLS alert.
pub fn check_validity(path: &Path, der: &[u8]) -> Result<(), TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| read_err(path, e))?;
    let v = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > v.not_after {
        return Err(TlsError::Expired {
            path: path.into(),
            not_after: fmt_time(v.not_after),
        });
    }
    if now < v.not_before {
        return Err(TlsError::NotYetValid {
            path: path.into(),
            not_before: fmt_time(v.not_before),
        });
    }
    Ok(())
}

/// Where a process finds its trust anchors and, optionally, its own
/// certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// This process's certificate and key, loaded and checked.
#[derive(Debug)]
pub struct LoadedCert {
    pub certified: Arc<CertifiedKey>,
    pub identity: Identity,
}

impl TlsFiles {
    /// Trust anchors only: a participant, or a health check.
    pub fn anonymous(ca: impl Into<PathBuf>) -> TlsFiles {
        TlsFiles {
            ca: ca.into(),
            cert: None,
            key: None,
        }
    }

    pub fn with_cert(
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> TlsFiles {
        TlsFiles {
            ca: ca.into(),
            cert: Some(cert.into()),
            key: Some(key.into()),
        }
    }

    /// Both or neither of cert and key; the files load now.
    pub fn validate(&self) -> Result<(), TlsError> {
        read_roots(&self.ca)?;
        if let Some(pair) = self.cert_pair()? {
            load_cert(&pair.0, &pair.1)?;
        }
        Ok(())
    }

    fn cert_pair(&self) -> Result<Option<(PathBuf, PathBuf)>, TlsError> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
            (None, None) => Ok(None),
            _ => Err(TlsError::CertWithoutKey),
        }
    }

    /// The identity in this process's certificate, if it has one.
    pub fn identity(&self) -> Result<Option<Identity>, TlsError> {
        match self.cert_pair()? {
            Some((c, k)) => Ok(Some(load_cert(&c, &k)?.identity)),
            None => Ok(None),
        }
    }
}

/// Loads a certificate chain and its key; checks that they match, that the
/// certificate is valid now and that it carries a Fjord identity.
pub fn load_cert(cert: &Path, key: &Path) -> Result<LoadedCert, TlsError> {
    let chain = read_certs(cert)?;
    check_validity(cert, &chain[0])?;
    let identity = Identity::from_certificate(&chain[0]).map_err(|source| TlsError::Identity {
        path: cert.into(),
        source,
    })?;
    let certified = CertifiedKey::from_der(chain, read_key(key)?, &provider()).map_err(|e| {
        TlsError::KeyMismatch {
            cert: cert.into(),
            key: key.into(),
            reason: e.to_string(),
        }
    })?;
    Ok(LoadedCert {
        certified: Arc::new(certified),
        identity,
    })
}

/// A value loaded from files and loaded again when they change.
pub struct Watched<T> {
    paths: Vec<PathBuf>,
    load: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    inner: Mutex<WatchState<T>>,
}

struct WatchState<T> {
    value: Arc<T>,
    stamps: Vec<Option<(SystemTime, u64)>>,
    checked: Instant,
    last_error: Option<String>,
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl<T> Watched<T> {
    pub fn new(
        paths: Vec<PathBuf>,
        load: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let stamps = paths.iter().map(|p| stamp(p)).collect();
        let value = Arc::new(load()?);
        Ok(Watched {
            paths,
            load: Box::new(load),
            inner: Mutex::new(WatchState {
                value,
                stamps,
                checked: Instant::now(),
                last_error: None,
            }),
        })
    }

    /// The current value, re-loaded first if the files changed.
    pub fn current(&self) -> Arc<T> {
        let mut st = self.inner.lock().expect("watch lock poisoned");
        if st.checked.elapsed() < RELOAD_CHECK {
            return st.value.clone();
        }
        st.checked = Instant::now();
        let stamps: Vec<_> = self.paths.iter().map(|p| stamp(p)).collect();
        if stamps == st.stamps {
            return st.value.clone();
        }
        match (self.load)() {
            Ok(v) => {
                st.value = Arc::new(v);
                st.stamps = stamps;
                st.last_error = None;
                metrics::counter!("fjord_tls_reloads_total", "outcome" => "ok").increment(1);
                tracing::info!(files = ?self.paths, "TLS files changed; reloaded");
            }
            Err(e) => {
                let msg = e.to_string();
                if st.last_error.as_deref() != Some(msg.as_str()) {
                    metrics::counter!("fjord_tls_reloads_total", "outcome" => "error").increment(1);
                    tracing::warn!(error = %msg, "TLS files changed but cannot be loaded; keeping the previous ones");
                    st.last_error = Some(msg);
                }
            }
        }
        st.value.clone()
    }
}

impl<T> fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watched")
            .field("paths", &self.paths)
            .finish()
    }
}

/// This process's own certificate, re-read on change; serves as both the
/// server certificate and the client certificate.
#[derive(Debug)]
pub struct OwnCert(Watched<LoadedCert>);

impl OwnCert {
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        let (c, k) = (cert.clone(), key.clone());
        Ok(OwnCert(Watched::new(vec![cert, key], move || {
            load_cert(&c, &k)
        })?))
    }

    pub fn identity(&self) -> Identity {
        self.0.current().identity.clone()
    }
}

impl ResolvesServerCert for OwnCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }
}

impl rustls::client::ResolvesClientCert for OwnCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Whether a server asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Asked for and verified when given; callers without one are anonymous.
    Optional,
    /// A handshake without a valid client certificate fails.
    Required,
}

/// Verifies client certificates against the CA file, re-read on change.
#[derive(Debug)]
struct ClientVerifier {
    inner: Watched<Arc<dyn ClientCertVerifier>>,
    auth: ClientAuth,
}

impl ClientVerifier {
    fn new(ca: PathBuf, auth: ClientAuth) -> Result<Self, TlsError> {
        let path = ca.clone();
        let inner = Watched::new(vec![ca], move || {
            let builder = WebPkiClientVerifier::builder_with_provider(
                Arc::new(read_roots(&path)?),
                provider(),
            );
            let builder = match auth {
                ClientAuth::Optional => builder.allow_unauthenticated(),
                ClientAuth::Required => builder,
            };
            builder.build().map_err(|e| TlsError::Config(e.to_string()))
        })?;
        Ok(ClientVerifier { inner, auth })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.auth == ClientAuth::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; clients send the one certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .current()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .current()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.current().supported_verify_schemes()
    }
}

/// A verifier of client certificates against the CA file (re-read on
/// change), for servers other than gRPC (the media node's QUIC endpoint).
pub fn client_verifier(
    ca: PathBuf,
    auth: ClientAuth,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    Ok(Arc::new(ClientVerifier::new(ca, auth)?))
}

/// Verifies servers against the CA file, re-read on change.
#[derive(Debug)]
struct ServerVerifier {
    inner: Watched<Arc<rustls::client::WebPkiServerVerifier>>,
}

impl ServerVerifier {
    fn new(ca: PathBuf) -> Result<Self, TlsError> {
        let path = ca.clone();
        let inner = Watched::new(vec![ca], move || {
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(read_roots(&path)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))
        })?;
        Ok(ServerVerifier { inner })
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .current()
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .current()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .current()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.current().supported_verify_schemes()
    }
}

/// ALPN for gRPC over TLS.
const ALPN_H2: &[u8] = b"h2";

/// A server configuration: this process's certificate, and client
/// certificates verified against the CA.
pub fn server_config(
    files: &TlsFiles,
    auth: ClientAuth,
) -> Result<(Arc<rustls::ServerConfig>, Identity), TlsError> {
    let (cert, key) = files.cert_pair()?.ok_or(TlsError::CertWithoutKey)?;
    let own = Arc::new(OwnCert::new(cert, key)?);
    let identity = own.identity();
    let verifier = Arc::new(ClientVerifier::new(files.ca.clone(), auth)?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(own);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // No session resumption: a resumed session skips certificate checks,
    // so a rotated-away, expired or foreign-CA client would keep getting
    // in. gRPC connections are long-lived; a full handshake is cheap.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok((Arc::new(config), identity))
}

/// A client configuration: servers verified against the CA, and this
/// process's certificate presented when it has one.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let verifier = Arc::new(ServerVerifier::new(files.ca.clone())?);
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match files.cert_pair()? {
        Some((cert, key)) => builder.with_client_cert_resolver(Arc::new(OwnCert::new(cert, key)?)),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}
