use std::sync::Arc;

use tokio::sync::OnceCell;

use super::ApiError;
use crate::access::{generate_signing_key, TokenSigner};
use crate::raft::Replica;
use crate::state::{Command, Output};

/// The cluster's join-token key, created on first use. A freshly generated
/// key is proposed with `InitJoinKey`; the state machine keeps the first one
/// committed, so replicas racing here all end up signing with the same key.
pub struct SigningKeys {
    replica: Arc<Replica>,
    signer: OnceCell<Arc<TokenSigner>>,
}

impl SigningKeys {
    pub fn new(replica: Arc<Replica>) -> Self {
        SigningKeys {
            replica,
            signer: OnceCell::new(),
        }
    }

    pub async fn signer(&self) -> Result<Arc<TokenSigner>, ApiError> {
        self.signer
            .get_or_try_init(|| async {
                let known = self.replica.local_state(|s| s.join_key.clone());
                let pkcs8 = match known {
                    Some(k) => k,
                    None => match self
                        .replica
                        .write(Command::InitJoinKey {
                            pkcs8: generate_signing_key(),
                        })
                        .await?
                    {
                        Output::JoinKey(k) => k,
                        other => unreachable!("init_join_key answered {other:?}"),
                    },
                };
                let signer = TokenSigner::from_pkcs8(&pkcs8).map_err(|_| {
                    ApiError::Internal("stored join key is not a valid Ed25519 key")
                })?;
                Ok(Arc::new(signer))
            })
            .await
            .cloned()
    }
}
