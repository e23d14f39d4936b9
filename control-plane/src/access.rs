//! Meeting access: the secrets that guard a meeting (passcode, host key,
//! PIN), derived with the key-encryption key, and the key that signs the
//! join tokens media nodes verify offline (`fjord_common::token`).
//!
//! A join token is an encoded [`JoinClaims`](pb::JoinClaims) plus an Ed25519
//! signature over those bytes, made with the cluster's key (created once and
//! kept in the replicated state). Nodes get the public key when they
//! register, and check signature, expiry, meeting and node themselves.

use ring::rand::{SecureRandom, SystemRandom};

pub use fjord_common::token::{
    generate_signing_key, verify_token, TokenError, TokenSigner, JOIN_TOKEN_TTL_MS,
};
/// The PIN is shown to the host, and accepted, from this long before start.
pub const PIN_REVEAL_BEFORE_START_MS: u64 = 5 * 60 * 1000;
/// Passcode entropy: 80 bits, written as 20 lowercase hex digits.
const PASSCODE_BYTES: usize = 10;
const HOST_KEY_BYTES: usize = 16;
const _: () = assert!(
    PASSCODE_BYTES * 8 >= 64,
    "S1: passcodes carry at least 64 bits"
);
pub const PIN_DIGITS: usize = 8;

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the operating system RNG failed");
    b
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes::<8>())
}

/// A new meeting's access: a fresh random salt its secrets derive from.
pub fn new_meeting_access(settings: crate::state::MeetingSettings) -> crate::state::MeetingAccess {
    crate::state::MeetingAccess {
        secret_salt: hex(&random_bytes::<32>()),
        settings,
        ..Default::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: expected 64 hex digits (32 bytes); make one with `fjord pki kek --dir DIR`")]
    Malformed { path: String },
}

/// The cluster's key-encryption key: 32 random bytes in a file on every
/// replica (or a Kubernetes Secret mounted as one), never in the Raft log.
/// Meeting secrets and the join-signing key are derived from it and a salt
/// that is in the log, so the log and snapshots alone reveal neither.
#[derive(Clone)]
pub struct Kek([u8; 32]);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

/// A meeting's secrets, as derived; `Debug` shows none of them.
#[derive(Clone, PartialEq, Eq)]
pub struct MeetingSecrets {
    pub passcode: String,
    pub host_key: String,
    pub pin: String,
}

impl std::fmt::Debug for MeetingSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeetingSecrets(..)")
    }
}

