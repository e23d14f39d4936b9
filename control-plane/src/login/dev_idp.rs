//! A small identity provider for `fjord dev` and tests: one Ed25519 key,
//! an issuer per institution, ID tokens with an affiliation claim. It
//! stands in for an institution's provider (Feide and the like); Fjord
//! validates its tokens exactly as it validates theirs.

use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

/// The client id tokens are issued for.
pub const AUDIENCE: &str = "fjord";
/// The claim carrying the affiliation values (eduPersonAffiliation).
pub const AFFILIATION_CLAIM: &str = "eduperson_affiliation";
/// Issuers are this plus the institution's name.
pub const ISSUER_PREFIX: &str = "https://idp.fjord.dev/";

#[derive(Debug, thiserror::Error)]
pub enum DevIdpError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("the key file is not a dev identity provider key")]
    Malformed,
    #[error("signing failed")]
    Signing,
}

/// The key file: the signing key (PKCS#8, base64) and its id.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    kid: String,
    pkcs8: String,
}

/// Where `fjord dev` keeps the key and `fjord dev-idp` looks for it by
/// default: one place per machine, so tokens keep working across restarts.
pub fn default_key_path() -> std::path::PathBuf {
    std::env::temp_dir().join("fjord-dev-idp.json")
}

pub struct DevIdp {
    pub kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl DevIdp {
    pub fn generate() -> DevIdp {
        let mut kid = [0u8; 6];
        ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut kid).expect("system RNG");
        DevIdp::generate_with_kid(&format!("dev-{}", b64(&kid)))
    }

    /// A fresh key under a chosen key id (tests forge with it).
    pub fn generate_with_kid(kid: &str) -> DevIdp {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("system RNG");
        DevIdp::from_pkcs8(kid, pkcs8.as_ref().to_vec()).expect("a fresh key parses")
    }

    fn from_pkcs8(kid: &str, pkcs8: Vec<u8>) -> Result<DevIdp, DevIdpError> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| DevIdpError::Malformed)?;
        Ok(DevIdp {
            kid: kid.to_string(),
            public: pair.public_key().as_ref().to_vec(),
            pkcs8,
        })
    }

    pub fn load(path: &std::path::Path) -> Result<DevIdp, DevIdpError> {
        let err = |reason: String| DevIdpError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        DevIdp::from_file_contents(&text)
    }

    /// Reads what [`DevIdp::save`] writes: `{"kid", "pkcs8" (base64)}`.
    pub fn from_file_contents(text: &str) -> Result<DevIdp, DevIdpError> {
        let file: KeyFile = serde_json::from_str(text).map_err(|_| DevIdpError::Malformed)?;
        let pkcs8 = base64::engine::general_purpose::STANDARD
            .decode(file.pkcs8)
            .map_err(|_| DevIdpError::Malformed)?;
        DevIdp::from_pkcs8(&file.kid, pkcs8)
    }

    /// Writes the key file, readable by its owner only.
    pub fn save(&self, path: &std::path::Path) -> Result<(), DevIdpError> {
        let err = |e: std::io::Error| DevIdpError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let text = serde_json::to_string(&KeyFile {
            kid: self.kid.clone(),
            pkcs8: base64::engine::general_purpose::STANDARD.encode(&self.pkcs8),
        })
        .map_err(|_| DevIdpError::Malformed)?;
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(path).map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)
    }

    pub fn issuer(&self, institution: &str) -> String {
        format!("{ISSUER_PREFIX}{institution}")
    }

    /// The public key as a JWKS document, for the institutions' login configuration.
    pub fn jwks(&self) -> String {
        serde_json::json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": b64(&self.public),
            "kid": self.kid, "alg": "EdDSA", "use": "sig",
        }]})
        .to_string()
    }

    /// An ID token for `subject` at `institution`, issued at `now_s`
    /// (Unix seconds) and valid for `lifetime_s`.
    pub fn token(
        &self,
        institution: &str,
        subject: &str,
        affiliations: &[&str],
        now_s: u64,
        lifetime_s: u64,
    ) -> Result<String, DevIdpError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let claims = serde_json::json!({
            "iss": self.issuer(institution),
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now_s,
            "exp": now_s + lifetime_s,
            AFFILIATION_CLAIM: affiliations,
        });
        encode(&header, &claims, &EncodingKey::from_ed_der(&self.pkcs8))
            .map_err(|_| DevIdpError::Signing)
    }
}
