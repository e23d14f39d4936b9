use std::sync::Arc;

use tokio::sync::OnceCell;

use super::ApiError;
use crate::access::{new_join_key_salt, Kek, TokenSigner};
use crate::raft::Replica;
use crate::state::{AccessCommand, Command, InitJoinKey, Output};

/// The cluster's join-token key, created on first use. A fresh salt is
/// proposed with `InitJoinKey`; the state machine keeps the first one
/// committed, so replicas racing here all derive the same key (with the
/// key-encryption key, which every replica has and the log never holds).
pub struct SigningKeys {
    replica: Arc<Replica>,
    kek: Arc<Kek>,
    signer: OnceCell<Arc<TokenSigner>>,
}

impl SigningKeys {
    pub fn new(replica: Arc<Replica>, kek: Arc<Kek>) -> Self {
        SigningKeys {
            replica,
            kek,
            signer: OnceCell::new(),
        }
    }

    pub async fn signer(&self) -> Result<Arc<TokenSigner>, ApiError> {
        self.signer
            .get_or_try_init(|| async {
                let known = self
                    .replica
                    .local_state(|s| match (&s.access.salt, &s.access.key) {
                        (Some(salt), _) => Some(Output::JoinKeySalt(salt.clone())),
                        (None, Some(k)) => Some(Output::JoinKey(k.clone())),
                        (None, None) => None,
                    });
                let material = match known {
                    Some(m) => m,
                    None => {
                        self.replica
                            .write(Command::Access(AccessCommand::InitJoinKey(InitJoinKey {
                                pkcs8: Vec::new(),
                                salt: new_join_key_salt(),
                            })))
                            .await?
                    }
                };
                let signer = match material {
                    Output::JoinKeySalt(salt) => self.kek.join_signer(&salt),
                    Output::JoinKey(pkcs8) => TokenSigner::from_pkcs8(&pkcs8),
                    other => unreachable!("init_join_key answered {other:?}"),
                }
                .map_err(|_| ApiError::Internal("the join-signing key cannot be loaded"))?;
                Ok(Arc::new(signer))
            })
            .await
            .cloned()
    }
}