/// Bytes from lower- or upper-case hex; `None` if it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Kek {
    pub fn generate() -> Kek {
        Kek(random_bytes::<32>())
    }

    /// The file's contents: 64 hex digits and a newline.
    pub fn to_file_contents(&self) -> String {
        format!("{}\n", hex(&self.0))
    }

    pub fn load(path: &std::path::Path) -> Result<Kek, KekError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| KekError::Read {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        Kek::from_file_contents(&text).ok_or(KekError::Malformed { path: p })
    }

    /// Reads what [`Kek::to_file_contents`] wrote: 64 hex digits,
    /// surrounding white space allowed. `None` for anything else.
    pub fn from_file_contents(text: &str) -> Option<Kek> {
        let bytes = unhex(text.trim()).filter(|b| b.len() == 32)?;
        let mut k = [0u8; 32];
        k.copy_from_slice(&bytes);
        Some(Kek(k))
    }

    /// HMAC-SHA256 of `label` and `salt` under the KEK.
    fn derive(&self, label: &str, salt: &[u8]) -> [u8; 32] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        let mut ctx = ring::hmac::Context::with_key(&key);
        ctx.update(label.as_bytes());
        ctx.update(&[0]);
        ctx.update(salt);
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// The passcode, host key and PIN of a meeting.
    pub fn meeting_secrets(&self, access: &crate::state::MeetingAccess) -> MeetingSecrets {
        if access.secret_salt.is_empty() {
            return MeetingSecrets {
                passcode: access.legacy_passcode.clone(),
                host_key: access.legacy_host_key.clone(),
                pin: access.legacy_pin.clone(),
            };
        }
        let salt = access.secret_salt.as_bytes();
        let passcode = self.derive("fjord meeting passcode", salt);
        let host_key = self.derive("fjord meeting host key", salt);
        let pin_bytes = self.derive("fjord meeting pin", salt);
        // Rejection sampling over the derived words keeps every PIN equally
        // likely; 8 tries fail with probability (0.07)^8, then fall back to
        // a second derivation.
        let mut pin = None;
        for round in 0u8.. {
            let words = if round == 0 {
                pin_bytes
            } else {
                self.derive(&format!("fjord meeting pin {round}"), salt)
            };
            pin = words
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .find(|v| *v < 4_000_000_000);
            if pin.is_some() {
                break;
            }
        }
        let pin = pin.unwrap_or_default() % 100_000_000;
        MeetingSecrets {
            passcode: hex(&passcode[..PASSCODE_BYTES]),
            host_key: hex(&host_key[..HOST_KEY_BYTES]),
            pin: format!("{pin:0width$}", width = PIN_DIGITS),
        }
    }

    /// The join-signing key for a salt kept in the replicated state.
    pub fn join_signer(&self, salt: &[u8]) -> Result<TokenSigner, TokenError> {
        TokenSigner::from_seed(&self.derive("fjord join-signing key", salt))
    }

    /// A host account's pseudonymous id: a keyed hash of the identity
    /// provider's issuer and the subject, so the same person at the same
    /// provider always maps to the same account, and the id reveals
    /// neither (S10: no names, no e-mail addresses).
    pub fn account_id(&self, issuer: &str, subject: &str) -> String {
        let mut input = Vec::with_capacity(issuer.len() + subject.len() + 1);
        input.extend_from_slice(issuer.as_bytes());
        input.push(0);
        input.extend_from_slice(subject.as_bytes());
        format!(
            "acct-{}",
            hex(&self.derive("fjord host account", &input)[..12])
        )
    }

    /// The secret an institution's webhook receiver checks signatures
    /// with: derived, never stored, so the log and snapshots cannot leak
    /// it; the institution's admins and operators can ask for it.
    pub fn webhook_secret(&self, institution: &str) -> String {
        hex(&self.derive("fjord webhook signing", institution.as_bytes()))
    }

    /// The key dashboard links are signed with (see `sla::link`).
    pub fn dashboard_link_key(&self) -> [u8; 32] {
        self.derive("fjord dashboard links", b"")
    }

    /// The raw Ed25519 seed of the join-signing key (tests look for it in
    /// files to show it is not there).
    pub fn join_key_seed(&self, salt: &[u8]) -> [u8; 32] {
        self.derive("fjord join-signing key", salt)
    }
}

/// A fresh salt for the join-signing key.
pub fn new_join_key_salt() -> Vec<u8> {
    random_bytes::<32>().to_vec()
}

/// Compares secrets in time independent of where they differ.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meeting_secrets_have_the_promised_entropy_and_shape() {
        let kek = Kek::generate();
        let (a, b) = (
            new_meeting_access(Default::default()),
            new_meeting_access(Default::default()),
        );
        // The same salt and KEK always give the same secrets (a retried
        // schedule answers what the first attempt answered)...
        assert_eq!(kek.meeting_secrets(&a), kek.meeting_secrets(&a));
        // ...and another KEK gives others: the salt alone is worthless.
        assert_ne!(
            Kek::generate().meeting_secrets(&a).passcode,
            kek.meeting_secrets(&a).passcode
        );
        assert_eq!(
            format!("{:?}", kek.meeting_secrets(&a)),
            "MeetingSecrets(..)"
        );
        assert!(!format!("{a:?}").contains(&a.secret_salt));
        let (a, b) = (kek.meeting_secrets(&a), kek.meeting_secrets(&b));
        // S1: at least 64 bits; hex digits carry 4 bits each.
        assert!(a.passcode.len() * 4 >= 64, "{:?}", a.passcode);
        assert!(a.passcode.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.passcode, b.passcode);
        assert_ne!(a.host_key, b.host_key);
        assert_eq!(a.pin.len(), PIN_DIGITS);
        assert!(a.pin.chars().all(|c| c.is_ascii_digit()));
        assert!(secrets_equal(&a.passcode, &a.passcode.clone()));
        assert!(!secrets_equal(&a.passcode, &b.passcode));
        assert!(!secrets_equal(&a.passcode, ""));
    }
}
