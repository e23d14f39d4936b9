//! The cluster CA and the certificates it issues (`fjord pki`).
//!
//! A directory holds `ca.pem` and `ca.key`, and one `<stem>.pem` /
//! `<stem>.key` pair per issued identity (`replica-1`, `node-nordic-1`,
//! `operator-ops-1`, `institution-uio-admin-it-desk`). Keys are ECDSA P-256,
//! written with mode 0600. The identity goes into a URI SAN (see
//! [`Identity`]); `--san` adds the DNS names and IP addresses a server is
//! reached at.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::identity::{Identity, IdentityError};

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
/// The CA lives ten years; leaf certificates one year unless told otherwise.
pub const CA_VALID_DAYS: i64 = 3650;
pub const DEFAULT_VALID_DAYS: u32 = 365;
/// Certificates start a little in the past so a peer whose clock is a few
/// minutes behind still accepts them.
const BACKDATE: Duration = Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite a key")]
    KeyExists { path: PathBuf },
    #[error("no CA in {dir} (run `fjord pki init --dir {dir}` first)")]
    NoCa { dir: PathBuf },
    #[error("CA files in {dir} are not usable: {reason}")]
    BadCa { dir: PathBuf, reason: String },
    #[error("--san {san:?} is neither an IP address nor a DNS name")]
    BadSan { san: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Where `init` or `issue` wrote a certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    // Write beside and rename, so a process re-reading the file on change
    // never sees half a certificate.
    let tmp = path.with_extension("tmp");
    let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    ring_fill(&mut b);
    b[0] &= 0x7f; // positive
    SerialNumber::from_slice(&b)
}

fn ring_fill(buf: &mut [u8]) {
    use rustls::crypto::ring::default_provider;
    default_provider()
        .secure_random
        .fill(buf)
        .expect("the operating system RNG failed");
}

/// Creates `ca.pem` and `ca.key` in `dir` (made if missing). Refuses to
/// overwrite an existing CA key.
pub fn init_ca(dir: &Path) -> Result<IssuedFiles, PkiError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let files = IssuedFiles {
        cert: dir.join(CA_CERT_FILE),
        key: dir.join(CA_KEY_FILE),
    };
    if files.key.exists() {
        return Err(PkiError::KeyExists { path: files.key });
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    // A name of its own, so a certificate from another Fjord cluster's CA
    // is "unknown issuer", not a confusing signature failure.
    let mut tag = [0u8; 6];
    ring_fill(&mut tag);
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Fjord cluster CA {tag}"));
    dn.push(DnType::OrganizationName, "fjord");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(CA_VALID_DAYS);
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key)?;
    write_file(&files.key, &key.serialize_pem(), true)?;
    write_file(&files.cert, &cert.pem(), false)?;
    Ok(files)
}

pub const KEK_FILE: &str = "kek.key";

/// Creates `kek.key` in `dir`: the control plane's key-encryption key (32
/// random bytes as hex), the same file on every replica. Meeting secrets
/// and the join-signing key are derived from it, so it never goes into the
/// Raft log. Refuses to overwrite one: every secret derived from it would
/// change.
pub fn init_kek(dir: &Path) -> Result<PathBuf, PkiError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(KEK_FILE);
    if path.exists() {
        return Err(PkiError::KeyExists { path });
    }
    let mut k = [0u8; 32];
    ring_fill(&mut k);
    let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
    write_file(&path, &format!("{hex}\n"), true)?;
    Ok(path)
}

/// Whether a CA exists in `dir`.
pub fn has_ca(dir: &Path) -> bool {
    dir.join(CA_CERT_FILE).exists() && dir.join(CA_KEY_FILE).exists()
}

fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, PkiError> {
    if !has_ca(dir) {
        return Err(PkiError::NoCa { dir: dir.into() });
    }
    let bad = |reason: String| PkiError::BadCa {
        dir: dir.into(),
        reason,
    };
    let cert_pem =
        std::fs::read_to_string(dir.join(CA_CERT_FILE)).map_err(io_err(&dir.join(CA_CERT_FILE)))?;
    let key_pem =
        std::fs::read_to_string(dir.join(CA_KEY_FILE)).map_err(io_err(&dir.join(CA_KEY_FILE)))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(format!("ca.key: {e}")))?;
    Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| bad(format!("ca.pem: {e}")))
}

/// What a certificate may be used for: replicas and nodes serve TLS and
/// connect as clients; operators and admins only connect.
fn usages(identity: &Identity) -> Vec<ExtendedKeyUsagePurpose> {
    match identity {
        Identity::Replica { .. } | Identity::Node { .. } => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Identity::Operator { .. } | Identity::InstitutionAdmin { .. } => {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        }
    }
}

/// Issues a certificate for `identity`, valid `valid_days` from now, signed
/// by the CA in `dir`, and writes it there.
pub fn issue(
    dir: &Path,
    identity: &Identity,
    sans: &[String],
    valid_days: u32,
) -> Result<IssuedFiles, PkiError> {
    let now = OffsetDateTime::now_utc();
    issue_valid_between(
        dir,
        identity,
        sans,
        now - BACKDATE,
        now + Duration::days(valid_days.into()),
    )
}

