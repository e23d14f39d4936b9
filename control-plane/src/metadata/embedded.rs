//! The embedded metadata store, the default: the replicated state is the
//! store. Records are built from it on read, a write is already durable
//! (the state it was built from is committed), and nothing outside the
//! control plane writes, so the watch never yields. `fjord dev` and any
//! cluster without `--metadata` run on it, with nothing to install.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::store::{MetadataStore, StoreContents, StoreError, StoreOp, WatchStream};
use super::sync::desired;
use crate::raft::Replica;

pub struct EmbeddedStore {
    replica: Arc<Replica>,
}

impl EmbeddedStore {
    pub fn new(replica: Arc<Replica>) -> EmbeddedStore {
        EmbeddedStore { replica }
    }
}

impl MetadataStore for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn describe(&self) -> String {
        "embedded (the replicated state)".into()
    }

    fn write<'a>(&'a self, _ops: &'a [StoreOp]) -> BoxFuture<'a, Result<u64, StoreError>> {
        futures::future::ready(Ok(0)).boxed()
    }

    fn read_all(&self) -> BoxFuture<'_, Result<StoreContents, StoreError>> {
        let values = self.replica.local_state(|s| {
            s.metadata_keys()
                .into_iter()
                .filter_map(|k| {
                    desired(s, &k)
                        .ok()
                        .flatten()
                        .map(|r| (k.path(), r.encode()))
                })
                .collect()
        });
        futures::future::ready(Ok(StoreContents {
            values,
            revision: 0,
        }))
        .boxed()
    }

    fn watch(&self, _after_revision: u64) -> BoxFuture<'_, Result<WatchStream, StoreError>> {
        let never: WatchStream = Box::pin(futures::stream::pending());
        futures::future::ready(Ok(never)).boxed()
    }
}
