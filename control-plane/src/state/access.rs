//! The join-token signing key: created once per cluster, first committed
//! wins.

use super::*;

/// What the join-signing key derives from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinKeys {
    /// Ed25519 key (PKCS#8) that signs join tokens, in clusters created
    /// before `salt`; such a key stays in use.
    pub key: Option<Vec<u8>>,
    /// Salt of the join-signing key (derived with the key-encryption key);
    /// created once per cluster.
    pub salt: Option<Vec<u8>>,
}

impl ClusterState {
    pub(super) fn init_join_key(&mut self, InitJoinKey { pkcs8, salt }: &InitJoinKey) -> Output {
        if self.access.key.is_none() && self.access.salt.is_none() {
            if !salt.is_empty() {
                self.access.salt = Some(salt.clone());
            } else if !pkcs8.is_empty() {
                self.access.key = Some(pkcs8.clone());
            }
        }
        match (&self.access.salt, &self.access.key) {
            (Some(s), _) => Output::JoinKeySalt(s.clone()),
            (None, Some(k)) => Output::JoinKey(k.clone()),
            (None, None) => Output::None,
        }
    }
}