/// As [`issue`], with explicit validity (tests make expired certificates).
pub fn issue_valid_between(
    dir: &Path,
    identity: &Identity,
    sans: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<IssuedFiles, PkiError> {
    identity.validate()?;
    let issuer = load_issuer(dir)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity.uri());
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(identity.uri().try_into().map_err(|_| {
        PkiError::BadSan {
            san: identity.uri(),
        }
    })?)];
    for san in sans {
        let entry = match san.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) if rustls::pki_types::DnsName::try_from(san.as_str()).is_err() => {
                return Err(PkiError::BadSan { san: san.clone() })
            }
            Err(_) => SanType::DnsName(
                san.clone()
                    .try_into()
                    .map_err(|_| PkiError::BadSan { san: san.clone() })?,
            ),
        };
        params.subject_alt_names.push(entry);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages(identity);
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let stem = identity.file_stem();
    let files = IssuedFiles {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
    };
    // Key first: a watcher that sees the new certificate finds its key.
    write_file(&files.key, &key.serialize_pem(), true)?;
    write_file(&files.cert, &cert.pem(), false)?;
    Ok(files)
}

/// Names every locally issued server certificate carries, so loopback
/// clients verify it whatever address they dial.
pub const LOCAL_SANS: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

/// A CA directory that issues certificates on first use: what `fjord dev`,
/// the tests and the benchmarks run on. Production clusters use
/// `fjord pki` or their own CA.
#[derive(Debug, Clone)]
pub struct LocalCa {
    dir: PathBuf,
}

impl LocalCa {
    /// Opens the CA in `dir`, creating it when there is none.
    pub fn open_or_init(dir: &Path) -> Result<LocalCa, PkiError> {
        if !has_ca(dir) {
            init_ca(dir)?;
        }
        Ok(LocalCa { dir: dir.into() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// The key-encryption key file, made on first use.
    pub fn kek(&self) -> Result<PathBuf, PkiError> {
        let path = self.dir.join(KEK_FILE);
        if path.exists() {
            Ok(path)
        } else {
            init_kek(&self.dir)
        }
    }

    /// Trust anchors only: a participant.
    pub fn anonymous(&self) -> crate::TlsFiles {
        crate::TlsFiles::anonymous(self.ca_path())
    }

    /// The files of `identity`, issued (for loopback names) if missing.
    pub fn files_for(&self, identity: &Identity) -> Result<crate::TlsFiles, PkiError> {
        let stem = identity.file_stem();
        let (cert, key) = (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}.key")),
        );
        if !(cert.exists() && key.exists()) {
            let sans: Vec<String> = LOCAL_SANS.iter().map(|s| s.to_string()).collect();
            issue(&self.dir, identity, &sans, DEFAULT_VALID_DAYS)?;
        }
        Ok(crate::TlsFiles::with_cert(self.ca_path(), cert, key))
    }

    pub fn replica(&self, id: u64) -> Result<crate::TlsFiles, PkiError> {
        self.files_for(&Identity::Replica { id })
    }

    pub fn node(&self, id: &str) -> Result<crate::TlsFiles, PkiError> {
        self.files_for(&Identity::Node { id: id.into() })
    }

    pub fn operator(&self, name: &str) -> Result<crate::TlsFiles, PkiError> {
        self.files_for(&Identity::Operator { name: name.into() })
    }

    pub fn institution_admin(
        &self,
        institution: &str,
        name: &str,
    ) -> Result<crate::TlsFiles, PkiError> {
        self.files_for(&Identity::InstitutionAdmin {
            institution: institution.into(),
            name: name.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_their_identity_and_chain_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path()).unwrap();
        assert!(matches!(
            init_ca(dir.path()),
            Err(PkiError::KeyExists { .. })
        ));
        let id = Identity::Node {
            id: "nordic-1".into(),
        };
        let files = issue(
            dir.path(),
            &id,
            &["127.0.0.1".into(), "localhost".into()],
            30,
        )
        .unwrap();
        assert!(files.cert.ends_with("node-nordic-1.pem"));
        let der = crate::tls::read_certs(&files.cert).unwrap();
        assert_eq!(Identity::from_certificate(&der[0]).unwrap(), id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        }
        // The chain verifies against the CA.
        let roots = crate::tls::read_roots(&dir.path().join(CA_CERT_FILE)).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            crate::tls::provider(),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(&der[0], &[], rustls::pki_types::UnixTime::now())
            .unwrap();
    }

    #[test]
    fn issuing_without_a_ca_or_with_a_bad_san_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::Operator {
            name: "ops-1".into(),
        };
        assert!(matches!(
            issue(dir.path(), &id, &[], 1),
            Err(PkiError::NoCa { .. })
        ));
        init_ca(dir.path()).unwrap();
        assert!(matches!(
            issue(dir.path(), &id, &["bad name!".into()], 1),
            Err(PkiError::BadSan { .. })
        ));
    }
}
